//! Fuzz target: messages from a SIMtrace2 card emulator (USB bulk-in
//! transfers): any buffer decodes into messages or a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../client/src/st2/proto.rs"]
mod proto;

fuzz_target!(|data: &[u8]| {
    let _ = proto::decode_device(data);
});

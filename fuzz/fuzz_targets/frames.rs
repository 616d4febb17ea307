//! Fuzz target: a byte stream as a peer would send it, through the IPA codec,
//! the PDU decoder and the JSON form; re-encoding must reproduce each frame.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rspro::ipa::{Frame, IpaCodec};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut codec = IpaCodec::default();
    while let Ok(Some(frame)) = codec.decode_eof(&mut buf) {
        let bytes = frame.to_bytes().expect("a decoded frame re-encodes");
        let mut again = BytesMut::from(&bytes[..]);
        let back = IpaCodec::default().decode(&mut again).expect("re-decodes");
        assert_eq!(back.as_ref(), Some(&frame));
        if let Frame::Rspro(der) = &frame {
            let _ = rspro::decode(der);
        }
        let _ = rspro::json::frame_to_json(&frame);
    }
});

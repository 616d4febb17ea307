//! Fuzz target: `remsimctl slotmap import`'s CSV: any text parses into slot
//! pairs within 0..1023 or a line-numbered error.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../cli/src/csv_rows.rs"]
mod csv_rows;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match csv_rows::parse(text) {
        Ok(rows) => {
            let max = rspro::validate::MAX_ID;
            for ((b, bs), (c, cs)) in rows {
                assert!(b <= max && bs <= max && c <= max && cs <= max);
            }
        }
        Err(message) => assert!(message.starts_with("line ") || !message.is_empty()),
    }
});

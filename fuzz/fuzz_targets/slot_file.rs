//! Fuzz target: the bankd's slot file (`bankd_pcsc_slots.csv`): any text
//! parses into entries or a line-numbered error; every accepted expression
//! can be matched against reader names.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../bankd/src/slots.rs"]
mod slots;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = slots::SlotFile::parse("fuzz", text) {
        let readers = vec![
            "Example Vendor Reader 00 00".to_string(),
            text.chars().take(64).collect::<String>(),
        ];
        for bank in 0..2 {
            for slot in 0..4 {
                if let Some(expr) = file.reader_for(rspro::BankSlot::new(bank, slot)) {
                    let _ = slots::matching(expr, &readers);
                }
            }
        }
    }
});

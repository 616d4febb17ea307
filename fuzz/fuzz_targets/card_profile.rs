//! Fuzz target: soft SIM profile files, TOML and JSON: any text gives
//! validated cards or an error; every accepted card makes a working SIM.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simcard::card::SimCard;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for json in [false, true] {
        if let Ok(cards) = simcard::profile::parse("fuzz", text, json) {
            for profile in cards.into_iter().take(4) {
                let mut card = SimCard::new(profile).expect("a validated profile makes a card");
                // SELECT MF and READ BINARY of EF_ICCID answer with a status word.
                assert!(card.transmit(&[0xa0, 0xa4, 0, 0, 2, 0x3f, 0]).len() >= 2);
            }
        }
    }
});

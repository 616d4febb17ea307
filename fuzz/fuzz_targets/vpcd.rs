//! Fuzz target: a vpcd byte stream (2-byte length, then a control byte or
//! a C-APDU) into `remsim-vcard`'s protocol handling and a soft SIM: every
//! message is parsed or refused, every answer fits in a vpcd frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use remsim_vcard::vpcd;
use simcard::CardProfile;
use simcard::card::SimCard;

fuzz_target!(|data: &[u8]| {
    let Ok(mut card) = SimCard::new(CardProfile::generated(0)) else {
        return;
    };
    let mut rest = data;
    while let [hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let Some(payload) = tail.get(..len) else {
            return;
        };
        rest = &tail[len..];
        let Ok(request) = vpcd::parse_request(payload) else {
            continue;
        };
        if let Some(answer) = vpcd::handle(&mut card, request) {
            vpcd::frame(&answer).expect("an answer fits in a frame");
        }
    }
});

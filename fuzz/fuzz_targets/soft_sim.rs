//! Fuzz target: the soft SIM's APDU processor: any sequence of C-APDUs
//! (each prefixed by its length byte) is answered with at least a status
//! word, and the card survives resets between them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simcard::CardProfile;
use simcard::card::SimCard;

fuzz_target!(|data: &[u8]| {
    let Ok(mut card) = SimCard::new(CardProfile::generated(7)) else {
        return;
    };
    let mut rest = data;
    while let [len, tail @ ..] = rest {
        let len = usize::from(*len);
        let Some(apdu) = tail.get(..len) else {
            return;
        };
        rest = &tail[len..];
        if apdu.first() == Some(&0xff) && apdu.len() == 1 {
            card.reset();
            continue;
        }
        let answer = card.transmit(apdu);
        assert!(answer.len() >= 2, "no status word for {apdu:02x?}");
        assert!(answer.len() <= 258, "answer of {} bytes", answer.len());
    }
});

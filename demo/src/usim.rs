//! What a modem asks its SIM in the demo, without any I/O: the C-APDUs that
//! read EF_ICCID and EF_IMSI and run a USIM AUTHENTICATE (3G context,
//! MILENAGE), the T=0 follow-ups a terminal owes the card (GET RESPONSE after
//! `61xx`, the command again with the right Le after `6Cxx`), and the
//! decoding of the answers. The network side of AUTHENTICATE (AUTN, XRES,
//! resynchronisation from AUTS) is computed here from the card's profile, as
//! an HLR would.

use simcard::CardProfile;
use simcard::milenage::Milenage;

/// SELECT MF by file id, no answer data (P2 0C).
pub const SELECT_MF: [u8; 7] = [0x00, 0xA4, 0x00, 0x0C, 0x02, 0x3F, 0x00];
/// SELECT EF_ICCID (2FE2) under the MF.
pub const SELECT_ICCID: [u8; 7] = [0x00, 0xA4, 0x00, 0x0C, 0x02, 0x2F, 0xE2];
/// READ BINARY of EF_ICCID's 10 bytes.
pub const READ_ICCID: [u8; 5] = [0x00, 0xB0, 0x00, 0x00, 0x0A];
/// SELECT ADF_USIM by the start of its AID (RID + USIM application code).
pub const SELECT_USIM: [u8; 12] = [
    0x00, 0xA4, 0x04, 0x0C, 0x07, 0xA0, 0x00, 0x00, 0x00, 0x87, 0x10, 0x02,
];
/// SELECT EF_IMSI (6F07) in ADF_USIM.
pub const SELECT_IMSI: [u8; 7] = [0x00, 0xA4, 0x00, 0x0C, 0x02, 0x6F, 0x07];
/// READ BINARY of EF_IMSI's 9 bytes.
pub const READ_IMSI: [u8; 5] = [0x00, 0xB0, 0x00, 0x00, 0x09];

/// The status word at the end of an R-APDU (0 when it has none).
pub fn status_word(rapdu: &[u8]) -> u16 {
    match rapdu {
        [.., sw1, sw2] => u16::from_be_bytes([*sw1, *sw2]),
        _ => 0,
    }
}

/// The data of an R-APDU that ended in 9000, or a message naming the
/// status word.
pub fn data_of<'a>(what: &str, rapdu: &'a [u8]) -> Result<&'a [u8], String> {
    match status_word(rapdu) {
        0x9000 => Ok(&rapdu[..rapdu.len() - 2]),
        sw => Err(format!("{what}: status {sw:04X}")),
    }
}

/// The next command T=0 asks for after `cmd` got `rapdu`: GET RESPONSE for
/// `61xx` (the answer waits in the card), the same command with Le = xx for
/// `6Cxx` (wrong length). None when `rapdu` is the final answer.
pub fn follow_up(cmd: &[u8], rapdu: &[u8]) -> Option<Vec<u8>> {
    let class = *cmd.first()?;
    match rapdu {
        [0x61, len] => Some(vec![class, 0xC0, 0x00, 0x00, *len]),
        [0x6C, len] if cmd.len() == 5 => {
            let mut again = cmd.to_vec();
            again[4] = *len;
            Some(again)
        }
        _ => None,
    }
}

/// Digits of BCD with swapped nibbles, up to the first filler nibble (F).
fn swapped_digits(bytes: &[u8]) -> String {
    bytes
        .iter()
        .flat_map(|b| [b & 0x0F, b >> 4])
        .take_while(|n| *n <= 9)
        .map(|n| char::from(b'0' + n))
        .collect()
}

/// The ICCID from EF_ICCID's content.
pub fn decode_iccid(ef: &[u8]) -> Result<String, String> {
    let digits = swapped_digits(ef);
    if (18..=20).contains(&digits.len()) {
        Ok(digits)
    } else {
        Err(format!("EF_ICCID {} holds no ICCID", hex::encode(ef)))
    }
}

/// The IMSI from EF_IMSI's content: a length byte, then a parity nibble and
/// the digits (TS 31.102 §4.2.2).
pub fn decode_imsi(ef: &[u8]) -> Result<String, String> {
    let bad = || format!("EF_IMSI {} holds no IMSI", hex::encode(ef));
    let (&len, rest) = ef.split_first().ok_or_else(bad)?;
    let body = rest.get(..usize::from(len)).ok_or_else(bad)?;
    let digits: String = swapped_digits(body).chars().skip(1).collect();
    if (6..=15).contains(&digits.len()) {
        Ok(digits)
    } else {
        Err(bad())
    }
}

/// One authentication vector, as the network side makes it.
pub struct Challenge {
    pub rand: [u8; 16],
    pub autn: [u8; 16],
    pub xres: [u8; 8],
}

/// A vector for the card of `profile` with sequence number `sqn`.
pub fn challenge(profile: &CardProfile, rand: [u8; 16], sqn: u64) -> Challenge {
    let milenage = Milenage::new(&profile.k, &profile.opc);
    let keys = milenage.f2345(&rand);
    let sqn_bytes: [u8; 6] = std::array::from_fn(|i| sqn.to_be_bytes()[2 + i]);
    let amf = [0x80, 0x00];
    let mac = milenage.f1(&rand, &sqn_bytes, &amf);
    let mut autn = [0u8; 16];
    for i in 0..6 {
        autn[i] = sqn_bytes[i] ^ keys.ak[i];
    }
    autn[6..8].copy_from_slice(&amf);
    autn[8..].copy_from_slice(&mac);
    Challenge {
        rand,
        autn,
        xres: keys.res,
    }
}

/// AUTHENTICATE, 3G context (P2 81): `10 RAND 10 AUTN`.
pub fn authenticate_apdu(c: &Challenge) -> Vec<u8> {
    let mut apdu = vec![0x00, 0x88, 0x00, 0x81, 0x22, 0x10];
    apdu.extend_from_slice(&c.rand);
    apdu.push(0x10);
    apdu.extend_from_slice(&c.autn);
    apdu
}

/// How the card answered AUTHENTICATE.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    /// RES equals the network's XRES.
    Ok,
    /// The card computed another RES: other keys than the profile's.
    WrongRes,
    /// The card saw an old SQN; it holds `sqn_ms` (from AUTS).
    Resync { sqn_ms: u64 },
    /// The card refused AUTN (`98 62`) or answered something else.
    Failed(String),
}

/// Checks the final answer to AUTHENTICATE (after GET RESPONSE).
pub fn check_auth(profile: &CardProfile, c: &Challenge, rapdu: &[u8]) -> AuthOutcome {
    let data = match data_of("AUTHENTICATE", rapdu) {
        Ok(data) => data,
        Err(_) if status_word(rapdu) == 0x9862 => {
            return AuthOutcome::Failed("MAC failure (98 62)".into());
        }
        Err(e) => return AuthOutcome::Failed(e),
    };
    match data {
        [0xDB, 0x08, res @ ..] if res.len() >= 8 => {
            if res[..8] == c.xres {
                AuthOutcome::Ok
            } else {
                AuthOutcome::WrongRes
            }
        }
        [0xDC, 0x0E, auts @ ..] if auts.len() == 14 => {
            let milenage = Milenage::new(&profile.k, &profile.opc);
            let ak_star = milenage.f5_star(&c.rand);
            let sqn_ms = (0..6).fold(0u64, |acc, i| (acc << 8) | u64::from(auts[i] ^ ak_star[i]));
            let sqn_bytes: [u8; 6] = std::array::from_fn(|i| sqn_ms.to_be_bytes()[2 + i]);
            if milenage.f1_star(&c.rand, &sqn_bytes, &[0, 0])[..] == auts[6..] {
                AuthOutcome::Resync { sqn_ms }
            } else {
                AuthOutcome::Failed("AUTS with a wrong MAC-S".into())
            }
        }
        other => AuthOutcome::Failed(format!("unexpected answer {}", hex::encode(other))),
    }
}

#[cfg(test)]
mod tests {
    use simcard::SimCard;
    use simcard::fs::{encode_imsi, swapped_bcd};

    use super::*;

    /// Runs one command against a soft card with the T=0 follow-ups.
    fn transceive(card: &mut SimCard, cmd: &[u8]) -> Vec<u8> {
        let mut cmd = cmd.to_vec();
        loop {
            let rapdu = card.transmit(&cmd);
            match follow_up(&cmd, &rapdu) {
                Some(next) => cmd = next,
                None => return rapdu,
            }
        }
    }

    #[test]
    fn iccid_and_imsi_decode_what_the_card_encodes() {
        let p = CardProfile::generated(7);
        assert_eq!(
            decode_iccid(&swapped_bcd(&p.iccid, 10)),
            Ok(p.iccid.clone())
        );
        assert_eq!(decode_imsi(&encode_imsi(&p.imsi)), Ok(p.imsi.clone()));
        assert_eq!(
            decode_imsi(&encode_imsi("0010112345678")),
            Ok("0010112345678".into())
        );
        assert!(decode_iccid(&[0xFF; 10]).is_err());
        assert!(decode_imsi(&[0x08, 0x09]).is_err());
        assert!(decode_imsi(&[]).is_err());
    }

    #[test]
    fn t0_follow_ups() {
        assert_eq!(
            follow_up(&[0x00, 0x88, 0, 0x81, 1, 2], &[0x61, 0x35]),
            Some(vec![0x00, 0xC0, 0, 0, 0x35])
        );
        assert_eq!(
            follow_up(&READ_IMSI, &[0x6C, 0x08]),
            Some(vec![0x00, 0xB0, 0, 0, 0x08])
        );
        assert_eq!(follow_up(&SELECT_MF, &[0x6C, 0x08]), None);
        assert_eq!(follow_up(&READ_IMSI, &[0x90, 0x00]), None);
    }

    #[test]
    fn a_soft_card_answers_the_demo_as_expected() {
        let p = CardProfile::generated(3);
        let mut card = SimCard::new(p.clone()).unwrap();
        for cmd in [&SELECT_MF[..], &SELECT_ICCID] {
            assert_eq!(status_word(&transceive(&mut card, cmd)), 0x9000);
        }
        let iccid = transceive(&mut card, &READ_ICCID);
        assert_eq!(
            decode_iccid(data_of("ICCID", &iccid).unwrap()),
            Ok(p.iccid.clone())
        );
        for cmd in [&SELECT_USIM[..], &SELECT_IMSI] {
            assert_eq!(status_word(&transceive(&mut card, cmd)), 0x9000);
        }
        let imsi = transceive(&mut card, &READ_IMSI);
        assert_eq!(
            decode_imsi(data_of("IMSI", &imsi).unwrap()),
            Ok(p.imsi.clone())
        );

        let c = challenge(&p, [0x42; 16], 5);
        let answer = transceive(&mut card, &authenticate_apdu(&c));
        assert_eq!(check_auth(&p, &c, &answer), AuthOutcome::Ok);
        // The same SQN again: the card asks for resynchronisation and tells
        // the SQN it holds.
        let c = challenge(&p, [0x43; 16], 5);
        let answer = transceive(&mut card, &authenticate_apdu(&c));
        assert_eq!(
            check_auth(&p, &c, &answer),
            AuthOutcome::Resync { sqn_ms: 5 }
        );
        // Keys of another card: MAC failure.
        let other = CardProfile::generated(4);
        let c = challenge(&other, [0x44; 16], 9);
        let answer = transceive(&mut card, &authenticate_apdu(&c));
        assert!(matches!(
            check_auth(&p, &c, &answer),
            AuthOutcome::Failed(_)
        ));
    }
}

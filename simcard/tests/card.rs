//! The soft SIM at APDU level: every command against known answers, in
//! both the GSM (A0) and the UICC (00/80) class, with T=0 semantics.

use proptest::prelude::*;
use simcard::card::{default_atr, pin_block};
use simcard::fs::{USIM_AID, encode_imsi, swapped_bcd};
use simcard::{CardProfile, SimCard};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).expect("hex")
}

fn card() -> SimCard {
    SimCard::new(CardProfile::generated(7)).expect("valid profile")
}

/// A card with the K/OPc of MILENAGE test set 1.
fn test_set_1_card(pin1_enabled: bool) -> SimCard {
    let mut p = CardProfile::generated(1);
    p.k = h("465b5ce8b199b49faa5f0a2ee238a6bc")
        .try_into()
        .expect("16");
    p.opc = h("cd63cb71954a9f4e48a5994e37a02baf")
        .try_into()
        .expect("16");
    p.pin1_enabled = pin1_enabled;
    SimCard::new(p).expect("valid profile")
}

/// Sends an APDU; returns (data, SW).
fn tx(card: &mut SimCard, apdu: &str) -> (Vec<u8>, u16) {
    let r = card.transmit(&h(apdu));
    assert!(r.len() >= 2, "R-APDU without SW");
    let (data, sw) = r.split_at(r.len() - 2);
    (data.to_vec(), u16::from_be_bytes([sw[0], sw[1]]))
}

/// Sends a case-4 command and fetches its answer with GET RESPONSE.
fn tx_get(card: &mut SimCard, apdu: &str) -> Vec<u8> {
    let (none, sw) = tx(card, apdu);
    assert!(none.is_empty());
    let cla = &apdu[..2];
    let expected_sw1 = if cla == "a0" { 0x9F } else { 0x61 };
    assert_eq!(sw >> 8, expected_sw1, "{apdu}: SW {sw:04x}");
    let len = sw & 0xFF;
    let (data, sw) = tx(card, &format!("{cla}c00000{len:02x}"));
    assert_eq!(sw, 0x9000);
    assert_eq!(data.len(), usize::from(len));
    data
}

#[test]
fn atr_offers_t0_and_has_a_valid_tck() {
    let atr = default_atr();
    assert_eq!(atr[0], 0x3B);
    assert!(atr.len() <= 33);
    assert_eq!(atr[3] & 0x0F, 0, "TD1 announces T=0");
    assert_eq!(atr[1..].iter().fold(0u8, |a, b| a ^ b), 0, "TCK");
    assert_eq!(card().atr(), &atr[..]);
}

#[test]
fn gsm_select_and_get_response() {
    let mut c = card();
    let mf = tx_get(&mut c, "a0a40000023f00");
    assert_eq!(mf.len(), 22);
    assert_eq!(&mf[4..7], &[0x3F, 0x00, 0x01], "FID and type MF");
    assert_eq!(
        (mf[14], mf[15]),
        (3, 2),
        "DFs (TELECOM, GSM, ADF) and EFs (ICCID, DIR) under MF"
    );
    let gsm = tx_get(&mut c, "a0a40000027f20");
    assert_eq!(&gsm[4..7], &[0x7F, 0x20, 0x02]);
    let imsi = tx_get(&mut c, "a0a40000026f07");
    assert_eq!(&imsi[2..7], &[0x00, 0x09, 0x6F, 0x07, 0x04], "size 9, EF");
    assert_eq!(imsi[13], 0x00, "transparent");
    // Wrong P3 on GET RESPONSE: 67xx, data kept for the retry.
    tx(&mut c, "a0a40000026fad");
    assert_eq!(tx(&mut c, "a0c0000020").1, 0x6700);
    assert_eq!(tx(&mut c, "a0c000000f").1, 0x9000);
    assert_eq!(tx(&mut c, "a0a40000026f99").1, 0x9404);
    assert_eq!(tx(&mut c, "a0a40400023f00").1, 0x6B00);
}

#[test]
fn uicc_select_returns_fcp_and_6cxx_on_wrong_le() {
    let mut c = card();
    let (_, sw) = tx(&mut c, "00a40004023f00");
    assert_eq!(sw >> 8, 0x61);
    let len = sw & 0xFF;
    assert_eq!(tx(&mut c, "00c00000ff").1, 0x6C00 | len);
    let (fcp, sw) = tx(&mut c, &format!("00c00000{len:02x}"));
    assert_eq!(sw, 0x9000);
    assert_eq!(fcp[0], 0x62);
    assert_eq!(usize::from(fcp[1]) + 2, fcp.len());
    // P2 = 0C: no data.
    assert_eq!(tx(&mut c, "00a4000c022fe2"), (vec![], 0x9000));
    assert_eq!(tx(&mut c, "00a4000c027f99").1, 0x6A82);
    assert_eq!(tx(&mut c, "00a4050c023f00").1, 0x6A86);
}

#[test]
fn read_iccid_and_imsi() {
    let mut c = card();
    let p = c.profile().clone();
    tx(&mut c, "00a4000c022fe2");
    assert_eq!(
        tx(&mut c, "00b000000a"),
        (swapped_bcd(&p.iccid, 10), 0x9000)
    );
    assert_eq!(tx(&mut c, "00b000000b").1, 0x6C0A);
    assert_eq!(tx(&mut c, "00b0000a01").1, 0x6B00);
    assert_eq!(
        tx(&mut c, "00b0000205"),
        (swapped_bcd(&p.iccid, 10)[2..7].to_vec(), 0x9000)
    );
    // By path from the MF, then from the USIM ADF selected by AID.
    let fcp = tx_get(&mut c, "00a40804047f206f07");
    assert!(fcp.windows(4).any(|w| w == [0x83, 0x02, 0x6F, 0x07]));
    assert_eq!(
        tx(&mut c, "00b0000009"),
        (encode_imsi(&p.imsi).to_vec(), 0x9000)
    );
    let adf = tx_get(&mut c, &format!("00a4040410{}", hex::encode(USIM_AID)));
    assert!(
        adf.windows(USIM_AID.len()).any(|w| w == USIM_AID),
        "AID in FCP"
    );
    tx(&mut c, "00a4000c026f07");
    assert_eq!(
        tx(&mut c, "00b0000009"),
        (encode_imsi(&p.imsi).to_vec(), 0x9000)
    );
    // 7FFF is the current ADF.
    assert_eq!(tx(&mut c, "00a4000c027fff").1, 0x9000);
    // GSM class: wrong P3 is 67xx.
    tx_get(&mut c, "a0a40000023f00");
    tx_get(&mut c, "a0a40000022fe2");
    assert_eq!(tx(&mut c, "a0b000000b").1, 0x6700);
    assert_eq!(tx(&mut c, "a0b000000a").1, 0x9000);
}

#[test]
fn imsi_encoding() {
    assert_eq!(
        hex::encode(encode_imsi("001010000000007")),
        "080910100000000070"
    );
    assert_eq!(
        hex::encode(encode_imsi("26201123456789")),
        "0821261021436587f9"
    );
}

#[test]
fn records_read_and_update() {
    let mut c = card();
    tx(&mut c, "00a4000c022f00");
    let (rec, sw) = tx(&mut c, "00b2010420");
    assert_eq!(sw, 0x9000);
    assert_eq!(&rec[..4], &[0x61, 0x18, 0x4F, 0x10]);
    assert_eq!(&rec[4..20], &USIM_AID);
    assert_eq!(tx(&mut c, "00b2010410").1, 0x6C20);
    assert_eq!(tx(&mut c, "00b2020420").1, 0x6A83);
    // EF_DIR is read-only: ADM.
    let update = format!("00dc010420{}", "00".repeat(32));
    assert_eq!(tx(&mut c, &update).1, 0x6982);
    // EF_ADN: update record 3, read it back, walk with next/previous.
    tx(&mut c, "00a40804047f106f3a");
    let entry = format!("{}{}", hex::encode(b"remsim"), "ff".repeat(26));
    assert_eq!(tx(&mut c, &format!("00dc030420{entry}")).1, 0x9000);
    assert_eq!(tx(&mut c, "00b2030420"), (h(&entry), 0x9000));
    assert_eq!(tx(&mut c, "00b2000220").1, 0x9000, "next = 4");
    assert_eq!(
        tx(&mut c, "00b2000320"),
        (h(&entry), 0x9000),
        "previous = 3"
    );
    assert_eq!(tx(&mut c, "00dc030410ffff").1, 0x6700);
    // READ BINARY on a record file.
    assert_eq!(tx(&mut c, "00b0000010").1, 0x6981);
}

#[test]
fn binary_update_and_access() {
    let mut c = card();
    tx(&mut c, "00a40804047f206f7e");
    assert_eq!(tx(&mut c, "00d6000004 11223344").1, 0x9000);
    assert_eq!(tx(&mut c, "00b0000004"), (h("11223344"), 0x9000));
    assert_eq!(tx(&mut c, "00d6000a0411223344").1, 0x6B00);
    tx(&mut c, "00a4000c022fe2");
    assert_eq!(tx(&mut c, "00d60000021122").1, 0x6982, "ICCID needs ADM");
    tx(&mut c, "00a4000c023f00");
    assert_eq!(tx(&mut c, "00b0000001").1, 0x6986, "no EF selected");
}

#[test]
fn pin_verify_block_unblock_change_disable() {
    let mut p = CardProfile::generated(3);
    p.pin1_enabled = true;
    let mut c = SimCard::new(p).expect("card");
    tx(&mut c, "00a40804047f206f07");
    assert_eq!(tx(&mut c, "00b0000009").1, 0x6982, "PIN needed");
    assert_eq!(tx(&mut c, "0020000100").1, 0x63C3, "3 tries");
    let pin = |d: &str| hex::encode(pin_block(d));
    assert_eq!(tx(&mut c, &format!("0020000108{}", pin("0000"))).1, 0x63C2);
    assert_eq!(tx(&mut c, &format!("0020000108{}", pin("1234"))).1, 0x9000);
    assert_eq!(tx(&mut c, "00b0000009").1, 0x9000);
    assert_eq!(tx(&mut c, "0020000100").1, 0x9000);
    // A reset forgets the verification, not the counter.
    c.reset();
    for expected in [0x63C2, 0x63C1, 0x6983, 0x6983] {
        assert_eq!(
            tx(&mut c, &format!("0020000108{}", pin("9999"))).1,
            expected
        );
    }
    assert_eq!(
        tx(&mut c, &format!("0020000108{}", pin("1234"))).1,
        0x6983,
        "blocked"
    );
    // Wrong PUK, then the right one with a new PIN.
    assert_eq!(
        tx(
            &mut c,
            &format!("002c000110{}{}", pin("00000000"), pin("4321"))
        )
        .1,
        0x63C9
    );
    assert_eq!(
        tx(
            &mut c,
            &format!("002c000110{}{}", pin("12345678"), pin("4321"))
        )
        .1,
        0x9000
    );
    assert_eq!(tx(&mut c, &format!("0020000108{}", pin("4321"))).1, 0x9000);
    // CHANGE, DISABLE, ENABLE.
    assert_eq!(
        tx(&mut c, &format!("0024000110{}{}", pin("4321"), pin("5555"))).1,
        0x9000
    );
    assert_eq!(tx(&mut c, &format!("0026000108{}", pin("5555"))).1, 0x9000);
    assert_eq!(
        tx(&mut c, &format!("0026000108{}", pin("5555"))).1,
        0x6985,
        "already disabled"
    );
    c.reset();
    tx(&mut c, "00a40804047f206f07");
    assert_eq!(tx(&mut c, "00b0000009").1, 0x9000, "disabled PIN");
    assert_eq!(tx(&mut c, &format!("0028000108{}", pin("5555"))).1, 0x9000);
    // GSM class status words.
    c.reset();
    assert_eq!(tx(&mut c, &format!("a020000108{}", pin("0000"))).1, 0x9804);
    assert_eq!(tx(&mut c, &format!("a020000108{}", pin("0000"))).1, 0x9804);
    assert_eq!(tx(&mut c, &format!("a020000108{}", pin("0000"))).1, 0x9840);
    assert_eq!(
        tx(
            &mut c,
            &format!("a02c000010{}{}", pin("12345678"), pin("1111"))
        )
        .1,
        0x9000
    );
    assert_eq!(tx(&mut c, "a02000010412").1, 0x6700);
}

const RAND: &str = "23553cbe9637a89d218ae64dae47bf35";

#[test]
fn run_gsm_algorithm_gives_sres_and_kc() {
    let mut c = test_set_1_card(false);
    let out = tx_get(&mut c, &format!("a088000010{RAND}"));
    assert_eq!(hex::encode(out), "46f8416aeae4be823af9a08b");
    let mut locked = test_set_1_card(true);
    assert_eq!(tx(&mut locked, &format!("a088000010{RAND}")).1, 0x9804);
}

#[test]
fn authenticate_3g_and_gsm_context() {
    let mut c = test_set_1_card(false);
    let autn = "aa689c6483718000f48b60145beacf8e"; // SQN 1, AMF 8000
    let apdu = format!("0088008122 10{RAND} 10{autn}");
    assert_eq!(
        tx(&mut c, &apdu.replace(' ', "")).1,
        0x6985,
        "not in the USIM ADF"
    );
    tx(&mut c, &format!("00a4040c10{}", hex::encode(USIM_AID)));
    let out = tx_get(&mut c, &apdu.replace(' ', ""));
    assert_eq!(
        hex::encode(out),
        "db08a54211d5e3ba50bf10b40ba9a3c58b2a05bbf0d987b21bf8cb10f769bcd751044604127672711c6d344108eae4be823af9a08b"
    );
    assert_eq!(c.profile().sqn, 1);
    // The same AUTN again: SQN not fresh, so AUTS.
    let resync = tx_get(&mut c, &apdu.replace(' ', ""));
    assert_eq!(&resync[..2], &[0xDC, 0x0E]);
    // A forged MAC.
    let forged = format!("008800812210{RAND}10{}", &format!("{}00", &autn[..30]));
    assert_eq!(tx(&mut c, &forged).1, 0x9862);
    // GSM context.
    let gsm = tx_get(&mut c, &format!("008800801110{RAND}"));
    assert_eq!(hex::encode(gsm), "0446f8416a08eae4be823af9a08b");
    assert_eq!(tx(&mut c, &format!("008800811110{RAND}")).1, 0x6A80);
}

#[test]
fn status_and_odd_commands() {
    let mut c = card();
    let fcp = tx_get(&mut c, "00a40004027f20");
    let len = fcp.len();
    assert_eq!(
        tx(&mut c, &format!("80f20000{len:02x}")),
        (fcp.clone(), 0x9000)
    );
    assert_eq!(tx(&mut c, "80f2000000").1, 0x6C00 | len as u16);
    assert_eq!(tx(&mut c, "80f2000c00"), (vec![], 0x9000));
    let (gsm, sw) = tx(&mut c, "a0f2000016");
    assert_eq!((gsm.len(), sw), (22, 0x9000));
    assert_eq!(tx(&mut c, "00ee000000").1, 0x6D00);
    assert_eq!(tx(&mut c, "40a4000000").1, 0x6E00);
    assert_eq!(tx(&mut c, "00a4").1, 0x6700);
    assert_eq!(tx(&mut c, "00a4000002").1, 0x6700, "Lc without data");
    assert_eq!(tx(&mut c, "8010000003112233").1, 0x9000, "TERMINAL PROFILE");
    assert_eq!(tx(&mut c, "00c0000010").1, 0x6985, "nothing pending");
}

proptest! {
    /// Arbitrary APDUs never panic and always end with a status word; the
    /// card keeps working afterwards.
    #[test]
    fn arbitrary_apdus(apdus in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..30)) {
        let mut c = card();
        for apdu in &apdus {
            prop_assert!(c.transmit(apdu).len() >= 2);
        }
        c.reset();
        prop_assert_eq!(tx(&mut c, "00a4000c022fe2").1, 0x9000);
    }
}

//! The soft SIM behind a real pcscd: pcscd with the vsmartcard vpcd driver
//! runs in a private mount and network namespace (its socket path and
//! ports are fixed), `remsim-vcard` serves two cards, and the `pcsc` crate
//! reads them as any PC/SC application would.
//!
//! Needs root (for the namespaces) and the Debian packages pcscd,
//! vsmartcard-vpcd and iproute2, which `.ci/run` installs.

use std::ffi::CString;
use std::path::Path;

use pcsc::{Card, Context, Protocols, Scope, ShareMode};
use remsim_testing::{delayed_acks, pcscd, spawn_quiet};
use simcard::CardProfile;
use simcard::card::default_atr;
use simcard::fs::{USIM_AID, encode_imsi, swapped_bcd};
use simcard::milenage::Milenage;

const INNER: &str = "REMSIM_PCSC_TEST_INNER";
const FIRST_CARD: u32 = 100;

fn reader(slot: u8) -> CString {
    CString::new(format!("Virtual PCD 00 {slot:02X}")).expect("name")
}

/// The card in reader `slot`, once pcscd reports one there.
fn connect(slot: u8) -> Card {
    let name = reader(slot);
    pcscd::wait_card(name.to_str().expect("name"), true);
    Context::establish(Scope::User)
        .expect("context")
        .connect(&name, ShareMode::Shared, Protocols::T0)
        .expect("a card in the reader")
}

fn tx(card: &Card, apdu: &[u8]) -> (Vec<u8>, u16) {
    let mut buf = [0u8; 300];
    let r = card.transmit(apdu, &mut buf).expect("transmit");
    let (data, sw) = r.split_at(r.len() - 2);
    (data.to_vec(), u16::from_be_bytes([sw[0], sw[1]]))
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

/// Reads the card and authenticates with `sqn`, which must be fresh: the
/// card remembers the highest SQN it accepted.
fn check_card(card: &Card, profile: &CardProfile, sqn: u8) {
    let status = card.status2_owned().expect("status");
    assert_eq!(status.atr(), &default_atr()[..]);
    // ICCID under the MF.
    assert_eq!(tx(card, &h("00a4000c022fe2")).1, 0x9000);
    assert_eq!(
        tx(card, &h("00b000000a")),
        (swapped_bcd(&profile.iccid, 10), 0x9000)
    );
    // IMSI in the USIM application.
    let mut select_adf = h("00a4040c10");
    select_adf.extend_from_slice(&USIM_AID);
    assert_eq!(tx(card, &select_adf).1, 0x9000);
    assert_eq!(tx(card, &h("00a4000c026f07")).1, 0x9000);
    assert_eq!(
        tx(card, &h("00b0000009")),
        (encode_imsi(&profile.imsi).to_vec(), 0x9000)
    );
    // AUTHENTICATE with a vector the network side builds (AMF 8000).
    let network = Milenage::new(&profile.k, &profile.opc);
    let rand = [0x42u8; 16];
    let keys = network.f2345(&rand);
    let sqn = [0, 0, 0, 0, 0, sqn];
    let mut autn: Vec<u8> = sqn.iter().zip(keys.ak).map(|(s, a)| s ^ a).collect();
    autn.extend_from_slice(&[0x80, 0x00]);
    autn.extend_from_slice(&network.f1(&rand, &sqn, &[0x80, 0x00]));
    let mut auth = h("0088008122");
    auth.push(16);
    auth.extend_from_slice(&rand);
    auth.push(16);
    auth.extend_from_slice(&autn);
    let (_, sw) = tx(card, &auth);
    assert_eq!(sw, 0x6135, "T=0: the answer waits for GET RESPONSE");
    let (answer, sw) = tx(card, &h("00c0000035"));
    assert_eq!(sw, 0x9000);
    assert_eq!(&answer[..2], &[0xDB, 0x08]);
    assert_eq!(&answer[2..10], &keys.res);
    assert_eq!(&answer[11..27], &keys.ck);
    // GSM class through the same reader.
    assert_eq!(tx(card, &h("a0a40000023f00")).1, 0x9F16);
}

/// 100 APDUs through pcscd and vpcd. An exchange that waits for a delayed
/// ACK (about 40 ms each) shows up in the namespace's DelayedACKs counter;
/// with the card's quick ACKs it stays near zero. Counted, not timed.
fn apdus_do_not_wait_for_delayed_acks(card: &Card) {
    let before = delayed_acks();
    for _ in 0..100 {
        assert_eq!(tx(card, &h("00a4000c023f00")).1, 0x9000);
    }
    let delayed = delayed_acks() - before;
    eprintln!("100 APDUs through pcscd + vpcd + remsim-vcard: {delayed} delayed ACKs");
    assert!(
        delayed < 20,
        "{delayed} delayed ACKs in 100 APDUs: the exchanges wait for them"
    );
}

fn inside_namespace() {
    let dir = std::env::temp_dir().join(format!("simcard-pcsc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let pcscd = pcscd::start(&dir, "pcscd.log");
    let first = FIRST_CARD.to_string();
    let vcard = spawn_quiet(
        Path::new(env!("CARGO_BIN_EXE_remsim-vcard")),
        &["--generate", "2", "--first", &first],
    );

    let profiles = CardProfile::generate(FIRST_CARD, 2);
    for (slot, profile) in profiles.iter().enumerate() {
        check_card(&connect(slot as u8), profile, 1);
    }
    apdus_do_not_wait_for_delayed_acks(&connect(0));

    // pcscd restarts: the cards come back by themselves.
    drop(pcscd);
    let _pcscd = pcscd::start(&dir, "pcscd-2.log");
    check_card(&connect(0), &profiles[0], 2);

    // remsim-vcard goes away: the reader reports no card.
    drop(vcard);
    pcscd::wait_card(reader(0).to_str().expect("name"), false);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn soft_sim_in_a_real_pcsc_reader() {
    if pcscd::in_namespace("soft_sim_in_a_real_pcsc_reader", INNER) {
        inside_namespace();
    }
}

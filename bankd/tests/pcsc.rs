//! remsim-bankd on real PC/SC: pcscd with the vsmartcard vpcd driver in a
//! private mount and network namespace, soft SIMs served to vpcd by this
//! test, the slot file naming the vpcd readers, a simulated server and a
//! simulated client; a card is pulled out and another put in. Needs root
//! and the Debian packages pcscd, vsmartcard-vpcd and iproute2 (`.ci/run`
//! installs them).

mod common;

use common::*;
use remsim_testing::pcscd;
use remsim_vcard::vpcd::{self, Retry};
use rspro::{BankSlot, ClientSlot, Msg, ResultCode, RsproPdu, SlotPhysStatus};
use simcard::card::default_atr;
use simcard::fs::swapped_bcd;
use simcard::{CardProfile, SimCard};

const INNER: &str = "REMSIM_BANKD_PCSC_TEST_INNER";
const B0: BankSlot = BankSlot {
    bank_id: 1,
    slot_nr: 0,
};
const C23: ClientSlot = ClientSlot {
    client_id: 23,
    slot_nr: 0,
};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

/// Serves a soft SIM to vpcd slot `slot` until the task is aborted.
fn insert_card(slot: u16, profile: CardProfile) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut card = SimCard::new(profile).expect("card");
        let addr = format!("127.0.0.1:{}", vpcd::DEFAULT_PORT + slot);
        vpcd::run(&addr, &mut card, Retry::default()).await;
    })
}

async fn inside_namespace() {
    let dir = std::env::temp_dir().join(format!("bankd-pcsc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let _pcscd = pcscd::start(&dir, "pcscd.log");
    let profiles = CardProfile::generate(0, 3);
    let mut card0 = insert_card(0, profiles[0].clone());
    let _card1 = insert_card(1, profiles[1].clone());

    let slots = dir.join("bankd_pcsc_slots.csv");
    std::fs::write(
        &slots,
        "\"1\",\"0\",\"Virtual PCD 00 00\"\n\"1\",\"1\",\"Virtual PCD 00 01\"\n",
    )
    .expect("slot file");
    let sim = SimServer::new().await;
    let slot_file = slots.to_string_lossy().into_owned();
    let bankd = Bankd::start(
        sim.port,
        &[
            "-n",
            "2",
            "--slot-file",
            &slot_file,
            "--card-retry",
            "300ms",
        ],
    )
    .await;
    let (mut server, ..) = sim.accept().await;
    assert_eq!(map(&mut server, B0, C23).await, ResultCode::Ok);

    // The card in reader "Virtual PCD 00 00" reaches the client through PC/SC.
    reader_state("Virtual PCD 00 00", true).await;
    reader_state("Virtual PCD 00 01", true).await;
    let (mut client, result) = client(&bankd, C23).await;
    assert_eq!(result, ResultCode::Ok);
    assert_eq!(expect_atr(&mut client, C23).await, default_atr());
    assert_eq!(
        apdu(&mut client, C23, B0, &h("a0a40000023f00")).await,
        h("9f16")
    );
    let gsm = apdu(&mut client, C23, B0, &h("a0c0000016")).await;
    assert_eq!((gsm.len(), &gsm[4..6]), (24, &[0x3F, 0x00][..]));
    assert_eq!(
        apdu(&mut client, C23, B0, &h("00a4000c022fe2")).await,
        h("9000")
    );
    let iccid = apdu(&mut client, C23, B0, &h("00b000000a")).await;
    assert_eq!(iccid[..10], swapped_bcd(&profiles[0].iccid, 10)[..]);

    // VCC off: a cold reset through SCardReconnect, and the ATR again.
    let status = |rst, vcc| {
        RsproPdu::client_slot_status_ind(C23, B0, SlotPhysStatus::new(rst, vcc, vcc, true))
    };
    client.send(&status(true, false)).await;
    assert_eq!(expect_atr(&mut client, C23).await, default_atr());

    // The card is pulled out: once pcscd has seen it go, the next APDU
    // gets one ErrorInd naming the error (never silence, never garbage).
    card0.abort();
    let _ = (&mut card0).await;
    reader_state("Virtual PCD 00 00", false).await;
    let error = match apdu_msg(&mut client, &h("a0a40000023f00")).await {
        Msg::ErrorInd(e) => e,
        other => panic!("ErrorInd expected, got {other:?}"),
    };
    assert_eq!((error.bank_slot, error.client_slot), (Some(B0), Some(C23)));
    let text = error.error_string.unwrap_or_default();
    assert!(text.starts_with("card"), "{text}");
    // Another card goes into the reader: the bankd, retrying the slot
    // every 300 ms without telling the client again, opens it and the
    // client gets its ATR (the card inserted) and reads the new card.
    let _card0 = insert_card(0, profiles[2].clone());
    assert_eq!(expect_atr(&mut client, C23).await, default_atr());
    assert_eq!(
        apdu(&mut client, C23, B0, &h("00a4000c022fe2")).await,
        h("9000")
    );
    let iccid = apdu(&mut client, C23, B0, &h("00b000000a")).await;
    assert_eq!(iccid[..10], swapped_bcd(&profiles[2].iccid, 10)[..]);

    // The other reader works beside it.
    assert_eq!(
        map(&mut server, BankSlot::new(1, 1), ClientSlot::new(24, 0)).await,
        ResultCode::Ok
    );
    let (mut other, result) = common::client(&bankd, ClientSlot::new(24, 0)).await;
    assert_eq!(result, ResultCode::Ok);
    expect_atr(&mut other, ClientSlot::new(24, 0)).await;
    let iccid = apdu(
        &mut other,
        ClientSlot::new(24, 0),
        BankSlot::new(1, 1),
        &h("00a4000c022fe2"),
    )
    .await;
    assert_eq!(iccid, h("9000"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until pcscd reports a card in `reader` (or none), off the runtime.
async fn reader_state(reader: &'static str, present: bool) {
    tokio::task::spawn_blocking(move || pcscd::wait_card(reader, present))
        .await
        .expect("status wait");
}

/// Sends a TPDU and returns whatever answers it.
async fn apdu_msg(client: &mut Peer, data: &[u8]) -> Msg {
    client
        .send(&RsproPdu::tpdu_modem_to_card(C23, B0, data.to_vec()))
        .await;
    client.recv().await.msg
}

#[test]
fn bankd_serves_cards_from_a_real_pcscd() {
    if pcscd::in_namespace("bankd_serves_cards_from_a_real_pcscd", INNER) {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(inside_namespace());
    }
}

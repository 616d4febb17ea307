//! The vpcd frontend with a real pcscd: inside a private mount and network
//! namespace run pcscd (vsmartcard vpcd driver), our server, our bankd with
//! soft SIMs and `remsim-client vpcd`; a PC/SC application (the `pcsc`
//! crate) then reads the remote card's ICCID and IMSI through the local
//! "Virtual PCD 00 00" reader, and sees the card go when the client stops
//! on SIGTERM. Needs root and pcscd, vsmartcard-vpcd,
//! iproute2 (`.ci/run` installs them).

use std::ffi::CString;
use std::path::Path;

use pcsc::{Context, Protocols, Scope, ShareMode};
use remsim_api::v1 as pb;
use remsim_api::v1::remsim_service_client::RemsimServiceClient;
use remsim_testing::{delayed_acks, pcscd, spawn_quiet, start_server, start_soft_bankd};
use simcard::CardProfile;
use simcard::card::default_atr;
use simcard::fs::{USIM_AID, encode_imsi, swapped_bcd};

const INNER: &str = "REMSIM_CLIENT_VPCD_TEST_INNER";

fn tx(card: &pcsc::Card, apdu: &str) -> Vec<u8> {
    let mut buf = [0u8; 300];
    card.transmit(&hex::decode(apdu).expect("hex"), &mut buf)
        .expect("transmit")
        .to_vec()
}

fn inside_namespace() {
    let dir = std::env::temp_dir().join(format!("client-vpcd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let _pcscd = pcscd::start(&dir, "pcscd.log");

    // Default ports: this test has its own network namespace.
    let _server = start_server(&dir.join("remsim.db"), 9998, 9997, &[]);
    let _bankd = start_soft_bankd(9998, 1, 2, 9999, &[]);
    let mut client = spawn_quiet(
        Path::new(env!("CARGO_BIN_EXE_remsim-client")),
        &["-i", "127.0.0.1", "-c", "23", "-n", "0", "vpcd"],
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        // start_server returns once the server listens.
        let mut api = RemsimServiceClient::connect("http://127.0.0.1:9997")
            .await
            .expect("the API");
        let req = pb::CreateSlotmapRequest::new((1, 0), (23, 0));
        api.create_slotmap(req).await.expect("map");
    });

    let reader = CString::new("Virtual PCD 00 00").expect("name");
    // The card appears once the bankd's ATR arrived; until then vpcd may
    // see the default ATR 3B 00 for a moment.
    pcscd::wait_reader("Virtual PCD 00 00", |state, atr| {
        state.contains(pcsc::State::PRESENT) && atr == default_atr()
    });
    let card = Context::establish(Scope::User)
        .expect("context")
        .connect(&reader, ShareMode::Shared, Protocols::T0 | Protocols::T1)
        .expect("the remote card in the local reader");
    let profile = CardProfile::generated(1024);
    assert_eq!(tx(&card, "00a4000c022fe2"), vec![0x90, 0x00]);
    let iccid = tx(&card, "00b000000a");
    assert_eq!(iccid[..10], swapped_bcd(&profile.iccid, 10)[..]);
    assert_eq!(
        tx(&card, &format!("00a4040c10{}", hex::encode(USIM_AID))),
        vec![0x90, 0x00]
    );
    assert_eq!(tx(&card, "00a4000c026f07"), vec![0x90, 0x00]);
    let imsi = tx(&card, "00b0000009");
    assert_eq!(imsi[..9], encode_imsi(&profile.imsi)[..]);

    // 100 APDUs through pcscd, vpcd, the client, the bankd and back. An
    // exchange that waits for a delayed ACK (about 40 ms each) shows up in
    // the namespace's DelayedACKs counter; without such waits it stays near
    // zero. Counted, not timed.
    let before = delayed_acks();
    for _ in 0..100 {
        assert_eq!(tx(&card, "00a4000c026f07"), vec![0x90, 0x00]);
    }
    let delayed = delayed_acks() - before;
    eprintln!(
        "100 APDUs through pcscd + vpcd + remsim-client + remsim-bankd: {delayed} delayed ACKs"
    );
    assert!(
        delayed < 20,
        "{delayed} delayed ACKs in 100 APDUs: the exchanges wait for them"
    );

    // SIGTERM: the client ends its links, takes its card out of vpcd and
    // exits 0; PC/SC applications see the card gone.
    drop(card);
    let status = client.terminate();
    assert!(status.success(), "remsim-client exit status {status}");
    pcscd::wait_card("Virtual PCD 00 00", false);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pcsc_application_reads_the_remote_sim_through_vpcd() {
    if pcscd::in_namespace("pcsc_application_reads_the_remote_sim_through_vpcd", INNER) {
        inside_namespace();
    }
}

//! The driver in a real pcscd: inside a private mount and network
//! namespace, `scripts/install-ifd` installs the bundle this build made
//! with its reader.conf.d entry, beside more entries sharing the library;
//! our server and our bankd with soft SIMs serve the cards. Through the
//! `pcsc` crate an application reads the ICCIDs of two remote cards in two
//! local readers, sees a card vanish when its map is deleted and come back
//! when it is recreated, and again across a bankd restart; a server outage
//! leaves it in place. An APDU the bankd leaves unanswered fails within its
//! bound and the card comes back with the bankd. A DEVICENAME without port
//! and an unreachable server do not harm pcscd, nor does pcscd closing our
//! readers (a close during an APDU: tests/close.rs). Needs root, pcscd,
//! vsmartcard-vpcd (the namespace helper checks for it) and iproute2
//! (`.ci/run` installs them).

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Command;

use pcsc::{Card, Context, Protocols, Scope, ShareMode};
use remsim_api::v1 as pb;
use remsim_api::v1::remsim_service_client::RemsimServiceClient;
use remsim_testing::{exit_status, pcscd, start_server, start_soft_bankd};
use simcard::CardProfile;
use simcard::card::default_atr;
use simcard::fs::swapped_bcd;
use tonic::transport::Channel;

const INNER: &str = "REMSIM_IFD_PCSCD_TEST_INNER";
/// SELECT EF.ICCID under the MF, READ BINARY of its 10 bytes.
const SELECT_ICCID: &str = "00a4000c022fe2";
const READ_ICCID: &str = "00b000000a";

/// The driver this test run built (a cdylib of this package): cargo test
/// leaves it beside the test binary in deps/; cargo build also in the
/// profile's folder.
fn driver() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let deps = exe.parent().expect("deps folder");
    let candidates = [
        deps.to_path_buf(),
        deps.parent().expect("profile folder").to_path_buf(),
    ];
    candidates
        .iter()
        .map(|dir| dir.join("libifd_remsim_client.so"))
        .find(|so| so.exists())
        .unwrap_or_else(|| {
            panic!("libifd_remsim_client.so not in {candidates:?}: cargo build -p remsim-ifd")
        })
}

/// Installs the driver under `root` as an operator would, with the entry
/// for client 23:0, and adds entries that share its library.
fn install(root: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let so = driver();
    let out = Command::new(repo.join("scripts/install-ifd"))
        .arg("--so")
        .arg(&so)
        .arg("--prefix")
        .arg(root.join("usr"))
        .arg("--sysconfdir")
        .arg(root.join("etc"))
        .args(["--device", "23:0:127.0.0.1:9998"])
        .output()
        .expect("install-ifd runs");
    assert!(out.status.success(), "install-ifd: {out:?}");
    let serial = root.join("usr/lib/pcsc/drivers/serial");
    let plist =
        std::fs::read_to_string(serial.join("libifd-remsim-client.bundle/Contents/Info.plist"))
            .expect("Info.plist");
    assert!(
        plist.contains("<string>libifd_remsim_client.so</string>"),
        "{plist}"
    );
    let libpath = serial.join("libifd_remsim_client.so");
    assert_eq!(
        std::fs::read(&libpath).expect("LIBPATH resolves"),
        std::fs::read(&so).expect("the built driver")
    );
    let conf = root.join("etc/reader.conf.d");
    let entry = |file: &str, name: &str, device: &str| {
        let text = format!(
            "FRIENDLYNAME \"{name}\"\nDEVICENAME {device}\nLIBPATH {}\n",
            libpath.display()
        );
        std::fs::write(conf.join(file), text).expect("reader.conf entry");
    };
    // Client 24:0: a second reader of the same library.
    entry("remsim-b", "remsim B", "24:0:127.0.0.1:9998");
    // No port: the C handler crashed pcscd here; ours takes 9998.
    entry("remsim-c", "remsim noport", "25:0:127.0.0.1");
    // Nobody listens on port 1.
    entry("remsim-d", "remsim unreachable", "26:0:127.0.0.1:1");
    conf
}

/// The name pcscd gave the reader of `friendly` ("<name> RR SS").
fn reader(friendly: &str) -> String {
    let ctx = Context::establish(Scope::System).expect("PC/SC context");
    let names = ctx.list_readers_owned().expect("readers");
    names
        .iter()
        .map(|n| n.to_string_lossy().into_owned())
        .find(|n| n.strip_prefix(friendly).is_some_and(|rest| rest.len() == 6))
        .unwrap_or_else(|| panic!("no reader {friendly:?} in {names:?}"))
}

/// Connects to the card in `reader` once pcscd shows it with the bank's ATR.
fn card(reader: &str) -> Card {
    pcscd::wait_reader(reader, |state, atr| {
        state.contains(pcsc::State::PRESENT) && atr == default_atr()
    });
    let name = CString::new(reader).expect("name");
    Context::establish(Scope::User)
        .expect("context")
        .connect(&name, ShareMode::Shared, Protocols::T0 | Protocols::T1)
        .expect("the remote card in the local reader")
}

fn tx(card: &Card, apdu: &str) -> Result<Vec<u8>, pcsc::Error> {
    let mut buf = [0u8; 300];
    card.transmit(&hex::decode(apdu).expect("hex"), &mut buf)
        .map(<[u8]>::to_vec)
}

/// The ICCID the card in `card` holds, checked against bank card `index`.
fn assert_iccid(card: &Card, index: u32) {
    assert_eq!(tx(card, SELECT_ICCID).expect("SELECT"), vec![0x90, 0x00]);
    let answer = tx(card, READ_ICCID).expect("READ BINARY");
    let profile = CardProfile::generated(index);
    assert_eq!(answer[..10], swapped_bcd(&profile.iccid, 10)[..]);
    assert_eq!(answer[10..], [0x90, 0x00]);
}

async fn map(api: &mut RemsimServiceClient<Channel>, bank: (u32, u32), client: (u32, u32)) {
    api.create_slotmap(pb::CreateSlotmapRequest::new(bank, client))
        .await
        .expect("map created");
}

fn inside_namespace() {
    let dir = std::env::temp_dir().join(format!("ifd-pcscd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let conf = install(&dir);

    // Default ports: this test has its own network namespace.
    let mut server = start_server(&dir.join("remsim.db"), 9998, 9997, &[]);
    let mut bankd = start_soft_bankd(9998, 1, 2, 9999, &[]);
    let mut pcscd = pcscd::start_conf(
        &conf,
        &dir.join("pcscd.log"),
        &[
            ("REMSIM_IFD_APDU_TIMEOUT", "2s"),
            ("REMSIM_IFD_LOG", "debug"),
        ],
    );
    let (a, b) = (reader("remsim-client"), reader("remsim B"));
    let noport = reader("remsim noport");
    let unreachable = reader("remsim unreachable");

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut api = rt.block_on(async {
        let mut api = RemsimServiceClient::connect("http://127.0.0.1:9997")
            .await
            .expect("the API");
        // Every reader's client reached the server, the one without a port too.
        remsim_testing::watch::until(&mut api, |m| {
            m.client_connected(23, 0) && m.client_connected(24, 0) && m.client_connected(25, 0)
        })
        .await;
        api
    });
    // Connected, but no map: no card.
    pcscd::wait_card(&a, false);

    // A map: the card appears with the bank's ATR; two readers, two cards.
    rt.block_on(map(&mut api, (1, 0), (23, 0)));
    rt.block_on(map(&mut api, (1, 1), (24, 0)));
    let card_a = card(&a);
    assert_iccid(&card_a, 1024);
    assert_iccid(&card(&b), 1025);

    // The map deleted: the card goes; recreated: it is back.
    rt.block_on(async {
        let req = pb::DeleteSlotmapRequest {
            key: Some(pb::delete_slotmap_request::Key::Bank(pb::BankSlot {
                bank_id: 1,
                slot_nr: 0,
            })),
        };
        api.delete_slotmap(req).await.expect("map deleted");
    });
    pcscd::wait_card(&a, false);
    assert!(tx(&card_a, SELECT_ICCID).is_err(), "the old card is gone");
    drop(card_a);
    rt.block_on(map(&mut api, (1, 0), (23, 0)));
    assert_iccid(&card(&a), 1024);

    // A bankd restart: the card goes with it and comes back by itself.
    bankd.terminate();
    pcscd::wait_card(&a, false);
    let bankd = start_soft_bankd(9998, 1, 2, 9999, &[]);
    let card_a = card(&a);
    assert_iccid(&card_a, 1024);

    // A server outage: APDUs do not pass the server, so the card stays;
    // the client reconnects by itself when the server is back.
    server.terminate();
    assert_iccid(&card_a, 1024);
    let _server = start_server(&dir.join("remsim.db"), 9998, 9997, &[]);
    rt.block_on(async {
        let mut api = RemsimServiceClient::connect("http://127.0.0.1:9997")
            .await
            .expect("the API");
        remsim_testing::watch::until(&mut api, |m| m.client_connected(23, 0)).await;
    });
    assert_iccid(&card_a, 1024);

    // Unreachable server: a reader without a card, pcscd unharmed.
    pcscd::wait_card(&unreachable, false);
    pcscd::wait_card(&noport, false);

    // An APDU the bankd leaves unanswered (stopped): after
    // REMSIM_IFD_APDU_TIMEOUT (2 s here) the application gets an error and
    // the card goes; once the bankd runs again and its late answer has come
    // (and been dropped), the card is back by itself.
    let pid = bankd.0.id().to_string();
    let signal = |signal: &str| {
        let ok = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill {signal} {pid}");
    };
    signal("-STOP");
    assert!(tx(&card_a, SELECT_ICCID).is_err(), "no answer for the APDU");
    pcscd::wait_card(&a, false);
    drop(card_a);
    signal("-CONT");
    // It outlives pcscd: an application's SCardDisconnect racing pcscd's
    // own shutdown crashes pcscd 1.9.9 whatever the driver (seen here:
    // SIGSEGV after RFCleanupReaders), which is not what this test is about.
    let card_a = card(&a);
    assert_iccid(&card_a, 1024);

    // SIGINT: pcscd closes every reader before it exits (on SIGTERM it
    // exits at once, closing nothing).
    let int = Command::new("kill")
        .args(["-INT", &pcscd.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(int.success());
    let status = exit_status(&mut pcscd.0, "SIGINT");
    // pcscd's exit code after SIGINT is 1; a crash would be a signal.
    assert!(
        status.code().is_some(),
        "pcscd ended with {status}: see its log"
    );
    drop(card_a);
    let log = std::fs::read_to_string(dir.join("pcscd.log")).expect("pcscd log");
    assert!(log.contains("remsim reader closed"), "{log}");
    // pcscd waits for card events in the driver and lets it go on close.
    assert!(log.contains("Using the reader polling thread"), "{log}");
    assert!(log.contains("Request stopping of polling thread"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pcsc_applications_use_remote_cards_through_the_driver() {
    if pcscd::in_namespace(
        "pcsc_applications_use_remote_cards_through_the_driver",
        INNER,
    ) {
        inside_namespace();
    }
}

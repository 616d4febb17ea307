//! remsim-bankd on real PC/SC: pcscd with the vsmartcard vpcd driver in a
//! private mount and network namespace, soft SIMs served to vpcd by this
//! test, the slot file naming the vpcd readers, a simulated server and a
//! simulated client. Needs root and the Debian packages pcscd,
//! vsmartcard-vpcd and iproute2 (`.ci/run` installs them).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use rspro::{BankSlot, ClientSlot, Msg, ResultCode, RsproPdu, SlotPhysStatus};
use simcard::card::default_atr;
use simcard::fs::swapped_bcd;
use simcard::vpcd::{self, Retry};
use simcard::{CardProfile, SimCard};

const INNER: &str = "REMSIM_BANKD_PCSC_TEST_INNER";
const VPCD_DRIVER: &str = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";
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

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(status.success(), "{cmd} {args:?}: {status}");
}

fn start_pcscd(dir: &Path) -> Kill {
    let conf = dir.join("reader.conf.d");
    std::fs::create_dir_all(&conf).expect("conf dir");
    std::fs::write(
        conf.join("vpcd"),
        format!("FRIENDLYNAME \"Virtual PCD\"\nDEVICENAME /dev/null:0x8C7B\nLIBPATH {VPCD_DRIVER}\nCHANNELID 0x8C7B\n"),
    )
    .expect("reader conf");
    let log = std::fs::File::create(dir.join("pcscd.log")).expect("log");
    let child = Command::new("pcscd")
        .args(["-f", "-d", "-c"])
        .arg(&conf)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("pcscd starts");
    let start = std::time::Instant::now();
    while !Path::new("/run/pcscd/pcscd.comm").exists() {
        assert!(start.elapsed() < GUARD, "pcscd socket missing");
        std::thread::sleep(Duration::from_millis(50));
    }
    Kill(child)
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
    assert!(
        std::fs::read_link("/proc/self/ns/mnt").ok() != std::fs::read_link("/proc/1/ns/mnt").ok(),
        "refusing to mount over the host's /run/pcscd"
    );
    run("mkdir", &["-p", "/run/pcscd"]);
    run("mount", &["-t", "tmpfs", "tmpfs", "/run/pcscd"]);
    run("ip", &["link", "set", "lo", "up"]);
    let dir = std::env::temp_dir().join(format!("bankd-pcsc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let _pcscd = start_pcscd(&dir);
    let profiles = CardProfile::generate(0, 2);
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
    let (mut client, result) = until_connected(&bankd).await;
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

    // The card is pulled: the next APDU gets an ErrorInd naming the error
    // (never silence). Reinsertion is covered by the session's unit tests:
    // Debian's vpcd does not take a new card on a slot whose card vanished
    // in the middle of an APDU.
    card0.abort();
    let _ = (&mut card0).await;
    let error = loop {
        client
            .send(&RsproPdu::tpdu_modem_to_card(C23, B0, h("a0a40000023f00")))
            .await;
        let pdu = client.recv().await;
        match pdu.msg {
            Msg::ErrorInd(e) => break e,
            Msg::TpduCardToModem(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!((error.bank_slot, error.client_slot), (Some(B0), Some(C23)));
    let text = error.error_string.unwrap_or_default();
    assert!(text.starts_with("card"), "{text}");
    // The bankd keeps the client and retries; the other reader still works.
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

/// The first client connection that finds the card (pcscd may still be
/// detecting it).
async fn until_connected(bankd: &Bankd) -> (Peer, ResultCode) {
    let start = std::time::Instant::now();
    loop {
        let (p, result) = client(bankd, C23).await;
        if result == ResultCode::Ok || start.elapsed() > GUARD {
            return (p, result);
        }
        drop(p);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn bankd_serves_cards_from_a_real_pcscd() {
    if std::env::var_os(INNER).is_some() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        return rt.block_on(inside_namespace());
    }
    for tool in ["pcscd", "unshare", "ip", "mount", "timeout"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "{tool} is missing: install pcscd, vsmartcard-vpcd and iproute2 (see .ci/run)"
        );
    }
    assert!(
        Path::new(VPCD_DRIVER).exists(),
        "{VPCD_DRIVER} is missing: install vsmartcard-vpcd"
    );
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new("timeout")
        .args(["120", "unshare", "-m", "-n", "--propagation", "private"])
        .arg(exe)
        .args([
            "--exact",
            "bankd_serves_cards_from_a_real_pcscd",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER, "1")
        .output()
        .expect("unshare runs");
    assert!(
        out.status.success(),
        "the test inside the namespace failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

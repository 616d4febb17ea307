//! The vpcd frontend with a real pcscd: inside a private mount and network
//! namespace run pcscd (vsmartcard vpcd driver), our server, our bankd with
//! soft SIMs and `remsim-client vpcd`; a PC/SC application (the `pcsc`
//! crate) then reads the remote card's ICCID and IMSI through the local
//! "Virtual PCD 00 00" reader. Needs root and pcscd, vsmartcard-vpcd,
//! iproute2 (`.ci/run` installs them).

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pcsc::{Context, Protocols, Scope, ShareMode};
use remsim_api::v1 as pb;
use remsim_api::v1::remsim_service_client::RemsimServiceClient;
use simcard::CardProfile;
use simcard::card::default_atr;
use simcard::fs::{USIM_AID, encode_imsi, swapped_bcd};

const INNER: &str = "REMSIM_CLIENT_VPCD_TEST_INNER";
const VPCD_DRIVER: &str = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";
const GUARD: Duration = Duration::from_secs(20);

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} missing: build the workspace first",
        path.display()
    );
    path
}

fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(status.success(), "{cmd} {args:?}: {status}");
}

fn spawn(path: &Path, args: &[&str]) -> Proc {
    Proc(
        Command::new(path)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts"),
    )
}

fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < GUARD, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tx(card: &pcsc::Card, apdu: &str) -> Vec<u8> {
    let mut buf = [0u8; 300];
    card.transmit(&hex::decode(apdu).expect("hex"), &mut buf)
        .expect("transmit")
        .to_vec()
}

fn inside_namespace() {
    assert!(
        std::fs::read_link("/proc/self/ns/mnt").ok() != std::fs::read_link("/proc/1/ns/mnt").ok(),
        "refusing to mount over the host's /run/pcscd"
    );
    run("mkdir", &["-p", "/run/pcscd"]);
    run("mount", &["-t", "tmpfs", "tmpfs", "/run/pcscd"]);
    run("ip", &["link", "set", "lo", "up"]);
    let dir = std::env::temp_dir().join(format!("client-vpcd-{}", std::process::id()));
    let conf = dir.join("reader.conf.d");
    std::fs::create_dir_all(&conf).expect("dir");
    std::fs::write(
        conf.join("vpcd"),
        format!("FRIENDLYNAME \"Virtual PCD\"\nDEVICENAME /dev/null:0x8C7B\nLIBPATH {VPCD_DRIVER}\nCHANNELID 0x8C7B\n"),
    )
    .expect("conf");
    let _pcscd = Proc(
        Command::new("pcscd")
            .args(["-f", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pcscd"),
    );
    until("pcscd", || {
        Path::new("/run/pcscd/pcscd.comm").exists().then_some(())
    });

    let db = dir.join("remsim.db");
    let db = db.to_string_lossy();
    let _server = spawn(
        &sibling("remsim-server"),
        &[
            "--rspro-listen",
            "127.0.0.1:9998",
            "--api-listen",
            "127.0.0.1:9997",
            "--db",
            &db,
        ],
    );
    let _bankd = spawn(
        &sibling("remsim-bankd"),
        &[
            "-i",
            "127.0.0.1",
            "-b",
            "1",
            "-n",
            "2",
            "-I",
            "127.0.0.1",
            "--backend",
            "soft",
        ],
    );
    let _client = spawn(
        Path::new(env!("CARGO_BIN_EXE_remsim-client")),
        &["-i", "127.0.0.1", "-c", "23", "-n", "0", "vpcd"],
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let start = Instant::now();
        let mut api = loop {
            if let Ok(c) = RemsimServiceClient::connect("http://127.0.0.1:9997").await {
                break c;
            }
            assert!(start.elapsed() < GUARD, "API not up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let req = pb::CreateSlotmapRequest {
            bank: Some(pb::BankSlot {
                bank_id: 1,
                slot_nr: 0,
            }),
            client: Some(pb::ClientSlot {
                client_id: 23,
                slot_nr: 0,
            }),
        };
        api.create_slotmap(req).await.expect("map");
    });

    let reader = CString::new("Virtual PCD 00 00").expect("name");
    // The card appears once the bankd's ATR arrived; until then vpcd may
    // see the default ATR 3B 00 for a moment.
    let card = until("the remote card in the local reader", || {
        let ctx = Context::establish(Scope::User).ok()?;
        let card = ctx
            .connect(&reader, ShareMode::Shared, Protocols::T0 | Protocols::T1)
            .ok()?;
        let atr = card.status2_owned().ok()?.atr().to_vec();
        (atr == default_atr()).then_some(card)
    });
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
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn pcsc_application_reads_the_remote_sim_through_vpcd() {
    if std::env::var_os(INNER).is_some() {
        return inside_namespace();
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
            "pcsc_application_reads_the_remote_sim_through_vpcd",
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

//! The soft SIM behind a real pcscd: pcscd with the vsmartcard vpcd driver
//! runs in a private mount and network namespace (its socket path and
//! ports are fixed), `remsim-vcard` serves two cards, and the `pcsc` crate
//! reads them as any PC/SC application would.
//!
//! Needs root (for the namespaces) and the Debian packages pcscd,
//! vsmartcard-vpcd and iproute2, which `.ci/run` installs.

use std::ffi::CString;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pcsc::{Card, Context, Protocols, Scope, ShareMode};
use simcard::CardProfile;
use simcard::card::default_atr;
use simcard::fs::{USIM_AID, encode_imsi, swapped_bcd};
use simcard::milenage::Milenage;

const INNER: &str = "REMSIM_PCSC_TEST_INNER";
const VPCD_DRIVER: &str = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";
const FIRST_CARD: u32 = 100;

/// Children killed when the test ends, however it ends.
struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn in_private_mount_ns() -> bool {
    let ns = |p: &str| std::fs::read_link(p).ok();
    ns("/proc/self/ns/mnt") != ns("/proc/1/ns/mnt")
}

fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(status.success(), "{cmd} {args:?}: {status}");
}

fn until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_pcscd(conf: &Path, log: &Path) -> Child {
    let _ = std::fs::remove_file("/run/pcscd/pcscd.comm");
    let log = std::fs::File::create(log).expect("pcscd log");
    let child = Command::new("pcscd")
        .args(["-f", "-d", "-c"])
        .arg(conf)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("pcscd starts");
    until("pcscd's socket", Duration::from_secs(10), || {
        Path::new("/run/pcscd/pcscd.comm").exists().then_some(())
    });
    child
}

fn reader(slot: u8) -> CString {
    CString::new(format!("Virtual PCD 00 {slot:02X}")).expect("name")
}

fn connect(slot: u8) -> Card {
    until("a card in the reader", Duration::from_secs(15), || {
        let ctx = Context::establish(Scope::User).ok()?;
        ctx.connect(&reader(slot), ShareMode::Shared, Protocols::T0)
            .ok()
    })
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

fn inside_namespace() {
    assert!(
        in_private_mount_ns(),
        "refusing to mount over the host's /run/pcscd"
    );
    run("mkdir", &["-p", "/run/pcscd"]);
    run("mount", &["-t", "tmpfs", "tmpfs", "/run/pcscd"]);
    run("ip", &["link", "set", "lo", "up"]);
    let dir = std::env::temp_dir().join(format!("simcard-pcsc-{}", std::process::id()));
    let conf = dir.join("reader.conf.d");
    std::fs::create_dir_all(&conf).expect("conf dir");
    std::fs::write(
        conf.join("vpcd"),
        format!("FRIENDLYNAME \"Virtual PCD\"\nDEVICENAME /dev/null:0x8C7B\nLIBPATH {VPCD_DRIVER}\nCHANNELID 0x8C7B\n"),
    )
    .expect("reader conf");

    let mut children = Kill(vec![start_pcscd(&conf, &dir.join("pcscd.log"))]);
    let vcard = Command::new(env!("CARGO_BIN_EXE_remsim-vcard"))
        .args(["--generate", "2", "--first", &FIRST_CARD.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("remsim-vcard starts");
    children.0.push(vcard);

    let profiles = CardProfile::generate(FIRST_CARD, 2);
    for (slot, profile) in profiles.iter().enumerate() {
        check_card(&connect(slot as u8), profile, 1);
    }

    // pcscd restarts: the cards come back by themselves.
    let mut pcscd = children.0.remove(0);
    pcscd.kill().expect("kill pcscd");
    pcscd.wait().expect("pcscd ends");
    children
        .0
        .push(start_pcscd(&conf, &dir.join("pcscd-2.log")));
    check_card(&connect(0), &profiles[0], 2);

    // remsim-vcard goes away: the reader reports no card.
    let mut vcard = children.0.remove(0);
    vcard.kill().expect("kill remsim-vcard");
    vcard.wait().expect("remsim-vcard ends");
    until("the card's removal", Duration::from_secs(10), || {
        let ctx = Context::establish(Scope::User).ok()?;
        ctx.connect(&reader(0), ShareMode::Shared, Protocols::T0)
            .is_err()
            .then_some(())
    });
    drop(children);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn soft_sim_in_a_real_pcsc_reader() {
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
    // Its output is shown only on failure, so that the harness's summary
    // counts this test once.
    let out = Command::new("timeout")
        .args(["120", "unshare", "-m", "-n", "--propagation", "private"])
        .arg(exe)
        .args([
            "--exact",
            "soft_sim_in_a_real_pcsc_reader",
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

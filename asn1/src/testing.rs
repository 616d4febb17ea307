//! Test support for the daemons' integration tests (feature
//! `test-support`): a raw RSPRO peer on a real socket that plays a bankd, a
//! client or a server frame by frame, answers PINGs unless told not to, and
//! bounds every wait.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_util::codec::{Decoder, Encoder};

use crate::ipa::{Ccm, Frame, IpaCodec};
use crate::types::RsproPdu;
use crate::{Pdu, decode};

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

    /// Waits for the other side to close the connection.
    pub async fn expect_closed(&mut self) {
        let closed = timeout(GUARD, async {
            while self.next_rspro(GUARD).await.is_some() {}
        })
        .await;
        assert!(closed.is_ok(), "connection not closed");
    }
}

/// The frames of the C reference session (`conformance/`, section A) with
/// this message name and direction, e.g. ("createMappingReq", "server -> bankd").
pub fn c_frames(vectors: &str, message: &str, direction: &str) -> Vec<String> {
    let prefix = format!("RSPRO {message} | {direction} |");
    let frames: Vec<String> = vectors
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.split(" | ").nth(4).map(|h| h.trim().to_string()))
        .collect();
    assert!(!frames.is_empty(), "no C frame for {message} {direction}");
    frames
}

//! One RSPRO connection over TCP, either role: IPA framing, the CCM policy
//! of each C component (spec §1.4), the keep-alive, TCP_NODELAY, and PDU
//! decoding with a per-role policy for undecodable PDUs.
//!
//! [`Connection::recv`] is cancel-safe (CCM answers are buffered without
//! awaiting), so a daemon's connection task can `select!` between it and
//! its own inbox.

use std::net::SocketAddr;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until};
use tokio_util::codec::{Encoder, FramedRead, FramedWrite};
use tracing::{debug, warn};

use crate::codec::{self, DecodeError, Decoded, EncodeError};
use crate::ipa::{self, Ccm, Frame, FrameError, IpaCodec, id_tag};
use crate::keepalive::{Keepalive, KeepaliveAction, KeepaliveConfig};
use crate::types::RsproPdu;

/// Which C component's CCM behaviour to follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// remsim-server's side of a control connection: ID_ACK echoed, ID_RESP
    /// must name a UNIT, any other CCM (ID_GET included) closes the link.
    Server,
    /// The connecting side (client→server, client→bankd, bankd→server):
    /// ID_GET answered with ID_RESP then ID_ACK; other CCM ignored.
    Client,
    /// bankd's side of a client data connection: ID_ACK echoed, the rest ignored.
    BankdWorker,
}

/// What to do with an RSPRO frame that does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBadPdu {
    /// Log it and keep the connection (server and client roles in C).
    DropFrame,
    /// Close the connection (the C bankd worker).
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionConfig {
    pub role: Role,
    /// `None`: answer PINGs but never send any.
    pub keepalive: Option<KeepaliveConfig>,
    pub on_bad_pdu: OnBadPdu,
    /// Largest IPA LEN accepted.
    pub max_payload: usize,
    /// How long one send may wait for a peer that does not read; then the
    /// send fails and the connection is to be closed.
    pub send_timeout: Duration,
}

/// The default bound of a send: the C suite's keep-alive timeout.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(10);

impl ConnectionConfig {
    /// remsim-server accepting a bankd or client: it pings from the start.
    pub fn server() -> Self {
        ConnectionConfig {
            role: Role::Server,
            keepalive: Some(KeepaliveConfig::default()),
            on_bad_pdu: OnBadPdu::DropFrame,
            max_payload: ipa::MAX_PAYLOAD_LEN,
            send_timeout: DEFAULT_SEND_TIMEOUT,
        }
    }

    /// The connecting side of any link.
    pub fn client() -> Self {
        ConnectionConfig {
            role: Role::Client,
            ..Self::server()
        }
    }

    /// bankd accepting a client. Unlike the C bankd it pings, so that dead
    /// clients are found (spec §7.6); C clients answer PINGs.
    pub fn bankd_worker() -> Self {
        ConnectionConfig {
            role: Role::BankdWorker,
            on_bad_pdu: OnBadPdu::Close,
            ..Self::server()
        }
    }

    /// Sets the keep-alive; its timeout also bounds each send, since a peer
    /// that reads nothing for that long would be declared dead anyway.
    pub fn with_keepalive(mut self, keepalive: Option<KeepaliveConfig>) -> Self {
        self.keepalive = keepalive;
        if let Some(k) = keepalive {
            self.send_timeout = k.timeout;
        }
        self
    }

    pub fn with_send_timeout(mut self, bound: Duration) -> Self {
        self.send_timeout = bound;
        self
    }
}

/// Why a connection ended or an operation on it failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("peer closed the connection")]
    Closed,
    // No duration: a probe waits less than the configured timeout.
    #[error("PING not answered in time: peer considered dead")]
    KeepaliveTimeout,
    #[error("framing error: {0}")]
    Frame(#[from] FrameError),
    #[error("undecodable RSPRO PDU: {0}")]
    Decode(DecodeError),
    #[error("cannot encode PDU: {0}")]
    Encode(#[from] EncodeError),
    #[error("CCM protocol violation: {0}")]
    Ccm(String),
    #[error("link is not connected")]
    NotConnected,
    #[error("peer does not read: {0} bytes unsent")]
    Backpressure(usize),
    #[error("peer read nothing for {0:?}: send abandoned")]
    SendTimeout(Duration),
    #[error("{0} PDUs already wait to be sent: the peer does not keep up")]
    QueueFull(usize),
}

impl From<std::io::Error> for LinkError {
    fn from(e: std::io::Error) -> Self {
        LinkError::Frame(FrameError::Io(e))
    }
}

/// The identity values the C client sends in ID_RESP (its unit description
/// is never filled, spec §1.4); `None` for tags it cannot answer.
fn client_id_value(tag: u8) -> Option<&'static str> {
    match tag {
        id_tag::UNIT => Some("0/0/0"),
        id_tag::MACADDR => Some("00:00:00:00:00:00"),
        id_tag::UNITNAME => Some("00-00-00-00-00-00"),
        id_tag::SERNR
        | id_tag::LOCATION1
        | id_tag::LOCATION2
        | id_tag::EQUIPVERS
        | id_tag::SWVERSION => Some(""),
        _ => None,
    }
}

/// Unsent bytes we tolerate before cutting off a peer that does not read.
const MAX_UNSENT: usize = 64 * 1024;

/// What RSPRO runs over: a TCP socket, or a TLS session on one.
pub trait Transport: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> Transport for T {}

/// A connected transport of any kind.
pub type BoxedTransport = Box<dyn Transport>;

/// A handshake in progress (TLS on a connected socket).
pub type Upgrading = Pin<Box<dyn Future<Output = std::io::Result<BoxedTransport>> + Send>>;

/// Turns a connected socket into the transport a link runs over: TLS for
/// links between our own components (kept out of this crate so that it
/// does not depend on a TLS library). Must bound its own handshake.
pub trait Upgrade: Send + Sync {
    /// `host` is the peer as configured (a name or an address), for the
    /// certificate check.
    fn upgrade(&self, tcp: TcpStream, host: &str) -> Upgrading;
}

type ReadHalf = Box<dyn AsyncRead + Send + Sync + Unpin>;
type WriteHalf = Box<dyn AsyncWrite + Send + Sync + Unpin>;

/// The first size of each connection's read and write buffers. RSPRO
/// frames are a few hundred bytes, and a server holds thousands of idle
/// connections: tokio-util's 8 kB each were most of their memory. A larger
/// frame grows the buffer as it needs.
const BUFFER: usize = 256;

pub struct Connection {
    reader: FramedRead<ReadHalf, IpaCodec>,
    writer: FramedWrite<WriteHalf, IpaCodec>,
    config: ConnectionConfig,
    keepalive: Option<Keepalive>,
    /// A probe is out and its answer not yet reported.
    probing: bool,
    /// The probe was answered; `next_inbound` reports it once.
    probe_answered: bool,
    peer: SocketAddr,
}

/// What `next_inbound` brings. Not boxed: it is moved once, and a box
/// would cost an allocation per PDU.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Inbound {
    Pdu(Decoded),
    /// Every PING sent for the last `probe` has been answered: the peer is alive.
    ProbeAnswered,
}

impl Connection {
    /// Takes over a connected socket; sends the first PING if keep-alive is on.
    pub async fn new(stream: TcpStream, config: ConnectionConfig) -> Result<Self, LinkError> {
        stream.set_nodelay(true)?;
        let peer = stream.peer_addr()?;
        // Owned halves: no lock between reading and writing a socket.
        let (read, write) = stream.into_split();
        Self::start(Box::new(read), Box::new(write), peer, config).await
    }

    /// Takes over a transport that is not a bare socket (TLS), connected to
    /// `peer`, with TCP_NODELAY already set on the socket under it.
    pub async fn over(
        transport: BoxedTransport,
        peer: SocketAddr,
        config: ConnectionConfig,
    ) -> Result<Self, LinkError> {
        let (read, write) = tokio::io::split(transport);
        Self::start(Box::new(read), Box::new(write), peer, config).await
    }

    async fn start(
        read: ReadHalf,
        write: WriteHalf,
        peer: SocketAddr,
        config: ConnectionConfig,
    ) -> Result<Self, LinkError> {
        let codec = IpaCodec::with_max_payload(config.max_payload);
        let mut conn = Connection {
            reader: FramedRead::with_capacity(read, codec, BUFFER),
            writer: FramedWrite::with_capacity(write, codec, BUFFER),
            config,
            keepalive: None,
            probing: false,
            probe_answered: false,
            peer,
        };
        if let Some(ka) = config.keepalive {
            let ka = Keepalive::start(ka, Instant::now());
            // The accepting side: peers keep their own keep-alive running.
            conn.keepalive = Some(if config.role == Role::Client {
                ka
            } else {
                ka.deferring()
            });
            conn.writer.send(Frame::Ccm(Ccm::Ping)).await?;
        }
        Ok(conn)
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Checks quickly whether the peer is alive: a PING that must be
    /// answered within `timeout`, or `recv` fails with `KeepaliveTimeout`.
    pub fn probe(&mut self, timeout: Duration) -> Result<(), LinkError> {
        let now = Instant::now();
        let send_ping = match self.keepalive.as_mut() {
            Some(ka) => ka.probe(now, timeout),
            None => {
                let config = KeepaliveConfig {
                    timeout,
                    ..KeepaliveConfig::default()
                };
                self.keepalive = Some(Keepalive::start(config, now));
                true
            }
        };
        self.probing = true;
        self.probe_answered = false;
        if send_ping {
            self.queue(Ccm::Ping)?;
        }
        Ok(())
    }

    /// Encodes and sends one PDU.
    pub async fn send(&mut self, pdu: &RsproPdu) -> Result<(), LinkError> {
        let frame = Frame::rspro(pdu)?;
        if let Frame::Rspro(der) = &frame
            && der.len() > codec::C_MAX_PDU_LEN
        {
            warn!(peer = %self.peer, len = der.len(), "PDU larger than a C peer can receive");
        }
        self.send_frame(frame).await
    }

    /// Sends a raw frame, bounded by `send_timeout`: a peer that stops
    /// reading cannot hold the caller (a bankd worker, a client link) for
    /// ever. After a timeout the connection is to be closed.
    pub async fn send_frame(&mut self, frame: Frame) -> Result<(), LinkError> {
        let bound = self.config.send_timeout;
        match tokio::time::timeout(bound, self.writer.send(frame)).await {
            Ok(sent) => Ok(sent?),
            Err(_) => Err(LinkError::SendTimeout(bound)),
        }
    }

    /// The next RSPRO PDU; CCM and keep-alive are handled on the way.
    /// Returns an error when the connection is over.
    pub async fn recv(&mut self) -> Result<Decoded, LinkError> {
        loop {
            if let Inbound::Pdu(decoded) = self.next_inbound().await? {
                return Ok(decoded);
            }
        }
    }

    /// Like `recv`, and also reports when a probe has been answered, as
    /// soon as its PONG is in (an unanswered probe ends in an error).
    pub async fn next_inbound(&mut self) -> Result<Inbound, LinkError> {
        loop {
            if std::mem::take(&mut self.probe_answered) {
                return Ok(Inbound::ProbeAnswered);
            }
            let deadline = self.keepalive.as_ref().map(Keepalive::deadline);
            let pending_write = !self.writer.write_buffer().is_empty();
            // Biased: frames already received (a PONG, say) count before
            // an expired keep-alive deadline is judged.
            tokio::select! {
                biased;
                flushed = self.writer.flush(), if pending_write => flushed?,
                frame = self.reader.next() => match frame {
                    None => return Err(LinkError::Closed),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(Frame::Ccm(ccm))) => {
                        self.heard();
                        self.on_ccm(ccm)?
                    }
                    Some(Ok(Frame::Rspro(bytes))) => match codec::decode(&bytes) {
                        Ok(decoded) => {
                            self.heard();
                            return Ok(Inbound::Pdu(decoded));
                        }
                        Err(e) if self.config.on_bad_pdu == OnBadPdu::DropFrame => {
                            warn!(peer = %self.peer, error = %e, pdu = %hex::encode(&bytes), "dropping undecodable PDU");
                        }
                        Err(e) => return Err(LinkError::Decode(e)),
                    },
                },
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.on_keepalive_deadline()?;
                }
            }
        }
    }

    /// A frame came from the peer: it is alive (see `Keepalive::deferring`).
    fn heard(&mut self) {
        if let Some(ka) = self.keepalive.as_mut() {
            ka.on_frame(Instant::now());
        }
    }

    fn on_keepalive_deadline(&mut self) -> Result<(), LinkError> {
        let Some(ka) = self.keepalive.as_mut() else {
            return Ok(());
        };
        match ka.on_deadline(Instant::now()) {
            Some(KeepaliveAction::SendPing) => self.queue(Ccm::Ping),
            Some(KeepaliveAction::PeerDead) => Err(LinkError::KeepaliveTimeout),
            None => Ok(()),
        }
    }

    /// Buffers a CCM message without awaiting, so that `recv` stays
    /// cancel-safe; `recv` flushes it. A peer that does not read while we
    /// owe it answers is cut off rather than buffered without end.
    fn queue(&mut self, ccm: Ccm) -> Result<(), LinkError> {
        let buffer = self.writer.write_buffer_mut();
        if buffer.len() > MAX_UNSENT {
            return Err(LinkError::Backpressure(buffer.len()));
        }
        IpaCodec::default().encode(Frame::Ccm(ccm), buffer)?;
        Ok(())
    }

    fn on_ccm(&mut self, ccm: Ccm) -> Result<(), LinkError> {
        let role = self.config.role;
        match ccm {
            Ccm::Ping => self.queue(Ccm::Pong),
            Ccm::Pong => {
                if let Some(ka) = self.keepalive.as_mut() {
                    ka.on_pong(Instant::now());
                    if self.probing && !ka.awaiting_pong() {
                        self.probing = false;
                        self.probe_answered = true;
                    }
                }
                Ok(())
            }
            Ccm::IdAck if role == Role::Client => Ok(()),
            Ccm::IdAck => self.queue(Ccm::IdAck),
            Ccm::IdGet(body) if role == Role::Client => {
                let tags = match ipa::parse_id_get(&body) {
                    Ok(tags) => tags,
                    Err(e) => {
                        warn!(peer = %self.peer, error = %e, "ignoring malformed ID_GET");
                        return Ok(());
                    }
                };
                let values: Option<Vec<(u8, &str)>> = tags
                    .iter()
                    .map(|t| client_id_value(*t).map(|v| (*t, v)))
                    .collect();
                let Some(values) = values else {
                    // The C client cannot build this ID_RESP and sends nothing.
                    warn!(peer = %self.peer, ?tags, "ID_GET asks for unsupported tags; not answered");
                    return Ok(());
                };
                self.queue(ipa::build_id_resp(&values))?;
                self.queue(Ccm::IdAck)
            }
            Ccm::IdResp(body) if role == Role::Server => {
                let values = ipa::parse_id_resp(&body)
                    .map_err(|e| LinkError::Ccm(format!("malformed ID_RESP: {e}")))?;
                let unit = values.iter().find(|(tag, _)| *tag == id_tag::UNIT);
                match unit {
                    Some((_, v)) if !v.is_empty() => {
                        debug!(peer = %self.peer, unit = %String::from_utf8_lossy(v), "ID_RESP");
                        Ok(())
                    }
                    _ => Err(LinkError::Ccm("ID_RESP without a UNIT".into())),
                }
            }
            other if role == Role::Server => Err(LinkError::Ccm(format!(
                "unexpected CCM {} from a peer",
                other.name()
            ))),
            other => {
                debug!(peer = %self.peer, ccm = other.name(), "ignoring CCM message");
                Ok(())
            }
        }
    }
}

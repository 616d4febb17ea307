//! The reconnecting RSPRO client role (client→server, client→bankd,
//! bankd→server): a task that drives [`ClientFsm`] over real TCP, sends the
//! Connect*Req, checks the Connect*Res and hands PDUs to the application.

use std::future::{Future, pending};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tracing::{debug, info, warn};

use crate::codec::{Decoded, Pdu};
use crate::keepalive::KeepaliveConfig;
use crate::link::{BoxedTransport, Connection, ConnectionConfig, LinkError, Upgrade};
use crate::reconnect::{
    Acceptance, ClientAction, ClientEvent, ClientFsm, ClientState, ReconnectConfig,
};
use crate::types::{ComponentType, Identity, Msg, ResultCode, RsproPdu};

/// How many events may wait for the application before the link stops
/// reading (and so answering PINGs): an application must keep up.
const EVENT_QUEUE: usize = 1024;

/// PDUs the application may queue for sending; a link that cannot keep up
/// refuses more (its sends are bounded, so a full queue means a stuck peer).
const COMMAND_QUEUE: usize = 256;

#[derive(Debug, Clone)]
pub struct ClientLinkConfig {
    /// `host:port` of the peer.
    pub peer: String,
    /// ConnectBankReq or ConnectClientReq, sent on every TCP connect.
    pub connect_req: RsproPdu,
    /// The component type the peer must announce; anything else stops the
    /// link for good (a wrong port, as the C suite treats it).
    pub expect_peer: ComponentType,
    pub keepalive: KeepaliveConfig,
    pub reconnect: ReconnectConfig,
    /// Connect*Res results besides `ok` that still make the link CONNECTED
    /// (a client waits on a bankd that answers `cardNotPresent` while its
    /// map is being installed, instead of reconnecting: spec §7.27).
    pub tolerate: Vec<ResultCode>,
    /// TLS (or another upgrade) on every connected socket; `None`: plain TCP.
    pub upgrade: Option<Arc<dyn Upgrade>>,
}

impl std::fmt::Debug for dyn Upgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upgrade")
    }
}

/// What the link tells the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientLinkEvent {
    /// Connect*Res ok (or a tolerated result): PDUs may be sent.
    Connected {
        peer: Identity,
        addr: SocketAddr,
        result: ResultCode,
    },
    /// The connection is gone; the link reconnects by itself.
    Lost,
    /// The peer refused the Connect*Req; the link reconnects with back-off.
    Refused { result: ResultCode },
    /// A PDU received while connected.
    Pdu(Decoded),
    /// The link gave up for good (wrong peer type).
    Stopped { reason: String },
}

/// Handle to a running client link; dropping it stops the link.
pub struct ClientLink {
    commands: mpsc::Sender<RsproPdu>,
    /// The Connect*Req for the next connect: a value, not a message, so
    /// that the latest one always wins and none can be lost.
    connect_req: watch::Sender<RsproPdu>,
    events: mpsc::Receiver<ClientLinkEvent>,
    state: watch::Receiver<ClientState>,
}

impl ClientLink {
    /// Starts connecting at once.
    pub fn spawn(config: ClientLinkConfig) -> Self {
        let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
        let (connect_req, connect_req_rx) = watch::channel(config.connect_req.clone());
        let (event_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (state_tx, state) = watch::channel(ClientState::Init);
        tokio::spawn(run(config, command_rx, connect_req_rx, event_tx, state_tx));
        ClientLink {
            commands,
            connect_req,
            events,
            state,
        }
    }

    pub fn state(&self) -> ClientState {
        *self.state.borrow()
    }

    /// Queues a PDU. As in the C suite, sending is only possible while
    /// CONNECTED; otherwise the PDU is refused, as it is when the queue is full.
    pub fn send(&self, pdu: RsproPdu) -> Result<(), LinkError> {
        if self.state() != ClientState::Connected {
            return Err(LinkError::NotConnected);
        }
        self.commands.try_send(pdu).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => LinkError::QueueFull(COMMAND_QUEUE),
            mpsc::error::TrySendError::Closed(_) => LinkError::NotConnected,
        })
    }

    /// Replaces the Connect*Req used from the next connect on.
    pub fn set_connect_req(&self, pdu: RsproPdu) {
        self.connect_req.send_replace(pdu);
    }

    /// The next event; `None` once the link task has ended.
    pub async fn event(&mut self) -> Option<ClientLinkEvent> {
        self.events.recv().await
    }
}

/// A connected socket, or the transport its upgrade made of it.
enum Connected {
    Tcp(TcpStream),
    Upgraded(BoxedTransport, SocketAddr),
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<Connected>> + Send>>;

/// Connects to `peer` (`host:port`) and upgrades the socket if asked.
fn connect(peer: String, upgrade: Option<Arc<dyn Upgrade>>) -> Connecting {
    Box::pin(async move {
        let tcp = TcpStream::connect(&peer).await?;
        let Some(upgrade) = upgrade else {
            return Ok(Connected::Tcp(tcp));
        };
        tcp.set_nodelay(true)?;
        let addr = tcp.peer_addr()?;
        match upgrade.upgrade(tcp, host_of(&peer)).await {
            Ok(transport) => Ok(Connected::Upgraded(transport, addr)),
            Err(e) => {
                // Unlike a refused connect, this is a configuration to fix.
                warn!(%peer, error = %e, "TLS handshake failed");
                Err(e)
            }
        }
    })
}

/// The host part of `host:port`, `[v6]:port` or a bare host.
pub fn host_of(peer: &str) -> &str {
    if let Some(rest) = peer.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match peer.rsplit_once(':') {
        Some((host, _)) if !host.contains(':') => host,
        _ => peer,
    }
}

async fn connect_done(connecting: &mut Option<Connecting>) -> io::Result<Connected> {
    match connecting {
        Some(fut) => fut.await,
        None => pending().await,
    }
}

async fn recv(conn: &mut Option<Connection>) -> Result<Decoded, LinkError> {
    match conn {
        Some(c) => c.recv().await,
        None => pending().await,
    }
}

struct Driver {
    config: ClientLinkConfig,
    fsm: ClientFsm,
    conn: Option<Connection>,
    connecting: Option<Connecting>,
    peer: Option<Identity>,
    result: ResultCode,
    events: mpsc::Sender<ClientLinkEvent>,
    connect_req: watch::Receiver<RsproPdu>,
}

async fn run(
    config: ClientLinkConfig,
    mut commands: mpsc::Receiver<RsproPdu>,
    connect_req: watch::Receiver<RsproPdu>,
    events: mpsc::Sender<ClientLinkEvent>,
    state: watch::Sender<ClientState>,
) {
    let mut d = Driver {
        fsm: ClientFsm::new(
            config.reconnect,
            Acceptance {
                peer: config.expect_peer,
                tolerate: config.tolerate.clone(),
            },
        ),
        config,
        conn: None,
        connecting: None,
        peer: None,
        result: ResultCode::Ok,
        events,
        connect_req,
    };
    let mut next = Some(ClientEvent::Establish);
    loop {
        if let Some(event) = next.take() {
            let actions = d.fsm.handle(event, Instant::now());
            // Before the actions: an application told "Connected" may send at once.
            state.send_replace(d.fsm.state());
            if let Some(follow_up) = d.perform(actions).await {
                next = Some(follow_up);
                continue;
            }
        }
        let deadline = d.fsm.deadline();
        next = tokio::select! {
            _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                Some(ClientEvent::Timeout)
            }
            connected = connect_done(&mut d.connecting) => {
                d.connecting = None;
                Some(d.on_tcp_connect(connected).await)
            }
            received = recv(&mut d.conn) => match received {
                Ok(decoded) => d.on_pdu(decoded).await,
                Err(LinkError::KeepaliveTimeout) => {
                    warn!(peer = %d.config.peer, "keep-alive timeout");
                    Some(ClientEvent::KeepaliveTimeout)
                }
                Err(e) => {
                    info!(peer = %d.config.peer, error = %e, "connection lost");
                    Some(ClientEvent::TcpDown)
                }
            },
            command = commands.recv() => match command {
                None => return,
                // Queued while connected, the link may have changed since.
                Some(pdu) if d.fsm.state() == ClientState::Connected => d.send(&pdu).await,
                Some(pdu) => {
                    warn!(peer = %d.config.peer, msg = pdu.msg.asn_name(), "link not connected; PDU dropped");
                    None
                }
            },
        };
    }
}

impl Driver {
    /// Performs FSM actions; returns an event if one of them failed.
    async fn perform(&mut self, actions: Vec<ClientAction>) -> Option<ClientEvent> {
        for action in actions {
            match action {
                ClientAction::CloseTcp => {
                    self.conn = None;
                    self.connecting = None;
                }
                ClientAction::Connect => {
                    debug!(peer = %self.config.peer, "connecting");
                    self.connecting = Some(connect(
                        self.config.peer.clone(),
                        self.config.upgrade.clone(),
                    ));
                }
                ClientAction::SendConnectReq => {
                    let req = self.connect_req.borrow().clone();
                    if let Some(event) = self.send(&req).await {
                        return Some(event);
                    }
                }
                ClientAction::NotifyConnected => {
                    if let (Some(peer), Some(conn)) = (self.peer.clone(), self.conn.as_ref()) {
                        let addr = conn.peer_addr();
                        let result = self.result;
                        info!(peer = %self.config.peer, name = %peer.name, %result, "connected");
                        self.emit(ClientLinkEvent::Connected { peer, addr, result })
                            .await;
                    }
                }
                ClientAction::NotifyLost => self.emit(ClientLinkEvent::Lost).await,
                ClientAction::NotifyRefused(result) => {
                    info!(peer = %self.config.peer, %result, "Connect*Res refused");
                    self.emit(ClientLinkEvent::Refused { result }).await;
                }
                ClientAction::NotifyWrongPeer(kind) => {
                    let reason = format!(
                        "peer {} is a {kind}, expected a {}",
                        self.config.peer, self.config.expect_peer
                    );
                    warn!(%reason, "giving up on this link");
                    self.emit(ClientLinkEvent::Stopped { reason }).await;
                }
            }
        }
        None
    }

    async fn emit(&mut self, event: ClientLinkEvent) {
        // The application may have stopped listening; the link goes on.
        let _ = self.events.send(event).await;
    }

    async fn send(&mut self, pdu: &RsproPdu) -> Option<ClientEvent> {
        let conn = self.conn.as_mut()?;
        match conn.send(pdu).await {
            Ok(()) => None,
            Err(e) => {
                info!(peer = %self.config.peer, error = %e, "send failed");
                Some(ClientEvent::TcpDown)
            }
        }
    }

    async fn on_tcp_connect(&mut self, connected: io::Result<Connected>) -> ClientEvent {
        let config = ConnectionConfig::client().with_keepalive(Some(self.config.keepalive));
        let conn = match connected {
            Ok(Connected::Tcp(stream)) => Connection::new(stream, config).await,
            Ok(Connected::Upgraded(transport, addr)) => {
                Connection::over(transport, addr, config).await
            }
            Err(e) => {
                debug!(peer = %self.config.peer, error = %e, "connect failed");
                return ClientEvent::TcpDown;
            }
        };
        match conn {
            Ok(conn) => {
                self.conn = Some(conn);
                ClientEvent::TcpUp
            }
            Err(e) => {
                debug!(peer = %self.config.peer, error = %e, "connection setup failed");
                ClientEvent::TcpDown
            }
        }
    }

    async fn on_pdu(&mut self, decoded: Decoded) -> Option<ClientEvent> {
        match self.fsm.state() {
            ClientState::Connected => {
                self.emit(ClientLinkEvent::Pdu(decoded)).await;
                None
            }
            ClientState::Established => {
                let (identity, result) = match &decoded.pdu {
                    Pdu::Known(RsproPdu {
                        msg: Msg::ConnectBankRes(m),
                        ..
                    }) => (&m.identity, m.result),
                    Pdu::Known(RsproPdu {
                        msg: Msg::ConnectClientRes(m),
                        ..
                    }) => (&m.identity, m.result),
                    _ => {
                        debug!(peer = %self.config.peer, "ignoring PDU before Connect*Res");
                        return None;
                    }
                };
                self.peer = Some(identity.clone());
                self.result = result;
                Some(ClientEvent::ConnectRes {
                    peer: identity.component_type,
                    result,
                })
            }
            _ => None,
        }
    }
}

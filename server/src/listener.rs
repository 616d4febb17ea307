//! The RSPRO control port: accepts bankds and clients (under the shared
//! connection policy; in plain TCP as C peers speak, or, on a second port,
//! in TLS for our own) and runs one task per connection that moves PDUs
//! between the socket and the service task.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use remsim_daemon::listen::{self, Accepted, Policy, Shutdown};
use remsim_daemon::tls::{self, Reloading};
use rspro::keepalive::KeepaliveConfig;
use rspro::link::{Connection, ConnectionConfig, Inbound, LinkError};
use rspro::{Decoded, Pdu, RsproPdu};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::engine::ConnId;
use crate::metrics::Metrics;
use crate::service::{ConnCommand, Request, conn_queue};

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// What every connection of the port shares.
#[derive(Clone)]
pub struct Port {
    pub service: mpsc::Sender<Request>,
    pub keepalive: KeepaliveConfig,
    /// TLS on this port (ours only); `None`: plain TCP.
    pub tls: Option<Arc<Reloading>>,
    pub metrics: Arc<Metrics>,
}

/// Accepts connections until `shutdown`, then waits for them to end
/// within the policy's drain bound.
pub async fn serve(listener: TcpListener, policy: Policy, port: Port, shutdown: Shutdown) {
    listen::serve(listener, policy, shutdown, move |accepted| {
        connection(accepted, port.clone())
    })
    .await;
}

fn log_notes(conn: ConnId, decoded: &Decoded) {
    for note in &decoded.notes {
        debug!(conn, %note, "tolerated in PDU");
    }
}

/// Hands a request to the service. Boxed: a send holds a whole Request
/// while it waits for room, and in place it would size every idle
/// connection's task; PDUs on the control port are few.
fn tell(
    service: &mpsc::Sender<Request>,
    request: Request,
) -> Pin<Box<impl Future<Output = Result<(), mpsc::error::SendError<Request>>> + '_>> {
    Box::pin(service.send(request))
}

/// Sends a PDU to the peer; boxed like `tell`, for the same reason.
fn send<'a>(
    conn: &'a mut Connection,
    pdu: &'a RsproPdu,
) -> Pin<Box<impl Future<Output = Result<(), LinkError>> + 'a>> {
    Box::pin(conn.send(pdu))
}

/// The link's setup (the TLS handshake on a TLS port). Boxed: its state
/// is large and needed only now, and in place it would size every idle
/// connection's task.
fn setup(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<&Reloading>,
    config: ConnectionConfig,
) -> Pin<Box<dyn Future<Output = Result<Connection, LinkError>> + Send + '_>> {
    Box::pin(tls::rspro_connection(stream, peer, tls, config))
}

async fn connection(accepted: Accepted, port: Port) {
    let Accepted {
        stream,
        peer,
        mut shutdown,
    } = accepted;
    let Port {
        service,
        keepalive,
        tls,
        metrics,
    } = port;
    let conn_id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let config = ConnectionConfig::server().with_keepalive(Some(keepalive));
    let mut conn = match setup(stream, peer, tls.as_deref(), config).await {
        Ok(c) => c,
        Err(e) => {
            debug!(error = %e, "connection setup failed");
            return;
        }
    };
    debug!(conn = conn_id, %peer, "accepted");
    let (commands, mut inbox) = conn_queue();
    let accepted = Request::Accepted {
        conn: conn_id,
        peer,
        commands,
    };
    if tell(&service, accepted).await.is_err() {
        return;
    }
    let end: Result<(), LinkError> = loop {
        tokio::select! {
            received = conn.next_inbound() => match received {
                Ok(Inbound::ProbeAnswered) => {
                    if tell(&service, Request::ProbeAlive { conn: conn_id }).await.is_err() {
                        break Ok(());
                    }
                }
                Ok(Inbound::Pdu(decoded)) => {
                    log_notes(conn_id, &decoded);
                    match decoded.pdu {
                        Pdu::Known(pdu) => {
                            metrics.pdu("rx", pdu.msg.asn_name());
                            if tell(&service, Request::Pdu { conn: conn_id, pdu }).await.is_err() {
                                break Ok(());
                            }
                        }
                        Pdu::UnknownMsg { alternative, .. } => {
                            info!(conn = conn_id, alternative, "unknown RSPRO message ignored");
                        }
                    }
                }
                Err(e) => break Err(e),
            },
            command = inbox.next() => match command {
                // The send is bounded like a PONG (the link's send_timeout):
                // a peer that takes no data for that long is as good as
                // dead, and must not pin this task.
                Some(ConnCommand::Send(pdu)) => match send(&mut conn, &pdu).await {
                    Ok(()) => metrics.pdu("tx", pdu.msg.asn_name()),
                    Err(LinkError::SendTimeout(_)) => {
                        info!(conn = conn_id, %peer, "peer takes no data; closing");
                        break Ok(());
                    }
                    Err(e) => break Err(e),
                },
                // The answer comes as Inbound::ProbeAnswered; no answer
                // within `timeout` ends the connection.
                Some(ConnCommand::Probe(timeout)) => {
                    if let Err(e) = conn.probe(timeout) {
                        break Err(e);
                    }
                }
                Some(ConnCommand::Close) | None => break Ok(()),
            },
            _ = shutdown.wait() => break Ok(()),
        }
    };
    match end {
        Ok(()) | Err(LinkError::Closed) => debug!(conn = conn_id, %peer, "closed"),
        Err(LinkError::KeepaliveTimeout) => {
            metrics.keepalive_failure();
            info!(conn = conn_id, %peer, "PING not answered in time: connection closed");
        }
        Err(e) => info!(conn = conn_id, %peer, error = %e, "connection ended"),
    }
    let _ = tell(&service, Request::Closed { conn: conn_id }).await;
}

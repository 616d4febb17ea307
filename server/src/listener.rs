//! The RSPRO control port: accepts bankds and clients (under the shared
//! connection policy) and runs one task per connection that moves PDUs
//! between the socket and the service task.

use std::sync::atomic::{AtomicU64, Ordering};

use remsim_daemon::listen::{self, Accepted, Policy, Shutdown};
use rspro::keepalive::KeepaliveConfig;
use rspro::link::{Connection, ConnectionConfig, Inbound, LinkError};
use rspro::{Decoded, Pdu};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::engine::ConnId;
use crate::service::{CONN_QUEUE, ConnCommand, Request};

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Accepts connections until `shutdown`, then waits for them to end
/// within the policy's drain bound.
pub async fn serve(
    listener: TcpListener,
    policy: Policy,
    service: mpsc::Sender<Request>,
    keepalive: KeepaliveConfig,
    shutdown: Shutdown,
) {
    listen::serve(listener, policy, shutdown, move |accepted| {
        connection(accepted, service.clone(), keepalive)
    })
    .await;
}

fn log_notes(conn: ConnId, decoded: &Decoded) {
    for note in &decoded.notes {
        debug!(conn, %note, "tolerated in PDU");
    }
}

async fn connection(
    accepted: Accepted,
    service: mpsc::Sender<Request>,
    keepalive: KeepaliveConfig,
) {
    let Accepted {
        stream,
        mut shutdown,
        ..
    } = accepted;
    let conn_id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let config = ConnectionConfig::server().with_keepalive(Some(keepalive));
    let mut conn = match Connection::new(stream, config).await {
        Ok(c) => c,
        Err(e) => {
            debug!(error = %e, "connection setup failed");
            return;
        }
    };
    let peer = conn.peer_addr();
    debug!(conn = conn_id, %peer, "accepted");
    let (commands, mut inbox) = mpsc::channel(CONN_QUEUE);
    if service
        .send(Request::Accepted {
            conn: conn_id,
            peer,
            commands,
        })
        .await
        .is_err()
    {
        return;
    }
    let end: Result<(), LinkError> = loop {
        tokio::select! {
            received = conn.next_inbound() => match received {
                Ok(Inbound::ProbeAnswered) => {
                    if service.send(Request::ProbeAlive { conn: conn_id }).await.is_err() {
                        break Ok(());
                    }
                }
                Ok(Inbound::Pdu(decoded)) => {
                    log_notes(conn_id, &decoded);
                    match decoded.pdu {
                        Pdu::Known(pdu) => {
                            if service.send(Request::Pdu { conn: conn_id, pdu }).await.is_err() {
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
            command = inbox.recv() => match command {
                // The send is bounded like a PONG (the link's send_timeout):
                // a peer that takes no data for that long is as good as
                // dead, and must not pin this task.
                Some(ConnCommand::Send(pdu)) => match conn.send(&pdu).await {
                    Ok(()) => {}
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
        Err(e) => info!(conn = conn_id, %peer, error = %e, "connection ended"),
    }
    let _ = service.send(Request::Closed { conn: conn_id }).await;
}

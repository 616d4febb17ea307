//! The RSPRO control port: accepts bankds and clients and runs one task per
//! connection that moves PDUs between the socket and the service task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rspro::keepalive::KeepaliveConfig;
use rspro::link::{Connection, ConnectionConfig, LinkError};
use rspro::{Decoded, Pdu};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::engine::ConnId;
use crate::service::{CONN_QUEUE, ConnCommand, Request};

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Accepts connections until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    service: mpsc::Sender<Request>,
    keepalive: KeepaliveConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let service = service.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(connection(stream, service, keepalive, shutdown));
                }
                Err(e) => warn!(error = %e, "accept failed"),
            },
            _ = shutdown.changed() => return,
        }
    }
}

fn log_notes(conn: ConnId, decoded: &Decoded) {
    for note in &decoded.notes {
        debug!(conn, %note, "tolerated in PDU");
    }
}

async fn connection(
    stream: TcpStream,
    service: mpsc::Sender<Request>,
    keepalive: KeepaliveConfig,
    mut shutdown: watch::Receiver<bool>,
) {
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
    // When set: the time to report whether the peer answered a probe.
    let mut probe_check: Option<tokio::time::Instant> = None;
    let end: Result<(), LinkError> = loop {
        tokio::select! {
            // Just after the probe's own deadline: a dead peer has been
            // declared dead by `recv` by then, so still being here with the
            // PONG in means alive.
            _ = tokio::time::sleep_until(probe_check.unwrap_or_else(tokio::time::Instant::now)), if probe_check.is_some() => {
                probe_check = None;
                if !conn.awaiting_pong() && service.send(Request::ProbeAlive { conn: conn_id }).await.is_err() {
                    break Ok(());
                }
            }
            received = conn.recv() => match received {
                Ok(decoded) => {
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
                Some(ConnCommand::Probe(timeout)) => {
                    if let Err(e) = conn.probe(timeout) {
                        break Err(e);
                    }
                    probe_check = Some(tokio::time::Instant::now() + timeout + Duration::from_millis(50));
                }
                Some(ConnCommand::Close) | None => break Ok(()),
            },
            _ = shutdown.changed() => break Ok(()),
        }
    };
    match end {
        Ok(()) | Err(LinkError::Closed) => debug!(conn = conn_id, %peer, "closed"),
        Err(e) => info!(conn = conn_id, %peer, error = %e, "connection ended"),
    }
    let _ = service.send(Request::Closed { conn: conn_id }).await;
}

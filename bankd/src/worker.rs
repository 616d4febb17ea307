//! The tokio side of one client data connection: feeds the session state
//! machine with PDUs, map changes and timers, and carries out its actions
//! (card operations, PDUs, GSMTAP traces). One task per client, no thread.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use remsim_daemon::listen::{Accepted, Shutdown};
use remsim_daemon::tls::{self, Reloading};
use rspro::keepalive::KeepaliveConfig;
use rspro::link::{Connection, ConnectionConfig};
use rspro::{Identity, Pdu};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until};
use tracing::{debug, info};

use crate::card::{Backend, Card, CardError};
use crate::gsmtap::Gsmtap;
use crate::maps::MapTable;
use crate::metrics::Metrics;
use crate::session::{Out, Session, State};

/// What every client task shares.
pub struct Shared {
    pub backend: Backend,
    pub maps: watch::Receiver<Arc<MapTable>>,
    pub identity: Identity,
    pub gsmtap: Option<Gsmtap>,
    pub keepalive: Option<KeepaliveConfig>,
    /// How long a new connection may take to send ConnectClientReq.
    pub identify_timeout: Duration,
    /// How often a card that could not be opened is tried again.
    pub retry: Duration,
    /// Mutual TLS on the client port (our clients only); `None`: plain TCP.
    pub tls: Option<Arc<Reloading>>,
    pub metrics: Arc<Metrics>,
}

struct Worker {
    shared: Arc<Shared>,
    conn: Connection,
    session: Session,
    card: Option<Card>,
}

/// Serves one client until it goes, or the bankd shuts down; its card is
/// released (PC/SC disconnect) either way.
pub async fn serve(accepted: Accepted, shared: Arc<Shared>) {
    let Accepted {
        stream,
        peer,
        shutdown,
    } = accepted;
    let config = ConnectionConfig::bankd_worker().with_keepalive(shared.keepalive);
    let setup = tls::rspro_connection(stream, peer, shared.tls.as_deref(), config).await;
    let conn = match setup {
        Ok(c) => c,
        Err(e) => {
            debug!(error = %e, "client connection setup failed");
            return;
        }
    };
    let counted = shared.metrics.client();
    let peer = conn.peer_addr();
    info!(%peer, "client connected");
    let mut w = Worker {
        session: Session::new(shared.identity.clone()),
        shared,
        conn,
        card: None,
    };
    let reason = w.run(shutdown).await;
    // Counted down before the socket closes (with `w`, below): whoever
    // sees the close sees the count without this client.
    drop(counted);
    info!(%peer, client = %rspro::pdu::shown(w.session.client()), bank = %rspro::pdu::shown(w.session.bank()), reason, "client connection closed");
    if let Some(card) = w.card.take() {
        card.release().await;
    }
}

impl Worker {
    async fn run(&mut self, mut shutdown: Shutdown) -> String {
        let mut maps = self.shared.maps.clone();
        let identify_by = Instant::now() + self.shared.identify_timeout;
        let mut retry = interval_at(Instant::now() + self.shared.retry, self.shared.retry);
        retry.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let outs = tokio::select! {
                received = self.conn.recv() => match received {
                    Ok(decoded) => match decoded.pdu {
                        Pdu::Known(pdu) => self.session.on_pdu(pdu, &maps.borrow()),
                        Pdu::UnknownMsg { alternative, .. } => {
                            debug!(alternative, "unknown RSPRO message ignored");
                            continue;
                        }
                    },
                    Err(e) => return e.to_string(),
                },
                changed = maps.changed() => {
                    if changed.is_err() {
                        return "bankd shutting down".into();
                    }
                    let table = maps.borrow_and_update().clone();
                    self.session.on_maps(&table)
                }
                _ = sleep_until(identify_by), if self.session.state() == State::WaitId => {
                    return "no ConnectClientReq in time".into();
                }
                _ = retry.tick() => self.session.on_retry(),
                _ = shutdown.wait() => return "bankd shutting down".into(),
            };
            if let Err(reason) = self.execute(outs).await {
                return reason;
            }
        }
    }

    /// Carries out actions, feeding card results back into the session.
    async fn execute(&mut self, outs: Vec<Out>) -> Result<(), String> {
        let mut queue: VecDeque<Out> = outs.into();
        while let Some(out) = queue.pop_front() {
            match out {
                Out::Send(pdu) => self.conn.send(&pdu).await.map_err(|e| e.to_string())?,
                Out::Close(reason) => return Err(reason.to_string()),
                Out::Open(bank) => {
                    if let Some(old) = self.card.take() {
                        old.release().await;
                    }
                    let result = match self.shared.backend.open(bank).await {
                        Ok(card) => {
                            let atr = card.atr();
                            self.card = Some(card);
                            Ok(atr)
                        }
                        Err(e) => {
                            self.shared.metrics.card_error(Some(bank), "open");
                            Err(e)
                        }
                    };
                    queue.extend(self.session.on_open(result));
                }
                Out::Transmit(apdu) => {
                    let slot = self.session.bank();
                    let result = match self.card.as_mut() {
                        Some(card) => {
                            let started = std::time::Instant::now();
                            let result = card.transmit(&apdu).await;
                            self.shared.metrics.apdu(slot, started.elapsed());
                            result
                        }
                        None => Err(CardError::NotPresent("card released".into())),
                    };
                    if result.is_err() {
                        self.shared.metrics.card_error(slot, "transmit");
                    }
                    queue.extend(self.session.on_transmit(apdu, result));
                }
                Out::Reset(kind) => {
                    let result = match self.card.as_mut() {
                        Some(card) => card.reset(kind).await,
                        None => Err(CardError::NotPresent("card released".into())),
                    };
                    if result.is_err() {
                        self.shared.metrics.card_error(self.session.bank(), "reset");
                    }
                    queue.extend(self.session.on_reset(result));
                }
                Out::Release => {
                    if let Some(card) = self.card.take() {
                        card.release().await;
                    }
                }
                Out::TraceApdu(bank, command, response) => {
                    if let Some(g) = &self.shared.gsmtap {
                        g.apdu(bank, &command, &response);
                    }
                }
                Out::TraceAtr(bank, atr) => {
                    if let Some(g) = &self.shared.gsmtap {
                        g.atr(bank, &atr);
                    }
                }
            }
        }
        Ok(())
    }
}

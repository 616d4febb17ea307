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
use tracing::{Instrument, debug, info, warn};

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
/// released (PC/SC disconnect) either way. A PC/SC card's calls block
/// (IPC to pcscd, then the card): such a session runs on a thread of its
/// own, where they are plain calls, as in the C bankd's thread per slot.
/// Through tokio's blocking pool every APDU cost two more thread
/// hand-overs (5.1 context switches per APDU against C's 2.5). Soft cards
/// answer at once and stay on the shared runtime; an idle bankd holds no
/// thread per slot either way.
pub async fn serve(accepted: Accepted, shared: Arc<Shared>) {
    match shared.backend {
        Backend::Soft(_) => serve_here(accepted, shared).await,
        Backend::Pcsc(_) => serve_on_own_thread(accepted, shared).await,
    }
}

async fn serve_on_own_thread(accepted: Accepted, shared: Arc<Shared>) {
    let Accepted {
        stream,
        peer,
        shutdown,
    } = accepted;
    // The socket moves to the thread's runtime (it leaves this one's reactor).
    let stream = match stream.into_std() {
        Ok(s) => s,
        Err(e) => {
            debug!(error = %e, "client socket not handed over");
            return;
        }
    };
    let span = tracing::Span::current();
    let (ended, done) = tokio::sync::oneshot::channel::<()>();
    let session = move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "no runtime for a client session");
                return;
            }
        };
        runtime.block_on(
            async move {
                match tokio::net::TcpStream::from_std(stream) {
                    Ok(stream) => {
                        let accepted = Accepted {
                            stream,
                            peer,
                            shutdown,
                        };
                        serve_here(accepted, shared).await;
                    }
                    Err(e) => debug!(error = %e, "client socket not taken over"),
                }
            }
            .instrument(span),
        );
        drop(ended);
    };
    if let Err(e) = std::thread::Builder::new()
        .name("client-session".into())
        .spawn(session)
    {
        warn!(error = %e, "no thread for a client session");
        return;
    }
    // Held until the session ends: the listener counts it and drains it.
    let _ = done.await;
}

async fn serve_here(accepted: Accepted, shared: Arc<Shared>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::SoftBackend;
    use remsim_testing::{GUARD, Peer};
    use rspro::{BankSlot, ClientSlot, ComponentType, Msg, ResultCode, RsproPdu};
    use simcard::CardProfile;

    const B0: BankSlot = BankSlot {
        bank_id: 1,
        slot_nr: 0,
    };
    const C23: ClientSlot = ClientSlot {
        client_id: 23,
        slot_nr: 0,
    };

    async fn apdu(client: &mut Peer, hex_apdu: &str) -> Msg {
        let apdu = hex::decode(hex_apdu).expect("hex");
        client
            .send(&RsproPdu::tpdu_modem_to_card(C23, B0, apdu))
            .await;
        client.recv().await.msg
    }

    fn data(msg: Msg) -> Vec<u8> {
        match msg {
            Msg::TpduCardToModem(t) => t.data.to_vec(),
            other => panic!("TpduCardToModem expected, got {other:?}"),
        }
    }

    /// A soft card pulled out of its slot while a client uses it, then put
    /// back: the next APDU is answered with one ErrorInd naming the cause
    /// (the C bankd forwarded garbage, spec §5.9), the bankd keeps trying
    /// the slot without telling the client again, and the card back in the
    /// slot reaches the client as a new SetAtrReq, after which APDUs work.
    #[tokio::test]
    async fn a_soft_card_pulled_out_and_put_back_reaches_the_client_again() {
        let backend = SoftBackend::new(CardProfile::generate(0, 1), false).expect("profiles");
        let mut table = MapTable::default();
        table.create(1, 1, B0, C23);
        let (_maps_tx, maps) = watch::channel(Arc::new(table));
        let shared = Arc::new(Shared {
            backend: Backend::Soft(backend),
            maps,
            identity: Identity::new(ComponentType::RemsimBankd, "b", "remsim-bankd", "test"),
            gsmtap: None,
            keepalive: None,
            identify_timeout: GUARD,
            retry: Duration::from_millis(20),
            tls: None,
            metrics: Metrics::new(),
        });
        let soft = |present| match &shared.backend {
            Backend::Soft(b) => b.set_present(0, present),
            Backend::Pcsc(_) => unreachable!("a soft backend"),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (_stop, shutdown) = Shutdown::channel();
        let served = shared.clone();
        tokio::spawn(async move {
            let (stream, peer) = listener.accept().await.expect("accept");
            serve(
                Accepted {
                    stream,
                    peer,
                    shutdown,
                },
                served,
            )
            .await;
        });
        let mut client = Peer::connect(addr).await;
        let id = Identity::new(ComponentType::RemsimClient, "c", "remsim-client", "test");
        client
            .send(&RsproPdu::connect_client_req(id, Some(C23)))
            .await;
        let Msg::ConnectClientRes(res) = client.recv().await.msg else {
            panic!("ConnectClientRes expected")
        };
        assert_eq!(res.result, ResultCode::Ok);
        let Msg::SetAtrReq(first) = client.recv().await.msg else {
            panic!("SetAtrReq expected")
        };
        assert_eq!(
            data(apdu(&mut client, "00a4000c022fe2").await),
            [0x90, 0x00]
        );
        let iccid = data(apdu(&mut client, "00b000000a").await);

        soft(false);
        let Msg::ErrorInd(error) = apdu(&mut client, "00b000000a").await else {
            panic!("ErrorInd expected")
        };
        assert_eq!((error.bank_slot, error.client_slot), (Some(B0), Some(C23)));
        let text = error.error_string.unwrap_or_default();
        assert!(text.contains("removed"), "{text}");
        // While the card is out the bankd retries the slot every 20 ms and
        // stays quiet: the next PDU is the card coming back, not another
        // error.
        soft(true);
        let Msg::SetAtrReq(again) = client.recv().await.msg else {
            panic!("SetAtrReq expected once the card is back")
        };
        assert_eq!(again.atr, first.atr);
        assert_eq!(
            data(apdu(&mut client, "00a4000c022fe2").await),
            [0x90, 0x00]
        );
        assert_eq!(data(apdu(&mut client, "00b000000a").await), iccid);
    }
}

//! One simulated remsim-bankd (spec §5) with a soft SIM per slot, in
//! process: the server link (ConnectBankReq, then CreateMappingReq,
//! RemoveMappingReq and ResetStateReq answered as the C bankd answers
//! them) and the client port, one task per client connection going
//! through the C worker's states CONN_WAIT_ID, CONN_CLIENT_WAIT_MAP and
//! CONN_CLIENT_MAPPED_CARD. The map table has one owner, the task that
//! holds the server link; workers watch it.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use rspro::link::{Connection, ConnectionConfig};
use rspro::{BankSlot, ClientSlot, ComponentType, Decoded, Msg, ResultCode, RsproPdu};
use simcard::{CardProfile, SimCard};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout_at};
use tracing::{debug, warn};

use crate::{identity, known};

/// Pause after a failed accept (EMFILE and the like) before the next one.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// The bankd's slot maps by the client slot that connects.
type Maps = BTreeMap<ClientSlot, BankSlot>;

#[derive(Debug, Clone)]
pub struct BankSpec {
    pub bank_id: u32,
    pub slots: u32,
    /// Where clients reach this bank.
    pub listen: SocketAddr,
    /// The source address of the server link (source-ip endpoints).
    pub source: Option<IpAddr>,
    /// The first soft SIM's number (`CardProfile::generated`), so that
    /// every card of a run is another.
    pub first_card: u32,
}

/// A bank listening for clients, not yet known to the server.
pub struct SimBank {
    spec: BankSpec,
    listener: TcpListener,
    cards: Arc<[CardProfile]>,
}

/// A bank the server accepted (ConnectBankRes ok), ready to serve.
pub struct RegisteredBank {
    bank: SimBank,
    link: Connection,
    timeout: Duration,
}

impl SimBank {
    pub fn bind(spec: BankSpec) -> anyhow::Result<SimBank> {
        let listener = remsim_daemon::listen::bind(spec.listen)
            .with_context(|| format!("bank {}: listen on {}", spec.bank_id, spec.listen))?;
        let cards: Arc<[CardProfile]> = CardProfile::generate(spec.first_card, spec.slots).into();
        Ok(SimBank {
            spec,
            listener,
            cards,
        })
    }

    pub fn bank_id(&self) -> u32 {
        self.spec.bank_id
    }

    /// The address clients are to connect to.
    pub fn endpoint(&self) -> anyhow::Result<SocketAddr> {
        self.listener
            .local_addr()
            .with_context(|| format!("bank {}: listening address", self.spec.bank_id))
    }

    /// Connects to the server (from the source address, if any) and waits
    /// for ConnectBankRes(ok), all within `timeout`.
    pub async fn register(
        self,
        server: SocketAddr,
        timeout: Duration,
    ) -> anyhow::Result<RegisteredBank> {
        let bank_id = self.spec.bank_id;
        let deadline = Instant::now() + timeout;
        let socket = if server.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .context("socket")?;
        if let Some(ip) = self.spec.source {
            socket
                .bind(SocketAddr::new(ip, 0))
                .with_context(|| format!("bank {bank_id}: bind the server link to {ip}"))?;
        }
        let stream = timeout_at(deadline, socket.connect(server))
            .await
            .map_err(|_| {
                anyhow!("bank {bank_id}: no TCP connection to the server {server} in time")
            })?
            .with_context(|| format!("bank {bank_id}: connect to the server {server}"))?;
        let mut link = Connection::new(stream, ConnectionConfig::client())
            .await
            .with_context(|| format!("bank {bank_id}: server link"))?;
        let hello = RsproPdu::connect_bank_req(
            identity(ComponentType::RemsimBankd),
            bank_id,
            self.spec.slots,
        );
        link.send(&hello)
            .await
            .with_context(|| format!("bank {bank_id}: server link"))?;
        loop {
            let received = timeout_at(deadline, link.recv())
                .await
                .map_err(|_| anyhow!("bank {bank_id}: no connectBankRes in time"))?
                .with_context(|| format!("bank {bank_id}: server link"))?;
            if let Some(Msg::ConnectBankRes(res)) = known(received) {
                if !res.result.is_ok() {
                    bail!(
                        "bank {bank_id}: the server answered connectBankRes({})",
                        res.result
                    );
                }
                return Ok(RegisteredBank {
                    bank: self,
                    link,
                    timeout,
                });
            }
        }
    }
}

impl RegisteredBank {
    /// Serves the server link and the clients until the task is dropped.
    /// A lost server link is logged; the maps installed so far keep
    /// serving, as in the C bankd.
    pub async fn serve(self) {
        let RegisteredBank {
            bank,
            mut link,
            timeout,
        } = self;
        let SimBank {
            spec,
            listener,
            cards,
        } = bank;
        let bank_id = spec.bank_id;
        let (maps, watcher) = watch::channel(Maps::new());
        let mut workers = JoinSet::new();
        let mut linked = true;
        loop {
            tokio::select! {
                received = link.recv(), if linked => {
                    let reply = match received {
                        Ok(decoded) => on_server_pdu(&maps, &spec, decoded),
                        Err(e) => {
                            warn!(bank = bank_id, error = %e, "server link lost");
                            linked = false;
                            None
                        }
                    };
                    if let Some(reply) = reply
                        && let Err(e) = link.send(&reply).await
                    {
                        warn!(bank = bank_id, error = %e, "server link lost");
                        linked = false;
                    }
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        workers.spawn(worker(stream, watcher.clone(), cards.clone(), bank_id, timeout));
                    }
                    Err(e) => {
                        warn!(bank = bank_id, error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_PAUSE).await;
                    }
                },
                Some(_) = workers.join_next(), if !workers.is_empty() => {}
            }
        }
    }
}

/// The answer to a PDU from the server, if it needs one.
fn on_server_pdu(
    maps: &watch::Sender<Maps>,
    spec: &BankSpec,
    received: Decoded,
) -> Option<RsproPdu> {
    Some(match known(received)? {
        Msg::CreateMappingReq(req) => {
            RsproPdu::create_mapping_res(create_mapping(maps, spec, req.bank, req.client))
        }
        Msg::RemoveMappingReq(req) => {
            RsproPdu::remove_mapping_res(remove_mapping(maps, spec, req.bank, req.client))
        }
        Msg::ResetStateReq(_) => {
            maps.send_modify(|m| m.clear());
            RsproPdu::reset_state_res(ResultCode::Ok)
        }
        _ => return None,
    })
}

/// The C bankd's checks of a bank slot in a mapping request (spec §5.3).
fn check_slot(spec: &BankSpec, bank: BankSlot) -> Result<(), ResultCode> {
    if bank.bank_id != spec.bank_id {
        Err(ResultCode::IllegalBankId)
    } else if bank.slot_nr >= spec.slots {
        Err(ResultCode::IllegalSlotId)
    } else {
        Ok(())
    }
}

fn create_mapping(
    maps: &watch::Sender<Maps>,
    spec: &BankSpec,
    bank: BankSlot,
    client: ClientSlot,
) -> ResultCode {
    if let Err(refused) = check_slot(spec, bank) {
        return refused;
    }
    maps.send_if_modified(|m| {
        if m.get(&client) == Some(&bank) {
            return false;
        }
        // One map per bank slot and per client slot: the new one replaces both.
        m.retain(|_, b| *b != bank);
        m.insert(client, bank);
        true
    });
    ResultCode::Ok
}

fn remove_mapping(
    maps: &watch::Sender<Maps>,
    spec: &BankSpec,
    bank: BankSlot,
    client: ClientSlot,
) -> ResultCode {
    if let Err(refused) = check_slot(spec, bank) {
        return refused;
    }
    let mut result = ResultCode::UnknownSlotmap;
    maps.send_if_modified(|m| {
        if m.get(&client) != Some(&bank) {
            return false;
        }
        m.remove(&client);
        result = ResultCode::Ok;
        true
    });
    result
}

async fn worker(
    stream: TcpStream,
    maps: watch::Receiver<Maps>,
    cards: Arc<[CardProfile]>,
    bank_id: u32,
    timeout: Duration,
) {
    let peer = stream.peer_addr().ok();
    if let Err(e) = serve_client(stream, maps, &cards, timeout).await {
        debug!(bank = bank_id, ?peer, error = %format!("{e:#}"), "client connection closed");
    }
}

/// One client connection, from its ConnectClientReq to its end.
async fn serve_client(
    stream: TcpStream,
    mut maps: watch::Receiver<Maps>,
    cards: &[CardProfile],
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut link = Connection::new(stream, ConnectionConfig::bankd_worker()).await?;
    let deadline = Instant::now() + timeout;
    // CONN_WAIT_ID
    let client = loop {
        let received = timeout_at(deadline, link.recv())
            .await
            .map_err(|_| anyhow!("no connectClientReq in time"))??;
        if let Some(Msg::ConnectClientReq(req)) = known(received) {
            break req.client_slot;
        }
    };
    let Some(client) = client else {
        let refusal = RsproPdu::connect_client_res(
            identity(ComponentType::RemsimBankd),
            ResultCode::IllegalClientId,
        );
        link.send(&refusal).await?;
        bail!("connectClientReq without a client slot");
    };
    // CONN_CLIENT_WAIT_MAP: the answer waits for the map (the C bankd
    // answers cardNotPresent and the C client reconnects, which would
    // only add noise to a measurement); PINGs are answered meanwhile.
    let bank_slot = loop {
        let lookup = async {
            maps.wait_for(|m| m.contains_key(&client))
                .await
                .map(|m| m.get(&client).copied())
        };
        tokio::select! {
            mapped = lookup => match mapped {
                Ok(Some(slot)) => break slot,
                Ok(None) => continue,
                Err(_) => bail!("the bank stopped"),
            },
            received = link.recv() => {
                received?;
            }
            () = sleep_until(deadline) => bail!("no map for client {client} in time"),
        }
    };
    // CONN_CLIENT_MAPPED_CARD: the card is powered up for this client, as
    // the C worker opens its reader per connection.
    let profile = cards
        .get(bank_slot.slot_nr as usize)
        .cloned()
        .with_context(|| format!("no card in slot {bank_slot}"))?;
    let mut card = SimCard::new(profile).context("soft SIM")?;
    let welcome =
        RsproPdu::connect_client_res(identity(ComponentType::RemsimBankd), ResultCode::Ok);
    link.send(&welcome).await?;
    link.send(&RsproPdu::set_atr_req(client, card.atr()))
        .await?;
    loop {
        let received = link.recv().await?;
        let Some(Msg::TpduModemToCard(tpdu)) = known(received) else {
            continue;
        };
        // A removed map ends the session without a PDU, as in the C worker (spec §5.10).
        let mapped = maps.borrow().get(&client).copied();
        if mapped != Some(bank_slot) {
            return Ok(());
        }
        if tpdu.to_bank_slot != bank_slot || tpdu.from_client_slot != client {
            bail!(
                "TPDU {} → {} on the link of {client} → {bank_slot}",
                tpdu.from_client_slot,
                tpdu.to_bank_slot
            );
        }
        let answer = card.transmit(&tpdu.data);
        link.send(&RsproPdu::tpdu_card_to_modem(bank_slot, client, answer))
            .await?;
    }
}

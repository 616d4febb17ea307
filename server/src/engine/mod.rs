//! The control plane's protocol logic as a sans-I/O state machine: RSPRO
//! identification of bankds and clients, the slot-map lifecycle (NEW,
//! UNACKNOWLEDGED, ACTIVE, DELETE_REQ, DELETING, plus REFUSED), pushing maps
//! to bankds and configuring clients. Inputs are decoded PDUs, connection
//! events, timers and API commands; outputs are [`Action`]s for the driver.
//!
//! Behaves on the wire like osmo-remsim-server (spec §3) with its bugs fixed
//! (§7 items 8-16): results of Create/RemoveMappingRes are honoured and
//! unsolicited ones ignored, an UNACKNOWLEDGED map can be deleted, removals
//! go out before creates and never unconfigure a remapped client, a bankd's
//! maps are resynchronised when it connects (maps
//! deleted while it was away get their RemoveMappingReq, optionally everything
//! is reset first), clients are told when their bankd goes,
//! and a dead duplicate connection is probed instead of blocking its slot.
//!
//! The engine is one struct with its state here and its behaviour in four
//! files: [`model`] (the vocabulary it speaks: maps, actions, store writes,
//! changes), [`identify`] (Connect*Req, duplicates and their probe),
//! [`bank_sync`] (what each bankd is owed and its answers, clients'
//! configuration) and [`api`] (management requests, checked then applied).

mod api;
mod bank_sync;
#[cfg(test)]
mod harness;
mod identify;
mod model;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use rspro::{BankSlot, ClientSlot, Identity, IpPort, Msg, ResultCode, RsproPdu};
use tracing::{debug, info};

pub use api::{ApiCommand, ApiOutcome, Plan};
pub use model::*;

/// Identifies one accepted TCP connection.
pub type ConnId = u64;

/// Requests a bankd may have unanswered at a time: a bank with many maps
/// owed gets them in a window, the rest as responses come back, so that no
/// burst outgrows its connection's queue.
pub const MAX_OWED: usize = 256;

/// The port clients are sent for a bankd without an endpoint override (the
/// C server's fixed value).
pub const BANKD_PORT: u16 = 9999;

/// How long a new connection may take to identify by default (C: T1).
pub const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a rejected connection stays open after its Connect*Res (C: T2).
pub const REJECT_CLOSE_DELAY: Duration = Duration::from_secs(1);

/// A request sent to a bankd whose response is still due (matched FIFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    Create(BankSlot, ClientSlot),
    Remove(BankSlot, ClientSlot),
    Reset,
}

#[derive(Debug, Clone)]
pub struct LiveBank {
    pub conn: ConnId,
    pub number_of_slots: u32,
    pub peer: SocketAddr,
    pub identity: Identity,
    owed: VecDeque<Owed>,
}

#[derive(Debug, Clone, Default)]
pub struct BankInfo {
    pub endpoint_override: Option<SocketAddr>,
    /// A ResetStateReq is owed before anything else (see `reset_on_connect`).
    reset_pending: bool,
    pub live: Option<LiveBank>,
}

#[derive(Debug, Clone)]
pub struct LiveClient {
    pub conn: ConnId,
    pub peer: SocketAddr,
    pub identity: Identity,
    /// The last ConfigClientBankReq sent.
    pub configured: Option<(BankSlot, IpPort)>,
}

/// A deleted map whose RemoveMappingReq its bankd still owes us an answer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Removal {
    bank: BankSlot,
    client: ClientSlot,
    sent: bool,
}

#[derive(Debug, Clone)]
enum Pending {
    Bank { bank_id: u32, number_of_slots: u32 },
    Client { slot: ClientSlot },
}

#[derive(Debug, Clone)]
enum Conn {
    Established {
        peer: SocketAddr,
    },
    /// Same identity as a live connection, whose holder is being probed.
    Waiting {
        peer: SocketAddr,
        identity: Box<Identity>,
        pending: Pending,
        holder: ConnId,
    },
    Bank(u32),
    Client(ClientSlot),
    Rejected,
}

pub struct Engine {
    identity: Identity,
    conns: HashMap<ConnId, Conn>,
    banks: BTreeMap<u32, BankInfo>,
    clients: BTreeMap<ClientSlot, LiveClient>,
    maps: BTreeMap<BankSlot, Slotmap>,
    by_client: HashMap<ClientSlot, BankSlot>,
    removals: BTreeMap<u32, Vec<Removal>>,
    probe_window: Duration,
    /// How long a new connection may take to identify (`--identify-timeout`).
    identify_timeout: Duration,
    reset_on_connect: bool,
}

impl Engine {
    /// `probe_window`: how long a newcomer waits for the verdict on the
    /// holder of its identity at most. `reset_on_connect`: clear every
    /// bankd's maps with ResetStateReq when it connects, before pushing ours
    /// (removes maps this server never knew of, at the cost of dropping the
    /// bankd's clients for a moment; off, as the C server).
    pub fn new(identity: Identity, probe_window: Duration, reset_on_connect: bool) -> Self {
        Engine {
            identity,
            conns: HashMap::new(),
            banks: BTreeMap::new(),
            clients: BTreeMap::new(),
            maps: BTreeMap::new(),
            by_client: HashMap::new(),
            removals: BTreeMap::new(),
            probe_window,
            identify_timeout: IDENTIFY_TIMEOUT,
            reset_on_connect,
        }
    }

    /// How long a connection may stay without ConnectBankReq/ConnectClientReq.
    pub fn with_identify_timeout(mut self, bound: Duration) -> Self {
        self.identify_timeout = bound;
        self
    }

    /// Loads persisted state (before any connection).
    pub fn load(
        &mut self,
        maps: Vec<(BankSlot, ClientSlot)>,
        removals: Vec<(BankSlot, ClientSlot)>,
        banks: Vec<(u32, Option<SocketAddr>)>,
    ) {
        for (bank, client) in maps {
            self.insert_map(bank, client);
        }
        for (bank, client) in removals {
            self.removals
                .entry(bank.bank_id)
                .or_default()
                .push(Removal {
                    bank,
                    client,
                    sent: false,
                });
        }
        for (bank_id, endpoint_override) in banks {
            self.banks.entry(bank_id).or_default().endpoint_override = endpoint_override;
        }
    }

    fn insert_map(&mut self, bank: BankSlot, client: ClientSlot) {
        self.maps.insert(
            bank,
            Slotmap {
                bank,
                client,
                state: MapState::New,
                result: None,
            },
        );
        self.by_client.insert(client, bank);
    }

    // ----- views -------------------------------------------------------

    pub fn slotmaps(&self) -> impl Iterator<Item = &Slotmap> {
        self.maps.values()
    }

    pub fn slotmap(&self, key: MapKey) -> Option<&Slotmap> {
        match key {
            MapKey::Bank(b) => self.maps.get(&b),
            MapKey::Client(c) => self.by_client.get(&c).and_then(|b| self.maps.get(b)),
        }
    }

    /// Banks that are connected or known from maps or settings.
    pub fn bank_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.banks.keys().copied().collect();
        ids.extend(self.maps.keys().map(|b| b.bank_id));
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    pub fn bank(&self, bank_id: u32) -> Option<&BankInfo> {
        self.banks.get(&bank_id)
    }

    /// Whether a bank is known at all.
    pub fn bank_known(&self, bank_id: u32) -> bool {
        self.banks.contains_key(&bank_id) || self.maps_of(bank_id).next().is_some()
    }

    /// The maps of one bank: a range of the map table, which is ordered by
    /// bank id first.
    fn maps_of(&self, bank_id: u32) -> impl Iterator<Item = &Slotmap> {
        Self::maps_in(&self.maps, bank_id)
    }

    /// `maps_of` for callers that hold other fields of the engine mutably.
    fn maps_in(maps: &BTreeMap<BankSlot, Slotmap>, bank_id: u32) -> impl Iterator<Item = &Slotmap> {
        maps.range(BankSlot::new(bank_id, 0)..=BankSlot::new(bank_id, u32::MAX))
            .map(|(_, m)| m)
    }

    pub fn clients(&self) -> impl Iterator<Item = (&ClientSlot, &LiveClient)> {
        self.clients.iter()
    }

    pub fn client(&self, slot: ClientSlot) -> Option<&LiveClient> {
        self.clients.get(&slot)
    }

    /// The address clients are sent for a connected bank.
    pub fn endpoint(&self, bank_id: u32) -> Option<SocketAddr> {
        let info = self.banks.get(&bank_id)?;
        let live = info.live.as_ref()?;
        Some(
            info.endpoint_override
                .unwrap_or_else(|| SocketAddr::new(live.peer.ip().to_canonical(), BANKD_PORT)),
        )
    }

    // ----- connection events --------------------------------------------

    pub fn on_accept(&mut self, conn: ConnId, peer: SocketAddr) -> Vec<Action> {
        self.conns.insert(conn, Conn::Established { peer });
        vec![Action::StartTimer(
            conn,
            self.identify_timeout,
            Timer::Identify,
        )]
    }

    pub fn on_timer(&mut self, conn: ConnId, timer: Timer) -> Vec<Action> {
        let mut out = Vec::new();
        match (timer, self.conns.get(&conn)) {
            (Timer::Identify, Some(Conn::Established { .. })) => {
                info!(conn, "no Connect*Req in time; closing");
                out.push(Action::Close(conn));
            }
            (Timer::RejectClose, Some(Conn::Rejected)) => out.push(Action::Close(conn)),
            (Timer::ProbeVerdict, Some(Conn::Waiting { .. })) => {
                if let Some(Conn::Waiting { pending, .. }) = self.conns.get(&conn).cloned() {
                    self.reject(conn, &pending, ResultCode::IdentityInUse, &mut out);
                }
            }
            _ => {}
        }
        out
    }

    pub fn on_pdu(&mut self, conn: ConnId, pdu: RsproPdu) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(state) = self.conns.get(&conn).cloned() else {
            return out;
        };
        match (state, pdu.msg) {
            (Conn::Established { peer }, Msg::ConnectBankReq(req)) => {
                self.connect_bank(
                    conn,
                    peer,
                    req.identity,
                    req.bank_id,
                    req.number_of_slots,
                    &mut out,
                );
            }
            (Conn::Established { peer }, Msg::ConnectClientReq(req)) => {
                self.connect_client(conn, peer, req.identity, req.client_slot, &mut out);
            }
            (Conn::Bank(bank_id), Msg::CreateMappingRes(res)) => {
                self.on_create_res(bank_id, res.result, &mut out);
                // The window has room again.
                self.push(bank_id, &mut out);
            }
            (Conn::Bank(bank_id), Msg::RemoveMappingRes(res)) => {
                self.on_remove_res(bank_id, res.result, &mut out);
                self.push(bank_id, &mut out);
            }
            (Conn::Bank(bank_id), Msg::ResetStateRes(res)) => {
                self.on_reset_res(bank_id, res.result, &mut out);
            }
            (Conn::Client(slot), Msg::ConfigClientBankRes(res)) => {
                debug!(client = %slot, result = %res.result, "ConfigClientBankRes");
            }
            (state, msg) => {
                debug!(
                    conn,
                    ?state,
                    msg = msg.asn_name(),
                    "PDU not handled in this state; ignored"
                );
            }
        }
        out
    }

    pub fn on_close(&mut self, conn: ConnId) -> Vec<Action> {
        let mut out = Vec::new();
        match self.conns.remove(&conn) {
            Some(Conn::Bank(bank_id)) => {
                self.bank_gone(bank_id, &mut out);
                self.admit_waiting(
                    |p| matches!(p, Pending::Bank { bank_id: b, .. } if *b == bank_id),
                    &mut out,
                );
            }
            Some(Conn::Client(slot)) => {
                info!(client = %slot, "client disconnected");
                self.clients.remove(&slot);
                out.push(Action::Notify(Change::Client(slot)));
                self.admit_waiting(
                    |p| matches!(p, Pending::Client { slot: s } if *s == slot),
                    &mut out,
                );
            }
            _ => {}
        }
        out
    }
}

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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rspro::validate::MAX_ID;
use rspro::{BankSlot, ClientSlot, ComponentType, Identity, IpPort, Msg, ResultCode, RsproPdu};
use tracing::{debug, info, warn};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MapState {
    New,
    Unacknowledged,
    Active,
    DeleteReq,
    Deleting,
    Refused,
}

impl MapState {
    pub fn name(self) -> &'static str {
        match self {
            MapState::New => "NEW",
            MapState::Unacknowledged => "UNACKNOWLEDGED",
            MapState::Active => "ACTIVE",
            MapState::DeleteReq => "DELETE_REQ",
            MapState::Deleting => "DELETING",
            MapState::Refused => "REFUSED",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slotmap {
    pub bank: BankSlot,
    pub client: ClientSlot,
    pub state: MapState,
    /// The result of a refused CreateMappingReq.
    pub result: Option<ResultCode>,
}

impl Slotmap {
    /// The C server's slot-map id.
    pub fn id(&self) -> u32 {
        (self.bank.bank_id << 16) | self.bank.slot_nr
    }
}

/// Timers the engine asks the driver to run for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// No Connect*Req yet: close.
    Identify,
    /// Rejected connection: close now.
    RejectClose,
    /// No probe result came for a waiting newcomer: refuse it (a safety net;
    /// the holder's connection normally reports alive or closes first).
    ProbeVerdict,
}

/// Writes the driver commits to the store, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    InsertMap {
        bank: BankSlot,
        client: ClientSlot,
    },
    /// Deletes the map and records its removal as owed to the bankd.
    DeleteMap {
        bank: BankSlot,
        client: ClientSlot,
    },
    /// The bankd confirmed a removal.
    RemovalDone {
        bank: BankSlot,
        client: ClientSlot,
    },
    /// The bankd confirmed ResetStateReq: no removal owed any more.
    BankReset {
        bank_id: u32,
    },
    SetEndpoint {
        bank_id: u32,
        endpoint: Option<SocketAddr>,
    },
}

/// What changed, for watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Bank(u32),
    Client(ClientSlot),
    /// A map was created or changed (its current value, deleted ones included).
    Slotmap(Slotmap),
    /// A map is gone for good.
    SlotmapRemoved(Slotmap),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Send(ConnId, RsproPdu),
    Close(ConnId),
    StartTimer(ConnId, Duration, Timer),
    /// PING the peer with a short PONG deadline (a duplicate came along).
    Probe(ConnId),
    Store(StoreOp),
    Notify(Change),
}

/// A refused API request, mapped to a gRPC status by the driver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
}

/// What a request for one map names it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKey {
    Bank(BankSlot),
    Client(ClientSlot),
}

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

fn check_id(what: &str, value: u32) -> Result<(), ApiError> {
    if value > MAX_ID {
        return Err(ApiError::InvalidArgument(format!(
            "{what} {value} is out of range 0..{MAX_ID}"
        )));
    }
    Ok(())
}

fn check_bank_slot(b: BankSlot) -> Result<(), ApiError> {
    check_id("bank id", b.bank_id)?;
    check_id("bank slot number", b.slot_nr)
}

fn check_client_slot(c: ClientSlot) -> Result<(), ApiError> {
    check_id("client id", c.client_id)?;
    check_id("client slot number", c.slot_nr)
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

    /// The holder of an identity answered its probe: whoever waits for that
    /// identity is the duplicate.
    pub fn on_probe_alive(&mut self, holder: ConnId) -> Vec<Action> {
        let mut out = Vec::new();
        let waiting: Vec<(ConnId, Pending)> = self
            .conns
            .iter()
            .filter_map(|(id, c)| match c {
                Conn::Waiting {
                    holder: h, pending, ..
                } if *h == holder => Some((*id, pending.clone())),
                _ => None,
            })
            .collect();
        for (conn, pending) in waiting {
            self.reject(conn, &pending, ResultCode::IdentityInUse, &mut out);
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

    /// Admits the first connection waiting for the identity that just left.
    fn admit_waiting(&mut self, matches: impl Fn(&Pending) -> bool, out: &mut Vec<Action>) {
        let waiting = self.conns.iter().find_map(|(id, c)| match c {
            Conn::Waiting {
                peer,
                identity,
                pending,
                ..
            } if matches(pending) => Some((*id, *peer, (**identity).clone(), pending.clone())),
            _ => None,
        });
        if let Some((conn, peer, identity, pending)) = waiting {
            info!(conn, "duplicate's holder is gone; admitting the newcomer");
            self.admit(conn, peer, identity, pending, out);
        }
    }

    fn connect_bank(
        &mut self,
        conn: ConnId,
        peer: SocketAddr,
        identity: Identity,
        bank_id: u32,
        number_of_slots: u32,
        out: &mut Vec<Action>,
    ) {
        if identity.component_type != ComponentType::RemsimBankd {
            warn!(conn, kind = %identity.component_type, "ConnectBankReq from a non-bankd; closing");
            out.push(Action::Close(conn));
            return;
        }
        let pending = Pending::Bank {
            bank_id,
            number_of_slots,
        };
        if bank_id > MAX_ID {
            self.reject(conn, &pending, ResultCode::IllegalBankId, out);
            return;
        }
        let holder = self
            .banks
            .get(&bank_id)
            .and_then(|b| b.live.as_ref())
            .map(|l| l.conn);
        self.admit_or_probe(conn, peer, identity, pending, holder, out);
    }

    fn connect_client(
        &mut self,
        conn: ConnId,
        peer: SocketAddr,
        identity: Identity,
        slot: Option<ClientSlot>,
        out: &mut Vec<Action>,
    ) {
        if identity.component_type != ComponentType::RemsimClient {
            warn!(conn, kind = %identity.component_type, "ConnectClientReq from a non-client; closing");
            out.push(Action::Close(conn));
            return;
        }
        // No client id allocation (as the C server): a client must know its slot.
        let Some(slot) = slot else {
            warn!(conn, "ConnectClientReq without a client slot; closing");
            out.push(Action::Close(conn));
            return;
        };
        let pending = Pending::Client { slot };
        if slot.client_id > MAX_ID || slot.slot_nr > MAX_ID {
            self.reject(conn, &pending, ResultCode::IllegalClientId, out);
            return;
        }
        let holder = self.clients.get(&slot).map(|c| c.conn);
        self.admit_or_probe(conn, peer, identity, pending, holder, out);
    }

    fn admit_or_probe(
        &mut self,
        conn: ConnId,
        peer: SocketAddr,
        identity: Identity,
        pending: Pending,
        holder: Option<ConnId>,
        out: &mut Vec<Action>,
    ) {
        match holder {
            None => self.admit(conn, peer, identity, pending, out),
            Some(old) => {
                info!(conn, old, ?pending, "identity in use; probing the holder");
                self.conns.insert(
                    conn,
                    Conn::Waiting {
                        peer,
                        identity: Box::new(identity),
                        pending,
                        holder: old,
                    },
                );
                out.push(Action::Probe(old));
                out.push(Action::StartTimer(
                    conn,
                    self.probe_window,
                    Timer::ProbeVerdict,
                ));
            }
        }
    }

    fn reject(
        &mut self,
        conn: ConnId,
        pending: &Pending,
        result: ResultCode,
        out: &mut Vec<Action>,
    ) {
        info!(conn, ?pending, %result, "rejecting connection");
        let pdu = match pending {
            Pending::Bank { .. } => RsproPdu::connect_bank_res(self.identity.clone(), result),
            Pending::Client { .. } => RsproPdu::connect_client_res(self.identity.clone(), result),
        };
        self.conns.insert(conn, Conn::Rejected);
        out.push(Action::Send(conn, pdu));
        out.push(Action::StartTimer(
            conn,
            REJECT_CLOSE_DELAY,
            Timer::RejectClose,
        ));
    }

    fn admit(
        &mut self,
        conn: ConnId,
        peer: SocketAddr,
        identity: Identity,
        pending: Pending,
        out: &mut Vec<Action>,
    ) {
        match pending {
            Pending::Bank {
                bank_id,
                number_of_slots,
            } => {
                info!(bank = bank_id, %peer, slots = number_of_slots, "bankd connected");
                self.conns.insert(conn, Conn::Bank(bank_id));
                out.push(Action::Send(
                    conn,
                    RsproPdu::connect_bank_res(self.identity.clone(), ResultCode::Ok),
                ));
                let info = self.banks.entry(bank_id).or_default();
                info.reset_pending = self.reset_on_connect;
                info.live = Some(LiveBank {
                    conn,
                    number_of_slots,
                    peer,
                    identity,
                    owed: VecDeque::new(),
                });
                for r in self.removals.entry(bank_id).or_default() {
                    r.sent = false;
                }
                let retry: Vec<BankSlot> = self
                    .maps_of(bank_id)
                    .filter(|m| m.state != MapState::New)
                    .map(|m| m.bank)
                    .collect();
                for b in retry {
                    self.set_state(b, MapState::New, None, out);
                }
                out.push(Action::Notify(Change::Bank(bank_id)));
                self.push(bank_id, out);
            }
            Pending::Client { slot } => {
                info!(client = %slot, %peer, "client connected");
                self.conns.insert(conn, Conn::Client(slot));
                self.clients.insert(
                    slot,
                    LiveClient {
                        conn,
                        peer,
                        identity,
                        configured: None,
                    },
                );
                out.push(Action::Send(
                    conn,
                    RsproPdu::connect_client_res(self.identity.clone(), ResultCode::Ok),
                ));
                out.push(Action::Notify(Change::Client(slot)));
                self.update_client(slot, out);
            }
        }
    }

    fn set_state(
        &mut self,
        bank: BankSlot,
        state: MapState,
        result: Option<ResultCode>,
        out: &mut Vec<Action>,
    ) {
        if let Some(map) = self.maps.get_mut(&bank) {
            map.state = state;
            map.result = result;
            out.push(Action::Notify(Change::Slotmap(map.clone())));
        }
    }

    fn bank_gone(&mut self, bank_id: u32, out: &mut Vec<Action>) {
        info!(bank = bank_id, "bankd disconnected");
        if let Some(info) = self.banks.get_mut(&bank_id) {
            info.live = None;
        }
        for r in self.removals.entry(bank_id).or_default() {
            r.sent = false;
        }
        let affected: Vec<(BankSlot, ClientSlot, MapState)> = self
            .maps_of(bank_id)
            .map(|m| (m.bank, m.client, m.state))
            .collect();
        for (bank, client, state) in affected {
            if state != MapState::New {
                self.set_state(bank, MapState::New, None, out);
            }
            self.update_client(client, out);
        }
        out.push(Action::Notify(Change::Bank(bank_id)));
    }

    /// Sends a connected bankd what it is owed: a reset if pending, then
    /// removals, then creates (removals first, so that a slot deleted and
    /// re-mapped ends up with its new map).
    fn push(&mut self, bank_id: u32, out: &mut Vec<Action>) {
        let Some(info) = self.banks.get_mut(&bank_id) else {
            return;
        };
        let Some(live) = info.live.as_mut() else {
            return;
        };
        let conn = live.conn;
        if info.reset_pending {
            if !live.owed.contains(&Owed::Reset) {
                live.owed.push_back(Owed::Reset);
                out.push(Action::Send(conn, RsproPdu::reset_state_req()));
            }
        } else {
            for r in self.removals.entry(bank_id).or_default() {
                if live.owed.len() >= MAX_OWED {
                    break;
                }
                if !r.sent {
                    r.sent = true;
                    live.owed.push_back(Owed::Remove(r.bank, r.client));
                    // No event: the map already left the list (and Watch)
                    // when it was deleted.
                    out.push(Action::Send(
                        conn,
                        RsproPdu::remove_mapping_req(r.client, r.bank),
                    ));
                }
            }
        }
        // Creates only after every removal is out (or covered by the
        // reset), so none overtakes one.
        let removals_out = info.reset_pending
            || self
                .removals
                .get(&bank_id)
                .is_none_or(|list| list.iter().all(|r| r.sent));
        let room = if removals_out {
            MAX_OWED.saturating_sub(live.owed.len())
        } else {
            0
        };
        let creates: Vec<(BankSlot, ClientSlot)> = Self::maps_in(&self.maps, bank_id)
            .filter(|m| m.state == MapState::New)
            .take(room)
            .map(|m| (m.bank, m.client))
            .collect();
        for (bank, client) in &creates {
            live.owed.push_back(Owed::Create(*bank, *client));
            out.push(Action::Send(
                conn,
                RsproPdu::create_mapping_req(*client, *bank),
            ));
        }
        for (bank, _) in creates {
            self.set_state(bank, MapState::Unacknowledged, None, out);
        }
    }

    /// Pops the oldest owed response if it is of the expected kind.
    fn pop_owed(
        &mut self,
        bank_id: u32,
        what: &str,
        matches: impl Fn(&Owed) -> bool,
    ) -> Option<Owed> {
        let live = self.banks.get_mut(&bank_id)?.live.as_mut()?;
        match live.owed.front() {
            Some(front) if matches(front) => live.owed.pop_front(),
            other => {
                warn!(bank = bank_id, expected = ?other, "unsolicited {what}; ignored");
                None
            }
        }
    }

    fn on_create_res(&mut self, bank_id: u32, result: ResultCode, out: &mut Vec<Action>) {
        let Some(Owed::Create(bank, client)) = self.pop_owed(bank_id, "CreateMappingRes", |o| {
            matches!(o, Owed::Create(..))
        }) else {
            return;
        };
        let current = self
            .maps
            .get(&bank)
            .is_some_and(|m| m.client == client && m.state == MapState::Unacknowledged);
        if !current {
            // Deleted (or replaced) meanwhile: its removal follows in order.
            debug!(%bank, %client, %result, "CreateMappingRes for a map no longer current");
            return;
        }
        if result.is_ok() {
            self.set_state(bank, MapState::Active, None, out);
            self.update_client(client, out);
        } else {
            warn!(%bank, %client, %result, "bankd refused the map");
            self.set_state(bank, MapState::Refused, Some(result), out);
        }
    }

    fn on_remove_res(&mut self, bank_id: u32, result: ResultCode, out: &mut Vec<Action>) {
        let Some(Owed::Remove(bank, client)) = self.pop_owed(bank_id, "RemoveMappingRes", |o| {
            matches!(o, Owed::Remove(..))
        }) else {
            return;
        };
        if !result.is_ok() {
            // unknownSlotmap and the like: the bankd has no such map either way.
            info!(%bank, %client, %result, "RemoveMappingRes not ok; map not installed there");
        }
        self.finish_removal(bank, client, out);
        self.update_client(client, out);
    }

    fn finish_removal(&mut self, bank: BankSlot, client: ClientSlot, out: &mut Vec<Action>) {
        let list = self.removals.entry(bank.bank_id).or_default();
        if let Some(i) = list
            .iter()
            .position(|r| r.bank == bank && r.client == client && r.sent)
        {
            list.remove(i);
        }
        // Only forget it in the store if no later deletion of the same pair is owed.
        if !list.iter().any(|r| r.bank == bank && r.client == client) {
            out.push(Action::Store(StoreOp::RemovalDone { bank, client }));
        }
        out.push(Action::Notify(Change::SlotmapRemoved(Slotmap {
            bank,
            client,
            state: MapState::Deleting,
            result: None,
        })));
    }

    fn on_reset_res(&mut self, bank_id: u32, result: ResultCode, out: &mut Vec<Action>) {
        if self
            .pop_owed(bank_id, "ResetStateRes", |o| *o == Owed::Reset)
            .is_none()
        {
            return;
        }
        if let Some(info) = self.banks.get_mut(&bank_id) {
            info.reset_pending = false;
        }
        if result.is_ok() {
            out.push(Action::Store(StoreOp::BankReset { bank_id }));
            let dropped = self.removals.remove(&bank_id).unwrap_or_default();
            for r in dropped {
                out.push(Action::Notify(Change::SlotmapRemoved(Slotmap {
                    bank: r.bank,
                    client: r.client,
                    state: MapState::DeleteReq,
                    result: None,
                })));
            }
        } else {
            warn!(bank = bank_id, %result, "bankd refused ResetStateReq; sending removals instead");
        }
        self.push(bank_id, out);
    }

    /// Sends a client the configuration it should have, if it differs from
    /// what it was last sent: its ACTIVE map's bank slot and bankd, or
    /// `0.0.0.0:0` once it has none.
    fn update_client(&mut self, slot: ClientSlot, out: &mut Vec<Action>) {
        let desired = self
            .by_client
            .get(&slot)
            .and_then(|b| self.maps.get(b))
            .filter(|m| m.state == MapState::Active)
            .and_then(|m| Some((m.bank, IpPort::from(self.endpoint(m.bank.bank_id)?))));
        let Some(client) = self.clients.get_mut(&slot) else {
            return;
        };
        let next = match (desired, &client.configured) {
            (Some(d), _) => d,
            (None, Some((bank, addr))) if !addr.is_none() => (*bank, IpPort::none()),
            (None, _) => return,
        };
        if client.configured.as_ref() == Some(&next) {
            return;
        }
        info!(client = %slot, bank = %next.0, bankd = %rspro::pdu::shown(next.1.socket_addr()), "configuring client");
        out.push(Action::Send(
            client.conn,
            RsproPdu::config_client_bank_req(next.0, next.1.clone()),
        ));
        client.configured = Some(next);
        out.push(Action::Notify(Change::Client(slot)));
    }

    // ----- API ------------------------------------------------------------

    /// Checks a create; the driver stores it, then calls [`Engine::create`].
    pub fn check_create(&self, bank: BankSlot, client: ClientSlot) -> Result<(), ApiError> {
        check_bank_slot(bank)?;
        check_client_slot(client)?;
        if let Some(live) = self.banks.get(&bank.bank_id).and_then(|b| b.live.as_ref())
            && bank.slot_nr >= live.number_of_slots
        {
            return Err(ApiError::InvalidArgument(format!(
                "bank {} has {} slots (0..{}); slot {} does not exist",
                bank.bank_id,
                live.number_of_slots,
                live.number_of_slots.saturating_sub(1),
                bank.slot_nr
            )));
        }
        if let Some(m) = self.maps.get(&bank) {
            return Err(ApiError::AlreadyExists(format!(
                "bank slot {bank} is already mapped to client slot {}",
                m.client
            )));
        }
        if let Some(b) = self.by_client.get(&client) {
            return Err(ApiError::AlreadyExists(format!(
                "client slot {client} is already mapped to bank slot {b}"
            )));
        }
        Ok(())
    }

    /// Applies a stored create.
    pub fn create(&mut self, bank: BankSlot, client: ClientSlot) -> Vec<Action> {
        let mut out = Vec::new();
        info!(%bank, %client, "slot map created");
        self.insert_map(bank, client);
        if let Some(m) = self.maps.get(&bank) {
            out.push(Action::Notify(Change::Slotmap(m.clone())));
        }
        self.push(bank.bank_id, &mut out);
        out
    }

    /// Finds the map a delete names; the driver stores the deletion, then
    /// calls [`Engine::delete`].
    pub fn check_delete(&self, key: MapKey) -> Result<Slotmap, ApiError> {
        match key {
            MapKey::Bank(b) => check_bank_slot(b)?,
            MapKey::Client(c) => check_client_slot(c)?,
        }
        self.slotmap(key).cloned().ok_or_else(|| {
            ApiError::NotFound(match key {
                MapKey::Bank(b) => format!("no slot map for bank slot {b}"),
                MapKey::Client(c) => format!("no slot map for client slot {c}"),
            })
        })
    }

    /// Applies a stored delete: the map leaves the list and its removal is
    /// owed to the bankd (sent now if it is connected).
    pub fn delete(&mut self, bank: BankSlot) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(map) = self.maps.remove(&bank) else {
            return out;
        };
        self.by_client.remove(&map.client);
        info!(%bank, client = %map.client, state = map.state.name(), "slot map deleted");
        // One owed removal per pair: maps created and deleted again while
        // the bankd is away do not pile up (the store keeps one row too).
        let owed = self.removals.entry(bank.bank_id).or_default();
        if !owed
            .iter()
            .any(|r| r.bank == bank && r.client == map.client && !r.sent)
        {
            owed.push(Removal {
                bank,
                client: map.client,
                sent: false,
            });
        }
        // It leaves the list now, so Watch says so now: a mirror fed by
        // Watch equals List after every change, also for a bank that never
        // connects. DELETING follows when the bankd confirms.
        out.push(Action::Notify(Change::SlotmapRemoved(Slotmap {
            state: MapState::DeleteReq,
            result: None,
            ..map.clone()
        })));
        let connected = self
            .banks
            .get(&bank.bank_id)
            .is_some_and(|b| b.live.is_some());
        if connected {
            // The client hears when the bankd confirms (as in the C ladder).
            self.push(bank.bank_id, &mut out);
        } else {
            self.update_client(map.client, &mut out);
        }
        out
    }

    pub fn check_endpoint(&self, bank_id: u32) -> Result<(), ApiError> {
        check_id("bank id", bank_id)
    }

    /// Applies a stored endpoint change; clients of the bank are told.
    pub fn set_endpoint(&mut self, bank_id: u32, endpoint: Option<SocketAddr>) -> Vec<Action> {
        let mut out = Vec::new();
        self.banks.entry(bank_id).or_default().endpoint_override = endpoint;
        let clients: Vec<ClientSlot> = self.maps_of(bank_id).map(|m| m.client).collect();
        for c in clients {
            self.update_client(c, &mut out);
        }
        out.push(Action::Notify(Change::Bank(bank_id)));
        out
    }

    /// Whether an address is usable as a bankd endpoint for clients.
    pub fn endpoint_ok(addr: &SocketAddr) -> bool {
        !addr.ip().is_unspecified()
            && addr.port() != 0
            && !matches!(addr.ip(), IpAddr::V4(v4) if v4.is_broadcast())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        let id = Identity::new(ComponentType::RemsimServer, "srv", "remsim-server", "test");
        Engine::new(id, Duration::from_millis(500), false)
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:40000".parse().expect("addr")
    }

    fn bank_req(bank_id: u32) -> RsproPdu {
        let id = Identity::new(ComponentType::RemsimBankd, "b", "remsim-bankd", "test");
        RsproPdu::connect_bank_req(id, bank_id, 8)
    }

    fn sent(actions: &[Action]) -> Vec<&'static str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(_, p) => Some(p.msg.asn_name()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_bank_owed_many_requests_gets_them_in_a_window() {
        let mut e = engine();
        let n = MAX_OWED as u32 + 44;
        for s in 0..n {
            let (bank, client) = (BankSlot::new(1, s), ClientSlot::new(s, 0));
            e.check_create(bank, client).expect("valid");
            e.create(bank, client);
        }
        // Deleted and mapped again while the bankd is away: a removal and a
        // create owed for each of the first 100 slots.
        for s in 0..100 {
            e.delete(BankSlot::new(1, s));
            e.create(BankSlot::new(1, s), ClientSlot::new(s, 1));
        }
        e.on_accept(1, peer());
        let first = sent(&e.on_pdu(1, bank_req(1)));
        assert_eq!(
            first.len(),
            1 + MAX_OWED,
            "ConnectBankRes and a full window"
        );
        assert_eq!(first[1..101], ["removeMappingReq"; 100]);
        assert!(first[101..].iter().all(|m| *m == "createMappingReq"));
        let mut total = first.len() - 1;
        // Each answer makes room for one more, until all are out.
        loop {
            let owed = e.banks[&1].live.as_ref().expect("live").owed.front();
            let res = match owed {
                None => break,
                Some(Owed::Create(..)) => RsproPdu::create_mapping_res(ResultCode::Ok),
                Some(_) => RsproPdu::remove_mapping_res(ResultCode::Ok),
            };
            let more = sent(&e.on_pdu(1, res)).len();
            assert!(more <= 1, "one answer, at most one more request");
            total += more;
        }
        assert_eq!(total, 100 + n as usize);
        assert!(e.slotmaps().all(|m| m.state == MapState::Active));
    }

    #[test]
    fn identify_timer_closes_only_unidentified_connections() {
        let mut e = engine();
        assert_eq!(
            e.on_accept(1, peer()),
            vec![Action::StartTimer(1, IDENTIFY_TIMEOUT, Timer::Identify)]
        );
        assert_eq!(e.on_timer(1, Timer::Identify), vec![Action::Close(1)]);
        e.on_accept(2, peer());
        e.on_pdu(2, bank_req(1));
        assert!(e.on_timer(2, Timer::Identify).is_empty());
        let mut e = engine().with_identify_timeout(Duration::from_secs(3));
        assert_eq!(
            e.on_accept(1, peer()),
            vec![Action::StartTimer(
                1,
                Duration::from_secs(3),
                Timer::Identify
            )]
        );
    }

    #[test]
    fn unsolicited_and_mismatched_responses_are_ignored() {
        let mut e = engine();
        e.on_accept(1, peer());
        e.on_pdu(1, bank_req(1));
        assert!(
            e.on_pdu(1, RsproPdu::create_mapping_res(ResultCode::Ok))
                .is_empty()
        );
        e.check_create(BankSlot::new(1, 0), ClientSlot::new(2, 0))
            .expect("valid");
        assert_eq!(
            sent(&e.create(BankSlot::new(1, 0), ClientSlot::new(2, 0))),
            vec!["createMappingReq"]
        );
        // A RemoveMappingRes while a create is owed does not consume it.
        assert!(
            e.on_pdu(1, RsproPdu::remove_mapping_res(ResultCode::Ok))
                .is_empty()
        );
        e.on_pdu(1, RsproPdu::create_mapping_res(ResultCode::Ok));
        let map = e.slotmap(MapKey::Bank(BankSlot::new(1, 0))).expect("map");
        assert_eq!(map.state, MapState::Active);
    }

    #[test]
    fn live_holder_wins_after_the_probe() {
        let mut e = engine();
        e.on_accept(1, peer());
        e.on_pdu(1, bank_req(3));
        e.on_accept(2, peer());
        let actions = e.on_pdu(2, bank_req(3));
        assert!(actions.contains(&Action::Probe(1)), "{actions:?}");
        assert!(sent(&actions).is_empty(), "no answer before the verdict");
        let verdict = e.on_probe_alive(1);
        assert_eq!(sent(&verdict), vec!["connectBankRes"]);
        let Some(Action::Send(_, res)) = verdict.first() else {
            panic!("{verdict:?}")
        };
        assert_eq!(res.msg.result(), Some(ResultCode::IdentityInUse));
        assert_eq!(e.on_timer(2, Timer::RejectClose), vec![Action::Close(2)]);
        assert!(
            e.on_timer(2, Timer::ProbeVerdict).is_empty(),
            "decided already"
        );
    }

    #[test]
    fn dead_holder_lets_the_newcomer_in() {
        let mut e = engine();
        e.on_accept(1, peer());
        e.on_pdu(1, bank_req(3));
        e.on_accept(2, peer());
        e.on_pdu(2, bank_req(3));
        let actions = e.on_close(1);
        assert!(sent(&actions).contains(&"connectBankRes"), "{actions:?}");
        assert!(e.on_timer(2, Timer::ProbeVerdict).is_empty());
        assert_eq!(
            e.bank(3).and_then(|b| b.live.as_ref()).map(|l| l.conn),
            Some(2)
        );
    }
}

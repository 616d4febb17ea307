//! A deterministic world for the engine, after quinn-proto's tests: bankds
//! and clients as plain values that answer what the engine sends them, a
//! store and a Watch mirror fed by its actions, and a virtual clock for its
//! timers. No sockets, no tasks, no sleeps: a run is a function of its steps.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use rspro::{BankSlot, ClientSlot, ComponentType, Identity, IpPort, Msg, ResultCode, RsproPdu};

use super::*;

/// A simulated bankd: installs what it is sent, refuses slots it lacks.
#[derive(Debug, Default)]
pub struct SimBank {
    pub bank_id: u32,
    pub slots: u32,
    /// Requests received and not answered yet, oldest first.
    pub inbox: VecDeque<RsproPdu>,
    /// Maps installed: bank slot → client slot.
    pub installed: BTreeMap<BankSlot, ClientSlot>,
    /// Whether it got its ConnectBankRes ok.
    pub admitted: bool,
}

/// A simulated client: remembers what it was configured with.
#[derive(Debug, Default)]
pub struct SimClient {
    pub slot: Option<ClientSlot>,
    pub admitted: bool,
    pub config: Option<(BankSlot, IpPort)>,
    /// Every ConfigClientBankReq received, in order.
    pub configs: Vec<(BankSlot, IpPort)>,
}

#[derive(Debug)]
pub enum Peer {
    Bank(SimBank),
    Client(SimClient),
}

pub struct World {
    pub engine: Engine,
    pub now: Duration,
    timers: BTreeMap<(Duration, u64), (ConnId, Timer)>,
    timer_seq: u64,
    next_conn: ConnId,
    pub peers: HashMap<ConnId, Peer>,
    /// The store as the engine's writes leave it.
    pub stored_maps: BTreeSet<(BankSlot, ClientSlot)>,
    pub stored_removals: BTreeSet<(BankSlot, ClientSlot)>,
    /// A Watch consumer's view: every change applied in order, by map id.
    pub mirror: BTreeMap<u32, Slotmap>,
    /// Connections the engine closed.
    pub closed: Vec<ConnId>,
    /// Every change the engine announced, in order.
    pub changes: Vec<Change>,
    /// Peers that no longer answer anything (a dead host not yet noticed).
    pub mute: BTreeSet<ConnId>,
}

fn peer_addr(conn: ConnId) -> SocketAddr {
    SocketAddr::from(([10, 0, (conn >> 8) as u8, conn as u8], 40000))
}

pub fn server_identity() -> Identity {
    Identity::new(ComponentType::RemsimServer, "srv", "remsim-server", "test")
}

fn bank_identity() -> Identity {
    Identity::new(ComponentType::RemsimBankd, "bank", "remsim-bankd", "test")
}

fn client_identity() -> Identity {
    Identity::new(
        ComponentType::RemsimClient,
        "client",
        "remsim-client",
        "test",
    )
}

impl Default for World {
    fn default() -> Self {
        World::new(Engine::new(
            server_identity(),
            Duration::from_secs(2),
            false,
        ))
    }
}

impl World {
    pub fn new(engine: Engine) -> Self {
        World {
            engine,
            now: Duration::ZERO,
            timers: BTreeMap::new(),
            timer_seq: 0,
            next_conn: 1,
            peers: HashMap::new(),
            stored_maps: BTreeSet::new(),
            stored_removals: BTreeSet::new(),
            mirror: BTreeMap::new(),
            closed: Vec::new(),
            changes: Vec::new(),
            mute: BTreeSet::new(),
        }
    }

    fn accept(&mut self, peer: Peer) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.peers.insert(conn, peer);
        let actions = self.engine.on_accept(conn, peer_addr(conn));
        self.perform(actions);
        conn
    }

    /// A bankd connects and sends ConnectBankReq.
    pub fn connect_bank(&mut self, bank_id: u32, slots: u32) -> ConnId {
        let conn = self.accept(Peer::Bank(SimBank {
            bank_id,
            slots,
            ..SimBank::default()
        }));
        let req = RsproPdu::connect_bank_req(bank_identity(), bank_id, slots);
        self.deliver(conn, req);
        conn
    }

    /// A client connects and sends ConnectClientReq.
    pub fn connect_client(&mut self, slot: ClientSlot) -> ConnId {
        let conn = self.accept(Peer::Client(SimClient {
            slot: Some(slot),
            ..SimClient::default()
        }));
        self.deliver(
            conn,
            RsproPdu::connect_client_req(client_identity(), Some(slot)),
        );
        conn
    }

    /// A connection that never identifies.
    pub fn connect_silent(&mut self) -> ConnId {
        self.accept(Peer::Client(SimClient::default()))
    }

    /// A PDU from a peer to the engine.
    pub fn deliver(&mut self, conn: ConnId, pdu: RsproPdu) {
        let actions = self.engine.on_pdu(conn, pdu);
        self.perform(actions);
    }

    /// The peer's TCP connection goes (a crash, a cut network).
    pub fn disconnect(&mut self, conn: ConnId) {
        if self.peers.remove(&conn).is_some() {
            let actions = self.engine.on_close(conn);
            self.perform(actions);
        }
    }

    /// A management command as the service runs it: plan, commit, apply.
    /// `store_fails`: the commit fails, so nothing may change.
    pub fn api(&mut self, command: ApiCommand, store_fails: bool) -> Result<ApiOutcome, String> {
        let plan = self.engine.plan(command).map_err(|e| e.to_string())?;
        if store_fails {
            return Err("store unavailable".into());
        }
        for op in &plan.ops {
            self.store(op);
        }
        let (outcome, actions) = self.engine.apply(plan);
        self.perform(actions);
        Ok(outcome)
    }

    /// The bankd on `conn` answers up to `n` of its requests, in order.
    pub fn bank_answers(&mut self, conn: ConnId, n: usize) {
        for _ in 0..n.min(100_000) {
            let Some(Peer::Bank(bank)) = self.peers.get_mut(&conn) else {
                return;
            };
            let Some(req) = bank.inbox.pop_front() else {
                return;
            };
            let answer = match req.msg {
                Msg::CreateMappingReq(m) => {
                    let ok = m.bank.bank_id == bank.bank_id && m.bank.slot_nr < bank.slots;
                    if ok {
                        bank.installed.insert(m.bank, m.client);
                        RsproPdu::create_mapping_res(ResultCode::Ok)
                    } else {
                        RsproPdu::create_mapping_res(ResultCode::IllegalSlotId)
                    }
                }
                Msg::RemoveMappingReq(m) => {
                    if bank.installed.get(&m.bank) == Some(&m.client) {
                        bank.installed.remove(&m.bank);
                        RsproPdu::remove_mapping_res(ResultCode::Ok)
                    } else {
                        RsproPdu::remove_mapping_res(ResultCode::UnknownSlotmap)
                    }
                }
                Msg::ResetStateReq(_) => {
                    bank.installed.clear();
                    RsproPdu::reset_state_res(ResultCode::Ok)
                }
                _ => continue,
            };
            self.deliver(conn, answer);
        }
    }

    /// Takes the requests a bankd has received and not answered, for a
    /// test that answers by hand with [`World::deliver`].
    pub fn take_requests(&mut self, conn: ConnId) -> Vec<RsproPdu> {
        match self.peers.get_mut(&conn) {
            Some(Peer::Bank(b)) => b.inbox.drain(..).collect(),
            _ => Vec::new(),
        }
    }

    /// The requests a bankd has received and not answered, left in place.
    pub fn pending_requests(&self, conn: ConnId) -> Vec<RsproPdu> {
        match self.peers.get(&conn) {
            Some(Peer::Bank(b)) => b.inbox.iter().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// The ConfigClientBankReqs a client has received since the last call.
    pub fn take_configs(&mut self, conn: ConnId) -> Vec<(BankSlot, IpPort)> {
        match self.peers.get_mut(&conn) {
            Some(Peer::Client(c)) => std::mem::take(&mut c.configs),
            _ => Vec::new(),
        }
    }

    pub fn map_state(&self, bank: BankSlot) -> Option<(MapState, Option<ResultCode>)> {
        self.engine
            .slotmap(MapKey::Bank(bank))
            .map(|m| (m.state, m.result))
    }

    /// Every bankd answers everything, until nothing is owed. A world that
    /// has not settled after many rounds never will: a bug, not a wait.
    pub fn settle(&mut self) {
        for _ in 0..10_000 {
            let busy: Vec<ConnId> = self
                .peers
                .iter()
                .filter_map(|(c, p)| match p {
                    Peer::Bank(b) if !b.inbox.is_empty() => Some(*c),
                    _ => None,
                })
                .collect();
            if busy.is_empty() {
                return;
            }
            for conn in busy {
                self.bank_answers(conn, usize::MAX);
            }
        }
        panic!("the bankds never settle: the engine keeps sending requests");
    }

    /// A mute peer's PONG finally comes in (reported as the link does).
    pub fn probe_answered(&mut self, conn: ConnId) {
        let actions = self.engine.on_probe_alive(conn);
        self.perform(actions);
    }

    /// Moves the virtual clock on, firing due timers in order.
    pub fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        while let Some((&(at, seq), _)) = self.timers.iter().next() {
            if at > until {
                break;
            }
            let Some((conn, timer)) = self.timers.remove(&(at, seq)) else {
                break;
            };
            self.now = at;
            let actions = self.engine.on_timer(conn, timer);
            self.perform(actions);
        }
        self.now = until;
    }

    fn store(&mut self, op: &StoreOp) {
        match *op {
            StoreOp::InsertMap { bank, client } => {
                self.stored_maps.insert((bank, client));
            }
            StoreOp::DeleteMap { bank, client } => {
                self.stored_maps.remove(&(bank, client));
                self.stored_removals.insert((bank, client));
            }
            StoreOp::RemovalDone { bank, client } => {
                self.stored_removals.remove(&(bank, client));
            }
            StoreOp::BankReset { bank_id } => {
                self.stored_removals.retain(|(b, _)| b.bank_id != bank_id);
            }
            StoreOp::SetEndpoint { .. } => {}
        }
    }

    fn perform(&mut self, actions: Vec<Action>) {
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Send(conn, pdu) => self.receive(conn, pdu),
                Action::Close(conn) => {
                    if self.peers.remove(&conn).is_some() {
                        self.closed.push(conn);
                        queue.extend(self.engine.on_close(conn));
                    }
                }
                Action::StartTimer(conn, after, timer) => {
                    self.timer_seq += 1;
                    self.timers
                        .insert((self.now + after, self.timer_seq), (conn, timer));
                }
                // A live simulated peer answers at once; a mute one never.
                Action::Probe(conn) => {
                    if self.peers.contains_key(&conn) && !self.mute.contains(&conn) {
                        queue.extend(self.engine.on_probe_alive(conn));
                    }
                }
                Action::Store(op) => self.store(&op),
                Action::Notify(change) => {
                    match &change {
                        Change::Slotmap(m) => {
                            self.mirror.insert(m.id(), m.clone());
                        }
                        Change::SlotmapRemoved(m) => {
                            self.mirror.remove(&m.id());
                        }
                        Change::Bank(_) | Change::Client(_) => {}
                    }
                    self.changes.push(change);
                }
            }
        }
    }

    /// A PDU from the engine arrives at a peer.
    fn receive(&mut self, conn: ConnId, pdu: RsproPdu) {
        match (self.peers.get_mut(&conn), pdu.msg) {
            (Some(Peer::Bank(b)), Msg::ConnectBankRes(r)) => b.admitted = r.result.is_ok(),
            (Some(Peer::Bank(b)), msg) => b.inbox.push_back(RsproPdu::new(msg)),
            (Some(Peer::Client(c)), Msg::ConnectClientRes(r)) => c.admitted = r.result.is_ok(),
            (Some(Peer::Client(c)), Msg::ConfigClientBankReq(m)) => {
                c.configs.push((m.bank_slot, m.bankd.clone()));
                c.config = (!m.bankd.is_none()).then_some((m.bank_slot, m.bankd));
            }
            _ => {}
        }
    }

    /// The admitted bankd with this id, if any.
    pub fn bank_conn(&self, bank_id: u32) -> Option<ConnId> {
        self.peers.iter().find_map(|(c, p)| match p {
            Peer::Bank(b) if b.admitted && b.bank_id == bank_id => Some(*c),
            _ => None,
        })
    }

    pub fn client_conn(&self, slot: ClientSlot) -> Option<ConnId> {
        self.peers.iter().find_map(|(c, p)| match p {
            Peer::Client(cl) if cl.admitted && cl.slot == Some(slot) => Some(*c),
            _ => None,
        })
    }

    pub fn maps(&self) -> BTreeMap<u32, Slotmap> {
        self.engine
            .slotmaps()
            .map(|m| (m.id(), m.clone()))
            .collect()
    }

    /// What must hold after every step. Returns the first violation.
    pub fn check_always(&self) -> Result<(), String> {
        let list = self.maps();
        if self.mirror != list {
            return Err(format!(
                "Watch mirror differs from List:\n mirror {:?}\n list   {:?}",
                self.mirror, list
            ));
        }
        let stored: BTreeSet<_> = list.values().map(|m| (m.bank, m.client)).collect();
        if stored != self.stored_maps {
            return Err(format!(
                "store {:?} differs from the engine {stored:?}",
                self.stored_maps
            ));
        }
        for m in list.values() {
            if m.state != MapState::Active {
                continue;
            }
            let installed = self
                .bank_conn(m.bank.bank_id)
                .and_then(|c| match self.peers.get(&c) {
                    Some(Peer::Bank(b)) => b.installed.get(&m.bank).copied(),
                    _ => None,
                });
            if installed != Some(m.client) {
                return Err(format!("{m:?} is ACTIVE but its bankd has {installed:?}"));
            }
        }
        // A configured client is sent to the bank slot of its ACTIVE map,
        // or of a deleted one until the bankd confirms the removal (the C
        // server's order: the client hears after the bankd).
        for p in self.peers.values() {
            if let Peer::Client(c) = p
                && let (Some(slot), Some((bank, _))) = (c.slot, &c.config)
            {
                let active = list
                    .values()
                    .find(|m| m.client == slot && m.state == MapState::Active);
                let being_removed = self.stored_removals.contains(&(*bank, slot));
                if active.map(|m| m.bank) != Some(*bank) && !being_removed {
                    return Err(format!(
                        "client {slot} configured for {bank} without an ACTIVE map there"
                    ));
                }
            }
        }
        Ok(())
    }

    /// What must hold once every bankd has answered everything it was sent.
    pub fn check_settled(&self) -> Result<(), String> {
        self.check_always()?;
        let list = self.maps();
        for p in self.peers.values() {
            let Peer::Bank(b) = p else { continue };
            if !b.admitted {
                continue;
            }
            let expected: BTreeMap<BankSlot, ClientSlot> = list
                .values()
                .filter(|m| m.bank.bank_id == b.bank_id && m.state != MapState::Refused)
                .map(|m| (m.bank, m.client))
                .collect();
            if b.installed != expected {
                return Err(format!(
                    "bank {} has {:?}, the server {expected:?}",
                    b.bank_id, b.installed
                ));
            }
            for m in list.values().filter(|m| m.bank.bank_id == b.bank_id) {
                if !matches!(m.state, MapState::Active | MapState::Refused) {
                    return Err(format!("{m:?} not settled with its connected bankd"));
                }
            }
            if self
                .stored_removals
                .iter()
                .any(|(bank, _)| bank.bank_id == b.bank_id)
            {
                return Err(format!(
                    "removals still owed to connected bank {}",
                    b.bank_id
                ));
            }
        }
        // Every connected client is configured for its ACTIVE map, or for
        // nothing: no deleted map's bank lingers once bankds have answered.
        for p in self.peers.values() {
            if let Peer::Client(c) = p
                && let (Some(slot), Some((bank, _))) = (c.slot, &c.config)
                && !list
                    .values()
                    .any(|m| m.client == slot && m.bank == *bank && m.state == MapState::Active)
            {
                return Err(format!("client {slot} still configured for {bank}"));
            }
        }
        // Every connected client with an ACTIVE map is configured for it.
        for p in self.peers.values() {
            if let Peer::Client(c) = p
                && c.admitted
                && let Some(slot) = c.slot
                && let Some(m) = list
                    .values()
                    .find(|m| m.client == slot && m.state == MapState::Active)
                && c.config.as_ref().map(|(b, _)| *b) != Some(m.bank)
            {
                return Err(format!("client {slot} not configured for its {m:?}"));
            }
        }
        Ok(())
    }
}

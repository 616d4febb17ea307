//! Management requests: each is checked against the engine's state, its
//! store writes committed by the driver, and only then applied.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use rspro::validate::MAX_ID;
use rspro::{BankSlot, ClientSlot};
use tracing::info;

use super::*;

/// A management request that changes state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiCommand {
    CreateSlotmap(BankSlot, ClientSlot),
    DeleteSlotmap(MapKey),
    /// Deletes every map.
    ResetAll,
    SetBankEndpoint(u32, Option<SocketAddr>),
}

/// A checked command and the store writes to commit before it is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<StoreOp>,
    step: Step,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Create(BankSlot, ClientSlot),
    Delete(Slotmap),
    ResetAll(Vec<Slotmap>),
    SetEndpoint(u32, Option<SocketAddr>),
}

/// What an applied command answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiOutcome {
    /// The map created, or the one deleted as it was.
    Slotmap(Slotmap),
    /// How many maps a reset deleted.
    Deleted(u32),
    /// The bank whose endpoint changed.
    Bank(u32),
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
    /// Checks a command against the current state: the store writes to
    /// commit, or why it is refused. Nothing changes until [`Engine::apply`].
    pub fn plan(&self, command: ApiCommand) -> Result<Plan, ApiError> {
        let (ops, step) = match command {
            ApiCommand::CreateSlotmap(bank, client) => {
                self.check_create(bank, client)?;
                (
                    vec![StoreOp::InsertMap { bank, client }],
                    Step::Create(bank, client),
                )
            }
            ApiCommand::DeleteSlotmap(key) => {
                let map = self.find_slotmap(key)?;
                let op = StoreOp::DeleteMap {
                    bank: map.bank,
                    client: map.client,
                };
                (vec![op], Step::Delete(map))
            }
            ApiCommand::ResetAll => {
                let maps: Vec<Slotmap> = self.slotmaps().cloned().collect();
                let ops = maps
                    .iter()
                    .map(|m| StoreOp::DeleteMap {
                        bank: m.bank,
                        client: m.client,
                    })
                    .collect();
                (ops, Step::ResetAll(maps))
            }
            ApiCommand::SetBankEndpoint(bank_id, endpoint) => {
                check_id("bank id", bank_id)?;
                if let Some(e) = endpoint
                    && !endpoint_ok(&e)
                {
                    return Err(ApiError::InvalidArgument(format!(
                        "{e} cannot be reached by clients: give a unicast address and a port other than 0"
                    )));
                }
                let op = StoreOp::SetEndpoint { bank_id, endpoint };
                (vec![op], Step::SetEndpoint(bank_id, endpoint))
            }
        };
        Ok(Plan { ops, step })
    }

    /// Plans creates that are to share one store transaction (the
    /// driver's group commit): each is checked against the current state
    /// and against the creates accepted before it in `creates`, so that
    /// the batch answers as the same creates made one after another would.
    pub fn plan_creates(&self, creates: &[(BankSlot, ClientSlot)]) -> Vec<Result<Plan, ApiError>> {
        let mut banks: HashMap<BankSlot, ClientSlot> = HashMap::new();
        let mut clients: HashMap<ClientSlot, BankSlot> = HashMap::new();
        creates
            .iter()
            .map(|&(bank, client)| {
                let plan = self.plan(ApiCommand::CreateSlotmap(bank, client))?;
                if let Some(c) = banks.get(&bank) {
                    return Err(ApiError::AlreadyExists(format!(
                        "bank slot {bank} is already mapped to client slot {c}"
                    )));
                }
                if let Some(b) = clients.get(&client) {
                    return Err(ApiError::AlreadyExists(format!(
                        "client slot {client} is already mapped to bank slot {b}"
                    )));
                }
                banks.insert(bank, client);
                clients.insert(client, bank);
                Ok(plan)
            })
            .collect()
    }

    /// Applies a plan whose store writes were committed.
    pub fn apply(&mut self, plan: Plan) -> (ApiOutcome, Vec<Action>) {
        match plan.step {
            Step::Create(bank, client) => {
                let actions = self.create(bank, client);
                let map = self.maps.get(&bank).cloned().unwrap_or(Slotmap {
                    bank,
                    client,
                    state: MapState::New,
                    result: None,
                });
                (ApiOutcome::Slotmap(map), actions)
            }
            Step::Delete(map) => {
                let actions = self.delete(map.bank);
                (ApiOutcome::Slotmap(map), actions)
            }
            Step::ResetAll(maps) => {
                let actions = maps.iter().flat_map(|m| self.delete(m.bank)).collect();
                let deleted = u32::try_from(maps.len()).unwrap_or(u32::MAX);
                (ApiOutcome::Deleted(deleted), actions)
            }
            Step::SetEndpoint(bank_id, endpoint) => {
                let actions = self.set_endpoint(bank_id, endpoint);
                (ApiOutcome::Bank(bank_id), actions)
            }
        }
    }

    /// A bank for GetBank: connected, or known from maps or settings.
    pub fn find_bank(&self, bank_id: u32) -> Result<(), ApiError> {
        if self.bank_known(bank_id) {
            Ok(())
        } else {
            Err(ApiError::NotFound(format!(
                "bank {bank_id} is not known (never connected, no slot maps)"
            )))
        }
    }

    /// A connected client for GetClient.
    pub fn find_client(&self, slot: ClientSlot) -> Result<&LiveClient, ApiError> {
        check_client_slot(slot)?;
        self.client(slot)
            .ok_or_else(|| ApiError::NotFound(format!("client {slot} is not connected")))
    }

    pub(super) fn check_create(&self, bank: BankSlot, client: ClientSlot) -> Result<(), ApiError> {
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

    pub(super) fn create(&mut self, bank: BankSlot, client: ClientSlot) -> Vec<Action> {
        let mut out = Vec::new();
        info!(%bank, %client, "slot map created");
        self.insert_map(bank, client);
        if let Some(m) = self.maps.get(&bank) {
            out.push(Action::Notify(Change::Slotmap(m.clone())));
        }
        self.push(bank.bank_id, &mut out);
        out
    }

    /// The map a request names.
    pub fn find_slotmap(&self, key: MapKey) -> Result<Slotmap, ApiError> {
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
    pub(super) fn delete(&mut self, bank: BankSlot) -> Vec<Action> {
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

    /// Applies a stored endpoint change; clients of the bank are told.
    pub(super) fn set_endpoint(
        &mut self,
        bank_id: u32,
        endpoint: Option<SocketAddr>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        self.banks.entry(bank_id).or_default().endpoint_override = endpoint;
        let clients: Vec<ClientSlot> = self.maps_of(bank_id).map(|m| m.client).collect();
        for c in clients {
            self.update_client(c, &mut out);
        }
        out.push(Action::Notify(Change::Bank(bank_id)));
        out
    }
}

/// Whether an address is usable as a bankd endpoint for clients.
fn endpoint_ok(addr: &SocketAddr) -> bool {
    !addr.ip().is_unspecified()
        && addr.port() != 0
        && !matches!(addr.ip(), IpAddr::V4(v4) if v4.is_broadcast())
}

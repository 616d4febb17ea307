//! The engine's vocabulary: slot maps and their states, the actions it
//! asks its driver to carry out, the store writes and the changes watchers
//! see, and the errors of refused management requests.

use std::net::SocketAddr;
use std::time::Duration;

use rspro::{BankSlot, ClientSlot, ResultCode, RsproPdu};

use super::ConnId;

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
    /// The C server's slot-map id: bank id × 65536 + slot number (ids and
    /// slots are below 1024, so it cannot overflow).
    pub fn id(&self) -> u32 {
        self.bank.bank_id * 65536 + self.bank.slot_nr
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

impl ApiError {
    /// The same refusal, its message prefixed with where it arose (which
    /// map of a batch).
    pub fn within(self, context: &str) -> ApiError {
        match self {
            ApiError::InvalidArgument(m) => ApiError::InvalidArgument(format!("{context}: {m}")),
            ApiError::NotFound(m) => ApiError::NotFound(format!("{context}: {m}")),
            ApiError::AlreadyExists(m) => ApiError::AlreadyExists(format!("{context}: {m}")),
        }
    }
}

/// What a request for one map names it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKey {
    Bank(BankSlot),
    Client(ClientSlot),
}

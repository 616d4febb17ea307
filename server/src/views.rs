//! The engine's state as `remsim.v1` protobuf messages.

use remsim_api::v1 as pb;
use rspro::{BankSlot, ClientSlot, Identity};

use crate::engine::{Engine, MapState, Slotmap};

pub fn bank_slot(b: BankSlot) -> pb::BankSlot {
    pb::BankSlot {
        bank_id: b.bank_id,
        slot_nr: b.slot_nr,
    }
}

pub fn client_slot(c: ClientSlot) -> pb::ClientSlot {
    pb::ClientSlot {
        client_id: c.client_id,
        slot_nr: c.slot_nr,
    }
}

fn identity(id: &Identity) -> pb::ComponentIdentity {
    let s = |o: &Option<String>| o.clone().unwrap_or_default();
    pb::ComponentIdentity {
        r#type: id.component_type.to_string(),
        name: id.name.clone(),
        software: id.software.clone(),
        sw_version: id.sw_version.clone(),
        hw_manufacturer: s(&id.hw_manufacturer),
        hw_model: s(&id.hw_model),
        hw_serial_nr: s(&id.hw_serial_nr),
        hw_version: s(&id.hw_version),
        fw_version: s(&id.fw_version),
    }
}

fn state(s: MapState) -> pb::SlotmapState {
    match s {
        MapState::New => pb::SlotmapState::New,
        MapState::Unacknowledged => pb::SlotmapState::Unacknowledged,
        MapState::Active => pb::SlotmapState::Active,
        MapState::DeleteReq => pb::SlotmapState::DeleteReq,
        MapState::Deleting => pb::SlotmapState::Deleting,
        MapState::Refused => pb::SlotmapState::Refused,
    }
}

pub fn slotmap(m: &Slotmap) -> pb::Slotmap {
    pb::Slotmap {
        id: m.id(),
        bank: Some(bank_slot(m.bank)),
        client: Some(client_slot(m.client)),
        state: state(m.state).into(),
        result: m.result.map(|r| r.to_string()).unwrap_or_default(),
    }
}

pub fn bank(engine: &Engine, bank_id: u32) -> pb::Bank {
    let info = engine.bank(bank_id);
    let live = info.and_then(|i| i.live.as_ref());
    pb::Bank {
        bank_id,
        connected: live.is_some(),
        number_of_slots: live.map_or(0, |l| l.number_of_slots),
        peer: live.map(|l| l.peer.to_string()).unwrap_or_default(),
        identity: live.map(|l| identity(&l.identity)),
        endpoint: engine
            .endpoint(bank_id)
            .map(|e| e.to_string())
            .unwrap_or_default(),
        endpoint_override: info
            .and_then(|i| i.endpoint_override)
            .map(|e| e.to_string())
            .unwrap_or_default(),
    }
}

/// A client; a disconnected one shows only its slot.
pub fn client(engine: &Engine, slot: ClientSlot) -> pb::Client {
    let live = engine.client(slot);
    let configured = live.and_then(|c| c.configured.as_ref());
    pb::Client {
        slot: Some(client_slot(slot)),
        connected: live.is_some(),
        peer: live.map(|c| c.peer.to_string()).unwrap_or_default(),
        identity: live.map(|c| identity(&c.identity)),
        bank: configured.map(|(b, _)| bank_slot(*b)),
        bankd: configured
            .and_then(|(_, addr)| addr.socket_addr())
            .map(|a| a.to_string())
            .unwrap_or_default(),
    }
}

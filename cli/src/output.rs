//! How remsimctl shows banks, clients, slot maps and events: aligned tables
//! for people, JSON with stable field names for scripts (`-o json`).

use comfy_table::presets::NOTHING;
use comfy_table::{Cell, Table};
use remsim_api::v1 as pb;
use serde_json::{Value, json};

/// The state without its protobuf prefix: "ACTIVE".
pub fn state_name(m: &pb::Slotmap) -> String {
    m.state()
        .as_str_name()
        .trim_start_matches("SLOTMAP_STATE_")
        .to_string()
}

fn bank_slot(b: &Option<pb::BankSlot>) -> (u32, u32) {
    b.as_ref().map_or((0, 0), |b| (b.bank_id, b.slot_nr))
}

fn client_slot(c: &Option<pb::ClientSlot>) -> (u32, u32) {
    c.as_ref().map_or((0, 0), |c| (c.client_id, c.slot_nr))
}

fn identity(id: &Option<pb::ComponentIdentity>) -> Value {
    match id {
        Some(i) => {
            json!({"type": i.r#type, "name": i.name, "software": i.software, "swVersion": i.sw_version})
        }
        None => Value::Null,
    }
}

pub fn bank_json(b: &pb::Bank) -> Value {
    json!({
        "bankId": b.bank_id,
        "connected": b.connected,
        "numberOfSlots": b.number_of_slots,
        "peer": b.peer,
        "endpoint": b.endpoint,
        "endpointOverride": b.endpoint_override,
        "identity": identity(&b.identity),
    })
}

pub fn client_json(c: &pb::Client) -> Value {
    let (id, slot) = client_slot(&c.slot);
    let bank = c
        .bank
        .as_ref()
        .map(|b| json!({"bankId": b.bank_id, "slotNr": b.slot_nr}));
    json!({
        "clientId": id,
        "slotNr": slot,
        "connected": c.connected,
        "peer": c.peer,
        "bank": bank,
        "bankd": c.bankd,
        "identity": identity(&c.identity),
    })
}

pub fn slotmap_json(m: &pb::Slotmap) -> Value {
    let (b, bs) = bank_slot(&m.bank);
    let (c, cs) = client_slot(&m.client);
    json!({
        "id": m.id,
        "bank": {"bankId": b, "slotNr": bs},
        "client": {"clientId": c, "slotNr": cs},
        "state": state_name(m),
        "result": m.result,
    })
}

pub fn event_json(e: &pb::Event) -> Value {
    use pb::event::Event as E;
    match &e.event {
        Some(E::Bank(b)) => json!({"event": "bank", "bank": bank_json(b)}),
        Some(E::Client(c)) => json!({"event": "client", "client": client_json(c)}),
        Some(E::Slotmap(m)) => json!({"event": "slotmap", "slotmap": slotmap_json(m)}),
        Some(E::SlotmapRemoved(m)) => {
            json!({"event": "slotmapRemoved", "slotmap": slotmap_json(m)})
        }
        Some(E::SnapshotEnd(_)) => json!({"event": "snapshotEnd"}),
        None => json!({"event": "unknown"}),
    }
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(header.iter().map(Cell::new));
    for r in rows {
        t.add_row(r);
    }
    t.to_string()
}

pub fn banks_table(banks: &[pb::Bank]) -> String {
    let rows = banks
        .iter()
        .map(|b| {
            vec![
                b.bank_id.to_string(),
                if b.connected { "yes" } else { "no" }.to_string(),
                b.number_of_slots.to_string(),
                b.peer.clone(),
                b.endpoint.clone(),
                b.identity
                    .as_ref()
                    .map(|i| i.name.clone())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &["BANK", "CONNECTED", "SLOTS", "PEER", "ENDPOINT", "NAME"],
        rows,
    )
}

pub fn clients_table(clients: &[pb::Client]) -> String {
    let rows = clients
        .iter()
        .map(|c| {
            let (id, slot) = client_slot(&c.slot);
            vec![
                format!("{id}:{slot}"),
                c.peer.clone(),
                c.bank
                    .as_ref()
                    .map(|b| format!("{}:{}", b.bank_id, b.slot_nr))
                    .unwrap_or_default(),
                c.bankd.clone(),
                c.identity
                    .as_ref()
                    .map(|i| i.name.clone())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    table(&["CLIENT", "PEER", "BANK SLOT", "BANKD", "NAME"], rows)
}

pub fn slotmaps_table(maps: &[pb::Slotmap]) -> String {
    let rows = maps
        .iter()
        .map(|m| {
            let (b, bs) = bank_slot(&m.bank);
            let (c, cs) = client_slot(&m.client);
            vec![
                m.id.to_string(),
                format!("{b}:{bs}"),
                format!("{c}:{cs}"),
                state_name(m),
                m.result.clone(),
            ]
        })
        .collect();
    table(&["ID", "BANK", "CLIENT", "STATE", "RESULT"], rows)
}

/// One line per event for people.
pub fn event_line(e: &pb::Event) -> String {
    use pb::event::Event as E;
    match &e.event {
        Some(E::Bank(b)) => format!(
            "bank {} {}{}",
            b.bank_id,
            if b.connected {
                "connected"
            } else {
                "disconnected"
            },
            if b.peer.is_empty() {
                String::new()
            } else {
                format!(" from {}", b.peer)
            }
        ),
        Some(E::Client(c)) => {
            let (id, slot) = client_slot(&c.slot);
            let state = if c.connected {
                "connected"
            } else {
                "disconnected"
            };
            let bankd = if c.bankd.is_empty() {
                String::new()
            } else {
                format!(", bankd {}", c.bankd)
            };
            format!("client {id}:{slot} {state}{bankd}")
        }
        Some(E::Slotmap(m)) => {
            let (b, bs) = bank_slot(&m.bank);
            let (c, cs) = client_slot(&m.client);
            format!("slotmap {b}:{bs} -> {c}:{cs} {}", state_name(m))
        }
        Some(E::SlotmapRemoved(m)) => {
            let (b, bs) = bank_slot(&m.bank);
            let (c, cs) = client_slot(&m.client);
            let what = match m.state() {
                pb::SlotmapState::DeleteReq => "deleted (removal owed to the bankd)",
                pb::SlotmapState::Deleting => "removed at the bankd",
                _ => "removed",
            };
            format!("slotmap {b}:{bs} -> {c}:{cs} {what}")
        }
        Some(E::SnapshotEnd(_)) => "-- end of snapshot --".to_string(),
        None => "unknown event".to_string(),
    }
}

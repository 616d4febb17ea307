//! The size and value constraints of `RSPRO.asn`, checked after decoding.
//! The C peers never enforce them, so a violation is reported, not refused.
//! Runs on every received PDU: nothing is allocated unless a check fails.

use std::fmt;

use crate::types::*;

/// Inclusive bounds of the constrained types.
pub const MAX_VERSION: u32 = 32;
pub const MAX_OPERATION_TAG: u32 = 2_147_483_647;
pub const MAX_ID: u32 = 1023;
pub const MAX_PORT: u32 = 65535;
pub const MAX_NAME_LEN: usize = 32;
pub const MAX_ERROR_STRING_LEN: usize = 255;
pub const MAX_ATR_LEN: usize = 55;

/// One value outside its constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The ASN.1 path of the field, e.g. `connectBankReq.bankId`.
    pub field: String,
    /// What the constraint is and what the value was.
    pub problem: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// A field path built on the stack and only rendered for a violation.
#[derive(Clone, Copy)]
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    name: &'a str,
}

impl<'a> Path<'a> {
    fn root(name: &'a str) -> Self {
        Path { parent: None, name }
    }

    fn child(&'a self, name: &'a str) -> Path<'a> {
        Path {
            parent: Some(self),
            name,
        }
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(parent) = self.parent {
            write!(f, "{parent}.")?;
        }
        f.write_str(self.name)
    }
}

#[derive(Default)]
struct Checker {
    found: Vec<Violation>,
}

impl Checker {
    fn range(&mut self, field: Path, value: u32, max: u32) {
        if value > max {
            self.found.push(Violation {
                field: field.to_string(),
                problem: format!("{value} outside 0..{max}"),
            });
        }
    }

    fn size(&mut self, field: Path, len: usize, min: usize, max: usize) {
        if len < min || len > max {
            self.found.push(Violation {
                field: field.to_string(),
                problem: format!("size {len} outside {min}..{max}"),
            });
        }
    }

    fn client_slot(&mut self, field: Path, slot: &ClientSlot) {
        self.range(field.child("clientId"), slot.client_id, MAX_ID);
        self.range(field.child("slotNr"), slot.slot_nr, MAX_ID);
    }

    fn bank_slot(&mut self, field: Path, slot: &BankSlot) {
        self.range(field.child("bankId"), slot.bank_id, MAX_ID);
        self.range(field.child("slotNr"), slot.slot_nr, MAX_ID);
    }

    fn identity(&mut self, field: Path, id: &Identity) {
        let names = [
            ("name", Some(&id.name)),
            ("software", Some(&id.software)),
            ("swVersion", Some(&id.sw_version)),
            ("hwManufacturer", id.hw_manufacturer.as_ref()),
            ("hwModel", id.hw_model.as_ref()),
            ("hwSerialNr", id.hw_serial_nr.as_ref()),
            ("hwVersion", id.hw_version.as_ref()),
            ("fwVersion", id.fw_version.as_ref()),
        ];
        for (key, value) in names {
            if let Some(v) = value {
                self.size(field.child(key), v.len(), 1, MAX_NAME_LEN);
            }
        }
    }
}

/// Every constraint violation in a PDU.
pub fn violations(pdu: &RsproPdu) -> Vec<Violation> {
    let mut c = Checker::default();
    c.range(Path::root("version"), pdu.version, MAX_VERSION);
    c.range(Path::root("tag"), pdu.tag, MAX_OPERATION_TAG);
    let msg = Path::root(pdu.msg.asn_name());
    let f = |leaf| msg.child(leaf);
    match &pdu.msg {
        Msg::ConnectBankReq(m) => {
            c.identity(f("identity"), &m.identity);
            c.range(f("bankId"), m.bank_id, MAX_ID);
            c.range(f("numberOfSlots"), m.number_of_slots, MAX_ID);
        }
        Msg::ConnectBankRes(ConnectBankRes { identity, .. })
        | Msg::ConnectClientRes(ConnectClientRes { identity, .. }) => {
            c.identity(f("identity"), identity);
        }
        Msg::ConnectClientReq(m) => {
            c.identity(f("identity"), &m.identity);
            if let Some(slot) = &m.client_slot {
                c.client_slot(f("clientSlot"), slot);
            }
        }
        Msg::CreateMappingReq(CreateMappingReq { client, bank })
        | Msg::RemoveMappingReq(RemoveMappingReq { client, bank }) => {
            c.client_slot(f("client"), client);
            c.bank_slot(f("bank"), bank);
        }
        Msg::ConfigClientIdReq(m) => c.client_slot(f("clientSlot"), &m.client_slot),
        Msg::ConfigClientBankReq(m) => {
            c.bank_slot(f("bankSlot"), &m.bank_slot);
            let (len, want) = match &m.bankd.ip {
                IpAddress::Ipv4(a) => (a.len(), 4),
                IpAddress::Ipv6(a) => (a.len(), 16),
            };
            let bankd = f("bankd");
            c.size(bankd.child("ip"), len, want, want);
            c.range(bankd.child("port"), m.bankd.port, MAX_PORT);
        }
        Msg::SetAtrReq(m) => {
            c.client_slot(f("slot"), &m.slot);
            c.size(f("atr"), m.atr.len(), 1, MAX_ATR_LEN);
        }
        Msg::TpduModemToCard(m) => {
            c.client_slot(f("fromClientSlot"), &m.from_client_slot);
            c.bank_slot(f("toBankSlot"), &m.to_bank_slot);
        }
        Msg::TpduCardToModem(m) => {
            c.bank_slot(f("fromBankSlot"), &m.from_bank_slot);
            c.client_slot(f("toClientSlot"), &m.to_client_slot);
        }
        Msg::ClientSlotStatusInd(m) => {
            c.client_slot(f("fromClientSlot"), &m.from_client_slot);
            c.bank_slot(f("toBankSlot"), &m.to_bank_slot);
        }
        Msg::BankSlotStatusInd(m) => {
            c.bank_slot(f("fromBankSlot"), &m.from_bank_slot);
            c.client_slot(f("toClientSlot"), &m.to_client_slot);
        }
        Msg::ErrorInd(m) => {
            if let Some(slot) = &m.bank_slot {
                c.bank_slot(f("bankSlot"), slot);
            }
            if let Some(slot) = &m.client_slot {
                c.client_slot(f("clientSlot"), slot);
            }
            if let Some(s) = &m.error_string {
                c.size(f("errorString"), s.len(), 1, MAX_ERROR_STRING_LEN);
            }
        }
        Msg::CreateMappingRes(_)
        | Msg::RemoveMappingRes(_)
        | Msg::ConfigClientIdRes(_)
        | Msg::ConfigClientBankRes(_)
        | Msg::SetAtrRes(_)
        | Msg::ResetStateReq(_)
        | Msg::ResetStateRes(_) => {}
    }
    c.found
}

//! The size and value constraints of `RSPRO.asn`, checked after decoding.
//! The C peers never enforce them, so a violation is reported, not refused.

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

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

#[derive(Default)]
struct Checker {
    found: Vec<Violation>,
}

impl Checker {
    fn range(&mut self, field: &str, value: u32, max: u32) {
        if value > max {
            self.found.push(Violation {
                field: field.to_string(),
                problem: format!("{value} outside 0..{max}"),
            });
        }
    }

    fn size(&mut self, field: &str, len: usize, min: usize, max: usize) {
        if len < min || len > max {
            self.found.push(Violation {
                field: field.to_string(),
                problem: format!("size {len} outside {min}..{max}"),
            });
        }
    }

    fn client_slot(&mut self, field: &str, slot: &ClientSlot) {
        self.range(&format!("{field}.clientId"), slot.client_id, MAX_ID);
        self.range(&format!("{field}.slotNr"), slot.slot_nr, MAX_ID);
    }

    fn bank_slot(&mut self, field: &str, slot: &BankSlot) {
        self.range(&format!("{field}.bankId"), slot.bank_id, MAX_ID);
        self.range(&format!("{field}.slotNr"), slot.slot_nr, MAX_ID);
    }

    fn name(&mut self, field: &str, name: &str) {
        self.size(field, name.len(), 1, MAX_NAME_LEN);
    }

    fn identity(&mut self, field: &str, id: &Identity) {
        self.name(&format!("{field}.name"), &id.name);
        self.name(&format!("{field}.software"), &id.software);
        self.name(&format!("{field}.swVersion"), &id.sw_version);
        let optional = [
            ("hwManufacturer", &id.hw_manufacturer),
            ("hwModel", &id.hw_model),
            ("hwSerialNr", &id.hw_serial_nr),
            ("hwVersion", &id.hw_version),
            ("fwVersion", &id.fw_version),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                self.name(&format!("{field}.{key}"), v);
            }
        }
    }
}

/// Every constraint violation in a PDU.
pub fn violations(pdu: &RsproPdu) -> Vec<Violation> {
    let mut c = Checker::default();
    c.range("version", pdu.version, MAX_VERSION);
    c.range("tag", pdu.tag, MAX_OPERATION_TAG);
    let name = pdu.msg.asn_name();
    let f = |leaf: &str| format!("{name}.{leaf}");
    match &pdu.msg {
        Msg::ConnectBankReq(m) => {
            c.identity(&f("identity"), &m.identity);
            c.range(&f("bankId"), m.bank_id, MAX_ID);
            c.range(&f("numberOfSlots"), m.number_of_slots, MAX_ID);
        }
        Msg::ConnectBankRes(ConnectBankRes { identity, .. })
        | Msg::ConnectClientRes(ConnectClientRes { identity, .. }) => {
            c.identity(&f("identity"), identity);
        }
        Msg::ConnectClientReq(m) => {
            c.identity(&f("identity"), &m.identity);
            if let Some(slot) = &m.client_slot {
                c.client_slot(&f("clientSlot"), slot);
            }
        }
        Msg::CreateMappingReq(CreateMappingReq { client, bank })
        | Msg::RemoveMappingReq(RemoveMappingReq { client, bank }) => {
            c.client_slot(&f("client"), client);
            c.bank_slot(&f("bank"), bank);
        }
        Msg::ConfigClientIdReq(m) => c.client_slot(&f("clientSlot"), &m.client_slot),
        Msg::ConfigClientBankReq(m) => {
            c.bank_slot(&f("bankSlot"), &m.bank_slot);
            let want = match m.bankd.ip {
                IpAddress::Ipv4(ref a) => (a.len(), 4),
                IpAddress::Ipv6(ref a) => (a.len(), 16),
            };
            c.size(&f("bankd.ip"), want.0, want.1, want.1);
            c.range(&f("bankd.port"), m.bankd.port, MAX_PORT);
        }
        Msg::SetAtrReq(m) => {
            c.client_slot(&f("slot"), &m.slot);
            c.size(&f("atr"), m.atr.len(), 1, MAX_ATR_LEN);
        }
        Msg::TpduModemToCard(m) => {
            c.client_slot(&f("fromClientSlot"), &m.from_client_slot);
            c.bank_slot(&f("toBankSlot"), &m.to_bank_slot);
        }
        Msg::TpduCardToModem(m) => {
            c.bank_slot(&f("fromBankSlot"), &m.from_bank_slot);
            c.client_slot(&f("toClientSlot"), &m.to_client_slot);
        }
        Msg::ClientSlotStatusInd(m) => {
            c.client_slot(&f("fromClientSlot"), &m.from_client_slot);
            c.bank_slot(&f("toBankSlot"), &m.to_bank_slot);
        }
        Msg::BankSlotStatusInd(m) => {
            c.bank_slot(&f("fromBankSlot"), &m.from_bank_slot);
            c.client_slot(&f("toClientSlot"), &m.to_client_slot);
        }
        Msg::ErrorInd(m) => {
            if let Some(slot) = &m.bank_slot {
                c.bank_slot(&f("bankSlot"), slot);
            }
            if let Some(slot) = &m.client_slot {
                c.client_slot(&f("clientSlot"), slot);
            }
            if let Some(s) = &m.error_string {
                c.size(&f("errorString"), s.len(), 1, MAX_ERROR_STRING_LEN);
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

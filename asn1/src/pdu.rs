//! Building and reading PDUs in domain terms, so that daemons never assemble
//! raw ASN.1 structures. Defaults follow the C suite: version 2, tag 0, and
//! tag 2342 on ConnectClientRes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rasn::types::OctetString;

use crate::codec::PROTOCOL_VERSION;
use crate::types::*;

/// The operation tag the C suite puts on every ConnectClientRes.
pub const CONNECT_CLIENT_RES_TAG: u32 = 2342;

/// Lengths of a modem-to-card TPDU the C peers accept (5-byte header, up
/// to 255 bytes of command data).
pub const TPDU_LEN: std::ops::RangeInclusive<usize> = 5..=260;

impl ClientSlot {
    pub fn new(client_id: u32, slot_nr: u32) -> Self {
        ClientSlot { client_id, slot_nr }
    }
}

impl BankSlot {
    pub fn new(bank_id: u32, slot_nr: u32) -> Self {
        BankSlot { bank_id, slot_nr }
    }
}

impl std::fmt::Display for ClientSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.client_id, self.slot_nr)
    }
}

/// A slot (or address) for logs: "1:0" when there is one, "-" when not,
/// never `Some(..)`.
pub fn shown<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

impl std::fmt::Display for BankSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.bank_id, self.slot_nr)
    }
}

impl Identity {
    /// An identity with the four mandatory fields (all the C suite fills).
    pub fn new(
        component_type: ComponentType,
        name: impl Into<String>,
        software: impl Into<String>,
        sw_version: impl Into<String>,
    ) -> Self {
        Identity {
            component_type,
            name: name.into(),
            software: software.into(),
            sw_version: sw_version.into(),
            hw_manufacturer: None,
            hw_model: None,
            hw_serial_nr: None,
            hw_version: None,
            fw_version: None,
        }
    }
}

/// This host's name as an RSPRO ComponentName (at most 32 printable
/// characters), as the C components put in their identities.
pub fn host_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = host
        .trim()
        .chars()
        .filter(char::is_ascii_graphic)
        .take(crate::validate::MAX_NAME_LEN)
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

impl IpPort {
    /// The `0.0.0.0:0` that tells a client it has no bankd.
    pub fn none() -> Self {
        IpPort::from(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
    }

    /// The address, if the octets have a valid length.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip = match &self.ip {
            IpAddress::Ipv4(o) => IpAddr::from(<[u8; 4]>::try_from(o.as_ref()).ok()?),
            IpAddress::Ipv6(o) => IpAddr::from(<[u8; 16]>::try_from(o.as_ref()).ok()?),
        };
        Some(SocketAddr::new(ip, u16::try_from(self.port).ok()?))
    }

    /// True for the "no bankd" address.
    pub fn is_none(&self) -> bool {
        self.socket_addr()
            .is_some_and(|a| a.ip().is_unspecified() && a.port() == 0)
    }
}

impl From<SocketAddr> for IpPort {
    fn from(addr: SocketAddr) -> Self {
        let ip = match addr.ip() {
            IpAddr::V4(v4) => IpAddress::Ipv4(OctetString::from_slice(&v4.octets())),
            IpAddr::V6(v6) => IpAddress::Ipv6(OctetString::from_slice(&v6.octets())),
        };
        IpPort {
            ip,
            port: u32::from(addr.port()),
        }
    }
}

impl SlotPhysStatus {
    /// Every signal known.
    pub fn new(
        reset_active: bool,
        vcc_present: bool,
        clk_active: bool,
        card_present: bool,
    ) -> Self {
        SlotPhysStatus {
            reset_active,
            vcc_present: Some(vcc_present),
            clk_active: Some(clk_active),
            card_present: Some(card_present),
        }
    }
}

impl Msg {
    /// The ASN.1 identifier of the alternative, as in logs and JSON.
    pub fn asn_name(&self) -> &'static str {
        match self {
            Msg::ConnectBankReq(_) => "connectBankReq",
            Msg::ConnectBankRes(_) => "connectBankRes",
            Msg::ConnectClientReq(_) => "connectClientReq",
            Msg::ConnectClientRes(_) => "connectClientRes",
            Msg::CreateMappingReq(_) => "createMappingReq",
            Msg::CreateMappingRes(_) => "createMappingRes",
            Msg::RemoveMappingReq(_) => "removeMappingReq",
            Msg::RemoveMappingRes(_) => "removeMappingRes",
            Msg::ConfigClientIdReq(_) => "configClientIdReq",
            Msg::ConfigClientIdRes(_) => "configClientIdRes",
            Msg::SetAtrReq(_) => "setAtrReq",
            Msg::SetAtrRes(_) => "setAtrRes",
            Msg::TpduModemToCard(_) => "tpduModemToCard",
            Msg::TpduCardToModem(_) => "tpduCardToModem",
            Msg::ClientSlotStatusInd(_) => "clientSlotStatusInd",
            Msg::BankSlotStatusInd(_) => "bankSlotStatusInd",
            Msg::ErrorInd(_) => "errorInd",
            Msg::ConfigClientBankReq(_) => "configClientBankReq",
            Msg::ConfigClientBankRes(_) => "configClientBankRes",
            Msg::ResetStateReq(_) => "resetStateReq",
            Msg::ResetStateRes(_) => "resetStateRes",
        }
    }

    /// The result code of a `*Res` message.
    pub fn result(&self) -> Option<ResultCode> {
        match self {
            Msg::ConnectBankRes(m) => Some(m.result),
            Msg::ConnectClientRes(m) => Some(m.result),
            Msg::CreateMappingRes(m) => Some(m.result),
            Msg::RemoveMappingRes(m) => Some(m.result),
            Msg::ConfigClientIdRes(m) => Some(m.result),
            Msg::ConfigClientBankRes(m) => Some(m.result),
            Msg::SetAtrRes(m) => Some(m.result),
            Msg::ResetStateRes(m) => Some(m.result),
            _ => None,
        }
    }
}

impl RsproPdu {
    /// A PDU with the C suite's defaults: version 2, tag 0.
    pub fn new(msg: Msg) -> Self {
        RsproPdu {
            version: PROTOCOL_VERSION,
            tag: 0,
            msg,
        }
    }

    /// The same PDU with another operation tag.
    pub fn with_tag(mut self, tag: u32) -> Self {
        self.tag = tag;
        self
    }

    pub fn connect_bank_req(identity: Identity, bank_id: u32, number_of_slots: u32) -> Self {
        Self::new(Msg::ConnectBankReq(ConnectBankReq {
            identity,
            bank_id,
            number_of_slots,
        }))
    }

    pub fn connect_bank_res(identity: Identity, result: ResultCode) -> Self {
        Self::new(Msg::ConnectBankRes(ConnectBankRes { identity, result }))
    }

    pub fn connect_client_req(identity: Identity, client_slot: Option<ClientSlot>) -> Self {
        Self::new(Msg::ConnectClientReq(ConnectClientReq {
            identity,
            client_slot,
        }))
    }

    /// Carries tag 2342, as every C ConnectClientRes does.
    pub fn connect_client_res(identity: Identity, result: ResultCode) -> Self {
        Self::new(Msg::ConnectClientRes(ConnectClientRes { identity, result }))
            .with_tag(CONNECT_CLIENT_RES_TAG)
    }

    pub fn create_mapping_req(client: ClientSlot, bank: BankSlot) -> Self {
        Self::new(Msg::CreateMappingReq(CreateMappingReq { client, bank }))
    }

    pub fn create_mapping_res(result: ResultCode) -> Self {
        Self::new(Msg::CreateMappingRes(CreateMappingRes { result }))
    }

    pub fn remove_mapping_req(client: ClientSlot, bank: BankSlot) -> Self {
        Self::new(Msg::RemoveMappingReq(RemoveMappingReq { client, bank }))
    }

    pub fn remove_mapping_res(result: ResultCode) -> Self {
        Self::new(Msg::RemoveMappingRes(RemoveMappingRes { result }))
    }

    pub fn config_client_id_req(client_slot: ClientSlot) -> Self {
        Self::new(Msg::ConfigClientIdReq(ConfigClientIdReq { client_slot }))
    }

    pub fn config_client_id_res(result: ResultCode) -> Self {
        Self::new(Msg::ConfigClientIdRes(ConfigClientIdRes { result }))
    }

    /// `bankd` = `IpPort::none()` tells the client its map is gone.
    pub fn config_client_bank_req(bank_slot: BankSlot, bankd: IpPort) -> Self {
        Self::new(Msg::ConfigClientBankReq(ConfigClientBankReq {
            bank_slot,
            bankd,
        }))
    }

    pub fn config_client_bank_res(result: ResultCode) -> Self {
        Self::new(Msg::ConfigClientBankRes(ConfigClientBankRes { result }))
    }

    pub fn set_atr_req(slot: ClientSlot, atr: impl Into<OctetString>) -> Self {
        Self::new(Msg::SetAtrReq(SetAtrReq {
            slot,
            atr: atr.into(),
        }))
    }

    pub fn set_atr_res(result: ResultCode) -> Self {
        Self::new(Msg::SetAtrRes(SetAtrRes { result }))
    }

    /// Flags all false, as the C suite sends them.
    pub fn tpdu_modem_to_card(
        from: ClientSlot,
        to: BankSlot,
        data: impl Into<OctetString>,
    ) -> Self {
        Self::new(Msg::TpduModemToCard(TpduModemToCard {
            from_client_slot: from,
            to_bank_slot: to,
            flags: TpduFlags::default(),
            data: data.into(),
        }))
    }

    /// Flags all false, as the C suite sends them.
    pub fn tpdu_card_to_modem(
        from: BankSlot,
        to: ClientSlot,
        data: impl Into<OctetString>,
    ) -> Self {
        Self::new(Msg::TpduCardToModem(TpduCardToModem {
            from_bank_slot: from,
            to_client_slot: to,
            flags: TpduFlags::default(),
            data: data.into(),
        }))
    }

    pub fn client_slot_status_ind(from: ClientSlot, to: BankSlot, status: SlotPhysStatus) -> Self {
        Self::new(Msg::ClientSlotStatusInd(ClientSlotStatusInd {
            from_client_slot: from,
            to_bank_slot: to,
            slot_phys_status: status,
        }))
    }

    pub fn bank_slot_status_ind(from: BankSlot, to: ClientSlot, status: SlotPhysStatus) -> Self {
        Self::new(Msg::BankSlotStatusInd(BankSlotStatusInd {
            from_bank_slot: from,
            to_client_slot: to,
            slot_phys_status: status,
        }))
    }

    pub fn error_ind(
        sender: ComponentType,
        severity: ErrorSeverity,
        code: ErrorCode,
        bank_slot: Option<BankSlot>,
        client_slot: Option<ClientSlot>,
        error_string: Option<String>,
    ) -> Self {
        Self::new(Msg::ErrorInd(ErrorInd {
            sender,
            severity,
            code,
            bank_slot,
            client_slot,
            error_string,
        }))
    }

    pub fn reset_state_req() -> Self {
        Self::new(Msg::ResetStateReq(ResetStateReq {}))
    }

    pub fn reset_state_res(result: ResultCode) -> Self {
        Self::new(Msg::ResetStateRes(ResetStateRes { result }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_in_logs_read_as_the_c_tools_write_them() {
        assert_eq!(shown(Some(BankSlot::new(1, 0))), "1:0");
        assert_eq!(shown(Some(ClientSlot::new(23, 1))), "23:1");
        assert_eq!(shown::<BankSlot>(None), "-");
    }
}

//! The RSPRO types of `RSPRO.asn`, one Rust type per ASN.1 type, with rasn
//! (BER/DER) and serde (JSON, with the ASN.1 identifiers as keys) mappings.
//!
//! Tags follow the module's IMPLICIT TAGS. Size and value constraints are not
//! declared to rasn, so that decoding accepts what the C peers accept; see
//! `validate.rs`. The extension markers of `RSPRO.asn` do not change DER/BER
//! bytes; skipping unknown extension additions is done in `lenient.rs`.

use rasn::prelude::*;
use serde::{Deserialize, Serialize};

pub use crate::enums::{ComponentType, ErrorCode, ErrorSeverity, ResultCode};

/// OCTET STRING contents as lowercase hex in JSON.
mod hex_bytes {
    use rasn::types::OctetString;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &OctetString, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b.as_ref()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OctetString, D::Error> {
        let text = String::deserialize(d)?;
        let clean: String = text.chars().filter(|c| !matches!(c, ' ' | ':')).collect();
        hex::decode(&clean)
            .map(OctetString::from)
            .map_err(|e| serde::de::Error::custom(format!("bad hex {text:?}: {e}")))
    }
}

/// A slot of a modem-side client: `clientId:slotNr`.
#[derive(
    AsnType,
    Encode,
    Decode,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientSlot {
    pub client_id: u32,
    pub slot_nr: u32,
}

/// A slot (card reader) of a SIM bank: `bankId:slotNr`.
#[derive(
    AsnType,
    Encode,
    Decode,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BankSlot {
    pub bank_id: u32,
    pub slot_nr: u32,
}

/// ComponentIdentity: who is at the other end of a link.
#[derive(AsnType, Encode, Decode, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Identity {
    #[serde(rename = "type")]
    pub component_type: ComponentType,
    #[rasn(tag(universal, 22))]
    pub name: String,
    #[rasn(tag(context, 0))]
    pub software: String,
    #[rasn(tag(context, 1))]
    pub sw_version: String,
    #[rasn(tag(context, 2))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hw_manufacturer: Option<String>,
    #[rasn(tag(context, 3))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hw_model: Option<String>,
    #[rasn(tag(context, 4))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hw_serial_nr: Option<String>,
    #[rasn(tag(context, 5))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hw_version: Option<String>,
    #[rasn(tag(context, 6))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fw_version: Option<String>,
}

/// IpAddress CHOICE; the octets are in network byte order.
#[derive(AsnType, Encode, Decode, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[rasn(choice)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum IpAddress {
    #[rasn(tag(context, 0))]
    Ipv4(#[serde(with = "hex_bytes")] OctetString),
    #[rasn(tag(context, 1))]
    Ipv6(#[serde(with = "hex_bytes")] OctetString),
}

/// IpPort: where a client finds its bankd. `0.0.0.0:0` means "none".
#[derive(AsnType, Encode, Decode, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpPort {
    pub ip: IpAddress,
    pub port: u32,
}

/// TpduFlags; the C peers always send all four false.
#[derive(
    AsnType, Encode, Decode, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TpduFlags {
    pub tpdu_header_present: bool,
    pub final_part: bool,
    pub proc_byte_continue_tx: bool,
    pub proc_byte_continue_rx: bool,
}

/// SlotPhysStatus: the electrical state of a slot; `None` means unknown.
#[derive(
    AsnType, Encode, Decode, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlotPhysStatus {
    #[rasn(tag(context, 0))]
    pub reset_active: bool,
    #[rasn(tag(context, 1))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcc_present: Option<bool>,
    #[rasn(tag(context, 2))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clk_active: Option<bool>,
    #[rasn(tag(context, 3))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_present: Option<bool>,
}

/// Declares a message SEQUENCE with untagged members.
macro_rules! message {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(AsnType, Encode, Decode, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
        }
    };
}

message! {
    /// bankd → server: a bank introduces itself.
    ConnectBankReq { identity: Identity, bank_id: u32, number_of_slots: u32 }
}
message! {
    /// server → bankd.
    ConnectBankRes { identity: Identity, result: ResultCode }
}
message! {
    /// client → server and client → bankd.
    ConnectClientReq {
        identity: Identity,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_slot: Option<ClientSlot>,
    }
}
message! {
    /// server → client and bankd → client.
    ConnectClientRes { identity: Identity, result: ResultCode }
}
message! {
    /// server → bankd: map a bank slot to a client slot.
    CreateMappingReq { client: ClientSlot, bank: BankSlot }
}
message! {
    /// bankd → server.
    CreateMappingRes { result: ResultCode }
}
message! {
    /// server → bankd: remove a mapping.
    RemoveMappingReq { client: ClientSlot, bank: BankSlot }
}
message! {
    /// bankd → server.
    RemoveMappingRes { result: ResultCode }
}
message! {
    /// server → client: the client slot the server assigns.
    ConfigClientIdReq { client_slot: ClientSlot }
}
message! {
    /// client → server.
    ConfigClientIdRes { result: ResultCode }
}
message! {
    /// server → client: which bank slot, and which bankd to connect to.
    ConfigClientBankReq { bank_slot: BankSlot, bankd: IpPort }
}
message! {
    /// client → server.
    ConfigClientBankRes { result: ResultCode }
}
message! {
    /// bankd → client: the ATR to present to the modem.
    SetAtrReq {
        slot: ClientSlot,
        #[serde(with = "hex_bytes")]
        atr: OctetString,
    }
}
message! {
    /// client → bankd.
    SetAtrRes { result: ResultCode }
}
message! {
    /// client → bankd: a TPDU from the modem.
    TpduModemToCard {
        from_client_slot: ClientSlot,
        to_bank_slot: BankSlot,
        flags: TpduFlags,
        #[serde(with = "hex_bytes")]
        data: OctetString,
    }
}
message! {
    /// bankd → client: the card's answer.
    TpduCardToModem {
        from_bank_slot: BankSlot,
        to_client_slot: ClientSlot,
        flags: TpduFlags,
        #[serde(with = "hex_bytes")]
        data: OctetString,
    }
}
message! {
    /// client → bankd: the modem changed VCC, RST, CLK or card presence.
    ClientSlotStatusInd { from_client_slot: ClientSlot, to_bank_slot: BankSlot, slot_phys_status: SlotPhysStatus }
}
message! {
    /// bankd → client.
    BankSlotStatusInd { from_bank_slot: BankSlot, to_client_slot: ClientSlot, slot_phys_status: SlotPhysStatus }
}
message! {
    /// any → server: something went wrong.
    ErrorInd {
        sender: ComponentType,
        severity: ErrorSeverity,
        code: ErrorCode,
        #[rasn(tag(context, 0))]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bank_slot: Option<BankSlot>,
        #[rasn(tag(context, 1))]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_slot: Option<ClientSlot>,
        #[rasn(tag(context, 2))]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error_string: Option<String>,
    }
}
message! {
    /// server → bankd: forget every mapping.
    ResetStateReq {}
}
message! {
    /// bankd → server.
    ResetStateRes { result: ResultCode }
}

/// RsproPDUchoice: the message a PDU carries.
#[derive(AsnType, Encode, Decode, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[rasn(choice)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Msg {
    #[rasn(tag(context, 0))]
    ConnectBankReq(ConnectBankReq),
    #[rasn(tag(context, 1))]
    ConnectBankRes(ConnectBankRes),
    #[rasn(tag(context, 2))]
    ConnectClientReq(ConnectClientReq),
    #[rasn(tag(context, 3))]
    ConnectClientRes(ConnectClientRes),
    #[rasn(tag(context, 4))]
    CreateMappingReq(CreateMappingReq),
    #[rasn(tag(context, 5))]
    CreateMappingRes(CreateMappingRes),
    #[rasn(tag(context, 6))]
    RemoveMappingReq(RemoveMappingReq),
    #[rasn(tag(context, 7))]
    RemoveMappingRes(RemoveMappingRes),
    #[rasn(tag(context, 8))]
    ConfigClientIdReq(ConfigClientIdReq),
    #[rasn(tag(context, 9))]
    ConfigClientIdRes(ConfigClientIdRes),
    #[rasn(tag(context, 10))]
    SetAtrReq(SetAtrReq),
    #[rasn(tag(context, 11))]
    SetAtrRes(SetAtrRes),
    #[rasn(tag(context, 12))]
    TpduModemToCard(TpduModemToCard),
    #[rasn(tag(context, 13))]
    TpduCardToModem(TpduCardToModem),
    #[rasn(tag(context, 14))]
    ClientSlotStatusInd(ClientSlotStatusInd),
    #[rasn(tag(context, 15))]
    BankSlotStatusInd(BankSlotStatusInd),
    #[rasn(tag(context, 16))]
    ErrorInd(ErrorInd),
    #[rasn(tag(context, 17))]
    ConfigClientBankReq(ConfigClientBankReq),
    #[rasn(tag(context, 18))]
    ConfigClientBankRes(ConfigClientBankRes),
    #[rasn(tag(context, 19))]
    ResetStateReq(ResetStateReq),
    #[rasn(tag(context, 20))]
    ResetStateRes(ResetStateRes),
}

/// RsproPDU: version, operation tag and message.
#[derive(AsnType, Encode, Decode, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RsproPdu {
    #[rasn(tag(context, 0))]
    pub version: u32,
    #[rasn(tag(context, 1))]
    pub tag: u32,
    #[rasn(tag(context, 2))]
    pub msg: Msg,
}

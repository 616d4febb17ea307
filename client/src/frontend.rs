//! What every frontend (the modem side) exchanges with the client's core:
//! commands from the main state machine, events from the modem.

use rspro::SlotPhysStatus;

pub use crate::main_fsm::FrontendCmd;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModemEvent {
    /// A complete command APDU from the modem.
    Tpdu(Vec<u8>),
    /// The modem changed RST, VCC or CLK.
    Status(SlotPhysStatus),
    /// The modem side is gone (stdin closed, ...): the client exits.
    Gone,
}

/// The status the C client reports when the modem powers the card down
/// (also the shell's RESET): RST active, VCC and CLK off, card present.
pub fn power_off() -> SlotPhysStatus {
    SlotPhysStatus::new(true, false, false, true)
}

/// Powered and running.
pub fn power_on() -> SlotPhysStatus {
    SlotPhysStatus::new(false, true, true, true)
}

/// Powered, RST asserted (first half of a warm reset).
pub fn reset_asserted() -> SlotPhysStatus {
    SlotPhysStatus::new(true, true, true, true)
}

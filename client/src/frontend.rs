//! What every frontend (the modem side) exchanges with the client's core:
//! commands from the main state machine, events from the modem.

use rspro::SlotPhysStatus;
use tokio::sync::mpsc;

pub use crate::main_fsm::FrontendCmd;

/// Commands and events that may wait between the core and a frontend. A
/// modem has one APDU out at a time; more waiting means a side is stuck.
pub const QUEUE: usize = 64;

/// The core's ends of the two queues: commands out, events in.
pub type CoreSide = (mpsc::Sender<FrontendCmd>, mpsc::Receiver<ModemEvent>);
/// A frontend's ends: commands in, events out.
pub type FrontendSide = (mpsc::Receiver<FrontendCmd>, mpsc::Sender<ModemEvent>);

/// The two queues between the core and a frontend.
pub fn channels() -> (CoreSide, FrontendSide) {
    let (cmd_tx, cmd_rx) = mpsc::channel(QUEUE);
    let (event_tx, event_rx) = mpsc::channel(QUEUE);
    ((cmd_tx, event_rx), (cmd_rx, event_tx))
}

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

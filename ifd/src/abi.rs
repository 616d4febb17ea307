//! The IFD handler API's types and constants as pcsc-lite's ifdhandler.h
//! defines them on Linux (LP64: a DWORD is an unsigned long, 64 bits), and
//! as spec ifd-handler.md §1 lists them.

use std::ffi::{c_long, c_ulong};

pub type Dword = c_ulong;
pub type ResponseCode = c_long;

/// SCARD_IO_HEADER: passed by value as SendPci, by pointer as RecvPci.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ScardIoHeader {
    pub protocol: Dword,
    pub length: Dword,
}

pub const IFD_POWER_UP: Dword = 500;
pub const IFD_POWER_DOWN: Dword = 501;
pub const IFD_RESET: Dword = 502;

pub const IFD_SUCCESS: ResponseCode = 0;
pub const IFD_ERROR_TAG: ResponseCode = 600;
pub const IFD_ERROR_NOT_SUPPORTED: ResponseCode = 606;
pub const IFD_ERROR_POWER_ACTION: ResponseCode = 608;
pub const IFD_COMMUNICATION_ERROR: ResponseCode = 612;
pub const IFD_RESPONSE_TIMEOUT: ResponseCode = 613;
pub const IFD_NOT_SUPPORTED: ResponseCode = 614;
pub const IFD_ICC_PRESENT: ResponseCode = 615;
pub const IFD_ICC_NOT_PRESENT: ResponseCode = 616;
pub const IFD_NO_SUCH_DEVICE: ResponseCode = 617;
pub const IFD_ERROR_INSUFFICIENT_BUFFER: ResponseCode = 618;

pub const TAG_IFD_ATR: Dword = 0x0303;
pub const SCARD_ATTR_ATR_STRING: Dword = 0x0009_0303;
pub const TAG_IFD_SLOTNUM: Dword = 0x0180;
pub const TAG_IFD_SLOT_THREAD_SAFE: Dword = 0x0FAC;
pub const TAG_IFD_THREAD_SAFE: Dword = 0x0FAD;
pub const TAG_IFD_SLOTS_NUMBER: Dword = 0x0FAE;
pub const TAG_IFD_SIMULTANEOUS_ACCESS: Dword = 0x0FAF;
pub const TAG_IFD_STOP_POLLING_THREAD: Dword = 0x0FB2;
pub const TAG_IFD_POLLING_THREAD_WITH_TIMEOUT: Dword = 0x0FB3;

/// What TAG_IFD_POLLING_THREAD_WITH_TIMEOUT hands pcscd: its event thread
/// calls it with the reader's Lun and a timeout in ms.
pub type PollFn = extern "C" fn(Dword, std::ffi::c_int) -> ResponseCode;
/// What TAG_IFD_STOP_POLLING_THREAD hands pcscd: called with the Lun to
/// end a wait in `PollFn` (on SCardDisconnect, and before the reader goes).
pub type StopPollFn = extern "C" fn(Dword) -> ResponseCode;

/// The longest ATR pcscd takes (ISO 7816-3: 33 bytes).
pub const MAX_ATR_SIZE: usize = 33;

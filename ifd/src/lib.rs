//! `libifd_remsim_client`: the remote SIM as a pcsc-lite reader driver (IFD
//! handler API v3, spec ifd-handler.md). pcscd loads it from a
//! reader.conf.d entry whose DEVICENAME names the client slot and the
//! server ([`device_name`]); every PC/SC application on the host then sees
//! the remote card in a local reader. Each entry is a reader with a client
//! of its own ([`reader`]: remsim-client's driver and main state machine on
//! a thread of its own), its logic in [`reader_core`].
//!
//! pcscd's event thread waits in [`card_event`] (handed over as
//! TAG_IFD_POLLING_THREAD_WITH_TIMEOUT) until the card comes or goes, and
//! is let go by [`stop_card_events`] (TAG_IFD_STOP_POLLING_THREAD), which
//! pcscd calls on every SCardDisconnect and before a reader goes.
//!
//! This file holds the exported functions: each checks its pointers,
//! never lets a panic reach pcscd, and returns within a bound (an APDU
//! within `REMSIM_IFD_APDU_TIMEOUT`, everything else without waiting for
//! the network). Several entries may share this library: up to
//! [`MAX_READERS`], keyed by the reader index of pcscd's Lun.
//!
//! Environment (pcscd's): `REMSIM_IFD_LOG` (log filter, default `info`),
//! `REMSIM_IFD_LOG_FORMAT` (`text` or `json`), `REMSIM_IFD_APDU_TIMEOUT`
//! (how long an APDU may wait for the bank, default 10s). Logs go to
//! pcscd's stderr (`pcscd -f`, or the journal).

#![allow(non_snake_case)] // The API's names.

pub mod abi;
pub mod device_name;
pub mod reader;
pub mod reader_core;

use std::collections::BTreeMap;
use std::ffi::{CStr, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::Duration;

use remsim_daemon::LogFormat;
use tracing::{error, info, warn};

use crate::abi::*;
use crate::reader::{Handle, Reader};
use crate::reader_core::{ApduError, Power};

/// Readers one pcscd may open through this library (pcscd's own limit is 16).
pub const MAX_READERS: u8 = 16;
/// The longest C-APDU pcscd hands over (its extended buffer).
const MAX_TX: usize = 65_548;
const DEFAULT_APDU_TIMEOUT: Duration = Duration::from_secs(10);

static READERS: Mutex<BTreeMap<u16, Reader>> = Mutex::new(BTreeMap::new());

fn readers() -> MutexGuard<'static, BTreeMap<u16, Reader>> {
    READERS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The reader index of a Lun (0xRRRRSSSS), if its slot is ours (0).
fn index(lun: Dword) -> Option<u16> {
    let lun = (lun & 0xFFFF_FFFF) as u32;
    (lun & 0xFFFF == 0).then_some((lun >> 16) as u16)
}

fn handle(lun: Dword) -> Option<Arc<Handle>> {
    readers().get(&index(lun)?).map(|r| r.handle.clone())
}

/// Runs one exported call: a panic becomes a communication error, never an
/// unwind into pcscd.
fn guarded(call: &str, f: impl FnOnce() -> ResponseCode) -> ResponseCode {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        error!(
            call,
            "internal error (panic); answered as a communication error"
        );
        IFD_COMMUNICATION_ERROR
    })
}

fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = std::env::var("REMSIM_IFD_LOG").unwrap_or_else(|_| "info".into());
        let format = match std::env::var("REMSIM_IFD_LOG_FORMAT").as_deref() {
            Ok("json") => LogFormat::Json,
            _ => LogFormat::Text,
        };
        // A bad filter falls back to info; a subscriber that a Rust host
        // of ours set up already is kept.
        if remsim_daemon::init_logging(&filter, format).is_err() {
            let _ = remsim_daemon::init_logging("info", format);
        }
    });
}

/// `REMSIM_IFD_APDU_TIMEOUT` ("10s", "1500ms"; more than 0, at most an hour).
fn apdu_timeout() -> Duration {
    let Ok(text) = std::env::var("REMSIM_IFD_APDU_TIMEOUT") else {
        return DEFAULT_APDU_TIMEOUT;
    };
    bounded_timeout(&text).unwrap_or_else(|| {
        warn!(value = %text, default = ?DEFAULT_APDU_TIMEOUT,
            "REMSIM_IFD_APDU_TIMEOUT is not a duration from 1ms to 1h (10s, 1500ms)");
        DEFAULT_APDU_TIMEOUT
    })
}

fn bounded_timeout(text: &str) -> Option<Duration> {
    remsim_daemon::parse_duration(text)
        .ok()
        .filter(|d| !d.is_zero() && *d <= Duration::from_secs(3600))
}

/// Opens the reader that a reader.conf entry describes: DEVICENAME
/// `CLIENT_ID:CLIENT_SLOT:SERVER_HOST:SERVER_PORT`.
///
/// # Safety
/// `device_name` is NULL or a NUL-terminated string (pcscd's).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn IFDHCreateChannelByName(
    lun: Dword,
    device_name: *const c_char,
) -> ResponseCode {
    guarded("IFDHCreateChannelByName", || {
        init_logging();
        if device_name.is_null() {
            error!("no DEVICENAME");
            return IFD_COMMUNICATION_ERROR;
        }
        // SAFETY: pcscd passes a NUL-terminated string; it is only read.
        let text = unsafe { CStr::from_ptr(device_name) }.to_string_lossy();
        let name = match device_name::parse(&text) {
            Ok(name) => name,
            Err(e) => {
                error!("{e}; expected CLIENT_ID:CLIENT_SLOT:SERVER_HOST:SERVER_PORT");
                return IFD_COMMUNICATION_ERROR;
            }
        };
        let Some(i) = index(lun).filter(|i| *i < u16::from(MAX_READERS)) else {
            error!(
                lun,
                "no such reader: one slot per reader, at most {MAX_READERS} readers"
            );
            return IFD_NO_SUCH_DEVICE;
        };
        let reader = match Reader::start(&name, lun as u32, apdu_timeout()) {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, "cannot start the reader's thread");
                return IFD_COMMUNICATION_ERROR;
            }
        };
        info!(lun, %name, "remsim reader created");
        let old = readers().insert(i, reader);
        if let Some(old) = old {
            old.close();
        }
        IFD_SUCCESS
    })
}

/// The legacy open by CHANNELID: this driver needs a DEVICENAME.
#[unsafe(no_mangle)]
pub extern "C" fn IFDHCreateChannel(lun: Dword, channel: Dword) -> ResponseCode {
    init_logging();
    error!(
        lun,
        channel,
        "the remsim reader needs DEVICENAME CLIENT_ID:CLIENT_SLOT:SERVER_HOST:SERVER_PORT in reader.conf"
    );
    IFD_COMMUNICATION_ERROR
}

#[unsafe(no_mangle)]
pub extern "C" fn IFDHCloseChannel(lun: Dword) -> ResponseCode {
    guarded("IFDHCloseChannel", || {
        let reader = index(lun).and_then(|i| readers().remove(&i));
        if let Some(reader) = reader {
            reader.close();
            info!(lun, "remsim reader closed");
        }
        IFD_SUCCESS
    })
}

/// Copies `data` into pcscd's buffer of `*length` bytes.
///
/// # Safety
/// `value` points to `*length` writable bytes.
unsafe fn answer(data: &[u8], length: *mut Dword, value: *mut u8) -> ResponseCode {
    // SAFETY: the caller checked both pointers for NULL.
    let capacity = unsafe { *length } as usize;
    if data.len() > capacity {
        unsafe { *length = 0 };
        return IFD_ERROR_INSUFFICIENT_BUFFER;
    }
    unsafe {
        std::ptr::copy_nonoverlapping(data.as_ptr(), value, data.len());
        *length = data.len() as Dword;
    }
    IFD_SUCCESS
}

/// # Safety
/// `length` and `value` are NULL or point to pcscd's length and a buffer
/// of that many bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn IFDHGetCapabilities(
    lun: Dword,
    tag: Dword,
    length: *mut Dword,
    value: *mut u8,
) -> ResponseCode {
    guarded("IFDHGetCapabilities", || {
        if length.is_null() {
            return IFD_COMMUNICATION_ERROR;
        }
        if value.is_null() {
            // SAFETY: checked for NULL.
            unsafe { *length = 0 };
            return IFD_COMMUNICATION_ERROR;
        }
        let data: Vec<u8> = match tag {
            TAG_IFD_ATR | SCARD_ATTR_ATR_STRING => match handle(lun) {
                Some(h) => h.atr().unwrap_or_default(),
                None => {
                    unsafe { *length = 0 };
                    return IFD_NO_SUCH_DEVICE;
                }
            },
            TAG_IFD_SIMULTANEOUS_ACCESS => vec![MAX_READERS],
            TAG_IFD_SLOTS_NUMBER => vec![1],
            // Readers share nothing but the map of readers: pcscd may call
            // each under a lock of its own.
            TAG_IFD_THREAD_SAFE => vec![1],
            TAG_IFD_SLOT_THREAD_SAFE => vec![0],
            TAG_IFD_SLOTNUM => vec![0],
            TAG_IFD_POLLING_THREAD_WITH_TIMEOUT => {
                (card_event as PollFn as usize).to_ne_bytes().to_vec()
            }
            TAG_IFD_STOP_POLLING_THREAD => (stop_card_events as StopPollFn as usize)
                .to_ne_bytes()
                .to_vec(),
            _ => {
                unsafe { *length = 0 };
                return IFD_ERROR_TAG;
            }
        };
        // SAFETY: both pointers checked above; pcscd sized the buffer.
        unsafe { answer(&data, length, value) }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn IFDHSetCapabilities(
    _lun: Dword,
    _tag: Dword,
    _length: Dword,
    _value: *mut u8,
) -> ResponseCode {
    IFD_NOT_SUPPORTED
}

/// Any protocol is accepted: APDUs are relayed as they come (T=0 at the bank).
#[unsafe(no_mangle)]
pub extern "C" fn IFDHSetProtocolParameters(
    _lun: Dword,
    _protocol: Dword,
    _flags: u8,
    _pts1: u8,
    _pts2: u8,
    _pts3: u8,
) -> ResponseCode {
    IFD_SUCCESS
}

/// # Safety
/// `atr` and `atr_length` are NULL or point to a buffer of MAX_ATR_SIZE
/// bytes and its length.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn IFDHPowerICC(
    lun: Dword,
    action: Dword,
    atr: *mut u8,
    atr_length: *mut Dword,
) -> ResponseCode {
    guarded("IFDHPowerICC", || {
        if atr.is_null() || atr_length.is_null() {
            return IFD_COMMUNICATION_ERROR;
        }
        // SAFETY: checked for NULL above. pcscd passes its buffer's size
        // (MAX_ATR_SIZE); nothing larger is written in any case.
        let capacity = match unsafe { *atr_length } as usize {
            0 => MAX_ATR_SIZE,
            n => n.min(MAX_ATR_SIZE),
        };
        unsafe { *atr_length = 0 };
        let action = match action {
            IFD_POWER_UP => Power::Up,
            IFD_POWER_DOWN => Power::Down,
            IFD_RESET => Power::Reset,
            _ => return IFD_NOT_SUPPORTED,
        };
        let Some(h) = handle(lun) else {
            return IFD_NO_SUCH_DEVICE;
        };
        match h.power(action) {
            Ok(Some(card_atr)) => {
                let n = card_atr.len().min(capacity);
                // SAFETY: pcscd's ATR buffer holds `capacity` bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(card_atr.as_ptr(), atr, n);
                    *atr_length = n as Dword;
                }
                IFD_SUCCESS
            }
            Ok(None) => IFD_SUCCESS,
            Err(e) => {
                info!(lun, ?action, reason = %e, "power action refused");
                IFD_ERROR_POWER_ACTION
            }
        }
    })
}

/// One APDU through the bank. The answer is never cut short: one that does
/// not fit is an error (the C handler truncated silently).
///
/// # Safety
/// `tx` points to `tx_length` bytes; `rx` to `*rx_length` writable bytes;
/// `recv_pci` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn IFDHTransmitToICC(
    lun: Dword,
    send_pci: ScardIoHeader,
    tx: *const u8,
    tx_length: Dword,
    rx: *mut u8,
    rx_length: *mut Dword,
    recv_pci: *mut ScardIoHeader,
) -> ResponseCode {
    guarded("IFDHTransmitToICC", || {
        if rx_length.is_null() {
            return IFD_COMMUNICATION_ERROR;
        }
        // SAFETY: checked for NULL; pcscd's in/out length.
        let capacity = unsafe { *rx_length } as usize;
        unsafe { *rx_length = 0 };
        if tx.is_null() || rx.is_null() || tx_length as usize > MAX_TX {
            return IFD_COMMUNICATION_ERROR;
        }
        let Some(h) = handle(lun) else {
            return IFD_NO_SUCH_DEVICE;
        };
        // SAFETY: pcscd passes tx_length readable bytes (bounded above).
        let apdu = unsafe { std::slice::from_raw_parts(tx, tx_length as usize) };
        match h.transmit(apdu) {
            Ok(response) if response.len() > capacity => {
                warn!(
                    lun,
                    len = response.len(),
                    capacity,
                    "answer larger than pcscd's buffer"
                );
                IFD_ERROR_INSUFFICIENT_BUFFER
            }
            Ok(response) => {
                // SAFETY: rx holds `capacity` bytes, response fits.
                unsafe {
                    std::ptr::copy_nonoverlapping(response.as_ptr(), rx, response.len());
                    *rx_length = response.len() as Dword;
                    if !recv_pci.is_null() {
                        (*recv_pci).protocol = send_pci.protocol;
                    }
                }
                IFD_SUCCESS
            }
            Err(e) => {
                let code = match e {
                    ApduError::Timeout => IFD_RESPONSE_TIMEOUT,
                    ApduError::NotPresent | ApduError::CardGone => IFD_ICC_NOT_PRESENT,
                    ApduError::Length(_)
                    | ApduError::Refused
                    | ApduError::Queue
                    | ApduError::Closed => IFD_COMMUNICATION_ERROR,
                };
                warn!(lun, reason = %e, len = apdu.len(), "APDU not answered");
                code
            }
        }
    })
}

/// # Safety
/// `bytes_returned` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn IFDHControl(
    _lun: Dword,
    _control_code: Dword,
    _tx: *const u8,
    _tx_length: Dword,
    _rx: *mut u8,
    _rx_length: Dword,
    bytes_returned: *mut Dword,
) -> ResponseCode {
    if !bytes_returned.is_null() {
        // SAFETY: checked for NULL.
        unsafe { *bytes_returned = 0 };
    }
    IFD_ERROR_NOT_SUPPORTED
}

/// pcscd's event thread for reader `lun`: returns once the card came or
/// went since pcscd last asked [`IFDHICCPresence`], when the reader closes
/// or pcscd interrupts the wait, or after `timeout_ms`.
pub extern "C" fn card_event(lun: Dword, timeout_ms: c_int) -> ResponseCode {
    guarded("card event", || {
        let Some(h) = handle(lun) else {
            return IFD_NO_SUCH_DEVICE;
        };
        let bound = Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0));
        h.wait_for_change(bound);
        IFD_SUCCESS
    })
}

/// Ends the wait of pcscd's event thread for `lun` (pcscd calls it on
/// every SCardDisconnect, to wait again with another timeout, and before
/// the reader goes).
pub extern "C" fn stop_card_events(lun: Dword) -> ResponseCode {
    guarded("stop card events", || {
        if let Some(h) = handle(lun) {
            h.interrupt_wait();
        }
        IFD_SUCCESS
    })
}

/// Answered from the reader's state, without waiting for the network.
#[unsafe(no_mangle)]
pub extern "C" fn IFDHICCPresence(lun: Dword) -> ResponseCode {
    guarded("IFDHICCPresence", || match handle(lun) {
        Some(h) if h.present() => IFD_ICC_PRESENT,
        Some(_) => IFD_ICC_NOT_PRESENT,
        None => IFD_NO_SUCH_DEVICE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luns_name_a_reader_and_its_only_slot() {
        assert_eq!(index(0), Some(0));
        assert_eq!(index(0x0003_0000), Some(3));
        assert_eq!(index(0x0003_0001), None);
    }

    #[test]
    fn apdu_timeouts_are_bounded_durations() {
        assert_eq!(bounded_timeout("10s"), Some(Duration::from_secs(10)));
        assert_eq!(bounded_timeout("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(bounded_timeout("2m"), Some(Duration::from_secs(120)));
        for bad in ["", "s", "0s", "2h", "99999999999999999999s", "61m"] {
            assert_eq!(bounded_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn capabilities_answer_within_the_buffer() {
        let mut value = [0u8; 4];
        let mut length: Dword = 4;
        let rc = unsafe {
            IFDHGetCapabilities(0, TAG_IFD_SLOTS_NUMBER, &mut length, value.as_mut_ptr())
        };
        assert_eq!((rc, length, value[0]), (IFD_SUCCESS, 1, 1));
        let mut length: Dword = 4;
        let rc = unsafe { IFDHGetCapabilities(0, 0x7777, &mut length, value.as_mut_ptr()) };
        assert_eq!((rc, length), (IFD_ERROR_TAG, 0));
        let mut length: Dword = 0;
        let rc = unsafe {
            IFDHGetCapabilities(
                0,
                TAG_IFD_SIMULTANEOUS_ACCESS,
                &mut length,
                value.as_mut_ptr(),
            )
        };
        assert_eq!((rc, length), (IFD_ERROR_INSUFFICIENT_BUFFER, 0));
        // No reader 5: its ATR is no card's.
        let mut length: Dword = 4;
        let rc =
            unsafe { IFDHGetCapabilities(5 << 16, TAG_IFD_ATR, &mut length, value.as_mut_ptr()) };
        assert_eq!((rc, length), (IFD_NO_SUCH_DEVICE, 0));
        assert_eq!(IFDHICCPresence(5 << 16), IFD_NO_SUCH_DEVICE);
        // pcscd's event thread gets our wait and stop functions.
        let mut ptr = [0u8; 8];
        let mut length: Dword = 8;
        let rc = unsafe {
            IFDHGetCapabilities(
                0,
                TAG_IFD_POLLING_THREAD_WITH_TIMEOUT,
                &mut length,
                ptr.as_mut_ptr(),
            )
        };
        assert_eq!((rc, length), (IFD_SUCCESS, 8));
        assert_eq!(usize::from_ne_bytes(ptr), card_event as PollFn as usize);
        let rc = unsafe {
            IFDHGetCapabilities(
                0,
                TAG_IFD_STOP_POLLING_THREAD,
                &mut length,
                ptr.as_mut_ptr(),
            )
        };
        assert_eq!((rc, length), (IFD_SUCCESS, 8));
        assert_eq!(
            usize::from_ne_bytes(ptr),
            stop_card_events as StopPollFn as usize
        );
        assert_eq!(card_event(5 << 16, 10), IFD_NO_SUCH_DEVICE);
        // A NULL buffer is refused, not written.
        let rc = unsafe {
            IFDHGetCapabilities(
                0,
                TAG_IFD_SLOTS_NUMBER,
                std::ptr::null_mut(),
                value.as_mut_ptr(),
            )
        };
        assert_eq!(rc, IFD_COMMUNICATION_ERROR);
    }

    #[test]
    fn a_bad_device_name_is_refused_and_starts_nothing() {
        let name = c"1:0:host:notaport";
        let rc = unsafe { IFDHCreateChannelByName(7 << 16, name.as_ptr()) };
        assert_eq!(rc, IFD_COMMUNICATION_ERROR);
        assert!(handle(7 << 16).is_none());
        let rc = unsafe { IFDHCreateChannelByName(7 << 16, std::ptr::null()) };
        assert_eq!(rc, IFD_COMMUNICATION_ERROR);
        assert_eq!(IFDHCreateChannel(0, 0x8C7B), IFD_COMMUNICATION_ERROR);
    }
}

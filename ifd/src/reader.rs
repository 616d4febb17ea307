//! One reader (one reader.conf entry): a thread of its own runs a
//! single-threaded tokio runtime with the client's driver (server link,
//! bankd link, main state machine) and a bridge task that feeds the main
//! state machine's frontend commands into the reader's [`IfdCore`].
//! pcscd's threads call in through a [`Handle`]: they read and change the
//! core under its mutex, hand modem events to the driver without blocking,
//! and wait for an APDU's answer on a condition variable, within a bound.

use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use remsim_client::driver;
use remsim_client::frontend::{self, FrontendCmd, ModemEvent};
use rspro::keepalive::KeepaliveConfig;
use rspro::{ComponentType, Identity};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, info_span, warn};

use crate::device_name::DeviceName;
use crate::reader_core::{ApduError, IfdCore, Power};

/// How long closing may wait for the reader's thread to end.
const CLOSE_BOUND: Duration = Duration::from_secs(5);

/// What pcscd's calls share with the reader's thread.
pub struct Handle {
    core: Mutex<IfdCore>,
    /// Notified on every change of the core: an answer, a card in or out,
    /// a close, an interruption of pcscd's event thread.
    changed: Condvar,
    events: mpsc::Sender<ModemEvent>,
    apdu_timeout: Duration,
}

impl Handle {
    /// The core, even if a thread panicked while holding it (nothing in
    /// the core panics between the fields it changes together).
    fn core(&self) -> MutexGuard<'_, IfdCore> {
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// IFDHICCPresence (remembered: see [`Handle::wait_for_change`]).
    pub fn present(&self) -> bool {
        self.core().report(Instant::now())
    }

    /// pcscd's event thread: returns once presence differs from what
    /// pcscd was last told, the reader closes or pcscd interrupts the
    /// wait, or after `bound`.
    pub fn wait_for_change(&self, bound: Duration) {
        let deadline = Instant::now() + bound;
        let mut core = self.core();
        loop {
            let now = Instant::now();
            if core.poll_over(now) || now >= deadline {
                core.end_wait();
                return;
            }
            // Woken by any change; an absence may also end by itself.
            let until = core.next_change(now).map_or(deadline, |t| t.min(deadline));
            core = match self.changed.wait_timeout(core, until - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// pcscd interrupts the wait of the reader's event thread (see
    /// `IfdCore::interrupt_wait`).
    pub fn interrupt_wait(&self) {
        self.core().interrupt_wait();
        self.changed.notify_all();
    }

    pub fn atr(&self) -> Option<Vec<u8>> {
        self.core().atr(Instant::now()).map(<[u8]>::to_vec)
    }

    /// Hands events to the driver without waiting: its queue holds 64, and
    /// a full one means the driver is stuck, which a power call must not be.
    fn send(&self, events: Vec<ModemEvent>) -> Result<(), ApduError> {
        for event in events {
            if self.events.try_send(event).is_err() {
                warn!("the client's queue is full or closed; event dropped");
                return Err(ApduError::Queue);
            }
        }
        Ok(())
    }

    /// IFDHPowerICC: the ATR after power up or reset.
    pub fn power(&self, action: Power) -> Result<Option<Vec<u8>>, ApduError> {
        let (events, atr) = self.core().power(action, Instant::now())?;
        // Power down always succeeds for pcscd, even if the bank cannot hear of it.
        let sent = self.send(events);
        if action != Power::Down {
            sent?;
        }
        Ok(atr)
    }

    /// IFDHTransmitToICC: the R-APDU, or why there is none, within the
    /// APDU timeout.
    pub fn transmit(&self, apdu: &[u8]) -> Result<Vec<u8>, ApduError> {
        let started = Instant::now();
        let (n, tpdu) = self.core().begin_apdu(apdu, started)?;
        if let Err(e) = self.send(vec![ModemEvent::Tpdu(tpdu)]) {
            self.core().not_sent(n);
            return Err(e);
        }
        let deadline = started + self.apdu_timeout;
        let mut core = self.core();
        loop {
            if let Some(result) = core.take_answer(n) {
                return result;
            }
            let now = Instant::now();
            let Some(left) = deadline
                .checked_duration_since(now)
                .filter(|d| !d.is_zero())
            else {
                let reset = core.timed_out(n, now);
                drop(core);
                // The card went: pcscd's event thread hears it now.
                self.changed.notify_all();
                // Best effort: the card is gone for pcscd either way.
                let _ = self.send(reset);
                return Err(ApduError::Timeout);
            };
            core = match self.changed.wait_timeout(core, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

/// A running reader: its handle and its thread.
pub struct Reader {
    pub handle: Arc<Handle>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    ended: std::sync::mpsc::Receiver<()>,
}

impl Reader {
    /// Starts the client for `name` on a thread of its own (`lun` names it
    /// in the logs).
    pub fn start(name: &DeviceName, lun: u32, apdu_timeout: Duration) -> std::io::Result<Reader> {
        let ((cmd_tx, event_rx), (mut cmd_rx, event_tx)) = frontend::channels();
        let handle = Arc::new(Handle {
            core: Mutex::new(IfdCore::new()),
            changed: Condvar::new(),
            events: event_tx,
            apdu_timeout,
        });
        let config = driver::Config {
            server: name.server(),
            client: name.client,
            identity: Identity::new(
                ComponentType::RemsimClient,
                rspro::pdu::host_name(),
                "remsim-ifd",
                env!("CARGO_PKG_VERSION"),
            ),
            atr: vec![0x3B, 0x00],
            ignore_bank_atr: false,
            event_script: None,
            keepalive: KeepaliveConfig::default(),
            usb: None,
            server_tls: None,
            bankd_tls: None,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel();
        let (ended_tx, ended) = std::sync::mpsc::channel();
        let bridge = handle.clone();
        let end = Ended {
            handle: handle.clone(),
            ended: ended_tx,
        };
        let span = info_span!("ifd", lun = format_args!("{lun:#x}"), client = %name.client);
        let thread = std::thread::Builder::new()
            .name(format!("remsim-ifd-{lun:x}"))
            .spawn(move || {
                // Every task runs on this thread: with the span entered here,
                // the links' lines name the reader too.
                let _entered = span.enter();
                runtime.block_on(async move {
                    info!(server = %config.server, "reader opened");
                    tokio::spawn(async move {
                        while let Some(cmd) = cmd_rx.recv().await {
                            log_command(&cmd);
                            bridge.core().on_command(cmd);
                            bridge.changed.notify_all();
                        }
                    });
                    tokio::select! {
                        () = driver::run(config, cmd_tx, event_rx) => {}
                        _ = stopped => {}
                    }
                });
                // Links and the bridge end with the runtime.
                runtime.shutdown_timeout(Duration::from_secs(1));
                drop(end);
            })?;
        Ok(Reader {
            handle,
            stop: Some(stop),
            thread: Some(thread),
            ended,
        })
    }

    /// Stops the client and waits for its thread, within a bound; a waiting
    /// APDU ends at once.
    pub fn close(mut self) {
        self.handle.core().close();
        self.handle.changed.notify_all();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.ended.recv_timeout(CLOSE_BOUND) {
            // Ended, or gone in a panic: joining returns at once.
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                if let Some(thread) = self.thread.take() {
                    let _ = thread.join();
                }
            }
            // The library stays mapped (-z nodelete): a thread left behind
            // cannot run unmapped code.
            Err(RecvTimeoutError::Timeout) => {
                warn!(bound = ?CLOSE_BOUND, "the reader's thread did not end; left behind")
            }
        }
    }
}

/// Dropped when the reader's thread ends, however (a stop, a client that
/// gave up, a panic): the reader shows no card any more and a waiting APDU
/// ends, rather than a card that looks present and never answers.
struct Ended {
    handle: Arc<Handle>,
    ended: std::sync::mpsc::Sender<()>,
}

impl Drop for Ended {
    fn drop(&mut self) {
        self.handle.core().close();
        self.handle.changed.notify_all();
        let _ = self.ended.send(());
    }
}

fn log_command(cmd: &FrontendCmd) {
    match cmd {
        FrontendCmd::CardInsert(true) => info!("bankd connected; the card comes with its ATR"),
        FrontendCmd::CardInsert(false) => info!("card removed"),
        FrontendCmd::SetAtr(atr) => info!(atr = %hex::encode(atr), "ATR"),
        _ => {}
    }
}

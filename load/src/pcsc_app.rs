//! The pcsc scenario: a PC/SC application timing SCardTransmit on one
//! reader of the local pcscd, whatever stands behind the reader (vpcd and
//! a card, remsim-client's vpcd frontend, an ifd handler), so that every
//! path a PC/SC application next to a modem can take is timed by the
//! same loop.
//!
//! 1. waits (on status-change events) until the reader holds a card that
//!    answers to reset, connects (shared, T=0 or T=1);
//! 2. sends a few APDUs to warm the path up, not counted;
//! 3. APDUs back to back for T (at least one), the window the processes
//!    under test are measured over.
//!
//! libpcsclite blocks, and a transmit through a driver without timeouts
//! may never return: the loop runs on a thread of its own, which the
//! scenario waits for within T + the timeout and otherwise abandons (the
//! process ends with an error, the thread with it).

use std::ffi::CString;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use pcsc::{Context, Disposition, Protocols, ReaderState, Scope, ShareMode, State};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::client::{self, ClientOutcome};
use crate::procstat::Window;
use crate::report::Report;
use crate::scenario::{self, Scenario, Settings, Sizes};
use crate::stats::millis;

/// APDUs sent before the window opens: the first may wait for a remote
/// card's power-up, and the path's buffers and caches settle.
const WARM_UP: usize = 20;
/// The largest answer an APDU can have (256 data bytes and SW1 SW2).
const MAX_RAPDU: usize = 258;

/// The reader and card a pcsc run used.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PcscInfo {
    pub reader: String,
    /// The card's ATR as pcscd reports it after connect, in hex.
    pub atr: String,
    /// "T=0" or "T=1".
    pub protocol: String,
}

/// What the thread running the loop hands back.
struct Loop {
    info: PcscInfo,
    outcome: ClientOutcome,
    usage: crate::procstat::Usage,
}

/// The pcsc scenario on `settings.reader` (see the module's comment).
pub async fn run_pcsc(settings: &Settings, sizes: &Sizes) -> anyhow::Result<Report> {
    scenario::check(settings, sizes)?;
    client::check_apdu(&settings.apdu).map_err(|e| anyhow!("--apdu: {e}"))?;
    let reader = CString::new(settings.reader.as_str())
        .map_err(|_| anyhow!("--reader {:?} contains a NUL byte", settings.reader))?;
    let (done, result) = oneshot::channel();
    let (apdu, timeout, seconds) = (settings.apdu.clone(), settings.timeout, sizes.seconds);
    let (processes, clk_tck) = (settings.processes.clone(), settings.clk_tck);
    std::thread::Builder::new()
        .name("pcsc-app".into())
        .spawn(move || {
            let run = || -> anyhow::Result<Loop> {
                let card = connect(&reader, timeout)?;
                let mut outcome = ClientOutcome::default();
                let mut buf = [0u8; MAX_RAPDU];
                for _ in 0..WARM_UP {
                    card.card
                        .transmit(&apdu, &mut buf)
                        .context("SCardTransmit (warm-up)")?;
                }
                let window = Window::start(&processes)?;
                let until = Instant::now() + seconds;
                // At least one APDU, however late this thread runs.
                loop {
                    let sent = Instant::now();
                    let rapdu = card.card.transmit(&apdu, &mut buf).with_context(|| {
                        format!(
                            "SCardTransmit after {} timed APDUs",
                            outcome.apdu_rtts.len()
                        )
                    })?;
                    outcome.apdu_rtts.push(sent.elapsed());
                    if !client::answered_ok(rapdu) {
                        outcome.bad_answers += 1;
                    }
                    if Instant::now() >= until {
                        break;
                    }
                }
                let usage = window.finish(clk_tck)?;
                // Leave the card powered: the next run finds it as it was.
                let _ = card.card.disconnect(Disposition::LeaveCard);
                Ok(Loop {
                    info: card.info,
                    outcome,
                    usage,
                })
            };
            // The receiver is gone only if the scenario gave up on us.
            let _ = done.send(run());
        })
        .context("a thread for the PC/SC loop")?;
    // Connect (≤ timeout), warm-up and window (≤ seconds + timeout).
    let bound = seconds + timeout * 2;
    let finished = tokio::time::timeout(bound, result)
        .await
        .map_err(|_| {
            anyhow!(
                "the PC/SC loop on {:?} did not end within {bound:?}: a transmit hangs",
                settings.reader
            )
        })?
        .map_err(|_| anyhow!("the PC/SC loop ended without a result"))??;

    let mut usage = finished.usage;
    let apdu = scenario::apdu_figures(&[finished.outcome], 1, usage.window);
    for process in usage
        .processes
        .iter_mut()
        .chain(std::iter::once(&mut usage.generator))
    {
        process.per_apdu(apdu.apdus);
    }
    Ok(Report {
        scenario: Scenario::Pcsc.name().to_string(),
        clients: 1,
        served: 1,
        served_fraction: 1.0,
        pcsc: Some(finished.info),
        apdu: Some(apdu),
        window_ms: millis(usage.window),
        processes: usage.processes,
        generator: Some(usage.generator),
        ..Report::default()
    })
}

struct Connected {
    card: pcsc::Card,
    info: PcscInfo,
}

/// Waits until `reader` holds a card that answered to reset, then
/// connects to it; every wait within `timeout`.
fn connect(reader: &CString, timeout: Duration) -> anyhow::Result<Connected> {
    let name = reader.to_string_lossy().into_owned();
    let ctx = Context::establish(Scope::User).context("SCardEstablishContext (is pcscd up?)")?;
    let deadline = Instant::now() + timeout;
    let mut states = [ReaderState::new(reader.clone(), State::UNAWARE)];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no card in reader {name:?} within {timeout:?}");
        }
        match ctx.get_status_change(left, &mut states) {
            Ok(()) => {}
            Err(pcsc::Error::Timeout) => bail!("no card in reader {name:?} within {timeout:?}"),
            Err(pcsc::Error::UnknownReader) => bail!("pcscd has no reader {name:?}"),
            Err(e) => return Err(e).context(format!("SCardGetStatusChange on {name:?}")),
        }
        let state = states[0].event_state();
        if state.contains(State::UNKNOWN) {
            bail!("pcscd has no reader {name:?}");
        }
        if state.contains(State::PRESENT) && !state.contains(State::MUTE) {
            break;
        }
        states[0].sync_current_state();
    }
    let card = ctx
        .connect(reader, ShareMode::Shared, Protocols::T0 | Protocols::T1)
        .with_context(|| format!("SCardConnect to {name:?}"))?;
    let status = card
        .status2_owned()
        .with_context(|| format!("SCardStatus of {name:?}"))?;
    let atr = hex::encode(status.atr());
    let protocol = match status.protocol2() {
        Some(pcsc::Protocol::T0) => "T=0",
        Some(pcsc::Protocol::T1) => "T=1",
        _ => "other",
    };
    Ok(Connected {
        card,
        info: PcscInfo {
            reader: name,
            atr,
            protocol: protocol.to_string(),
        },
    })
}

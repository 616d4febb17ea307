//! The bankd scenario: one real bankd (remsim-bankd or
//! osmo-remsim-bankd) measured alone, remsim-load playing both its server
//! and its clients, so that no other component's cost or latency is in
//! the figures.
//!
//! 1. remsim-load listens; the bankd connects, sends ConnectBankReq and
//!    gets ConnectBankRes(ok); maps bank slot (bank, first_slot + i) →
//!    client i for i in 0..K, K = the clients asked for, at most the
//!    bankd's slots from first_slot, one CreateMappingReq at a time;
//! 2. K clients connect to the bankd's client port: ConnectClientRes,
//!    SetAtrReq answered;
//! 3. APDUs back to back for T, the window the processes under test are
//!    measured over, with CPU time and context switches per APDU.

use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use rspro::BankSlot;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};

use crate::client::{self, DirectConfig, Phase};
use crate::layout::Layout;
use crate::procstat::Window;
use crate::progress::{self, Tracker};
use crate::report::{BankdInfo, Report};
use crate::scenario::{self, Scenario, Settings, Sizes};
use crate::server;
use crate::stats::millis;

/// Binds `settings.listen`, where the bankd under test is to connect: a
/// caller that starts the bankd itself binds first, then runs
/// [`run_bankd`], so that the bankd's first connect finds it.
pub async fn listen_for_bankd(settings: &Settings) -> anyhow::Result<TcpListener> {
    server::bind(&settings.listen).await
}

/// The bankd scenario over `listener` (see the module's comment). Every
/// wait is bounded by `settings.timeout`, the bankd's connect included.
pub async fn run_bankd(
    settings: &Settings,
    sizes: &Sizes,
    listener: TcpListener,
) -> anyhow::Result<Report> {
    scenario::check(settings, sizes)?;
    client::check_apdu(&settings.apdu).map_err(|e| anyhow!("--apdu: {e}"))?;
    let bankd = tokio::net::lookup_host(settings.bankd.as_str())
        .await
        .with_context(|| format!("--bankd {:?} is not HOST:PORT", settings.bankd))?
        .next()
        .with_context(|| format!("--bankd {:?} has no address", settings.bankd))?;

    let mut link = server::accept_bankd(&listener, settings.timeout).await?;
    // One bankd per run: nobody else is let in.
    drop(listener);
    let (bank_id, slots) = (link.bank_id, link.slots);
    let free = slots.saturating_sub(settings.first_slot) as usize;
    let k = sizes.clients.min(free);
    if k == 0 {
        bail!(
            "bank {bank_id} ({}) has {slots} slots: none from --first-slot {}",
            link.peer,
            settings.first_slot
        );
    }
    let layout = Layout {
        client_id_base: settings.client_id_base,
        bank_id_base: bank_id,
        slots,
    };
    layout.check(k, 0, 0)?;
    // k ≤ slots − first_slot, so no slot number overflows.
    let bank_slot = |i: usize| BankSlot::new(bank_id, settings.first_slot + i as u32);

    let mut report = Report {
        scenario: Scenario::Bankd.name().to_string(),
        clients: k,
        bankd: Some(BankdInfo {
            bank_id,
            slots,
            first_slot: settings.first_slot,
            software: link.identity.software.clone(),
            sw_version: link.identity.sw_version.clone(),
        }),
        ..Report::default()
    };
    let (milestones, milestones_rx) = mpsc::channel(progress::capacity(k));
    let mut tracker = Tracker::new(k, k, milestones_rx);

    let first_create = Instant::now();
    let mut maps_failed = 0;
    for i in 0..k {
        let result = link
            .create_mapping(layout.client_slot(i), bank_slot(i))
            .await?;
        if !result.is_ok() {
            maps_failed += 1;
            let reason = format!("the bankd answered createMappingRes({result})");
            *tracker.failures.entry(reason).or_default() += 1;
        }
    }
    let create_ms = millis(first_create.elapsed());
    // Dropping these aborts the server link and every client, however the run ends.
    let mut held = JoinSet::new();
    held.spawn(link.hold());
    let mut clients = JoinSet::new();

    let (phase, phase_rx) = watch::channel(Phase::Hold);
    let config = Arc::new(DirectConfig {
        bankd,
        apdu: settings.apdu.clone(),
        timeout: settings.timeout,
    });
    let t0 = Instant::now();
    for i in 0..k {
        clients.spawn(client::run_at_bankd(
            i,
            layout.client_slot(i),
            bank_slot(i),
            config.clone(),
            milestones.clone(),
            phase_rx.clone(),
        ));
    }
    drop(milestones);
    tracker
        .wait(t0 + settings.timeout, Tracker::connect_settled)
        .await;
    crate::scenario::record_connects(&mut report, &tracker, k, t0);
    // Past every client's own deadline, so each has its ATR or has failed.
    tracker
        .wait(Instant::now() + settings.timeout, Tracker::atr_settled)
        .await;
    report.activation = Some(crate::scenario::activation(
        &tracker,
        1,
        slots,
        k,
        maps_failed,
        create_ms,
        first_create,
    ));

    let window = Window::start(&settings.processes)?;
    let until = Instant::now() + sizes.seconds;
    phase.send_replace(Phase::Apdu { until, senders: k });
    sleep_until(until).await;
    // Answers still on their way are dropped: the window ends here.
    phase.send_replace(Phase::Release);
    let mut usage = window.finish(settings.clk_tck)?;
    let outcomes = scenario::collect(&mut clients, Instant::now() + settings.timeout).await;
    let apdu = scenario::apdu_figures(&outcomes, k, usage.window);
    for process in usage
        .processes
        .iter_mut()
        .chain(std::iter::once(&mut usage.generator))
    {
        process.per_apdu(apdu.apdus);
    }
    report.apdu = Some(apdu);

    tracker.drain();
    report.failures = std::mem::take(&mut tracker.failures);
    if tracker.atr_missing() > 0 {
        let reason = "no setAtrReq from the bankd before the deadline".to_string();
        *report.failures.entry(reason).or_default() += tracker.atr_missing();
    }
    if let Some(Ok(reason)) = held.try_join_next() {
        *report.failures.entry(reason).or_default() += 1;
    }
    report.window_ms = millis(usage.window);
    report.processes = usage.processes;
    report.generator = Some(usage.generator);
    Ok(report)
}

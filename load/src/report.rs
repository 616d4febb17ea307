//! What a run found, for people (text lines) or for programs (one JSON
//! object with --json). Times in ms, latencies in µs, CPU time in ms
//! (per APDU in µs), memory in kB; a figure that does not exist (not every
//! client served) is null rather than a misleading number.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::pcsc_app::PcscInfo;
use crate::procstat::ProcessUsage;
use crate::stats::Summary;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub clients: usize,
    /// Clients holding ConnectClientRes(ok) within the timeout.
    pub served: usize,
    pub served_fraction: f64,
    /// From the first connect until the last client was served; null
    /// unless every client was.
    pub all_served_ms: Option<f64>,
    /// Connect start → ConnectClientRes, over the served clients.
    pub latency_us: Option<Summary>,
    /// The bankd under test (bankd scenario); `served` and `latency_us`
    /// then count its ConnectClientRes, not a server's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bankd: Option<BankdInfo>,
    /// The reader and card (pcsc scenario).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pcsc: Option<PcscInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activation: Option<Activation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apdu: Option<ApduFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<IdleFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiFigures>,
    /// Why clients or map creations failed, and how often.
    pub failures: BTreeMap<String, usize>,
    /// The window the processes were measured over.
    pub window_ms: f64,
    pub processes: Vec<ProcessUsage>,
    /// remsim-load itself over the same window, to tell its cost apart.
    pub generator: Option<ProcessUsage>,
}

/// Management calls, one after another while the clients are held.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApiFigures {
    pub calls: usize,
    /// ListBanks on one gRPC connection kept open (null over REST).
    pub list_banks_us: Option<Summary>,
    /// ListBanks or GET /banks, each on a new connection.
    pub new_connection_list_banks_us: Option<Summary>,
    /// ListClients or GET /clients with every client connected.
    pub list_clients_us: Option<Summary>,
    /// Clients in the last ListClients answer (gRPC only).
    pub clients_listed: Option<usize>,
    /// Size of the last listing: protobuf bytes, or the HTTP answer's.
    pub listing_bytes: usize,
}

/// What the bankd under test announced in its ConnectBankReq.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BankdInfo {
    pub bank_id: u32,
    /// Its numberOfSlots.
    pub slots: u32,
    /// The first bank slot mapped; clients got the slots from there.
    pub first_slot: u32,
    pub software: String,
    pub sw_version: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Activation {
    pub banks: u32,
    pub slots: u32,
    pub maps: usize,
    pub maps_created: usize,
    pub maps_failed: usize,
    /// From the first create until the last one was answered.
    pub create_ms: f64,
    /// Clients with a map that got ConfigClientBankReq (naming a bankd).
    pub configured: usize,
    /// From the first create until every client with a map had its
    /// ConfigClientBankReq; null unless every one did.
    pub all_configured_ms: Option<f64>,
    /// Clients with a map that hold their card's ATR.
    pub activated: usize,
    pub activated_fraction: f64,
    /// From the first create until every client with a map held its ATR;
    /// null unless every one did.
    pub all_activated_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ApduFigures {
    pub senders: usize,
    pub seconds: f64,
    pub apdus: u64,
    pub apdus_per_s: f64,
    pub apdu_us: Option<Summary>,
    /// APDUs of the client that got the fewest through (0: one starved).
    pub min_client_apdus: u64,
    pub slowest_client_apdus_per_s: f64,
    /// Answers without a success status word (9000, 61xx, 9Fxx).
    pub bad_answers: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct IdleFigures {
    pub held_s: f64,
    /// Clients whose connection ended while held.
    pub lost: usize,
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.1} ms"))
}

fn latencies(f: &mut fmt::Formatter<'_>, what: &str, summary: Option<&Summary>) -> fmt::Result {
    match summary {
        Some(s) => writeln!(
            f,
            "  {what}: p50 {} µs, p90 {} µs, p99 {} µs, max {} µs ({} samples)",
            s.p50, s.p90, s.p99, s.max, s.count
        ),
        None => writeln!(f, "  {what}: no samples"),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} clients, {} served ({:.1} %), all served after {}",
            self.scenario,
            self.clients,
            self.served,
            self.served_fraction * 100.0,
            ms(self.all_served_ms)
        )?;
        latencies(f, "connect latency", self.latency_us.as_ref())?;
        if let Some(b) = &self.bankd {
            writeln!(
                f,
                "bankd: bank {} ({} {}), {} slots, clients mapped from slot {}",
                b.bank_id, b.software, b.sw_version, b.slots, b.first_slot
            )?;
        }
        if let Some(p) = &self.pcsc {
            writeln!(
                f,
                "pcsc: reader {:?}, ATR {}, {}",
                p.reader, p.atr, p.protocol
            )?;
        }
        if let Some(a) = &self.activation {
            writeln!(
                f,
                "activation: {} banks × {} slots, {} maps ({} created, {} failed, in {:.1} ms); \
                 {} clients configured, all after {}; \
                 {} clients hold their ATR ({:.1} %), all after {} from the first create",
                a.banks,
                a.slots,
                a.maps,
                a.maps_created,
                a.maps_failed,
                a.create_ms,
                a.configured,
                ms(a.all_configured_ms),
                a.activated,
                a.activated_fraction * 100.0,
                ms(a.all_activated_ms)
            )?;
        }
        if let Some(a) = &self.apdu {
            writeln!(
                f,
                "apdu: {} senders for {:.1} s: {} APDUs, {:.0}/s; slowest client {} APDUs ({:.0}/s); {} bad answers",
                a.senders,
                a.seconds,
                a.apdus,
                a.apdus_per_s,
                a.min_client_apdus,
                a.slowest_client_apdus_per_s,
                a.bad_answers
            )?;
            latencies(f, "APDU round trip", a.apdu_us.as_ref())?;
        }
        if let Some(i) = &self.idle {
            writeln!(
                f,
                "idle: held {:.1} s, {} connections lost",
                i.held_s, i.lost
            )?;
        }
        if let Some(a) = &self.api {
            writeln!(
                f,
                "api: {} rounds; last client listing {} bytes{}",
                a.calls,
                a.listing_bytes,
                a.clients_listed
                    .map_or_else(String::new, |n| format!(", {n} clients"))
            )?;
            latencies(f, "list banks", a.list_banks_us.as_ref())?;
            latencies(
                f,
                "list banks on a new connection",
                a.new_connection_list_banks_us.as_ref(),
            )?;
            latencies(f, "list clients", a.list_clients_us.as_ref())?;
        }
        for (reason, count) in &self.failures {
            writeln!(f, "failed {count} ×: {reason}")?;
        }
        writeln!(f, "processes over {:.1} ms:", self.window_ms)?;
        for p in self.processes.iter().chain(&self.generator) {
            write!(
                f,
                "  {} (pid {}): CPU {:.0} ms, RSS {} → {} kB (peak {} kB), {} threads, {} context switches",
                p.label,
                p.pid,
                p.cpu_ms,
                p.rss_start_kb,
                p.rss_end_kb,
                p.peak_rss_kb,
                p.threads,
                p.context_switches
            )?;
            if let (Some(cpu), Some(switches)) = (p.cpu_us_per_apdu, p.context_switches_per_apdu) {
                write!(
                    f,
                    "; per APDU {cpu:.1} µs CPU, {switches:.2} context switches"
                )?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

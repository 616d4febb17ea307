//! The processes under test as the kernel accounts for them: CPU time
//! (utime + stime of /proc/PID/stat, in clock ticks), peak resident memory
//! (VmHWM of /proc/PID/status: the kernel keeps the peak, so the end of a
//! window tells it), thread count and context switches (voluntary and
//! not, summed over /proc/PID/task/*/status: the process's own status
//! counts its first thread only), sampled at the start and the end of a
//! scenario's window. remsim-load measures itself the same way, so that
//! its own cost can be told apart.

use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::time::Instant;

/// Linux's USER_HZ nearly everywhere, when `getconf CLK_TCK` cannot say.
pub const DEFAULT_CLK_TCK: u64 = 100;

/// A process under test: `--pid LABEL=PID`, or `--pid PID` (labelled
/// with its command name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub label: String,
    pub pid: u32,
}

impl FromStr for Watched {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (label, pid) = match text.split_once('=') {
            Some((label, pid)) => (label.trim(), pid),
            None => ("", text),
        };
        let pid: u32 = pid
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not PID or LABEL=PID (e.g. server=1234)"))?;
        let label = match label {
            "" => std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|comm| comm.trim().to_string())
                .unwrap_or_else(|_| pid.to_string()),
            label => label.to_string(),
        };
        Ok(Watched { label, pid })
    }
}

/// What one process cost over a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessUsage {
    pub label: String,
    pub pid: u32,
    /// User + system CPU time spent in the window.
    pub cpu_ms: f64,
    /// VmHWM at the end of the window: the peak since the process started.
    pub peak_rss_kb: u64,
    /// VmRSS at the start and at the end of the window: what the load
    /// holds once it has settled (idle connections), bursts aside.
    pub rss_start_kb: u64,
    pub rss_end_kb: u64,
    pub threads: u64,
    /// Voluntary and involuntary context switches of its threads in the
    /// window (a thread that ended within it is no longer counted).
    pub context_switches: u64,
    /// CPU time per APDU answered in the window, in µs (bankd scenario).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_apdu: Option<f64>,
    /// Context switches per APDU answered in the window (bankd scenario).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_switches_per_apdu: Option<f64>,
}

impl ProcessUsage {
    /// Sets the per-APDU figures; none without APDUs.
    pub fn per_apdu(&mut self, apdus: u64) {
        if apdus == 0 {
            return;
        }
        let apdus = apdus as f64;
        self.cpu_us_per_apdu = Some(self.cpu_ms * 1000.0 / apdus);
        self.context_switches_per_apdu = Some(self.context_switches as f64 / apdus);
    }
}

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub cpu_ticks: u64,
    pub peak_rss_kb: u64,
    pub rss_kb: u64,
    pub threads: u64,
    /// Summed over the threads alive at the reading.
    pub context_switches: u64,
}

pub fn sample(pid: u32) -> anyhow::Result<Sample> {
    let read = |file: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .with_context(|| format!("process {pid}: /proc/{pid}/{file}"))
    };
    let (stat, status) = (read("stat")?, read("status")?);
    let within = || format!("process {pid}");
    Ok(Sample {
        cpu_ticks: cpu_ticks(&stat).with_context(within)?,
        peak_rss_kb: status_value(&status, "VmHWM").with_context(within)?,
        rss_kb: status_value(&status, "VmRSS").with_context(within)?,
        threads: status_value(&status, "Threads").with_context(within)?,
        context_switches: thread_switches(pid)?,
    })
}

/// The context switches of every thread of `pid`. A thread that ends
/// between the listing and its reading is skipped.
pub fn thread_switches(pid: u32) -> anyhow::Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let tasks = std::fs::read_dir(&dir).with_context(|| format!("process {pid}: {dir}"))?;
    let mut total = 0u64;
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let switches = context_switches(&status)
            .with_context(|| format!("process {pid}: {}", task.path().display()))?;
        total = total.saturating_add(switches);
    }
    Ok(total)
}

/// voluntary_ctxt_switches + nonvoluntary_ctxt_switches of a status file.
pub fn context_switches(status: &str) -> anyhow::Result<u64> {
    let voluntary = status_value(status, "voluntary_ctxt_switches")?;
    let involuntary = status_value(status, "nonvoluntary_ctxt_switches")?;
    Ok(voluntary.saturating_add(involuntary))
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted
/// from its closing parenthesis, the last one on the line.
pub fn cpu_ticks(stat: &str) -> anyhow::Result<u64> {
    let Some((_, after_comm)) = stat.rsplit_once(')') else {
        bail!("/proc/PID/stat without a command name in parentheses");
    };
    // After the name comes field 3 (state).
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        let text = fields
            .get(n - 3)
            .with_context(|| format!("/proc/PID/stat has no field {n}"))?;
        text.parse()
            .with_context(|| format!("/proc/PID/stat field {n} {text:?} is not a number"))
    };
    Ok(field(14)?.saturating_add(field(15)?))
}

/// The number of a `Key:   value [kB]` line of /proc/PID/status.
pub fn status_value(status: &str, key: &str) -> anyhow::Result<u64> {
    let value = status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .with_context(|| format!("/proc/PID/status has no {key} line"))?;
    let number = value.trim().trim_end_matches("kB").trim();
    number
        .parse()
        .with_context(|| format!("/proc/PID/status {key} {number:?} is not a number"))
}

/// Clock ticks per second of /proc/PID/stat: `getconf CLK_TCK`, else 100.
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(DEFAULT_CLK_TCK)
}

/// The processes under test, and remsim-load itself, from the start of a
/// window.
pub struct Window {
    started: Instant,
    before: Vec<(Watched, Sample)>,
    own: Sample,
}

/// What a window measured.
pub struct Usage {
    pub window: Duration,
    pub processes: Vec<ProcessUsage>,
    pub generator: ProcessUsage,
}

impl Window {
    /// Samples every process; a PID that does not exist is an error.
    pub fn start(watched: &[Watched]) -> anyhow::Result<Window> {
        let before = watched
            .iter()
            .map(|w| -> anyhow::Result<(Watched, Sample)> { Ok((w.clone(), sample(w.pid)?)) })
            .collect::<anyhow::Result<_>>()?;
        Ok(Window {
            started: Instant::now(),
            before,
            own: sample(std::process::id())?,
        })
    }

    /// Samples them again: the CPU spent and the context switches since
    /// the start, the peak memory and the threads now.
    pub fn finish(&self, clk_tck: u64) -> anyhow::Result<Usage> {
        let window = self.started.elapsed();
        let usage = |label: &str, pid: u32, before: &Sample| -> anyhow::Result<ProcessUsage> {
            let now = sample(pid)?;
            let ticks = now.cpu_ticks.saturating_sub(before.cpu_ticks);
            Ok(ProcessUsage {
                label: label.to_string(),
                pid,
                cpu_ms: ticks as f64 * 1000.0 / clk_tck.max(1) as f64,
                peak_rss_kb: now.peak_rss_kb,
                rss_start_kb: before.rss_kb,
                rss_end_kb: now.rss_kb,
                threads: now.threads,
                context_switches: now.context_switches.saturating_sub(before.context_switches),
                cpu_us_per_apdu: None,
                context_switches_per_apdu: None,
            })
        };
        let processes = self
            .before
            .iter()
            .map(|(w, before)| usage(&w.label, w.pid, before))
            .collect::<anyhow::Result<_>>()?;
        let generator = usage("remsim-load", std::process::id(), &self.own)?;
        Ok(Usage {
            window,
            processes,
            generator,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_counts_fields_after_the_last_parenthesis() {
        let stat = "42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 12345";
        assert_eq!(cpu_ticks(stat).ok(), Some(325));
        assert!(cpu_ticks("42 no parenthesis").is_err());
        assert!(cpu_ticks("42 (x) S 1 2").is_err(), "too few fields");
    }

    #[test]
    fn status_values_read_with_or_without_unit() {
        let status = "Name:\tx\nVmHWM:\t   20480 kB\nThreads:\t3\n";
        assert_eq!(status_value(status, "VmHWM").ok(), Some(20480));
        assert_eq!(status_value(status, "Threads").ok(), Some(3));
        assert!(status_value(status, "VmRSS").is_err());
    }

    #[test]
    fn switches_add_both_kinds() {
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(context_switches(status).ok(), Some(127));
        assert!(context_switches("voluntary_ctxt_switches:\t1\n").is_err());
    }

    #[test]
    fn per_apdu_figures_need_apdus() {
        let mut usage = ProcessUsage {
            label: "bankd".into(),
            pid: 1,
            cpu_ms: 20.0,
            peak_rss_kb: 1,
            rss_start_kb: 1,
            rss_end_kb: 1,
            threads: 1,
            context_switches: 50,
            cpu_us_per_apdu: None,
            context_switches_per_apdu: None,
        };
        usage.per_apdu(0);
        assert_eq!(usage.cpu_us_per_apdu, None);
        usage.per_apdu(100);
        assert_eq!(usage.cpu_us_per_apdu, Some(200.0));
        assert_eq!(usage.context_switches_per_apdu, Some(0.5));
    }

    #[test]
    fn pids_take_an_optional_label() {
        let w: Watched = "server=1234".parse().expect("labelled");
        assert_eq!((w.label.as_str(), w.pid), ("server", 1234));
        assert!("server=".parse::<Watched>().is_err());
        assert!("x".parse::<Watched>().is_err());
    }

    #[test]
    fn this_process_can_be_sampled() {
        let own = sample(std::process::id()).expect("own /proc entry");
        assert!(own.peak_rss_kb > 0 && own.rss_kb > 0 && own.threads >= 1);
        assert!(own.context_switches > 0, "a test thread has been switched");
    }
}

//! The event script (`-e`, spec §6.7): run as `/bin/sh -c "<script> <cause>"`
//! without waiting, with a cleaned environment plus the REMSIM_* variables.
//! Each child is awaited by a task of its own, so none is left a zombie and
//! the data path never blocks on it.

use std::process::Stdio;

use tokio::process::Command;
use tracing::{debug, warn};

/// Variables passed through from the client's environment (as the C client).
const PASS_THROUGH: &[&str] = &[
    "USER",
    "LOGNAME",
    "HOME",
    "LANG",
    "PATH",
    "PWD",
    "SHELL",
    "TERM",
    "TMPDIR",
    "LD_LIBRARY_PATH",
    "LD_PRELOAD",
    "POSIXLY_CORRECT",
    "HOSTALIASES",
    "TZ",
    "TZDIR",
    "TERMCAP",
    "COLUMNS",
    "LINES",
];

/// What the script is told, besides its cause.
#[derive(Debug, Clone, Default)]
pub struct ScriptEnv {
    pub server_addr: String,
    pub server_state: String,
    pub bankd_addr: String,
    pub bankd_state: String,
    pub client_slot: String,
    pub bankd_slot: String,
    /// Last modem status as 0/1 (the C client prints raw bit masks).
    pub vcc: Option<bool>,
    pub rst: Option<bool>,
    pub clk: Option<bool>,
    /// SIMtrace2 only: USB path and interface.
    pub usb: Option<(String, u8)>,
}

fn flag(v: Option<bool>) -> String {
    match v {
        Some(true) => "1".into(),
        Some(false) => "0".into(),
        None => "-1".into(),
    }
}

/// Starts the script for `cause`; returns at once.
pub fn run(script: &str, cause: &str, env: &ScriptEnv) {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(format!("{script} {cause}"));
    cmd.env_clear();
    for (key, value) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if PASS_THROUGH.contains(&k.as_ref()) || k.starts_with("LC_") {
            cmd.env(&key, value);
        }
    }
    cmd.env("REMSIM_CLIENT_VERSION", env!("CARGO_PKG_VERSION"))
        .env("REMSIM_SERVER_ADDR", &env.server_addr)
        .env("REMSIM_SERVER_STATE", &env.server_state)
        .env("REMSIM_BANKD_ADDR", &env.bankd_addr)
        .env("REMSIM_BANKD_STATE", &env.bankd_state)
        .env("REMSIM_CLIENT_SLOT", &env.client_slot)
        .env("REMSIM_BANKD_SLOT", &env.bankd_slot)
        .env("REMSIM_SIM_VCC", flag(env.vcc))
        .env("REMSIM_SIM_RST", flag(env.rst))
        .env("REMSIM_SIM_CLK", flag(env.clk))
        .env("REMSIM_CAUSE", cause);
    if let Some((path, interface)) = &env.usb {
        cmd.env("REMSIM_USB_PATH", path)
            .env("REMSIM_USB_INTERFACE", interface.to_string());
    }
    cmd.stdin(Stdio::null()).kill_on_drop(false);
    match cmd.spawn() {
        Ok(mut child) => {
            let cause = cause.to_string();
            tokio::spawn(async move {
                match child.wait().await {
                    Ok(status) if !status.success() => {
                        warn!(%cause, %status, "event script failed")
                    }
                    Ok(_) => debug!(%cause, "event script done"),
                    Err(e) => warn!(%cause, error = %e, "event script lost"),
                }
            });
        }
        Err(e) => warn!(%cause, error = %e, "event script could not start"),
    }
}

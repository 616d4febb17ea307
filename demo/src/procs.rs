//! The demo's child processes: each remsim program is started in a process
//! group of its own (Ctrl-C reaches the demo alone, which then stops them
//! in order), dies with the demo even if the demo is killed (parent-death
//! signal), logs to a file in the demo folder, and is stopped with SIGTERM
//! and a bounded wait, then SIGKILL.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// How long a program may take to end after SIGTERM (the server's own
/// shutdown bound is 5 s).
const STOP_BOUND: Duration = Duration::from_secs(8);

/// One started program.
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// The program's exit, if it has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then SIGKILL if it has not ended within the bound.
    pub async fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) with a pid of our own unreaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        if tokio::time::timeout(STOP_BOUND, self.child.wait())
            .await
            .is_err()
        {
            eprintln!("{} did not end in {STOP_BOUND:?}: killed", self.name);
            let _ = self.child.kill().await;
        }
    }

    /// The last lines of its log, for an error message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }
}

/// Where the remsim programs are.
pub struct Programs {
    pub dir: PathBuf,
}

impl Programs {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Fails with one line naming the programs that are not built.
    pub fn check(&self, names: &[&str]) -> anyhow::Result<()> {
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !self.path(n).is_file())
            .collect();
        if !missing.is_empty() {
            bail!(
                "{} not found in {} (build them: cargo build --release)",
                missing.join(", "),
                self.dir.display()
            );
        }
        Ok(())
    }

    /// A command for program `name`: own process group, killed with us.
    pub fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.path(name));
        cmd.process_group(0).kill_on_drop(true).stdin(Stdio::null());
        // SAFETY: prctl(2) only, which is async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        cmd
    }

    /// Starts `cmd` with its stderr in `log` (in the demo folder), and its
    /// stdout too unless the caller has taken it.
    pub fn spawn_logged(
        &self,
        name: &str,
        mut cmd: Command,
        log: &Path,
        stdout_to_log: bool,
    ) -> anyhow::Result<Proc> {
        let file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        if stdout_to_log {
            cmd.stdout(file.try_clone().context("log file")?);
        }
        cmd.stderr(file);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.path(name).display()))?;
        Ok(Proc {
            name: name.to_string(),
            log: log.to_path_buf(),
            child,
        })
    }
}

/// Fails with one line naming the first of `ports` that is taken on 127.0.0.1.
pub fn check_ports_free(ports: &[(u16, &str)]) -> anyhow::Result<()> {
    for (port, what) in ports {
        if let Err(e) = TcpListener::bind((Ipv4Addr::LOCALHOST, *port)) {
            bail!(
                "port {port} ({what}) on 127.0.0.1 is not free ({e}); choose others with --base-port"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_named() {
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = check_ports_free(&[(port, "RSPRO")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("port {port} (RSPRO) on 127.0.0.1 is not free")),
            "{err}"
        );
    }

    #[test]
    fn missing_programs_are_named_in_one_line() {
        let p = Programs {
            dir: PathBuf::from("/nonexistent"),
        };
        let err = p
            .check(&["remsim-server", "remsimctl"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "remsim-server, remsimctl not found in /nonexistent (build them: cargo build --release)"
        );
    }
}

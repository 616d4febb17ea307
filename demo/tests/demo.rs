//! The demo as a newcomer runs it, on real processes and ports: every modem
//! reads a valid ICCID and IMSI and authenticates, the remapped ones show
//! other cards, it exits 0 by itself (`--duration`) or on Ctrl-C (SIGINT)
//! at any moment, and no program it started is left running. A taken port
//! is one clear line.
//!
//! Runs the workspace's other binaries from the same target directory
//! (`cargo test --workspace` builds them).

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// Upper bound of every wait; reaching it fails the test.
const GUARD: Duration = Duration::from_secs(60);

/// Three consecutive free ports on 127.0.0.1, below the ephemeral range;
/// each test (`lane`) searches its own range of 2,000 ports.
fn free_base_port(lane: u16) -> u16 {
    let start = 20_000 + lane * 2_000 + (std::process::id() % 300) as u16 * 4;
    (0..300u16)
        .map(|i| start + (i * 4) % 1_200)
        .find(|base| (0..3).all(|i| TcpListener::bind((Ipv4Addr::LOCALHOST, base + i)).is_ok()))
        .expect("three free ports")
}

fn demo_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("remsim-demo-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn demo(dir: &PathBuf, base: u16, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_remsim-demo"))
        .arg("--dir")
        .arg(dir)
        .args(["--base-port", &base.to_string(), "-o", "json"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("remsim-demo starts")
}

/// Lines of a pipe, as they come.
fn lines(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for the demo's exit within the guard.
/// Waits for the demo's exit (the event), bounded by the guard; a demo
/// that does not end is killed and the test fails.
fn wait_exit(mut child: Child) -> std::process::ExitStatus {
    let pid = child.id() as i32;
    let (tx, exited) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait().expect("wait"));
    });
    exited.recv_timeout(GUARD).unwrap_or_else(|_| {
        // SAFETY: kill(2) on our own, still unreaped child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("remsim-demo did not end")
    })
}

/// The pids the demo announced on stderr ("  remsim-bankd   pid 1234 ...").
fn announced_pids(stderr: &[String]) -> Vec<u32> {
    stderr
        .iter()
        .filter_map(|l| {
            let rest = l.trim_start().strip_prefix("remsim")?;
            let after = &rest[rest.find(" pid ")? + 5..];
            after.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

/// Fails if any of `pids` is still a remsim program.
fn assert_all_gone(pids: &[u32]) {
    for pid in pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains("remsim"),
            "pid {pid} still runs: {}",
            String::from_utf8_lossy(&cmdline)
        );
    }
}

/// The last digit is the Luhn check digit of the others.
fn luhn_ok(digits: &str) -> bool {
    let (body, check) = digits.split_at(digits.len() - 1);
    check.bytes().next().map(|b| b - b'0') == Some(simcard::profile::luhn_digit(body))
}

fn assert_valid_card(row: &Value) {
    let iccid = row["iccid"]
        .as_str()
        .unwrap_or_else(|| panic!("no ICCID: {row}"));
    assert!(
        (18..=20).contains(&iccid.len()) && iccid.bytes().all(|b| b.is_ascii_digit()),
        "{row}"
    );
    assert!(
        iccid.starts_with("89") && luhn_ok(iccid),
        "ICCID {iccid} is not a valid ICCID"
    );
    let imsi = row["imsi"]
        .as_str()
        .unwrap_or_else(|| panic!("no IMSI: {row}"));
    assert!(imsi.len() == 15 && imsi.starts_with("00101"), "{row}");
    assert_eq!(row["auth"], "ok", "{row}");
}

#[test]
fn demo_reads_every_card_remaps_two_and_ends_by_itself() {
    let dir = demo_dir("duration");
    let mut child = demo(
        &dir,
        free_base_port(0),
        &["--duration", "1", "--clients", "4"],
    );
    let stdout = lines(child.stdout.take().expect("stdout"));
    let stderr = lines(child.stderr.take().expect("stderr"));
    let status = wait_exit(child);
    let out: Vec<String> = stdout.iter().collect();
    let err: Vec<String> = stderr.iter().collect();
    assert!(
        status.success(),
        "exit {status}\nstdout:\n{}\nstderr:\n{}",
        out.join("\n"),
        err.join("\n")
    );

    // stdout is JSON results only.
    let rows: Vec<Value> = out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect();
    let initial: Vec<&Value> = rows.iter().filter(|r| r["phase"] == "initial").collect();
    let remapped: Vec<&Value> = rows.iter().filter(|r| r["phase"] == "remapped").collect();
    assert_eq!(initial.len(), 4, "{rows:?}");
    assert_eq!(remapped.len(), 2, "{rows:?}");
    assert_eq!(rows.len(), 6);
    for row in &rows {
        assert_valid_card(row);
    }
    let clients: Vec<&str> = initial
        .iter()
        .map(|r| r["client"].as_str().unwrap())
        .collect();
    assert_eq!(clients, ["1:0", "2:0", "3:0", "4:0"]);
    let iccids: std::collections::HashSet<&str> = initial
        .iter()
        .map(|r| r["iccid"].as_str().unwrap())
        .collect();
    assert_eq!(iccids.len(), 4, "each modem has its own card");
    for r in &remapped {
        let before = initial
            .iter()
            .find(|i| i["client"] == r["client"])
            .expect("was there before");
        assert_ne!(
            r["iccid"], before["iccid"],
            "remapped {} still has its card",
            r["client"]
        );
        assert_ne!(r["bank"], before["bank"]);
    }

    let pids = announced_pids(&err);
    assert_eq!(
        pids.len(),
        7,
        "server, bankd, 4 clients and remsimctl watch announced:\n{}",
        err.join("\n")
    );
    assert_all_gone(&pids);
    for log in ["server.log", "bankd.log", "client-1.log"] {
        let text = std::fs::read_to_string(dir.join(log)).expect("a log in the demo folder");
        assert!(text.contains(" INFO "), "{log}: {text}");
        assert!(!text.contains('\x1b'), "{log} is a file: no colour codes");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ctrl_c_ends_the_demo_cleanly_while_it_runs() {
    let dir = demo_dir("sigint");
    // Eight modems: no spare card, so the remap swaps two of them.
    let mut child = demo(&dir, free_base_port(1), &["--clients", "8"]);
    let stdout = lines(child.stdout.take().expect("stdout"));
    let stderr = lines(child.stderr.take().expect("stderr"));
    let mut rows = Vec::new();
    while rows.len() < 10 {
        let line = stdout
            .recv_timeout(GUARD)
            .expect("results before the guard");
        rows.push(serde_json::from_str::<Value>(&line).expect("JSON"));
    }
    // It is up now, watching events: Ctrl-C.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_exit(child);
    let err: Vec<String> = stderr.iter().collect();
    assert!(
        status.success(),
        "exit {status} on SIGINT:\n{}",
        err.join("\n")
    );
    let remapped: Vec<&Value> = rows.iter().filter(|r| r["phase"] == "remapped").collect();
    assert_eq!(remapped.len(), 2);
    assert_eq!(remapped[0]["bank"], "1:1", "1:0 took 2:0's card");
    assert_eq!(remapped[1]["bank"], "1:0", "2:0 took 1:0's card");
    for row in &rows {
        assert_valid_card(row);
    }
    let pids = announced_pids(&err);
    assert_eq!(pids.len(), 11, "{}", err.join("\n"));
    assert_all_gone(&pids);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ctrl_c_during_start_up_leaves_nothing_behind() {
    let dir = demo_dir("early-sigint");
    let mut child = demo(&dir, free_base_port(2), &[]);
    let stderr = lines(child.stderr.take().expect("stderr"));
    // As soon as the bankd is announced, before any modem has read its card.
    let mut err = Vec::new();
    loop {
        let line = stderr.recv_timeout(GUARD).expect("the bankd is started");
        let bankd = line.contains("remsim-bankd ");
        err.push(line);
        if bankd {
            break;
        }
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_exit(child);
    err.extend(stderr.iter());
    assert!(status.success(), "exit {status}:\n{}", err.join("\n"));
    let pids = announced_pids(&err);
    assert!(pids.len() >= 2, "{}", err.join("\n"));
    assert_all_gone(&pids);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs a demo that must refuse to start: exit 1 and one line on stderr.
fn refusal(dir: &PathBuf, base: u16) -> String {
    let mut child = demo(dir, base, &["--duration", "0"]);
    let stderr = lines(child.stderr.take().expect("stderr"));
    let status = wait_exit(child);
    let err: Vec<String> = stderr.iter().collect();
    assert_eq!(status.code(), Some(1), "{err:?}");
    assert_eq!(err.len(), 1, "{err:?}");
    err[0].clone()
}

#[test]
fn a_taken_port_is_one_clear_line() {
    let dir = demo_dir("port");
    let base = free_base_port(3);
    let _taken = TcpListener::bind((Ipv4Addr::LOCALHOST, base + 1)).expect("bind");
    let err = refusal(&dir, base);
    assert!(
        err.starts_with(&format!(
            "remsim-demo: port {} (RSPRO) on 127.0.0.1 is not free",
            base + 1
        )),
        "{err:?}"
    );
    assert!(!dir.join("remsim.db").exists(), "nothing started");
}

#[test]
fn a_folder_that_is_not_the_demos_is_left_alone() {
    let dir = demo_dir("foreign");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("remsim.db"), b"somebody's database").expect("write");
    let err = refusal(&dir, free_base_port(4));
    assert!(
        err.contains("is not empty and not a demo folder"),
        "{err:?}"
    );
    assert_eq!(
        std::fs::read(dir.join("remsim.db")).expect("still there"),
        b"somebody's database"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

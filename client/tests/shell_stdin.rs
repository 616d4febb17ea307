//! How `remsim-client shell` reads its stdin: a pipe through the reactor
//! (non-blocking while the client runs), its file status flags put back
//! when the client ends, so that whoever shares the pipe reads it as
//! before; and a regular file through tokio's stdin. No server is needed:
//! a line that is not hex is answered on stderr, which proves the line
//! was read.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

use remsim_testing::{GUARD, Proc, exit_status};

const O_NONBLOCK: u32 = 0o4000;

/// The file status flags of our descriptor `fd`, from /proc.
fn flags(fd: i32) -> u32 {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).expect("fdinfo");
    let octal = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .expect("a flags line")
        .trim();
    u32::from_str_radix(octal, 8).expect("octal flags")
}

/// The client with no server to reach (port 1 refuses): it keeps retrying
/// and serves its stdin meanwhile.
fn client(stdin: Stdio) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_remsim-client"));
    cmd.args(["-i", "127.0.0.1", "-p", "1", "--log-level", "off", "shell"])
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// The next stderr line, within the guard.
fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

#[test]
fn a_pipe_is_read_non_blocking_and_left_as_it_was() {
    let (reader, mut writer) = std::io::pipe().expect("pipe");
    // We keep a reader of the same open pipe, as a parent shell would.
    let shared = reader.try_clone().expect("dup");
    assert_eq!(flags(shared.as_raw_fd()) & O_NONBLOCK, 0);
    let mut child = Proc(client(Stdio::from(reader)).spawn().expect("client starts"));
    let lines = stderr_lines(&mut child.0);

    writeln!(writer, "zz").expect("write");
    let line = lines.recv_timeout(GUARD).expect("an answer to the line");
    assert_eq!(line, "ERROR parsing C-APDU `zz'!");
    // Read on the client's reactor: the pipe is non-blocking meanwhile.
    assert_ne!(flags(shared.as_raw_fd()) & O_NONBLOCK, 0);

    drop(writer);
    assert_eq!(
        lines.recv_timeout(GUARD).as_deref(),
        Ok("STDIN was closed, terminating")
    );
    assert!(exit_status(&mut child.0, "EOF on stdin").success());
    assert_eq!(flags(shared.as_raw_fd()) & O_NONBLOCK, 0, "flags put back");
}

#[test]
fn a_file_is_read_too() {
    let path = std::env::temp_dir().join(format!("shell-stdin-{}", std::process::id()));
    std::fs::write(&path, "zz\n").expect("input file");
    let file = std::fs::File::open(&path).expect("open");
    let mut child = Proc(client(Stdio::from(file)).spawn().expect("client starts"));
    let lines = stderr_lines(&mut child.0);
    assert_eq!(
        lines.recv_timeout(GUARD).as_deref(),
        Ok("ERROR parsing C-APDU `zz'!")
    );
    assert_eq!(
        lines.recv_timeout(GUARD).as_deref(),
        Ok("STDIN was closed, terminating")
    );
    assert!(exit_status(&mut child.0, "EOF on stdin").success());
    let _ = std::fs::remove_file(&path);
}

//! The shell frontend (osmo-remsim-client-shell): C-APDUs as hex lines on
//! stdin, `SET_ATR: ` and `R-APDU: ` lines on stdout in the C shell's format
//! (lower-case bytes, each followed by a space), `RESET` for a power cycle,
//! exit on EOF. Lines are assembled across reads and CR LF is accepted
//! (the C shell mishandles both). A C-APDU typed while there is no card
//! waits for one (up to [`MAX_WAITING`]), as a modem's first command would;
//! the C shell drops it.

use std::collections::VecDeque;
use std::io::Write;

use rspro::pdu::TPDU_LEN;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

use crate::frontend::{FrontendCmd, ModemEvent, power_off, power_on};

/// The largest C-APDU a line may hold.
const MAX_APDU: usize = 1024;
/// C-APDUs kept while there is no card; more are refused.
pub const MAX_WAITING: usize = 16;

/// Bytes as the C shell prints them: "3b 00 ".
pub fn format_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x} ")).collect()
}

/// One input line: `RESET`, a C-APDU in hex (blanks allowed), or an error.
/// `RESET` is a full power cycle, off then on: with the off edge alone a
/// second `RESET` would not change the bankd's last-known VCC and so would
/// not reset the card (the C shell's behaviour, spec §6.6 and §5.8).
pub fn parse_line(line: &str) -> Option<Result<Vec<ModemEvent>, String>> {
    let text = line.trim();
    if text.is_empty() {
        return None;
    }
    if text.eq_ignore_ascii_case("RESET") {
        return Some(Ok(vec![
            ModemEvent::Status(power_off()),
            ModemEvent::Status(power_on()),
        ]));
    }
    let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    match hex::decode(&digits) {
        Ok(apdu) if !apdu.is_empty() && apdu.len() <= MAX_APDU => {
            Some(Ok(vec![ModemEvent::Tpdu(apdu)]))
        }
        _ => Some(Err(format!("ERROR parsing C-APDU `{text}'!"))),
    }
}

/// C-APDUs refused for want of a card, sent again when one is presented.
#[derive(Default)]
pub struct Waiting(VecDeque<Vec<u8>>);

impl Waiting {
    /// Keeps a refused C-APDU of a length the bankd takes; false when it
    /// cannot wait (bad length, or the queue is full).
    pub fn keep(&mut self, apdu: Vec<u8>) -> bool {
        if !TPDU_LEN.contains(&apdu.len()) || self.0.len() >= MAX_WAITING {
            return false;
        }
        self.0.push_back(apdu);
        true
    }

    /// Everything waiting, oldest first, for a card that is now there.
    pub fn release(&mut self) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.0.drain(..)
    }
}

pub async fn run(mut commands: mpsc::Receiver<FrontendCmd>, events: mpsc::Sender<ModemEvent>) {
    let input = tokio::spawn(read_stdin(events.clone()));
    let mut waiting = Waiting::default();
    while let Some(cmd) = commands.recv().await {
        let line = match cmd {
            FrontendCmd::SetAtr(atr) => {
                // A card is presented: what waited for one goes now.
                for apdu in waiting.release() {
                    let _ = events.send(ModemEvent::Tpdu(apdu)).await;
                }
                format!("SET_ATR: {}", format_bytes(&atr))
            }
            FrontendCmd::Tpdu(data) => format!("R-APDU: {}", format_bytes(&data)),
            FrontendCmd::TpduRefused(apdu) => {
                let len = apdu.len();
                if waiting.keep(apdu) {
                    eprintln!("C-APDU of {len} bytes waits for the card");
                } else {
                    eprintln!(
                        "ERROR: C-APDU of {len} bytes not sent (length outside 5..260, or {MAX_WAITING} already wait for the card)"
                    );
                }
                continue;
            }
            FrontendCmd::SimRemote(_) | FrontendCmd::CardInsert(_) | FrontendCmd::ModemReset => {
                continue;
            }
        };
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    input.abort();
}

/// stdin's file status flags as they were before a pipe was made
/// non-blocking for the reactor, put back when reading ends: whoever shares
/// the pipe (a parent shell that passed its own stdin) reads it as before.
struct RestoreFlags(libc::c_int);

impl Drop for RestoreFlags {
    fn drop(&mut self) {
        // SAFETY: fcntl on fd 0 with an int argument touches no memory.
        unsafe { libc::fcntl(libc::STDIN_FILENO, libc::F_SETFL, self.0) };
    }
}

/// stdin as an async reader. A pipe (how scripts and test rigs drive the
/// shell) is read on the client's own thread through the reactor; tokio's
/// stdin reads on a blocking-pool thread and hands every line over, a
/// thread wake-up per APDU (2026-12-03, bench-apdu: 105 µs of client CPU
/// per APDU, against 45 µs for osmo-remsim-client-shell). Anything else (a
/// terminal, a file) goes through tokio's stdin.
fn stdin_reader() -> (Box<dyn AsyncRead + Unpin + Send>, Option<RestoreFlags>) {
    use std::os::fd::AsFd;
    // SAFETY: fcntl on fd 0 with no argument touches no memory.
    let flags = unsafe { libc::fcntl(libc::STDIN_FILENO, libc::F_GETFL) };
    if flags < 0 {
        return (Box::new(tokio::io::stdin()), None);
    }
    let pipe = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(tokio::net::unix::pipe::Receiver::from_file);
    match pipe {
        Ok(pipe) => (Box::new(pipe), Some(RestoreFlags(flags))),
        // Not a pipe: left untouched.
        Err(_) => (Box::new(tokio::io::stdin()), None),
    }
}

async fn read_stdin(events: mpsc::Sender<ModemEvent>) {
    let (stdin, _restore) = stdin_reader();
    let mut lines = BufReader::new(stdin).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                // A full queue pauses reading stdin until the core catches up.
                match parse_line(&line) {
                    Some(Ok(batch)) => {
                        for event in batch {
                            if events.send(event).await.is_err() {
                                return;
                            }
                        }
                    }
                    Some(Err(message)) => eprintln!("{message}"),
                    None => {}
                }
            }
            Ok(None) | Err(_) => {
                eprintln!("STDIN was closed, terminating");
                let _ = events.send(ModemEvent::Gone).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_as_the_c_shell_reads_them() {
        assert_eq!(
            parse_line("00a4000c023f00"),
            Some(Ok(vec![ModemEvent::Tpdu(vec![
                0, 0xa4, 0, 0x0c, 2, 0x3f, 0
            ])]))
        );
        assert_eq!(
            parse_line(" 00 b0 00 00 0a \r"),
            Some(Ok(vec![ModemEvent::Tpdu(vec![0, 0xb0, 0, 0, 0x0a])]))
        );
        assert_eq!(
            parse_line("reset"),
            Some(Ok(vec![
                ModemEvent::Status(power_off()),
                ModemEvent::Status(power_on())
            ]))
        );
        assert_eq!(parse_line("   "), None);
        assert_eq!(
            parse_line("0g"),
            Some(Err("ERROR parsing C-APDU `0g'!".into()))
        );
        assert_eq!(
            parse_line("abc"),
            Some(Err("ERROR parsing C-APDU `abc'!".into()))
        );
        assert_eq!(format_bytes(&[0x90, 0x00]), "90 00 ");
    }

    #[test]
    fn c_apdus_wait_for_the_card_within_a_bound() {
        let mut w = Waiting::default();
        assert!(
            !w.keep(vec![0; 4]),
            "too short for the bankd: refused, not kept"
        );
        for i in 0..MAX_WAITING {
            assert!(w.keep(vec![i as u8; 5]));
        }
        assert!(!w.keep(vec![0xFF; 5]), "the queue is full");
        let released: Vec<Vec<u8>> = w.release().collect();
        assert_eq!(released.len(), MAX_WAITING);
        assert_eq!(released[0], vec![0; 5], "oldest first");
        assert_eq!(w.release().count(), 0);
    }
}

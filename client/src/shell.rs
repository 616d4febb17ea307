//! The shell frontend (osmo-remsim-client-shell): C-APDUs as hex lines on
//! stdin, `SET_ATR: ` and `R-APDU: ` lines on stdout in the C shell's format
//! (lower-case bytes, each followed by a space), `RESET` for a power cycle,
//! exit on EOF. Lines are assembled across reads and CR LF is accepted
//! (the C shell mishandles both).

use std::io::Write;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::frontend::{FrontendCmd, ModemEvent, power_off, power_on};

/// The largest C-APDU a line may hold.
const MAX_APDU: usize = 1024;

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

pub async fn run(
    mut commands: mpsc::UnboundedReceiver<FrontendCmd>,
    events: mpsc::UnboundedSender<ModemEvent>,
) {
    let input = tokio::spawn(read_stdin(events));
    while let Some(cmd) = commands.recv().await {
        let line = match cmd {
            FrontendCmd::SetAtr(atr) => format!("SET_ATR: {}", format_bytes(&atr)),
            FrontendCmd::Tpdu(data) => format!("R-APDU: {}", format_bytes(&data)),
            FrontendCmd::TpduRefused(apdu) => {
                eprintln!(
                    "ERROR: C-APDU of {} bytes not sent (no card, or length outside 5..260)",
                    apdu.len()
                );
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

async fn read_stdin(events: mpsc::UnboundedSender<ModemEvent>) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                let delivered = match parse_line(&line) {
                    Some(Ok(batch)) => batch.into_iter().all(|event| events.send(event).is_ok()),
                    Some(Err(message)) => {
                        eprintln!("{message}");
                        true
                    }
                    None => true,
                };
                if !delivered {
                    return;
                }
            }
            Ok(None) | Err(_) => {
                eprintln!("STDIN was closed, terminating");
                let _ = events.send(ModemEvent::Gone);
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
}

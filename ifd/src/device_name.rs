//! DEVICENAME of a reader.conf entry: `CLIENT_ID:CLIENT_SLOT:SERVER_HOST:SERVER_PORT`
//! as the C handler reads it (spec ifd-handler.md §4.1), every part
//! optional from the right, an empty part meaning its default. Fixed
//! against the C handler: a host without a port takes the default port
//! (C: atoi(NULL) crashed pcscd), an IPv6 host may be written in brackets
//! (`23:0:[2001:db8::1]:9998`; quote the value in reader.conf, pcscd's
//! lexer takes no brackets bare), numbers are checked, and pcscd's buffer
//! is only read.

use std::fmt;

use rspro::ClientSlot;

/// The C handler's defaults: client 0:0, server 127.0.0.1:9998.
pub const DEFAULT_HOST: &str = "127.0.0.1";
pub const DEFAULT_PORT: u16 = 9998;
/// Client ids and slot numbers RSPRO carries (0..1023).
const MAX_ID: u32 = 1023;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceName {
    pub client: ClientSlot,
    /// The server's host: a name or an address, IPv6 without brackets.
    pub host: String,
    pub port: u16,
}

impl DeviceName {
    /// `HOST:PORT` to connect to, IPv6 in brackets.
    pub fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} at server {}", self.client, self.server())
    }
}

/// What is wrong with a DEVICENAME.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DEVICENAME {0}")]
pub struct BadDeviceName(String);

/// Reads a DEVICENAME; the error says what is wrong with it.
pub fn parse(text: &str) -> Result<DeviceName, BadDeviceName> {
    parse_parts(text).map_err(BadDeviceName)
}

fn parse_parts(text: &str) -> Result<DeviceName, String> {
    // pcscd hands a quoted value over with its quotes.
    let text = text.trim();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text)
        .trim();
    let (id, rest) = field(text);
    let (slot, rest) = field(rest.unwrap_or(""));
    let (host, port) = match rest {
        Some(r) if r.starts_with('[') => {
            let close = r
                .find(']')
                .ok_or_else(|| format!("{text:?}: an IPv6 host needs its closing ']'"))?;
            let after = &r[close + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(format!("{text:?}: ':' must follow the ']' of the host")),
            };
            (&r[1..close], port)
        }
        Some(r) => {
            let (host, port) = field(r);
            (host, port)
        }
        None => ("", None),
    };
    let number = |what: &str, value: &str, max: u32| -> Result<u32, String> {
        if value.is_empty() {
            return Ok(0);
        }
        value
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| format!("{text:?}: {what} {value:?} is not a number from 0 to {max}"))
    };
    let client = ClientSlot::new(
        number("the client id", id, MAX_ID)?,
        number("the client slot", slot, MAX_ID)?,
    );
    let port =
        match port.map(str::trim) {
            None | Some("") => DEFAULT_PORT,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                format!("{text:?}: the port {p:?} is not a number from 1 to 65535")
            })?,
        };
    let host = host.trim();
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{text:?}: the host {host:?} contains blanks"));
    }
    Ok(DeviceName {
        client,
        host: if host.is_empty() {
            DEFAULT_HOST.to_string()
        } else {
            host.to_string()
        },
        port,
    })
}

/// The text up to the first ':', and what follows it (if there was one).
fn field(text: &str) -> (&str, Option<&str>) {
    match text.split_once(':') {
        Some((head, tail)) => (head.trim(), Some(tail)),
        None => (text.trim(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> (u32, u32, String) {
        let d = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        (d.client.client_id, d.client.slot_nr, d.server())
    }

    #[test]
    fn every_part_is_optional_from_the_right() {
        assert_eq!(ok("23:1:192.0.2.7:9000"), (23, 1, "192.0.2.7:9000".into()));
        // The C handler crashed pcscd here (atoi(NULL)).
        assert_eq!(ok("23:1:192.0.2.7"), (23, 1, "192.0.2.7:9998".into()));
        assert_eq!(ok("23:1"), (23, 1, "127.0.0.1:9998".into()));
        assert_eq!(ok("23"), (23, 0, "127.0.0.1:9998".into()));
        assert_eq!(ok(""), (0, 0, "127.0.0.1:9998".into()));
        assert_eq!(
            ok("23:1:bank.example:"),
            (23, 1, "bank.example:9998".into())
        );
    }

    #[test]
    fn empty_parts_take_their_defaults() {
        // strtok_r in C collapsed "1::h:p" into id 1, slot atoi("h").
        assert_eq!(ok("1::host:9000"), (1, 0, "host:9000".into()));
        assert_eq!(ok("::host"), (0, 0, "host:9998".into()));
        assert_eq!(ok(" 7 : 2 : host : 9000 "), (7, 2, "host:9000".into()));
        // Quoted in reader.conf: pcscd keeps the quotes.
        assert_eq!(ok("\"23:0:[::1]:9000\""), (23, 0, "[::1]:9000".into()));
    }

    #[test]
    fn ipv6_hosts_in_brackets() {
        assert_eq!(ok("23:0:[::1]:9998"), (23, 0, "[::1]:9998".into()));
        assert_eq!(
            ok("23:0:[2001:db8::7]"),
            (23, 0, "[2001:db8::7]:9998".into())
        );
        let err = |t| parse(t).unwrap_err().to_string();
        assert!(err("23:0:[::1").contains("closing"));
        assert!(err("23:0:[::1]9998").contains("':'"));
    }

    proptest::proptest! {
        /// Whatever pcscd hands over: an answer, never a panic; and what
        /// is accepted is what its parts say.
        #[test]
        fn any_text_is_read_or_refused(text in "\\PC{0,40}") {
            let _ = parse(&text);
        }

        #[test]
        fn written_names_read_back(id in 0u32..1024, slot in 0u32..1024,
                                   host in "[a-z0-9.-]{1,20}|\\[[0-9a-f]{1,4}(:[0-9a-f]{0,4}){1,7}\\]",
                                   port in 1u16..) {
            let d = parse(&format!("{id}:{slot}:{host}:{port}")).expect("valid");
            proptest::prop_assert_eq!(d.client, ClientSlot::new(id, slot));
            proptest::prop_assert_eq!(d.server(), format!("{host}:{port}"));
        }
    }

    #[test]
    fn bad_numbers_are_refused_with_a_reason() {
        for (text, words) in [
            ("x:0", "client id"),
            ("1024:0", "client id"),
            ("1:-1", "client slot"),
            ("1:0:h:0", "port"),
            ("1:0:h:65536", "port"),
            ("1:0:h:99:1", "port"),
            ("1:0:a b:1", "blanks"),
        ] {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains(words), "{text}: {e}");
        }
    }
}

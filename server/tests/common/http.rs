//! A plain HTTP/1.1 client as curl is one (a request on a new connection,
//! `Connection: close`), to test the management port's HTTP side byte by
//! byte, and a peer that answers the server's requests as a C peer does.

use std::net::SocketAddr;
use std::time::Duration;

use remsim_testing::{GUARD, Peer};
use rspro::{Msg, Pdu, ResultCode, RsproPdu};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// An HTTP answer: status code, headers (names in lower case), body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// Parses a whole HTTP/1.1 answer (body by Content-Length, chunks, or
    /// up to the end).
    pub fn parse(raw: &[u8], what: &str) -> Answer {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| {
                panic!(
                    "{what}: no end of headers in {:?}",
                    String::from_utf8_lossy(raw)
                )
            });
        let head = std::str::from_utf8(&raw[..end])
            .unwrap_or_else(|e| panic!("{what}: headers are not text: {e}"));
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{what}: status line {status_line:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
            .collect();
        let mut answer = Answer {
            status,
            headers,
            body: Vec::new(),
        };
        let rest = &raw[end + 4..];
        answer.body = if answer
            .header("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            dechunk(rest, what)
        } else if let Some(length) = answer.header("content-length") {
            let length: usize = length
                .parse()
                .unwrap_or_else(|e| panic!("{what}: Content-Length {length:?}: {e}"));
            rest.get(..length)
                .unwrap_or_else(|| panic!("{what}: body shorter than {length} bytes"))
                .to_vec()
        } else {
            rest.to_vec()
        };
        answer
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        format!("{} {}", self.status, String::from_utf8_lossy(&self.body))
    }
}

fn dechunk(mut rest: &[u8], what: &str) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or_else(|| panic!("{what}: chunk size line missing"));
        let size = std::str::from_utf8(&rest[..line])
            .ok()
            .and_then(|s| s.split(';').next())
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or_else(|| panic!("{what}: bad chunk size"));
        rest = &rest[line + 2..];
        if size == 0 {
            return body;
        }
        let chunk = rest
            .get(..size)
            .unwrap_or_else(|| panic!("{what}: chunk shorter than {size} bytes"));
        body.extend_from_slice(chunk);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}

/// Sends one request on a new connection and reads the answer up to the
/// server's close. The request is written while the answer is read, and
/// write errors are ignored: a server may answer (413) before it has read
/// the whole body and close then.
pub async fn exchange(api: SocketAddr, request: &[u8], what: &str) -> Answer {
    Answer::parse(&exchange_raw(api, request, what).await, what)
}

/// Sends `request` (any bytes) on a new connection and returns what the
/// server sent before it closed.
pub async fn exchange_raw(api: SocketAddr, request: &[u8], what: &str) -> Vec<u8> {
    let mut stream = tokio::time::timeout(GUARD, TcpStream::connect(api))
        .await
        .expect("connect in time")
        .expect("connects");
    let (mut rx, mut tx) = stream.split();
    let send = async {
        let _ = tx.write_all(request).await;
    };
    let receive = async {
        let mut raw = Vec::new();
        let mut chunk = [0u8; 4096];
        // A reset after the answer (a body left unread) ends the reading.
        while let Ok(n) = rx.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&chunk[..n]);
        }
        raw
    };
    let ((), raw) = tokio::time::timeout(GUARD, async { tokio::join!(send, receive) })
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer and close within {GUARD:?}"));
    raw
}

/// One HTTP/1.1 request with `headers`, and a Content-Length for a POST or a body.
pub async fn request(
    api: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST" || !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    exchange(api, &raw, &format!("{method} {path}")).await
}

/// Plays a C peer from here on: answers PINGs, and every request of the
/// server with OK (so maps become ACTIVE and are removed), until the
/// server closes the connection.
pub fn answer_requests(mut peer: Peer) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(der) = peer.next_rspro(Duration::from_secs(3600)).await {
            let Ok(decoded) = rspro::decode(&der) else {
                continue;
            };
            let Pdu::Known(pdu) = decoded.pdu else {
                continue;
            };
            let answer = match pdu.msg {
                Msg::CreateMappingReq(_) => RsproPdu::create_mapping_res(ResultCode::Ok),
                Msg::RemoveMappingReq(_) => RsproPdu::remove_mapping_res(ResultCode::Ok),
                Msg::ResetStateReq(_) => RsproPdu::reset_state_res(ResultCode::Ok),
                Msg::ConfigClientBankReq(_) => RsproPdu::config_client_bank_res(ResultCode::Ok),
                _ => continue,
            };
            peer.send(&answer.with_tag(pdu.tag)).await;
        }
    })
}

//! The management calls of a run, each bounded: slot maps created through
//! the gRPC API (CreateSlotmap) or the C server's REST API (POST
//! /api/backend/v1/slotmaps, spec §4), a few at a time; bank endpoints
//! (SetBankEndpoint); a reset before the run when asked.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use remsim_api::v1 as pb;
use remsim_api::v1::remsim_service_client::RemsimServiceClient;
use rspro::{BankSlot, ClientSlot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};
use tracing::debug;

pub type Grpc = RemsimServiceClient<Channel>;

/// The REST API's path prefix.
const REST_PREFIX: &str = "/api/backend/v1";
/// The most of an HTTP answer read: the C server answers a POST with an
/// empty body.
const ANSWER_LIMIT: u64 = 64 * 1024;

/// A channel to the gRPC API; every call on it is bounded by `timeout`.
pub async fn connect_grpc(url: &str, timeout: Duration) -> anyhow::Result<Grpc> {
    let channel = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("--api {url:?} is not a URL"))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connect to the gRPC API at {url}"))?;
    Ok(RemsimServiceClient::new(channel))
}

/// Tells the server where clients reach bank `bank_id`.
pub async fn set_bank_endpoint(
    api: &mut Grpc,
    bank_id: u32,
    endpoint: SocketAddr,
) -> anyhow::Result<()> {
    let request = pb::SetBankEndpointRequest {
        bank_id,
        endpoint: endpoint.to_string(),
    };
    api.set_bank_endpoint(request)
        .await
        .with_context(|| format!("SetBankEndpoint of bank {bank_id} to {endpoint}"))?;
    Ok(())
}

/// Where slot maps are created.
pub enum MapApi {
    Grpc(Grpc),
    Rest(Rest),
}

impl MapApi {
    /// Deletes every slot map.
    pub async fn reset(&self) -> anyhow::Result<()> {
        match self {
            MapApi::Grpc(api) => {
                api.clone()
                    .reset_all(pb::ResetAllRequest {})
                    .await
                    .context("ResetAll")?;
            }
            MapApi::Rest(rest) => {
                let status = rest
                    .post("/global-reset", "")
                    .await
                    .context("POST /global-reset")?;
                if !(200..300).contains(&status) {
                    bail!("POST /global-reset: HTTP {status}");
                }
            }
        }
        Ok(())
    }

    /// Creates one map. The error is a short reason, equal for equal
    /// causes, so that the report can count them.
    pub async fn create(&self, bank: BankSlot, client: ClientSlot) -> Result<(), String> {
        match self {
            MapApi::Grpc(api) => {
                let request = pb::CreateSlotmapRequest::new(
                    (bank.bank_id, bank.slot_nr),
                    (client.client_id, client.slot_nr),
                );
                match api.clone().create_slotmap(request).await {
                    Ok(_) => Ok(()),
                    Err(status) => {
                        debug!(%bank, %client, message = status.message(), "CreateSlotmap refused");
                        Err(format!("CreateSlotmap: {:?}", status.code()))
                    }
                }
            }
            MapApi::Rest(rest) => {
                let body = format!(
                    r#"{{"bank":{{"bankId":{},"slotNr":{}}},"client":{{"clientId":{},"slotNr":{}}}}}"#,
                    bank.bank_id, bank.slot_nr, client.client_id, client.slot_nr
                );
                match rest.post("/slotmaps", &body).await {
                    Ok(status) if (200..300).contains(&status) => Ok(()),
                    Ok(status) => Err(format!("POST /slotmaps: HTTP {status}")),
                    Err(e) => Err(format!("POST /slotmaps: {e:#}")),
                }
            }
        }
    }

    /// Creates every map, at most `concurrency` requests at a time; the
    /// results in the order of `maps`. Through gRPC with `bulk`, BULK maps
    /// per CreateSlotmaps request (a refused request fails all its maps).
    pub async fn create_all(
        &self,
        maps: &[(BankSlot, ClientSlot)],
        concurrency: usize,
        bulk: bool,
    ) -> Vec<Result<(), String>> {
        if let (MapApi::Grpc(api), true) = (self, bulk) {
            let chunks = maps
                .chunks(BULK)
                .map(|chunk| create_bulk(api.clone(), chunk));
            let results: Vec<Vec<Result<(), String>>> = futures::stream::iter(chunks)
                .buffered(concurrency.max(1))
                .collect()
                .await;
            return results.into_iter().flatten().collect();
        }
        futures::stream::iter(maps.iter().map(|&(bank, client)| self.create(bank, client)))
            .buffered(concurrency.max(1))
            .collect()
            .await
    }
}

/// Maps per CreateSlotmaps request: about 9 kB, within the server's 16 kB
/// request limit.
const BULK: usize = 500;

/// One CreateSlotmaps request: a result per map.
async fn create_bulk(mut api: Grpc, chunk: &[(BankSlot, ClientSlot)]) -> Vec<Result<(), String>> {
    let slotmaps = chunk
        .iter()
        .map(|&(bank, client)| {
            pb::CreateSlotmapRequest::new(
                (bank.bank_id, bank.slot_nr),
                (client.client_id, client.slot_nr),
            )
        })
        .collect();
    match api
        .create_slotmaps(pb::CreateSlotmapsRequest { slotmaps })
        .await
    {
        Ok(_) => vec![Ok(()); chunk.len()],
        Err(status) => {
            debug!(message = status.message(), "CreateSlotmaps refused");
            vec![Err(format!("CreateSlotmaps: {:?}", status.code())); chunk.len()]
        }
    }
}

/// The C REST API over plain HTTP/1.1, one connection per request (the C
/// server serves each connection on a thread of its own).
pub struct Rest {
    /// `host:port`, also sent as Host.
    authority: String,
    /// A path before `/api/backend/v1` (a proxy's), usually empty.
    base_path: String,
    timeout: Duration,
}

impl Rest {
    /// `url` like `http://127.0.0.1:9997` (no TLS: the C server has none).
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Rest> {
        let rest = url
            .strip_prefix("http://")
            .with_context(|| format!("--rest {url:?}: give an http:// URL"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() {
            bail!("--rest {url:?}: no host");
        }
        let authority = if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let path = path.trim_matches('/');
        let base_path = if path.is_empty() {
            String::new()
        } else {
            format!("/{path}")
        };
        Ok(Rest {
            authority,
            base_path,
            timeout,
        })
    }

    /// POSTs a JSON body to `path` under the API prefix; the HTTP status.
    pub async fn post(&self, path: &str, body: &str) -> anyhow::Result<u16> {
        let request = format!(
            "POST {}{REST_PREFIX}{path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.base_path,
            self.authority,
            body.len()
        );
        self.bounded(&request, ANSWER_LIMIT)
            .await
            .map(|(status, _)| status)
    }

    /// GETs `path` under the API prefix, reading at most `limit` bytes of
    /// answer: the status and the answer's bytes.
    pub async fn get(&self, path: &str, limit: u64) -> anyhow::Result<(u16, usize)> {
        let request = format!(
            "GET {}{REST_PREFIX}{path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.base_path, self.authority
        );
        self.bounded(&request, limit).await
    }

    async fn bounded(&self, request: &str, limit: u64) -> anyhow::Result<(u16, usize)> {
        tokio::time::timeout(self.timeout, self.exchange(request, limit))
            .await
            .map_err(|_| anyhow!("no answer within {:?}", self.timeout))?
    }

    async fn exchange(&self, request: &str, limit: u64) -> anyhow::Result<(u16, usize)> {
        let mut stream = TcpStream::connect(self.authority.as_str())
            .await
            .with_context(|| format!("connect to {}", self.authority))?;
        stream.set_nodelay(true)?;
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        (&mut stream).take(limit).read_to_end(&mut answer).await?;
        Ok((status_code(&answer)?, answer.len()))
    }
}

/// The status code of an HTTP/1.x answer's first line.
pub fn status_code(answer: &[u8]) -> anyhow::Result<u16> {
    let line = answer.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") => code
            .parse()
            .with_context(|| format!("status {code:?} is not a number")),
        _ => bail!(
            "not an HTTP answer: {:?}",
            line.chars().take(80).collect::<String>()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_and_junk_refused() {
        assert_eq!(status_code(b"HTTP/1.1 201 Created\r\n\r\n").ok(), Some(201));
        assert_eq!(status_code(b"HTTP/1.0 400 Bad Request\r\n").ok(), Some(400));
        assert!(status_code(b"").is_err());
        assert!(status_code(b"SSH-2.0-OpenSSH\r\n").is_err());
    }

    #[test]
    fn rest_urls_give_host_port_and_base_path() {
        let t = Duration::from_secs(1);
        let r = Rest::new("http://127.0.0.1:9997", t).expect("url");
        assert_eq!(
            (r.authority.as_str(), r.base_path.as_str()),
            ("127.0.0.1:9997", "")
        );
        let r = Rest::new("http://example.org/remsim/", t).expect("url");
        assert_eq!(
            (r.authority.as_str(), r.base_path.as_str()),
            ("example.org:80", "/remsim")
        );
        assert!(Rest::new("https://127.0.0.1:9997", t).is_err());
        assert!(Rest::new("http:///x", t).is_err());
    }
}

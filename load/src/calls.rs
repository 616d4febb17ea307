//! The api scenario's management calls, one after another, each timed
//! from request to whole answer: list the banks on a connection kept open,
//! the same on a new connection each time (what one `remsimctl bank list`
//! or one curl costs), and list every client. Through gRPC (ListBanks,
//! ListClients) or the C REST API (GET /banks, GET /clients; one
//! connection per request, as the C server serves them).

use std::time::Duration;

use anyhow::{Context, bail};
use remsim_api::v1 as pb;
use tokio::time::Instant;

use crate::api::{self, Rest};
use crate::report::ApiFigures;
use crate::stats::summarize;

/// The most of a REST listing read: 10,000 clients take about 1 MB.
const LISTING_LIMIT: u64 = 64 * 1024 * 1024;

/// `calls` rounds of the three calls against the API of `rest` (the C
/// REST API) or else the gRPC API at `grpc_url`.
pub async fn time_calls(
    grpc_url: &str,
    rest: Option<&str>,
    calls: usize,
    timeout: Duration,
) -> anyhow::Result<ApiFigures> {
    let mut kept = Vec::with_capacity(calls);
    let mut fresh = Vec::with_capacity(calls);
    let mut listings = Vec::with_capacity(calls);
    let mut listed = None;
    let mut listing_bytes = 0;
    match rest {
        Some(url) => {
            let rest = Rest::new(url, timeout)?;
            for _ in 0..calls {
                let (took, _) = timed(rest_get(&rest, "/banks")).await?;
                fresh.push(took);
                let (took, bytes) = timed(rest_get(&rest, "/clients")).await?;
                listings.push(took);
                listing_bytes = bytes;
            }
        }
        None => {
            let mut grpc = api::connect_grpc(grpc_url, timeout).await?;
            for _ in 0..calls {
                let (took, _) = timed(async {
                    grpc.list_banks(pb::ListBanksRequest {})
                        .await
                        .context("ListBanks")
                })
                .await?;
                kept.push(took);
                let (took, _) = timed(async {
                    let mut api = api::connect_grpc(grpc_url, timeout).await?;
                    api.list_banks(pb::ListBanksRequest {})
                        .await
                        .context("ListBanks on a new connection")
                })
                .await?;
                fresh.push(took);
                let (took, answer) = timed(async {
                    grpc.list_clients(pb::ListClientsRequest {})
                        .await
                        .context("ListClients")
                })
                .await?;
                listings.push(took);
                listing_bytes = prost::Message::encoded_len(answer.get_ref());
                listed = Some(answer.get_ref().clients.len());
            }
        }
    }
    Ok(ApiFigures {
        calls,
        list_banks_us: summarize(kept),
        new_connection_list_banks_us: summarize(fresh),
        list_clients_us: summarize(listings),
        clients_listed: listed,
        listing_bytes,
    })
}

/// How long `call` took, and what it gave.
async fn timed<T>(call: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<(Duration, T)> {
    let start = Instant::now();
    let value = call.await?;
    Ok((start.elapsed(), value))
}

/// A GET that must answer 200; the answer's size.
async fn rest_get(rest: &Rest, path: &str) -> anyhow::Result<usize> {
    let (status, bytes) = rest.get(path, LISTING_LIMIT).await?;
    if status != 200 {
        bail!("GET {path}: HTTP {status}");
    }
    Ok(bytes)
}

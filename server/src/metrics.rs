//! The server's Prometheus metrics (`GET /metrics` on the management
//! port): counters kept as things happen (PDUs, API calls, store writes,
//! keep-alive failures, refused connections) and gauges read from the
//! service at scrape time (connected peers, maps by state), so that they
//! are never out of step with the state they describe.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use remsim_daemon::listen::Policy;
use tokio::sync::{mpsc, oneshot};

use crate::service;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PduLabels {
    /// `rx` (from the peer) or `tx`.
    pub direction: &'static str,
    /// The RSPRO message name as in the ASN.1 (`connectBankReq`).
    pub r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    /// gRPC method (`remsim.v1.RemsimService/ListBanks`) or HTTP route
    /// (`GET /api/backend/v1/slotmaps/{id}`).
    method: String,
    /// gRPC status name (`OK`, `NotFound`) or HTTP status code. A status
    /// sent in trailers after a stream's start (Watch's DATA_LOSS) is not
    /// seen here: such a call counts as `OK`.
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabels {
    port: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    port: &'static str,
    reason: &'static str,
}

/// What the service reports at scrape time.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub bankds: i64,
    pub clients: i64,
    /// Maps per state name (`ACTIVE`, ...), every state present.
    pub maps: Vec<(&'static str, i64)>,
}

pub struct Metrics {
    registry: Registry,
    pdus: Family<PduLabels, Counter>,
    api: Family<ApiLabels, Counter>,
    store_write: Histogram,
    keepalive_failures: Counter,
    bankds: Gauge,
    clients: Gauge,
    maps: Family<StateLabels, Gauge>,
    open: Family<PortLabels, Gauge>,
    refused: Family<RefusedLabels, Counter>,
    /// The ports whose connections are reported.
    ports: std::sync::Mutex<Vec<Policy>>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("remsim_server");
        let pdus = Family::<PduLabels, Counter>::default();
        registry.register(
            "rspro_pdus",
            "RSPRO PDUs on control connections, by direction and message type",
            pdus.clone(),
        );
        let api = Family::<ApiLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Management API requests, by method and status",
            api.clone(),
        );
        // 100 µs to ~3 s.
        let store_write = Histogram::new(exponential_buckets(0.0001, 2.0, 15));
        registry.register(
            "store_write_seconds",
            "Time to commit a change to the SQLite store",
            store_write.clone(),
        );
        let keepalive_failures = Counter::default();
        registry.register(
            "keepalive_failures",
            "RSPRO connections closed because a PING went unanswered",
            keepalive_failures.clone(),
        );
        let bankds = Gauge::default();
        registry.register("bankds_connected", "Identified bankds", bankds.clone());
        let clients = Gauge::default();
        registry.register("clients_connected", "Identified clients", clients.clone());
        let maps = Family::<StateLabels, Gauge>::default();
        registry.register("slotmaps", "Slot maps by state", maps.clone());
        let open = Family::<PortLabels, Gauge>::default();
        registry.register(
            "connections_open",
            "TCP connections open, by port",
            open.clone(),
        );
        let refused = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed at accept, by port and reason (limit, allow)",
            refused.clone(),
        );
        Arc::new(Metrics {
            registry,
            pdus,
            api,
            store_write,
            keepalive_failures,
            bankds,
            clients,
            maps,
            open,
            refused,
            ports: Default::default(),
        })
    }

    /// Reports this port's open connections and refusals at each scrape.
    pub fn watch_port(&self, policy: &Policy) {
        if let Ok(mut ports) = self.ports.lock() {
            ports.push(policy.clone());
        }
    }

    pub fn pdu(&self, direction: &'static str, r#type: &'static str) {
        self.pdus
            .get_or_create(&PduLabels { direction, r#type })
            .inc();
    }

    pub fn store_write(&self, took: Duration) {
        self.store_write.observe(took.as_secs_f64());
    }

    pub fn keepalive_failure(&self) {
        self.keepalive_failures.inc();
    }

    fn api_request(&self, method: String, code: String) {
        self.api.get_or_create(&ApiLabels { method, code }).inc();
    }

    /// Sets the gauges read at scrape time.
    fn set_gauges(&self, snapshot: &Snapshot) {
        self.bankds.set(snapshot.bankds);
        self.clients.set(snapshot.clients);
        for (state, count) in &snapshot.maps {
            self.maps.get_or_create(&StateLabels { state }).set(*count);
        }
        if let Ok(ports) = self.ports.lock() {
            for policy in ports.iter() {
                let port = policy.port;
                self.open
                    .get_or_create(&PortLabels { port })
                    .set(i64::try_from(policy.limit.open()).unwrap_or(i64::MAX));
                let allow = (!policy.allow.is_empty()).then(|| ("allow", policy.allow.refused()));
                for (reason, total) in [("limit", policy.limit.refused())].into_iter().chain(allow)
                {
                    let counter = self.refused.get_or_create(&RefusedLabels { port, reason });
                    counter.inc_by(total.saturating_sub(counter.get()));
                }
            }
        }
    }
}

/// The label of a request: its gRPC method or its HTTP route, from a
/// closed set so that scanners cannot grow the label space.
fn method_label(method: &axum::http::Method, path: &str) -> String {
    for service in [
        "/remsim.v1.RemsimService/",
        "/grpc.health.v1.Health/",
        "/grpc.reflection.v1.ServerReflection/",
        "/grpc.reflection.v1alpha.ServerReflection/",
    ] {
        if let Some(rpc) = path.strip_prefix(service)
            && !rpc.is_empty()
            && rpc.len() <= 64
            && rpc.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return format!("{}{rpc}", &service[1..]);
        }
    }
    let route = match path.strip_prefix("/api/backend/v1/") {
        Some(rest) => match rest.split_once('/') {
            Some((kind @ ("banks" | "clients" | "slotmaps"), _)) => {
                return format!("{method} /api/backend/v1/{kind}/{{id}}");
            }
            None if matches!(
                rest,
                "banks" | "clients" | "slotmaps" | "global-reset" | "restart-counter"
            ) =>
            {
                return format!("{method} /api/backend/v1/{rest}");
            }
            _ => "other",
        },
        None if path == "/metrics" => "/metrics",
        None => "other",
    };
    format!("{method} {route}")
}

/// The outcome of a response: the gRPC status when there is one in its
/// headers (errors are sent that way), OK for a gRPC answer whose status
/// follows in trailers, the HTTP status otherwise.
fn code_label(response: &Response, grpc: bool) -> String {
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        return grpc_code(status.code());
    }
    if grpc && response.status() == StatusCode::OK {
        return grpc_code(tonic::Code::Ok);
    }
    response.status().as_u16().to_string()
}

/// A gRPC status as Go's and grpc-prometheus's labels spell it (`OK`,
/// `NotFound`, `PermissionDenied`).
fn grpc_code(code: tonic::Code) -> String {
    match code {
        tonic::Code::Ok => "OK".into(),
        other => format!("{other:?}"),
    }
}

/// The layer that counts API requests (outermost: refused ones count too).
pub async fn count(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let method = method_label(request.method(), request.uri().path());
    let grpc = crate::api_port::is_grpc(&request);
    let response = next.run(request).await;
    metrics.api_request(method, code_label(&response, grpc));
    response
}

/// How long a scrape waits for the service's figures.
const SCRAPE_BOUND: Duration = Duration::from_secs(5);

/// `GET /metrics`.
pub async fn scrape(
    State((metrics, service)): State<(Arc<Metrics>, mpsc::Sender<service::Request>)>,
) -> Response {
    let (tx, rx) = oneshot::channel();
    let asked = async {
        service.send(service::Request::Snapshot(tx)).await.ok()?;
        rx.await.ok()
    };
    let Ok(Some(snapshot)) = tokio::time::timeout(SCRAPE_BOUND, asked).await else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is busy or shutting down\n",
        )
            .into_response();
    };
    metrics.set_gauges(&snapshot);
    remsim_daemon::exposition::response(&metrics.registry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn labels_come_from_a_closed_set() {
        let get = Method::GET;
        assert_eq!(
            method_label(&Method::POST, "/remsim.v1.RemsimService/ListBanks"),
            "remsim.v1.RemsimService/ListBanks"
        );
        assert_eq!(
            method_label(&get, "/api/backend/v1/slotmaps/65536"),
            "GET /api/backend/v1/slotmaps/{id}"
        );
        assert_eq!(
            method_label(&Method::POST, "/api/backend/v1/global-reset"),
            "POST /api/backend/v1/global-reset"
        );
        assert_eq!(method_label(&get, "/metrics"), "GET /metrics");
        assert_eq!(method_label(&get, "/wp-admin/x.php"), "GET other");
        assert_eq!(method_label(&get, "/api/backend/v1/zzz/1"), "GET other");
        assert_eq!(
            method_label(&Method::POST, "/remsim.v1.RemsimService/<script>"),
            "POST other"
        );
    }
}

//! The bankd's Prometheus metrics (`--metrics-listen`, off by default):
//! APDUs per slot, the card's round-trip time as the bankd sees it (bankd →
//! card → bankd), card errors and connected clients, served at `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::serve::ListenerExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use remsim_daemon::listen::Shutdown;
use rspro::BankSlot;
use tokio::net::TcpListener;
use tracing::{info, warn};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SlotLabels {
    slot: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    slot: u32,
    /// `open`, `transmit` or `reset`.
    operation: &'static str,
}

pub struct Metrics {
    registry: Registry,
    apdus: Family<SlotLabels, Counter>,
    apdu_seconds: Histogram,
    card_errors: Family<ErrorLabels, Counter>,
    clients: Gauge,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("remsim_bankd");
        let apdus = Family::<SlotLabels, Counter>::default();
        registry.register("apdus", "APDUs sent to a card, by bank slot", apdus.clone());
        // 50 µs to ~1.6 s: a soft SIM answers in microseconds, a card in milliseconds.
        let apdu_seconds = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        registry.register(
            "apdu_seconds",
            "Time from the bankd handing an APDU to the card until its answer",
            apdu_seconds.clone(),
        );
        let card_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "card_errors",
            "Card operations that failed, by bank slot and operation",
            card_errors.clone(),
        );
        let clients = Gauge::default();
        registry.register(
            "clients_connected",
            "Client connections open",
            clients.clone(),
        );
        Arc::new(Metrics {
            registry,
            apdus,
            apdu_seconds,
            card_errors,
            clients,
        })
    }

    pub fn apdu(&self, slot: Option<BankSlot>, took: Duration) {
        let slot = slot.map_or(u32::MAX, |s| s.slot_nr);
        self.apdus.get_or_create(&SlotLabels { slot }).inc();
        self.apdu_seconds.observe(took.as_secs_f64());
    }

    pub fn card_error(&self, slot: Option<BankSlot>, operation: &'static str) {
        let slot = slot.map_or(u32::MAX, |s| s.slot_nr);
        self.card_errors
            .get_or_create(&ErrorLabels { slot, operation })
            .inc();
    }

    /// Counts a client connection for as long as the guard lives.
    pub fn client(self: &Arc<Self>) -> ClientGuard {
        self.clients.inc();
        ClientGuard(self.clone())
    }
}

pub struct ClientGuard(Arc<Metrics>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.clients.dec();
    }
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> Response {
    remsim_daemon::exposition::response(&metrics.registry)
}

/// Binds `addr` and serves `/metrics` until shutdown.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    mut shutdown: Shutdown,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics port {addr}"))?;
    info!(%addr, "metrics at /metrics");
    let app = Router::new()
        .route("/metrics", axum::routing::get(scrape))
        .with_state(metrics);
    // Without TCP_NODELAY a scrape's answer may wait for the delayed ACK.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            warn!(error = %e, "TCP_NODELAY on the metrics port");
        }
    });
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
        if let Err(e) = served {
            warn!(error = %e, "metrics port failed");
        }
    }))
}

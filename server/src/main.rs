//! `remsim-server`: the remsim control plane. RSPRO control connections from
//! bankds and clients (TCP 9998, and optionally a TLS port for our own
//! components), slot maps kept in SQLite, and the management port (TCP
//! 9997): the `remsim.v1` gRPC API with reflection and health, the C
//! server's REST API and Prometheus metrics, behind tokens and TLS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use remsim_api::v1::remsim_service_server::RemsimServiceServer;
use remsim_daemon::listen::{self, Allow, Policy, Shutdown};
use remsim_daemon::parse_duration;
use remsim_daemon::tls::{Reloading, ServerFiles};
use remsim_daemon::{LogFormat, Reload};
use remsim_server::{api_port, auth, engine, grpc, listener, metrics, service, store};
use rspro::{ComponentType, Identity};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

#[derive(Clone, Copy, ValueEnum)]
enum DbSync {
    /// Commits survive a crash of the process.
    Normal,
    /// Commits also survive a power loss (an fsync per commit).
    Full,
}

#[derive(Parser)]
#[command(
    name = "remsim-server",
    version,
    about = "remsim control plane: RSPRO server, slot maps, gRPC API"
)]
struct Args {
    /// Address for RSPRO control connections from bankds and clients.
    #[arg(long, env = "REMSIM_RSPRO_LISTEN", default_value = "0.0.0.0:9998")]
    rspro_listen: SocketAddr,
    /// Address for the management port: gRPC (HTTP/2), the C REST API and
    /// /metrics (HTTP/1.1 or HTTP/2).
    #[arg(long, env = "REMSIM_API_LISTEN", default_value = "0.0.0.0:9997")]
    api_listen: SocketAddr,
    /// Serve the management port in TLS with this certificate chain (PEM);
    /// re-read on SIGHUP and when the file changes.
    #[arg(long, env = "REMSIM_API_TLS_CERT", requires = "api_tls_key")]
    api_tls_cert: Option<PathBuf>,
    /// The private key of --api-tls-cert (PEM).
    #[arg(long, env = "REMSIM_API_TLS_KEY", requires = "api_tls_cert")]
    api_tls_key: Option<PathBuf>,
    /// Require management clients to present a certificate signed by this CA (PEM).
    #[arg(long, env = "REMSIM_API_CLIENT_CA", requires = "api_tls_cert")]
    api_client_ca: Option<PathBuf>,
    /// Require a bearer token on the management port: one ROLE:TOKEN per
    /// line (admin or read), # comments; re-read on SIGHUP. Health stays open.
    #[arg(long, env = "REMSIM_API_TOKENS")]
    api_tokens: Option<PathBuf>,
    /// Serve RSPRO only to these networks and addresses (comma-separated
    /// CIDRs); others are closed at accept. Applies to both RSPRO ports.
    #[arg(long, env = "REMSIM_RSPRO_ALLOW", value_parser = Allow::parse)]
    rspro_allow: Option<Allow>,
    /// A second RSPRO port in TLS, for our own bankds and clients
    /// (--tls-ca on their side); the plain port keeps serving C peers.
    #[arg(long, env = "REMSIM_RSPRO_TLS_LISTEN", requires = "rspro_tls_cert")]
    rspro_tls_listen: Option<SocketAddr>,
    /// Certificate chain (PEM) of the RSPRO TLS port.
    #[arg(long, env = "REMSIM_RSPRO_TLS_CERT", requires_all = ["rspro_tls_key", "rspro_tls_listen"])]
    rspro_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --rspro-tls-cert.
    #[arg(long, env = "REMSIM_RSPRO_TLS_KEY", requires = "rspro_tls_cert")]
    rspro_tls_key: Option<PathBuf>,
    /// Require a client certificate signed by this CA on the RSPRO TLS port
    /// (mutual TLS).
    #[arg(long, env = "REMSIM_RSPRO_TLS_CLIENT_CA", requires = "rspro_tls_cert")]
    rspro_tls_client_ca: Option<PathBuf>,
    /// SQLite database; created with its schema when missing.
    #[arg(long, env = "REMSIM_DB", default_value = "remsim.db")]
    db: PathBuf,
    /// Durability of database commits.
    #[arg(long, env = "REMSIM_DB_SYNC", value_enum, default_value = "normal")]
    db_sync: DbSync,
    #[command(flatten)]
    keepalive: remsim_daemon::KeepaliveArgs,
    /// RSPRO connections held at once; more are closed as they come (logged).
    #[arg(long, env = "REMSIM_MAX_CONNECTIONS", default_value_t = 16384)]
    max_connections: usize,
    /// Management API connections held at once; more are closed as they come.
    #[arg(long, env = "REMSIM_API_MAX_CONNECTIONS", default_value_t = 1024)]
    api_max_connections: usize,
    /// How long the holder of a bank or client identity has to answer a PING
    /// when a second connection claims the same identity.
    #[arg(long, env = "REMSIM_PROBE_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    probe_timeout: Duration,
    /// Clear each bankd's maps with ResetStateReq when it connects, before
    /// pushing this server's (also drops its clients for a moment).
    #[arg(long, env = "REMSIM_RESET_BANKS_ON_CONNECT")]
    reset_banks_on_connect: bool,
    /// How long a new RSPRO connection may take to identify itself
    /// (ConnectBankReq or ConnectClientReq) before it is closed.
    #[arg(long, env = "REMSIM_IDENTIFY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    identify_timeout: Duration,
    /// Log filter (error, warn, info, debug, trace, or tracing directives).
    #[arg(long, env = "REMSIM_LOG", default_value = "info")]
    log_level: String,
    #[arg(long, env = "REMSIM_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// libosmocore debug mask of osmo-remsim-server (accepted for compatibility; use --log-level).
    #[arg(short = 'd', long = "debug")]
    _debug: Option<String>,
    /// Accepted for compatibility (colour only on a terminal anyway).
    #[arg(short = 'L', long = "disable-color")]
    _disable_color: bool,
}

/// Our RSPRO identity: the host name, as the C server sends.
fn identity() -> Identity {
    Identity::new(
        ComponentType::RemsimServer,
        rspro::pdu::host_name(),
        "remsim-server",
        env!("CARGO_PKG_VERSION"),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    remsim_daemon::init_logging(&args.log_level, args.log_format)?;
    remsim_daemon::listen::raise_open_files_limit();

    let store = store::Store::open(&args.db, matches!(args.db_sync, DbSync::Full)).await?;
    let loaded = store.load().await?;
    info!(db = %args.db.display(), maps = loaded.maps.len(), removals = loaded.removals.len(), "database open");
    // The holder's connection reports a probe's outcome; this bound only
    // guards against a report that never comes.
    let mut engine = engine::Engine::new(
        identity(),
        args.probe_timeout * 4 + Duration::from_secs(1),
        args.reset_banks_on_connect,
    )
    .with_identify_timeout(args.identify_timeout);
    engine.load(loaded.maps, loaded.removals, loaded.banks);

    let api_tls = ServerFiles::from_options(
        "management port",
        args.api_tls_cert.as_deref(),
        args.api_tls_key.as_deref(),
        args.api_client_ca.as_deref(),
    )?
    .map(|files| Reloading::load("api", files, &[b"h2", b"http/1.1"]))
    .transpose()?;
    let rspro_tls = ServerFiles::from_options(
        "RSPRO TLS port",
        args.rspro_tls_cert.as_deref(),
        args.rspro_tls_key.as_deref(),
        args.rspro_tls_client_ca.as_deref(),
    )?
    .map(|files| Reloading::load("rspro-tls", files, &[]))
    .transpose()?;
    let auth = match &args.api_tokens {
        Some(path) => auth::Auth::from_file(path)?,
        None => auth::Auth::off(),
    };
    if !api_port::is_loopback(args.api_listen) && !auth.is_on() && args.api_client_ca.is_none() {
        warn!(api = %args.api_listen, "the management port is reachable from other hosts without authentication: anyone who reaches it can change every map (set --api-tokens)");
    }

    // Before listening: from then on SIGHUP reloads instead of ending us.
    let mut reloadable: Vec<Arc<dyn Reload>> = vec![auth.clone()];
    reloadable.extend(api_tls.iter().map(|t| t.clone() as Arc<dyn Reload>));
    reloadable.extend(rspro_tls.iter().map(|t| t.clone() as Arc<dyn Reload>));
    remsim_daemon::reload_on_hangup(reloadable)?;

    let rspro = listen::bind(args.rspro_listen)
        .with_context(|| format!("binding RSPRO port {}", args.rspro_listen))?;
    let rspro_tls_listener = match args.rspro_tls_listen {
        Some(addr) => {
            Some(listen::bind(addr).with_context(|| format!("binding RSPRO TLS port {addr}"))?)
        }
        None => None,
    };
    let api_listener = listen::bind(args.api_listen)
        .with_context(|| format!("binding API port {}", args.api_listen))?;
    info!(rspro = %args.rspro_listen, rspro_tls = ?args.rspro_tls_listen, api = %args.api_listen, api_tls = api_tls.is_some(), "listening");

    let metrics = metrics::Metrics::new();
    let (inbox_tx, inbox_rx) = mpsc::channel(service::INBOX_CAPACITY);
    let store_handle = store.clone();
    let service = service::Service::new(engine, store, args.probe_timeout, metrics.clone());
    let service_task = tokio::spawn(service.run(inbox_rx));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let port = listener::Port {
        service: inbox_tx.clone(),
        keepalive: args.keepalive.config(),
        tls: None,
        metrics: metrics.clone(),
    };
    let allow = args.rspro_allow.clone().unwrap_or_default();
    let mut rspro_tasks = Vec::new();
    let policy = Policy::new("rspro", args.max_connections).with_allow(allow.clone());
    metrics.watch_port(&policy);
    rspro_tasks.push(tokio::spawn(listener::serve(
        rspro,
        policy,
        port.clone(),
        shutdown_rx.clone().into(),
    )));
    if let Some(listener) = rspro_tls_listener {
        let policy =
            Policy::new("rspro-tls", args.max_connections).with_allow(allow.for_another_port());
        metrics.watch_port(&policy);
        let port = listener::Port {
            tls: rspro_tls.clone(),
            ..port
        };
        rspro_tasks.push(tokio::spawn(listener::serve(
            listener,
            policy,
            port,
            shutdown_rx.clone().into(),
        )));
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<RemsimServiceServer<grpc::Api>>().await;
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(remsim_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("reflection v1")?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(remsim_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("reflection v1alpha")?;
    let api = RemsimServiceServer::new(grpc::Api::new(inbox_tx.clone(), shutdown_rx.clone()))
        .max_decoding_message_size(grpc::MAX_REQUEST);
    let grpc = tonic::service::Routes::new(api)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .into_axum_router();
    let app = api_port::router(grpc, inbox_tx.clone(), auth, metrics.clone());
    // Kept only to tell the service that the server stops; the service
    // ends once every other sender is gone too.
    let stop_tx = inbox_tx;

    let api_policy = Policy::new("api", args.api_max_connections);
    metrics.watch_port(&api_policy);
    let api_task = tokio::spawn(api_port::serve(
        api_listener,
        api_policy,
        api_tls.clone(),
        app,
        Shutdown::from(shutdown_rx.clone()),
    ));

    remsim_daemon::shutdown_signal().await?;
    info!("shutting down");
    health
        .set_not_serving::<RemsimServiceServer<grpc::Api>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    // Before any connection closes (the inbox is served in order).
    let stopping = stop_tx.send_timeout(service::Request::Stopping, Duration::from_secs(1));
    if stopping.await.is_err() {
        warn!("the service did not take the stop in time");
    }
    drop(stop_tx);
    let _ = shutdown_tx.send(true);
    // The whole shutdown takes at most 5 s: 4 for the tasks, the rest for
    // the database's last write and close.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let bound = Duration::from_secs(4);
    let finished = tokio::time::timeout(bound, async {
        for task in rspro_tasks {
            let _ = task.await;
        }
        let _ = api_task.await;
        let _ = service_task.await;
    })
    .await;
    if finished.is_err() {
        warn!(?bound, "shutdown took too long; exiting anyway");
    }
    // Waits for the service's last write, if it is still running.
    if tokio::time::timeout_at(deadline, store_handle.close())
        .await
        .is_err()
    {
        warn!("database still busy at exit; its WAL file holds the last commits");
    }
    Ok(())
}

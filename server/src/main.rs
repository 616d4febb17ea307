//! `remsim-server`: the remsim control plane. RSPRO control connections from
//! bankds and clients (TCP 9998), slot maps kept in SQLite, and the
//! `remsim.v1` gRPC management API with reflection and health (TCP 9997).

mod api_listener;
mod engine;
mod grpc;
mod listener;
mod service;
mod store;
mod views;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use remsim_api::v1::remsim_service_server::RemsimServiceServer;
use remsim_daemon::LogFormat;
use remsim_daemon::listen::{Limit, Policy};
use remsim_daemon::parse_duration;
use rspro::{ComponentType, Identity};
use tokio::net::TcpListener;
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
    /// Address for the management API (gRPC, HTTP/2).
    #[arg(long, env = "REMSIM_API_LISTEN", default_value = "0.0.0.0:9997")]
    api_listen: SocketAddr,
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

    let rspro = TcpListener::bind(args.rspro_listen)
        .await
        .with_context(|| format!("binding RSPRO port {}", args.rspro_listen))?;
    let api_listener = TcpListener::bind(args.api_listen)
        .await
        .with_context(|| format!("binding API port {}", args.api_listen))?;
    info!(rspro = %args.rspro_listen, api = %args.api_listen, "listening");

    let (inbox_tx, inbox_rx) = mpsc::channel(service::INBOX_CAPACITY);
    let store_handle = store.clone();
    let service = service::Service::new(engine, store, &inbox_tx, args.probe_timeout);
    let service_task = tokio::spawn(service.run(inbox_rx));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let keepalive = args.keepalive.config();
    let listener_task = tokio::spawn(listener::serve(
        rspro,
        Policy::new("rspro", args.max_connections),
        inbox_tx.clone(),
        keepalive,
        shutdown_rx.clone().into(),
    ));

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
    let api = RemsimServiceServer::new(grpc::Api::new(inbox_tx.clone(), shutdown_rx.clone()));
    drop(inbox_tx);

    let incoming =
        api_listener::Limited::incoming(api_listener, Limit::new(args.api_max_connections), "api");
    let mut grpc_shutdown = shutdown_rx.clone();
    let grpc = tonic::transport::Server::builder()
        .accept_http1(true)
        .add_service(api)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        // Limited sets TCP_NODELAY on each accepted socket: the builder's
        // tcp_nodelay applies only to listeners tonic binds itself.
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = grpc_shutdown.changed().await;
        });
    let grpc_task = tokio::spawn(grpc);

    remsim_daemon::shutdown_signal().await?;
    info!("shutting down");
    health
        .set_not_serving::<RemsimServiceServer<grpc::Api>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let _ = shutdown_tx.send(true);
    // The whole shutdown takes at most 5 s: 4 for the tasks, the rest for
    // the database's last write and close.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let bound = Duration::from_secs(4);
    let finished = tokio::time::timeout(bound, async {
        let _ = listener_task.await;
        let _ = grpc_task.await;
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

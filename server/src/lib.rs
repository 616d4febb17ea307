//! remsim-server's library: the engine and the daemon's parts, shared by the
//! binary and its benchmarks. `main.rs` reads the flags and wires these
//! together; nothing here starts on its own.

pub mod api_port;
pub mod auth;
pub mod engine;
pub mod grpc;
pub mod listener;
pub mod metrics;
pub mod rest;
pub mod service;
pub mod store;
pub mod views;

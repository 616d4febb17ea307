//! remsim-bankd's library: the client session, the card backends and the
//! daemon's other parts, shared by the binary and its benchmarks. `main.rs`
//! reads the flags and wires these together; nothing here starts on its own.

pub mod card;
pub mod gsmtap;
pub mod maps;
pub mod metrics;
pub mod server_link;
pub mod session;
#[cfg(test)]
mod session_properties;
pub mod slots;
pub mod worker;

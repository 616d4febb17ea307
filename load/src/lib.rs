//! `remsim-load`: load for a remsim server, ours or the C
//! osmo-remsim-server alike. It speaks only RSPRO and the management API
//! (gRPC, or the C REST API): simulated clients, simulated bankds with soft
//! SIMs in process, slot maps created through the API; figures from the
//! wire and from /proc. One scenario, bankd, measures a real bankd (ours
//! or osmo-remsim-bankd) alone instead: remsim-load is its server and its
//! clients; another, pcsc, is a PC/SC application timing APDUs on a local
//! reader, whatever serves it.
//!
//! * [`scenario`]: connect, activate, apdu, idle, api, bankd; [`run`]
//!   runs one; [`calls`]: the api scenario's timed management calls;
//!   [`isolated`]: the bankd scenario, which [`run_bankd`] also runs on a
//!   listener bound beforehand; [`pcsc_app`]: the pcsc scenario;
//! * [`client`], [`bank`], [`server`]: the simulated components; [`api`]:
//!   the management calls; [`layout`]: which ids and slots each one uses;
//! * [`progress`]: the milestones clients report while a scenario waits;
//! * [`stats`], [`procstat`], [`report`]: the figures and how they are shown.

pub mod api;
pub mod bank;
pub mod calls;
pub mod client;
pub mod isolated;
pub mod layout;
pub mod pcsc_app;
pub mod procstat;
pub mod progress;
pub mod report;
pub mod scenario;
pub mod server;
pub mod stats;

pub use isolated::{listen_for_bankd, run_bankd};
pub use procstat::Watched;
pub use report::Report;
pub use scenario::{BankEndpoints, Scenario, Settings, Sizes, run};

use rspro::{ComponentType, Decoded, Identity, Msg, Pdu};

/// The identity every simulated component announces (a valid RSPRO
/// ComponentName: printable, at most 32 characters).
pub(crate) fn identity(kind: ComponentType) -> Identity {
    Identity::new(
        kind,
        "remsim-load",
        "remsim-load",
        env!("CARGO_PKG_VERSION"),
    )
}

/// The message of a decoded PDU; `None` for an alternative this RSPRO
/// module does not know (ignored, as the C components ignore it).
pub(crate) fn known(decoded: Decoded) -> Option<Msg> {
    match decoded.pdu {
        Pdu::Known(pdu) => Some(pdu.msg),
        Pdu::UnknownMsg { .. } => None,
    }
}

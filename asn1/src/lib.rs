//! `rspro`: everything remsim daemons need to speak RSPRO over IPA.
//!
//! * [`types`]: the ASN.1 types of `RSPRO.asn` (rasn + serde);
//! * [`pdu`]: constructors and accessors in domain terms;
//! * [`codec`]: DER encoding and lenient BER decoding of `RsproPDU`;
//! * [`ipa`]: IPA framing (CCM and the OSMO RSPRO extension) as a tokio codec;
//! * [`keepalive`], [`reconnect`]: the sans-I/O keep-alive and reconnect state machines;
//! * [`link`]: one RSPRO connection over TCP, with each C component's CCM policy;
//! * [`client_link`]: the reconnecting client role built on both.

pub mod client_link;
pub mod codec;
mod enums;
pub mod ipa;
pub mod json;
pub mod keepalive;
mod lenient;
pub mod link;
pub mod pdu;
pub mod reconnect;
pub mod types;
pub mod validate;

pub use codec::{DecodeError, Decoded, EncodeError, Note, Pdu, decode, encode};
pub use types::*;

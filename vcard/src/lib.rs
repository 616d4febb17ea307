//! `remsim-vcard`: soft SIM cards in a real pcscd, through vsmartcard-vpcd.
//! The library is the vpcd protocol, shared with `remsim-client vpcd`
//! (which plays the card for a remote SIM); the binary serves soft SIMs.

pub mod vpcd;

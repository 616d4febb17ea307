//! `simcard`: a software SIM/USIM good enough for SIM tools and modems in
//! tests, demos and benchmarks.
//!
//! * [`milenage`]: MILENAGE and the USIM side of AKA;
//! * [`profile`]: a card's identity and keys, from TOML/JSON or generated;
//! * [`fs`]: the ISO 7816-4 file system built from a profile;
//! * [`card`]: the card itself, a sans-I/O APDU processor with T=0 semantics.
//!
//! It knows nothing of networks: `remsim-vcard` puts its cards in a pcscd
//! reader, the bankd's soft backend serves them over RSPRO.

pub mod card;
mod fcp;
pub mod fs;
pub mod milenage;
pub mod pin;
pub mod profile;

pub use card::SimCard;
pub use profile::CardProfile;

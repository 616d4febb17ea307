//! A card's identity and secrets (ICCID, IMSI, K, OPc, PINs, SPN), read from
//! TOML or JSON files, or generated: `generated(i)` gives distinct, valid,
//! reproducible cards for tests and demos.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::milenage::Milenage;

/// Why a profile is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    /// The cause is in the message, not a source: shown once.
    #[error("{path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}: {problem}")]
    Parse { path: String, problem: String },
}

fn invalid(field: &'static str, problem: impl Into<String>) -> ProfileError {
    ProfileError::Invalid {
        field,
        problem: problem.into(),
    }
}

/// 16 bytes as 32 hex digits in files.
mod hex16 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 16], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 16], D::Error> {
        let text = String::deserialize(d)?;
        let bytes = hex::decode(&text).map_err(serde::de::Error::custom)?;
        bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not 16 bytes of hex")))
    }
}

fn default_pin1() -> String {
    "1234".into()
}
fn default_puk1() -> String {
    "12345678".into()
}
fn default_pin2() -> String {
    "5678".into()
}
fn default_puk2() -> String {
    "87654321".into()
}
fn default_spn() -> String {
    "remsim".into()
}
fn default_mnc_len() -> u8 {
    2
}

/// One card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardProfile {
    /// 18 to 20 digits, usually 19 with a Luhn check digit.
    pub iccid: String,
    /// 6 to 15 digits: MCC, MNC, MSIN.
    pub imsi: String,
    /// Subscriber key.
    #[serde(with = "hex16")]
    pub k: [u8; 16],
    /// OPc (OP already combined with K).
    #[serde(with = "hex16")]
    pub opc: [u8; 16],
    #[serde(default = "default_pin1")]
    pub pin1: String,
    #[serde(default = "default_puk1")]
    pub puk1: String,
    #[serde(default = "default_pin2")]
    pub pin2: String,
    #[serde(default = "default_puk2")]
    pub puk2: String,
    /// Whether PIN1 must be verified (modems in a bank usually run without).
    #[serde(default)]
    pub pin1_enabled: bool,
    /// Service provider name, at most 16 bytes.
    #[serde(default = "default_spn")]
    pub spn: String,
    /// Digits of the MNC in the IMSI (2 or 3).
    #[serde(default = "default_mnc_len")]
    pub mnc_len: u8,
    /// Highest SQN accepted so far by AUTHENTICATE.
    #[serde(default)]
    pub sqn: u64,
}

/// A file of several cards: `[[card]]` tables in TOML, `{"card": [...]}` in JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    pub card: Vec<CardProfile>,
}

fn digits(field: &'static str, value: &str, min: usize, max: usize) -> Result<(), ProfileError> {
    if !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(field, format!("{value:?} must be decimal digits")));
    }
    if value.len() < min || value.len() > max {
        return Err(invalid(
            field,
            format!(
                "{value:?} has {} digits, expected {min} to {max}",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// The Luhn check digit of a digit string.
pub fn luhn_digit(digits: &str) -> u8 {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

impl CardProfile {
    /// Checks every field; a card is only built from a valid profile.
    pub fn validate(&self) -> Result<(), ProfileError> {
        digits("iccid", &self.iccid, 18, 20)?;
        digits("imsi", &self.imsi, 6, 15)?;
        digits("pin1", &self.pin1, 4, 8)?;
        digits("pin2", &self.pin2, 4, 8)?;
        digits("puk1", &self.puk1, 8, 8)?;
        digits("puk2", &self.puk2, 8, 8)?;
        if self.spn.len() > 16 {
            return Err(invalid(
                "spn",
                format!("{:?} is longer than 16 bytes", self.spn),
            ));
        }
        if !matches!(self.mnc_len, 2 | 3) {
            return Err(invalid(
                "mnc_len",
                format!("{} is not 2 or 3", self.mnc_len),
            ));
        }
        if self.sqn >= 1 << 48 {
            return Err(invalid("sqn", "does not fit 48 bits"));
        }
        Ok(())
    }

    /// Card number `index` of a reproducible test population: MCC 001 /
    /// MNC 01 (the test network), ICCID with a valid Luhn digit, distinct K.
    pub fn generated(index: u32) -> Self {
        let body = format!("8900101{index:011}");
        let iccid = format!("{body}{}", luhn_digit(&body));
        let imsi = format!("00101{index:010}");
        let idx = index.to_be_bytes();
        let k: [u8; 16] = std::array::from_fn(|i| (0x10 * (i as u8 % 16)) ^ idx[i % 4] ^ 0x5a);
        let op = *b"remsim-test-op!!";
        CardProfile {
            iccid,
            imsi,
            k,
            opc: Milenage::opc_from_op(&k, &op),
            pin1: default_pin1(),
            puk1: default_puk1(),
            pin2: default_pin2(),
            puk2: default_puk2(),
            pin1_enabled: false,
            spn: default_spn(),
            mnc_len: default_mnc_len(),
            sqn: 0,
        }
    }

    /// `count` distinct cards starting at `first`.
    pub fn generate(first: u32, count: u32) -> Vec<Self> {
        (first..first.saturating_add(count))
            .map(Self::generated)
            .collect()
    }
}

/// The largest profile file read (thousands of cards fit in a few MB):
/// a wrong path such as /dev/zero is an error, not an endless allocation.
const PROFILE_FILE_LIMIT: u64 = 64 << 20;

fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(PROFILE_FILE_LIMIT + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > PROFILE_FILE_LIMIT {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {PROFILE_FILE_LIMIT} bytes: not a profile file"),
        ));
    }
    Ok(text)
}

/// Reads a profile file: JSON when it ends in `.json`, TOML otherwise.
/// Every card is validated.
pub fn load(path: &Path) -> Result<Vec<CardProfile>, ProfileError> {
    let name = path.display().to_string();
    let text = read_bounded(path).map_err(|error| ProfileError::Read {
        path: name.clone(),
        error,
    })?;
    let json = path.extension().is_some_and(|e| e == "json");
    parse(&name, &text, json)
}

/// Parses profiles (JSON or TOML) read from `name`; every card is validated.
pub fn parse(name: &str, text: &str, json: bool) -> Result<Vec<CardProfile>, ProfileError> {
    let parse_error = |problem: String| ProfileError::Parse {
        path: name.to_owned(),
        problem,
    };
    let file: ProfileFile = if json {
        serde_json::from_str(text).map_err(|e| parse_error(e.to_string()))?
    } else {
        toml::from_str(text).map_err(|e| parse_error(e.to_string()))?
    };
    for card in &file.card {
        card.validate()
            .map_err(|e| parse_error(format!("card {}: {e}", card.iccid)))?;
    }
    Ok(file.card)
}

/// The TOML form of a set of cards.
pub fn to_toml(cards: &[CardProfile]) -> String {
    toml::to_string(&ProfileFile {
        card: cards.to_vec(),
    })
    .unwrap_or_default()
}

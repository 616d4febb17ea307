//! DER encoding and lenient BER decoding of whole `RsproPDU`s.
//!
//! Decoding tries rasn first; only a PDU rasn refuses takes the lenient walk
//! (`lenient.rs`), which accepts what asn1c accepts and locates real errors.

use crate::lenient::{self, Walked};
use crate::types::RsproPdu;
use crate::validate::{self, Violation};

/// The protocol version every PDU we generate carries (as the C suite does).
pub const PROTOCOL_VERSION: u32 = 2;

/// Largest DER encoding that fits one IPA frame (LEN counts the extension byte).
pub const MAX_PDU_LEN: usize = u16::MAX as usize - 1;

/// Largest DER encoding a C peer can generate (1024-byte buffer, 8 of headroom).
/// We accept larger PDUs; we warn before sending one.
pub const C_MAX_PDU_LEN: usize = 1016;

/// A decoded PDU: known, or carrying a message alternative we do not know.
// Known is the common case; boxing it would cost an allocation per PDU.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pdu {
    Known(RsproPdu),
    /// An RsproPDUchoice alternative beyond this module (a later protocol
    /// extension): accepted like asn1c does, for the caller to ignore or refuse.
    UnknownMsg {
        version: u32,
        tag: u32,
        /// The context tag number of the alternative.
        alternative: u32,
    },
}

/// Something decoding tolerated, to be logged by the receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Unknown extension additions in SEQUENCEs were skipped.
    SkippedExtensions(usize),
    /// Bytes after the PDU inside its frame were ignored.
    TrailingBytes(usize),
    /// A value outside its ASN.1 constraint (accepted, as the C peers do).
    Constraint(Violation),
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Note::SkippedExtensions(n) => write!(f, "skipped {n} unknown extension addition(s)"),
            Note::TrailingBytes(n) => write!(f, "ignored {n} byte(s) after the PDU"),
            Note::Constraint(v) => write!(f, "{v}"),
        }
    }
}

/// The result of a successful decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub pdu: Pdu,
    pub notes: Vec<Note>,
}

/// Why a PDU could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("byte {offset}: {reason}")]
pub struct DecodeError {
    /// Offset into the PDU (the DER/BER bytes) where the problem is.
    pub offset: usize,
    pub reason: String,
}

/// Why a PDU could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("DER encoding failed: {0}")]
    Der(String),
    #[error("PDU of {0} bytes does not fit an IPA frame (at most {MAX_PDU_LEN})")]
    TooLong(usize),
}

/// Encodes a PDU as DER.
pub fn encode(pdu: &RsproPdu) -> Result<Vec<u8>, EncodeError> {
    let der = rasn::der::encode(pdu).map_err(|e| EncodeError::Der(e.to_string()))?;
    if der.len() > MAX_PDU_LEN {
        return Err(EncodeError::TooLong(der.len()));
    }
    Ok(der)
}

/// The lenient walk's re-encoding of a PDU, and how many extension
/// elements it skipped. Public only for the test that keeps the walk's hand
/// copy of the schema equal to the rasn types (walk(DER(p)) == DER(p)).
#[doc(hidden)]
pub fn lenient_walk(bytes: &[u8]) -> Result<(Vec<u8>, usize), DecodeError> {
    match lenient::walk_pdu(bytes) {
        Ok(Walked::Clean { bytes, skipped, .. }) => Ok((bytes, skipped)),
        Ok(Walked::UnknownAlternative { alternative, .. }) => Err(DecodeError {
            offset: 0,
            reason: format!("alternative {alternative} unknown to the walk's schema"),
        }),
        Err(e) => Err(DecodeError {
            offset: e.offset,
            reason: e.reason,
        }),
    }
}

/// Decodes a PDU from BER, as leniently as asn1c.
pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let mut notes = Vec::new();
    let pdu = match rasn::ber::decode_with_remainder::<RsproPdu>(bytes) {
        Ok((pdu, rest)) => {
            if !rest.is_empty() {
                notes.push(Note::TrailingBytes(rest.len()));
            }
            pdu
        }
        Err(strict) => match lenient::walk_pdu(bytes) {
            Err(e) => {
                return Err(DecodeError {
                    offset: e.offset,
                    reason: e.reason,
                });
            }
            Ok(Walked::UnknownAlternative {
                version,
                tag,
                alternative,
                trailing,
            }) => {
                if trailing > 0 {
                    notes.push(Note::TrailingBytes(trailing));
                }
                return Ok(Decoded {
                    pdu: Pdu::UnknownMsg {
                        version,
                        tag,
                        alternative,
                    },
                    notes,
                });
            }
            Ok(Walked::Clean {
                bytes: clean,
                skipped,
                trailing,
            }) => {
                let pdu = rasn::ber::decode::<RsproPdu>(&clean).map_err(|_| DecodeError {
                    // The walk found nothing structural: report rasn's first complaint.
                    offset: 0,
                    reason: strict.to_string(),
                })?;
                if skipped > 0 {
                    notes.push(Note::SkippedExtensions(skipped));
                }
                if trailing > 0 {
                    notes.push(Note::TrailingBytes(trailing));
                }
                pdu
            }
        },
    };
    notes.extend(validate::violations(&pdu).into_iter().map(Note::Constraint));
    Ok(Decoded {
        pdu: Pdu::Known(pdu),
        notes,
    })
}

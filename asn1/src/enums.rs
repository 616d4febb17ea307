//! ENUMERATED types of RSPRO, decoded leniently: a value this module does not
//! know is kept as `Unknown(n)` (as asn1c does) instead of failing the PDU.

use rasn::prelude::*;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Defines a Rust enum for an ASN.1 ENUMERATED, encoded as the INTEGER value
/// under the ENUMERATED tag, with ASN.1 names for logs and JSON.
macro_rules! asn_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:literal => $asn:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this implementation does not know (never one of the above).
            Unknown(i64),
        }

        impl $name {
            /// Every known value, in ASN.1 order.
            pub const KNOWN: &'static [$name] = &[$($name::$variant),+];

            /// The numeric value on the wire.
            pub fn value(self) -> i64 {
                match self {
                    $($name::$variant => $value,)+
                    $name::Unknown(v) => v,
                }
            }

            /// The enum for a wire value; unknown values are kept.
            pub fn from_value(value: i64) -> Self {
                match value {
                    $($value => $name::$variant,)+
                    other => $name::Unknown(other),
                }
            }

            /// The ASN.1 identifier, `None` for an unknown value.
            pub fn asn_name(self) -> Option<&'static str> {
                match self {
                    $($name::$variant => Some($asn),)+
                    $name::Unknown(_) => None,
                }
            }

            /// Parses an ASN.1 identifier.
            pub fn from_asn_name(name: &str) -> Option<Self> {
                match name {
                    $($asn => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self.asn_name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "unknown({})", self.value()),
                }
            }
        }

        impl AsnType for $name {
            const TAG: Tag = Tag::ENUMERATED;
        }

        impl Encode for $name {
            fn encode_with_tag_and_constraints<'b, E: Encoder<'b>>(
                &self,
                encoder: &mut E,
                tag: Tag,
                constraints: &Constraints,
                identifier: Identifier,
            ) -> Result<(), E::Error> {
                // ENUMERATED and INTEGER share their content encoding.
                self.value().encode_with_tag_and_constraints(encoder, tag, constraints, identifier)
            }
        }

        impl Decode for $name {
            fn decode_with_tag_and_constraints<D: Decoder>(
                decoder: &mut D,
                tag: Tag,
                constraints: &Constraints,
            ) -> Result<Self, D::Error> {
                i64::decode_with_tag_and_constraints(decoder, tag, constraints).map($name::from_value)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self.asn_name() {
                    Some(n) => s.serialize_str(n),
                    None => s.serialize_i64(self.value()),
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum Repr {
                    Name(String),
                    Value(i64),
                }
                match Repr::deserialize(d)? {
                    Repr::Value(v) => Ok($name::from_value(v)),
                    Repr::Name(n) => $name::from_asn_name(&n).ok_or_else(|| {
                        let known: Vec<&str> = $name::KNOWN.iter().filter_map(|k| k.asn_name()).collect();
                        serde::de::Error::custom(format!(
                            "unknown {} {:?}: expected one of {} or a number",
                            stringify!($name),
                            n,
                            known.join(", ")
                        ))
                    }),
                }
            }
        }
    };
}

asn_enum! {
    /// What kind of remsim component an identity belongs to.
    ComponentType {
        RemsimClient = 0 => "remsimClient",
        RemsimServer = 1 => "remsimServer",
        RemsimBankd = 2 => "remsimBankd",
    }
}

asn_enum! {
    /// Result of an operation, carried by every `*Res` message.
    ResultCode {
        Ok = 0 => "ok",
        IllegalClientId = 1 => "illegalClientId",
        IllegalBankId = 2 => "illegalBankId",
        IllegalSlotId = 3 => "illegalSlotId",
        UnsupportedProtocolVersion = 4 => "unsupportedProtocolVersion",
        UnknownSlotmap = 5 => "unknownSlotmap",
        IdentityInUse = 6 => "identityInUse",
        CardNotPresent = 100 => "cardNotPresent",
        CardUnresponsive = 101 => "cardUnresponsive",
        CardTransmissionError = 102 => "cardTransmissionError",
    }
}

asn_enum! {
    /// Cause carried by an ErrorInd.
    ErrorCode {
        UnknownClientConnected = 1 => "unknownClientConnected",
        UnexpectedDisconnect = 2 => "unexpectedDisconnect",
        UnexpectedProtocolVersion = 3 => "unexpectedProtocolVersion",
    }
}

asn_enum! {
    /// Severity carried by an ErrorInd.
    ErrorSeverity {
        Minor = 1 => "minor",
        Major = 2 => "major",
        Fatal = 3 => "fatal",
    }
}

impl ResultCode {
    /// True for `ok`.
    pub fn is_ok(self) -> bool {
        self == ResultCode::Ok
    }
}

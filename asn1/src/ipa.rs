//! IPA framing: `LEN(2, big endian) PROTO(1) payload`, with CCM (0xFE) for
//! keep-alive and identity, and the OSMO extension (0xEE) carrying RSPRO
//! (ext 0x07). A tokio-util codec with typed errors.
//!
//! Policy: every `FrameError` is fatal for the connection. The C suite closes
//! on unknown protocols and extensions too; on a zero-length frame it crashes
//! (spec §7.3), we close instead.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::codec::{self, EncodeError};
use crate::types::RsproPdu;

/// IPA protocol byte of CCM (IPAC_PROTO_IPACCESS).
pub const PROTO_CCM: u8 = 0xFE;
/// IPA protocol byte of the Osmocom extensions (IPAC_PROTO_OSMO).
pub const PROTO_OSMO: u8 = 0xEE;
/// OSMO extension byte of RSPRO.
pub const EXT_RSPRO: u8 = 0x07;
/// LEN(2) + PROTO(1).
pub const HEADER_LEN: usize = 3;
/// The largest LEN the 16-bit field can carry, and our default limit.
pub const MAX_PAYLOAD_LEN: usize = u16::MAX as usize;

/// CCM message types.
pub mod ccm_type {
    pub const PING: u8 = 0x00;
    pub const PONG: u8 = 0x01;
    pub const ID_GET: u8 = 0x04;
    pub const ID_RESP: u8 = 0x05;
    pub const ID_ACK: u8 = 0x06;
    pub const ID_NACK: u8 = 0x07;
}

/// CCM identity tags (ID_GET / ID_RESP).
pub mod id_tag {
    pub const SERNR: u8 = 0x00;
    pub const UNITNAME: u8 = 0x01;
    pub const LOCATION1: u8 = 0x02;
    pub const LOCATION2: u8 = 0x03;
    pub const EQUIPVERS: u8 = 0x04;
    pub const SWVERSION: u8 = 0x05;
    pub const IPADDR: u8 = 0x06;
    pub const MACADDR: u8 = 0x07;
    pub const UNIT: u8 = 0x08;

    /// The name of a tag, as in libosmocore's logs.
    pub fn name(tag: u8) -> Option<&'static str> {
        Some(match tag {
            SERNR => "SERNR",
            UNITNAME => "UNITNAME",
            LOCATION1 => "LOCATION1",
            LOCATION2 => "LOCATION2",
            EQUIPVERS => "EQUIPVERS",
            SWVERSION => "SWVERSION",
            IPADDR => "IPADDR",
            MACADDR => "MACADDR",
            UNIT => "UNIT",
            0x09 => "USERNAME",
            0x0a => "PASSWORD",
            0x0b => "ACCESS_CLASS",
            0x0c => "APP_PROTO_VER",
            _ => return None,
        })
    }

    /// The tag of a name.
    pub fn from_name(name: &str) -> Option<u8> {
        (0..=0x0c).find(|t| self::name(*t) == Some(name))
    }
}

/// A CCM message. ID_GET and ID_RESP keep their raw bodies so that frames
/// re-encode byte for byte; parse them with [`parse_id_get`] / [`parse_id_resp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ccm {
    Ping,
    Pong,
    IdGet(Bytes),
    IdResp(Bytes),
    IdAck,
    /// Any other type (ID_NACK, PROXY, ...), with its body.
    Other {
        msg_type: u8,
        body: Bytes,
    },
}

impl Ccm {
    /// libosmocore's name for the message type.
    pub fn name(&self) -> &'static str {
        match self {
            Ccm::Ping => "PING",
            Ccm::Pong => "PONG",
            Ccm::IdGet(_) => "ID_GET",
            Ccm::IdResp(_) => "ID_RESP",
            Ccm::IdAck => "ID_ACK",
            Ccm::Other { msg_type, .. } => match *msg_type {
                ccm_type::ID_NACK => "ID_NACK",
                0x08 => "PROXY",
                0x09 => "PROXY_ACK",
                0x0a => "PROXY_NACK",
                0x0b => "SSL_INFO",
                _ => "UNKNOWN",
            },
        }
    }

    fn msg_type(&self) -> u8 {
        match self {
            Ccm::Ping => ccm_type::PING,
            Ccm::Pong => ccm_type::PONG,
            Ccm::IdGet(_) => ccm_type::ID_GET,
            Ccm::IdResp(_) => ccm_type::ID_RESP,
            Ccm::IdAck => ccm_type::ID_ACK,
            Ccm::Other { msg_type, .. } => *msg_type,
        }
    }

    fn body(&self) -> &[u8] {
        match self {
            Ccm::IdGet(b) | Ccm::IdResp(b) | Ccm::Other { body: b, .. } => b,
            Ccm::Ping | Ccm::Pong | Ccm::IdAck => &[],
        }
    }

    fn parse(payload: Bytes) -> Ccm {
        let msg_type = payload[0];
        let body = payload.slice(1..);
        match msg_type {
            ccm_type::PING => Ccm::Ping,
            ccm_type::PONG => Ccm::Pong,
            ccm_type::ID_GET => Ccm::IdGet(body),
            ccm_type::ID_RESP => Ccm::IdResp(body),
            ccm_type::ID_ACK => Ccm::IdAck,
            _ => Ccm::Other { msg_type, body },
        }
    }
}

/// A malformed ID_GET or ID_RESP body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CCM body byte {offset}: {reason}")]
pub struct CcmError {
    pub offset: usize,
    pub reason: &'static str,
}

/// The tags an ID_GET asks for: repeated `[len:1][tag:1][value:len-1]`.
pub fn parse_id_get(body: &[u8]) -> Result<Vec<u8>, CcmError> {
    let mut tags = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let len = usize::from(body[pos]);
        if len == 0 {
            return Err(CcmError {
                offset: pos,
                reason: "zero length",
            });
        }
        let Some(&tag) = body.get(pos + 1).filter(|_| pos + 1 + len <= body.len()) else {
            return Err(CcmError {
                offset: pos,
                reason: "element runs past the end",
            });
        };
        tags.push(tag);
        pos += 1 + len;
    }
    Ok(tags)
}

/// The values of an ID_RESP: repeated `[len:2][tag:1][value:len-1]`, each
/// value a NUL-terminated string (the NUL is stripped).
pub fn parse_id_resp(body: &[u8]) -> Result<Vec<(u8, Bytes)>, CcmError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let Some(len) = body
            .get(pos..pos + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            return Err(CcmError {
                offset: pos,
                reason: "truncated length",
            });
        };
        if len == 0 {
            return Err(CcmError {
                offset: pos,
                reason: "zero length",
            });
        }
        let Some(element) = body.get(pos + 2..pos + 2 + len) else {
            return Err(CcmError {
                offset: pos,
                reason: "element runs past the end",
            });
        };
        let value = &element[1..];
        let value = value.strip_suffix(&[0]).unwrap_or(value);
        out.push((element[0], Bytes::copy_from_slice(value)));
        pos += 2 + len;
    }
    Ok(out)
}

/// Builds an ID_GET asking for `tags`.
pub fn build_id_get(tags: &[u8]) -> Ccm {
    let mut body = BytesMut::with_capacity(tags.len() * 2);
    for tag in tags {
        body.put_u8(1);
        body.put_u8(*tag);
    }
    Ccm::IdGet(body.freeze())
}

/// Builds an ID_RESP with NUL-terminated string values.
pub fn build_id_resp(values: &[(u8, &str)]) -> Ccm {
    let mut body = BytesMut::new();
    for (tag, value) in values {
        // 1 tag byte + the string + its NUL; CCM values are short strings.
        let len = u16::try_from(value.len() + 2).unwrap_or(u16::MAX);
        body.put_u16(len);
        body.put_u8(*tag);
        body.put_slice(&value.as_bytes()[..usize::from(len) - 2]);
        body.put_u8(0);
    }
    Ccm::IdResp(body.freeze())
}

/// One IPA frame as remsim uses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Ccm(Ccm),
    /// The BER/DER bytes of one RsproPDU (after PROTO 0xEE and EXT 0x07).
    Rspro(Bytes),
}

impl Frame {
    /// Encodes `pdu` as DER into an RSPRO frame.
    pub fn rspro(pdu: &RsproPdu) -> Result<Frame, EncodeError> {
        codec::encode(pdu).map(|der| Frame::Rspro(der.into()))
    }

    /// The whole frame as bytes.
    pub fn to_bytes(&self) -> Result<Bytes, FrameError> {
        let mut buf = BytesMut::new();
        IpaCodec::default().encode(self.clone(), &mut buf)?;
        Ok(buf.freeze())
    }
}

/// Why the byte stream could not be framed. All are fatal for the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("zero-length IPA frame with protocol 0x{0:02x}")]
    ZeroLength(u8),
    #[error("IPA frame of {len} bytes exceeds the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("unknown IPA protocol 0x{0:02x}")]
    UnknownProto(u8),
    #[error("unknown IPA OSMO extension 0x{0:02x}")]
    UnknownExt(u8),
    #[error("connection closed inside a frame ({0} bytes of it received)")]
    Truncated(usize),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// IPA framing codec. Hand-written rather than `LengthDelimitedCodec` so
/// that each malformation gets its own typed error.
#[derive(Debug, Clone, Copy)]
pub struct IpaCodec {
    max_payload: usize,
}

impl Default for IpaCodec {
    fn default() -> Self {
        IpaCodec {
            max_payload: MAX_PAYLOAD_LEN,
        }
    }
}

impl IpaCodec {
    /// A codec refusing frames whose LEN exceeds `max_payload` (at most 65535).
    pub fn with_max_payload(max_payload: usize) -> Self {
        IpaCodec {
            max_payload: max_payload.min(MAX_PAYLOAD_LEN),
        }
    }
}

impl Decoder for IpaCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = usize::from(u16::from_be_bytes([src[0], src[1]]));
        let proto = src[2];
        if len == 0 {
            return Err(FrameError::ZeroLength(proto));
        }
        if len > self.max_payload {
            return Err(FrameError::TooLong {
                len,
                max: self.max_payload,
            });
        }
        if !matches!(proto, PROTO_CCM | PROTO_OSMO) {
            return Err(FrameError::UnknownProto(proto));
        }
        if src.len() < HEADER_LEN + len {
            src.reserve(HEADER_LEN + len - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let payload = src.split_to(len).freeze();
        match proto {
            PROTO_CCM => Ok(Some(Frame::Ccm(Ccm::parse(payload)))),
            _ => match payload[0] {
                EXT_RSPRO => Ok(Some(Frame::Rspro(payload.slice(1..)))),
                ext => Err(FrameError::UnknownExt(ext)),
            },
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated(src.len())),
        }
    }
}

impl Encoder<Frame> for IpaCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let (proto, prefix, body): (u8, u8, &[u8]) = match &frame {
            Frame::Ccm(ccm) => (PROTO_CCM, ccm.msg_type(), ccm.body()),
            Frame::Rspro(pdu) => (PROTO_OSMO, EXT_RSPRO, pdu),
        };
        let len = 1 + body.len();
        if len > self.max_payload {
            return Err(FrameError::TooLong {
                len,
                max: self.max_payload,
            });
        }
        dst.reserve(HEADER_LEN + len);
        // len <= max_payload <= u16::MAX is checked above.
        dst.put_u16(len as u16);
        dst.put_u8(proto);
        dst.put_u8(prefix);
        dst.put_slice(body);
        Ok(())
    }
}

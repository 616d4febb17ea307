//! The JSON form of IPA frames used by `remsimctl decode/encode` and tests:
//! `{"ipa":"ccm","ccm":"PING"}` or `{"ipa":"rspro","version":2,"tag":0,
//! "msg":{"connectBankReq":{...}}}`, keys spelled as in RSPRO.asn.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::codec::{self, DecodeError, PROTOCOL_VERSION, Pdu};
use crate::ipa::{self, Ccm, Frame, ccm_type, id_tag};
use crate::types::{Msg, RsproPdu};

/// Why JSON could not be turned into a frame.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("invalid JSON frame: {0}")]
    Invalid(String),
    #[error(transparent)]
    Encode(#[from] codec::EncodeError),
}

fn tag_json(tag: u8) -> Value {
    id_tag::name(tag).map_or_else(|| json!(tag), |n| json!(n))
}

/// The JSON of a CCM message.
pub fn ccm_to_json(ccm: &Ccm) -> Value {
    let mut obj = Map::new();
    obj.insert("ipa".into(), json!("ccm"));
    obj.insert("ccm".into(), json!(ccm.name()));
    match ccm {
        Ccm::IdGet(body) => {
            if let Ok(tags) = ipa::parse_id_get(body) {
                obj.insert("tags".into(), tags.into_iter().map(tag_json).collect());
            }
            obj.insert("body".into(), json!(hex::encode(body)));
        }
        Ccm::IdResp(body) => {
            if let Ok(ids) = ipa::parse_id_resp(body) {
                let ids: Vec<Value> = ids
                    .into_iter()
                    .map(|(t, v)| json!({"tag": tag_json(t), "value": String::from_utf8_lossy(&v)}))
                    .collect();
                obj.insert("ids".into(), Value::Array(ids));
            }
            obj.insert("body".into(), json!(hex::encode(body)));
        }
        Ccm::Other { msg_type, body } => {
            obj.insert("type".into(), json!(msg_type));
            obj.insert("body".into(), json!(hex::encode(body)));
        }
        Ccm::Ping | Ccm::Pong | Ccm::IdAck => {}
    }
    Value::Object(obj)
}

/// The JSON of a decoded PDU, with any decode notes.
pub fn pdu_to_json(decoded: &codec::Decoded) -> Value {
    let mut value = match &decoded.pdu {
        Pdu::Known(pdu) => serde_json::to_value(pdu).unwrap_or(Value::Null),
        Pdu::UnknownMsg {
            version,
            tag,
            alternative,
        } => {
            json!({"version": version, "tag": tag, "msg": {"unknown": {"alternative": alternative}}})
        }
    };
    if let Value::Object(obj) = &mut value {
        let mut out = Map::new();
        out.insert("ipa".into(), json!("rspro"));
        out.append(obj);
        if !decoded.notes.is_empty() {
            let notes: Vec<String> = decoded.notes.iter().map(ToString::to_string).collect();
            out.insert("notes".into(), json!(notes));
        }
        return Value::Object(out);
    }
    value
}

/// The JSON of a frame; an RSPRO frame whose PDU does not decode is an error
/// (offsets relative to the PDU).
pub fn frame_to_json(frame: &Frame) -> Result<Value, DecodeError> {
    match frame {
        Frame::Ccm(ccm) => Ok(ccm_to_json(ccm)),
        Frame::Rspro(der) => codec::decode(der).map(|d| pdu_to_json(&d)),
    }
}

fn default_version() -> u32 {
    PROTOCOL_VERSION
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RsproJson {
    #[serde(default = "default_version")]
    version: u32,
    #[serde(default)]
    tag: u32,
    msg: Msg,
    #[serde(default)]
    #[allow(dead_code)]
    notes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CcmJson {
    ccm: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    tags: Vec<Value>,
    #[serde(default)]
    ids: Vec<IdJson>,
    #[serde(default, rename = "type")]
    msg_type: Option<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IdJson {
    tag: Value,
    value: String,
}

fn invalid(e: impl std::fmt::Display) -> JsonError {
    JsonError::Invalid(e.to_string())
}

fn tag_from_json(v: &Value) -> Result<u8, JsonError> {
    match v {
        Value::String(s) => {
            id_tag::from_name(s).ok_or_else(|| invalid(format!("unknown CCM tag {s:?}")))
        }
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .ok_or_else(|| invalid(format!("CCM tag {n} out of range"))),
        _ => Err(invalid("a CCM tag is a name or a number")),
    }
}

fn ccm_from_json(c: CcmJson) -> Result<Ccm, JsonError> {
    let body = match &c.body {
        Some(h) => Some(Bytes::from(
            hex::decode(h).map_err(|e| invalid(format!("body: {e}")))?,
        )),
        None => None,
    };
    Ok(match c.ccm.as_str() {
        "PING" => Ccm::Ping,
        "PONG" => Ccm::Pong,
        "ID_ACK" => Ccm::IdAck,
        "ID_GET" => match body {
            Some(b) => Ccm::IdGet(b),
            None => {
                let tags = c
                    .tags
                    .iter()
                    .map(tag_from_json)
                    .collect::<Result<Vec<_>, _>>()?;
                ipa::build_id_get(&tags)
            }
        },
        "ID_RESP" => match body {
            Some(b) => Ccm::IdResp(b),
            None => {
                let ids = c
                    .ids
                    .iter()
                    .map(|i| Ok((tag_from_json(&i.tag)?, i.value.as_str())))
                    .collect::<Result<Vec<_>, JsonError>>()?;
                ipa::build_id_resp(&ids)
            }
        },
        name => {
            let msg_type = match (c.msg_type, name) {
                (Some(t), _) => t,
                (None, "ID_NACK") => ccm_type::ID_NACK,
                _ => return Err(invalid(format!("unknown CCM message {name:?}"))),
            };
            Ccm::Other {
                msg_type,
                body: body.unwrap_or_default(),
            }
        }
    })
}

/// A frame from its JSON form. `"ipa"` defaults to `"rspro"`, `version` to 2
/// and `tag` to 0.
pub fn frame_from_json(value: &Value) -> Result<Frame, JsonError> {
    let Value::Object(obj) = value else {
        return Err(invalid("a frame is a JSON object"));
    };
    let mut obj = obj.clone();
    let kind = match obj.remove("ipa") {
        None => "rspro".to_string(),
        Some(Value::String(s)) => s,
        Some(other) => return Err(invalid(format!("\"ipa\" must be a string, not {other}"))),
    };
    match kind.as_str() {
        "rspro" => {
            let r: RsproJson = serde_json::from_value(Value::Object(obj)).map_err(invalid)?;
            let pdu = RsproPdu {
                version: r.version,
                tag: r.tag,
                msg: r.msg,
            };
            Ok(Frame::rspro(&pdu)?)
        }
        "ccm" => {
            let c: CcmJson = serde_json::from_value(Value::Object(obj)).map_err(invalid)?;
            Ok(Frame::Ccm(ccm_from_json(c)?))
        }
        other => Err(invalid(format!(
            "\"ipa\" is \"rspro\" or \"ccm\", not {other:?}"
        ))),
    }
}

//! The SIMtrace2 card-emulation USB message format (spec simtrace2-cardem.md
//! §2-4): an 8-byte little-endian header (class, type, seq, slot, reserved,
//! total length) and per-type payloads. Pure encode/decode; malformed input
//! is an error, never a panic.

/// Message classes.
pub const CLASS_CARDEM: u8 = 1;
pub const CLASS_MODEM: u8 = 2;

/// CARDEM types.
pub const DT_CEMU_TX_DATA: u8 = 1;
pub const DT_CEMU_SET_ATR: u8 = 2;
pub const BD_CEMU_STATUS: u8 = 4;
pub const DT_CEMU_CARDINSERT: u8 = 5;
pub const DO_CEMU_RX_DATA: u8 = 6;
pub const DO_CEMU_PTS: u8 = 7;
pub const BD_CEMU_CONFIG: u8 = 8;
/// MODEM types.
pub const DT_MODEM_RESET: u8 = 1;
pub const DT_MODEM_SIM_SELECT: u8 = 2;

/// Data flags of TX_DATA / RX_DATA.
pub const FLAG_TPDU_HDR: u32 = 0x01;
pub const FLAG_FINAL: u32 = 0x02;
pub const FLAG_PB_AND_TX: u32 = 0x04;
pub const FLAG_PB_AND_RX: u32 = 0x08;

/// Status flags.
pub const STATUS_VCC_PRESENT: u32 = 0x01;
pub const STATUS_CLK_ACTIVE: u32 = 0x02;
pub const STATUS_RESET_ACTIVE: u32 = 0x10;

/// CONFIG feature: STATUS on the interrupt endpoint.
pub const FEATURE_STATUS_IRQ: u32 = 0x01;

pub const HEADER_LEN: usize = 8;
/// The firmware's buffers: no message, either way, may be longer.
pub const MAX_MSG_LEN: usize = 280;
/// The largest ATR the firmware stores.
pub const MAX_ATR_LEN: usize = 33;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SIMtrace2 message at byte {offset}: {reason}")]
pub struct ProtoError {
    pub offset: usize,
    pub reason: String,
}

/// STATUS (13 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    pub flags: u32,
    pub voltage_mv: u16,
    pub f_index: u8,
    pub d_index: u8,
    pub wi: u8,
    pub waiting_time: u32,
}

/// Device → host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceMsg {
    RxData {
        flags: u32,
        data: Vec<u8>,
    },
    Status(Status),
    Pts {
        len: u8,
        request: [u8; 6],
        response: [u8; 6],
    },
    Config {
        features: u32,
        slot_mux_nr: u8,
        pres_pol: u8,
    },
    Other {
        class: u8,
        msg_type: u8,
        payload: Vec<u8>,
    },
}

/// Host → device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMsg {
    TxData {
        flags: u32,
        data: Vec<u8>,
    },
    SetAtr(Vec<u8>),
    CardInsert(bool),
    Config {
        features: u32,
        slot_mux_nr: u8,
        pres_pol: u8,
    },
    /// 0 release, 1 assert, 2 pulse of `pulse_ms`.
    ModemReset {
        asserted: u8,
        pulse_ms: u16,
    },
    /// true: remote (emulated) SIM.
    SimSelect(bool),
}

fn header(class: u8, msg_type: u8, payload: &[u8]) -> Vec<u8> {
    let len = (HEADER_LEN + payload.len()) as u16;
    let mut out = vec![class, msg_type, 0, 0, 0, 0];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

impl HostMsg {
    /// The message's bytes; longer than the firmware takes is an error.
    pub fn encode(&self) -> Result<Vec<u8>, ProtoError> {
        let out = match self {
            HostMsg::TxData { flags, data } => {
                let mut p = flags.to_le_bytes().to_vec();
                p.extend_from_slice(&(data.len() as u16).to_le_bytes());
                p.extend_from_slice(data);
                header(CLASS_CARDEM, DT_CEMU_TX_DATA, &p)
            }
            HostMsg::SetAtr(atr) => {
                let mut p = vec![atr.len() as u8];
                p.extend_from_slice(atr);
                header(CLASS_CARDEM, DT_CEMU_SET_ATR, &p)
            }
            HostMsg::CardInsert(inserted) => {
                header(CLASS_CARDEM, DT_CEMU_CARDINSERT, &[u8::from(*inserted)])
            }
            HostMsg::Config {
                features,
                slot_mux_nr,
                pres_pol,
            } => {
                let mut p = features.to_le_bytes().to_vec();
                p.extend_from_slice(&[*slot_mux_nr, *pres_pol]);
                header(CLASS_CARDEM, BD_CEMU_CONFIG, &p)
            }
            HostMsg::ModemReset { asserted, pulse_ms } => {
                let mut p = vec![*asserted];
                p.extend_from_slice(&pulse_ms.to_le_bytes());
                header(CLASS_MODEM, DT_MODEM_RESET, &p)
            }
            HostMsg::SimSelect(remote) => {
                header(CLASS_MODEM, DT_MODEM_SIM_SELECT, &[u8::from(*remote)])
            }
        };
        if out.len() > MAX_MSG_LEN {
            return Err(ProtoError {
                offset: 0,
                reason: format!("{} bytes exceed the firmware's {MAX_MSG_LEN}", out.len()),
            });
        }
        Ok(out)
    }
}

fn u16_at(p: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([p[at], p[at + 1]])
}

fn u32_at(p: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]])
}

fn decode_one(offset: usize, class: u8, msg_type: u8, p: &[u8]) -> Result<DeviceMsg, ProtoError> {
    let short = |need: usize| ProtoError {
        offset,
        reason: format!(
            "type {class}/{msg_type}: payload of {} bytes, need {need}",
            p.len()
        ),
    };
    Ok(match (class, msg_type) {
        (CLASS_CARDEM, DO_CEMU_RX_DATA) => {
            if p.len() < 6 {
                return Err(short(6));
            }
            let len = usize::from(u16_at(p, 4));
            let data = p.get(6..6 + len).ok_or_else(|| short(6 + len))?;
            DeviceMsg::RxData {
                flags: u32_at(p, 0),
                data: data.to_vec(),
            }
        }
        (CLASS_CARDEM, BD_CEMU_STATUS) => {
            if p.len() < 13 {
                return Err(short(13));
            }
            DeviceMsg::Status(Status {
                flags: u32_at(p, 0),
                voltage_mv: u16_at(p, 4),
                f_index: p[6],
                d_index: p[7],
                wi: p[8],
                waiting_time: u32_at(p, 9),
            })
        }
        (CLASS_CARDEM, DO_CEMU_PTS) => {
            if p.len() < 13 {
                return Err(short(13));
            }
            let mut request = [0u8; 6];
            let mut response = [0u8; 6];
            request.copy_from_slice(&p[1..7]);
            response.copy_from_slice(&p[7..13]);
            DeviceMsg::Pts {
                len: p[0],
                request,
                response,
            }
        }
        (CLASS_CARDEM, BD_CEMU_CONFIG) => {
            if p.len() < 4 {
                return Err(short(4));
            }
            DeviceMsg::Config {
                features: u32_at(p, 0),
                slot_mux_nr: p.get(4).copied().unwrap_or(0),
                pres_pol: p.get(5).copied().unwrap_or(0),
            }
        }
        _ => DeviceMsg::Other {
            class,
            msg_type,
            payload: p.to_vec(),
        },
    })
}

/// Splits an IN transfer into messages by their length fields.
pub fn decode_device(buf: &[u8]) -> Result<Vec<DeviceMsg>, ProtoError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let rest = &buf[at..];
        if rest.len() < HEADER_LEN {
            return Err(ProtoError {
                offset: at,
                reason: format!("{} bytes left, a header needs {HEADER_LEN}", rest.len()),
            });
        }
        let len = usize::from(u16_at(rest, 6));
        if len < HEADER_LEN || len > rest.len() {
            return Err(ProtoError {
                offset: at,
                reason: format!("msg_len {len} with {} bytes left", rest.len()),
            });
        }
        out.push(decode_one(at, rest[0], rest[1], &rest[HEADER_LEN..len])?);
        at += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '|'], "")).expect("hex")
    }

    #[test]
    fn host_messages_match_the_golden_bytes() {
        let cases = [
            (
                HostMsg::Config {
                    features: FEATURE_STATUS_IRQ,
                    slot_mux_nr: 0,
                    pres_pol: 0,
                },
                "01 08 00 00 00 00 0e 00 | 01 00 00 00 00 00",
            ),
            (
                HostMsg::Config {
                    features: FEATURE_STATUS_IRQ,
                    slot_mux_nr: 0,
                    pres_pol: 3,
                },
                "01 08 00 00 00 00 0e 00 | 01 00 00 00 00 03",
            ),
            (HostMsg::SimSelect(true), "02 02 00 00 00 00 09 00 | 01"),
            (HostMsg::SimSelect(false), "02 02 00 00 00 00 09 00 | 00"),
            (
                HostMsg::SetAtr(vec![0x3B, 0x00]),
                "01 02 00 00 00 00 0b 00 | 02 3b 00",
            ),
            (HostMsg::CardInsert(true), "01 05 00 00 00 00 09 00 | 01"),
            (
                HostMsg::ModemReset {
                    asserted: 2,
                    pulse_ms: 300,
                },
                "02 01 00 00 00 00 0b 00 | 02 2c 01",
            ),
            (
                HostMsg::TxData {
                    flags: FLAG_PB_AND_RX,
                    data: vec![0xA4],
                },
                "01 01 00 00 00 00 0f 00 | 08 00 00 00 01 00 a4",
            ),
        ];
        for (msg, bytes) in cases {
            assert_eq!(msg.encode().expect("encodes"), h(bytes), "{msg:?}");
        }
        let too_long = HostMsg::TxData {
            flags: 0,
            data: vec![0; 267],
        };
        assert!(too_long.encode().is_err());
    }

    #[test]
    fn device_messages_of_real_traces() {
        let status = decode_device(&h(
            "01 04 00 00 00 00 15 00 | 13 00 00 00 00 00 09 04 0a 80 25 00 00",
        ))
        .expect("decodes");
        assert_eq!(
            status,
            vec![DeviceMsg::Status(Status {
                flags: 0x13,
                voltage_mv: 0,
                f_index: 9,
                d_index: 4,
                wi: 10,
                waiting_time: 9600
            })]
        );
        let pts = decode_device(&h(
            "01 07 00 00 00 00 15 00 | 04 ff 10 94 7b 00 00 ff 10 94 7b 00 00",
        ))
        .expect("decodes");
        let DeviceMsg::Pts {
            len,
            request,
            response,
        } = &pts[0]
        else {
            panic!("{pts:?}")
        };
        assert_eq!(
            (*len, request[..4].to_vec(), response[..4].to_vec()),
            (4, h("ff10947b"), h("ff10947b"))
        );
        let rx = decode_device(&h(
            "01 06 00 00 00 00 13 00 | 01 00 00 00 05 00 00 a4 00 04 02",
        ))
        .expect("decodes");
        assert_eq!(
            rx,
            vec![DeviceMsg::RxData {
                flags: FLAG_TPDU_HDR,
                data: h("00a4000402")
            }]
        );
        // Two messages in one transfer are split by msg_len.
        let mut two = h("01 06 00 00 00 00 13 00 | 01 00 00 00 05 00 00 a4 00 04 02");
        two.extend(h("01 08 00 00 00 00 0e 00 | 01 00 00 00 00 02"));
        assert_eq!(decode_device(&two).expect("decodes").len(), 2);
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(
            decode_device(&h("01 06 00 00 00 00 04 00")).is_err(),
            "msg_len < 8"
        );
        assert!(
            decode_device(&h("01 06 00 00 00 00 40 00 | 00")).is_err(),
            "msg_len beyond the data"
        );
        assert!(decode_device(&h("01 06 00 00")).is_err(), "short header");
        assert!(
            decode_device(&h("01 06 00 00 00 00 0e 00 | 01 00 00 00 09 00")).is_err(),
            "data_len beyond the payload"
        );
        assert!(
            decode_device(&h("01 04 00 00 00 00 0a 00 | 13 00")).is_err(),
            "short STATUS"
        );
        let odd = decode_device(&h("7f 01 00 00 00 00 08 00")).expect("unknown class is kept");
        assert!(matches!(odd[0], DeviceMsg::Other { class: 0x7f, .. }));
    }
}

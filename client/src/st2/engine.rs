//! The SIMtrace2 frontend's logic, sans I/O (spec simtrace2-cardem.md §6):
//! CONFIG at startup, main-state commands as USB messages, T=0 TPDU
//! assembly with procedure bytes (RX_DATA → TpduModemToCard), responses as
//! PB + data + SW (TpduCardToModem → TX_DATA), STATUS as modem status.
//!
//! Fixed against the C client: a response to a TPDU the modem gave up on
//! (after a reset or a new header) is discarded; response data is only sent
//! for case 2 (or unknown) commands; a response shorter than SW1 SW2 is
//! refused; an ATR the firmware cannot hold is not sent.

use rspro::SlotPhysStatus;
use tracing::{debug, info, warn};

use super::apdu_case::classify;
use super::proto::*;
use crate::frontend::{FrontendCmd, ModemEvent};

/// The reset pulse the C client sends when the modem must re-read the SIM.
pub const MODEM_RESET_PULSE_MS: u16 = 300;

/// One TPDU in progress.
#[derive(Debug, Clone)]
struct Apdu {
    header: [u8; 5],
    case: u8,
    lc: usize,
    data: Vec<u8>,
    /// Forwarded to the bank; its answer is due.
    forwarded: bool,
}

#[derive(Debug, Default)]
pub struct Engine {
    apdu: Option<Apdu>,
}

/// What the engine produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    ToDevice(HostMsg),
    ToCore(ModemEvent),
}

impl Engine {
    /// The messages that open a session: CONFIG with STATUS on the
    /// interrupt endpoint (and the card-detect polarity of `-Z`).
    pub fn startup(presence_high: Option<bool>) -> Vec<HostMsg> {
        let pres_pol = match presence_high {
            None => 0,
            Some(false) => 0x02,
            Some(true) => 0x03,
        };
        vec![HostMsg::Config {
            features: FEATURE_STATUS_IRQ,
            slot_mux_nr: 0,
            pres_pol,
        }]
    }

    /// A message from the device (bulk or interrupt IN).
    pub fn on_device(&mut self, msg: DeviceMsg) -> Vec<Out> {
        let mut out = Vec::new();
        match msg {
            DeviceMsg::RxData { flags, data } => self.on_rx(flags, data, &mut out),
            DeviceMsg::Status(s) => {
                let reset = s.flags & STATUS_RESET_ACTIVE != 0;
                let vcc = s.flags & STATUS_VCC_PRESENT != 0;
                if reset || !vcc {
                    // Whatever the bank answers now belongs to a dead TPDU.
                    self.apdu = None;
                }
                out.push(Out::ToCore(ModemEvent::Status(SlotPhysStatus {
                    reset_active: reset,
                    vcc_present: Some(vcc),
                    clk_active: Some(s.flags & STATUS_CLK_ACTIVE != 0),
                    card_present: None,
                })));
            }
            DeviceMsg::Pts {
                len,
                request,
                response,
            } => {
                let n = usize::from(len).min(6);
                info!(request = %hex::encode(&request[..n]), response = %hex::encode(&response[..n]), "modem PPS");
            }
            DeviceMsg::Config { .. } => debug!("CONFIG echo"),
            DeviceMsg::Other {
                class, msg_type, ..
            } => warn!(class, msg_type, "unknown SIMtrace2 message"),
        }
        out
    }

    fn on_rx(&mut self, flags: u32, data: Vec<u8>, out: &mut Vec<Out>) {
        if flags & FLAG_TPDU_HDR != 0 {
            let Some(header) = data.get(..5).and_then(|h| <[u8; 5]>::try_from(h).ok()) else {
                warn!(len = data.len(), "TPDU header of the wrong length");
                return;
            };
            if self.apdu.as_ref().is_some_and(|a| a.forwarded) {
                debug!("new TPDU before the last answer; that answer will be discarded");
            }
            let case = classify(&header);
            if case == 0 {
                warn!(header = %hex::encode(header), "unknown APDU case; forwarding the header only");
            }
            let lc = if matches!(case, 3 | 4) {
                usize::from(header[4])
            } else {
                0
            };
            self.apdu = Some(Apdu {
                header,
                case,
                lc,
                data: data[5..].iter().copied().take(lc).collect(),
                forwarded: false,
            });
        } else if let Some(a) = self
            .apdu
            .as_mut()
            .filter(|a| !a.forwarded && matches!(a.case, 3 | 4))
        {
            let missing = a.lc - a.data.len();
            a.data.extend(data.iter().take(missing));
        } else {
            debug!("RX_DATA outside a TPDU; ignored");
            return;
        }
        let Some(a) = self.apdu.as_mut() else { return };
        if a.data.len() < a.lc {
            if flags & FLAG_TPDU_HDR != 0 {
                // ACK with INS: the modem sends the command data.
                out.push(Out::ToDevice(HostMsg::TxData {
                    flags: FLAG_PB_AND_RX,
                    data: vec![a.header[1]],
                }));
            }
            return;
        }
        a.forwarded = true;
        let mut tpdu = a.header.to_vec();
        tpdu.extend_from_slice(&a.data);
        out.push(Out::ToCore(ModemEvent::Tpdu(tpdu)));
    }

    /// A command from the client's main state machine.
    pub fn on_frontend(&mut self, cmd: FrontendCmd) -> Vec<HostMsg> {
        match cmd {
            FrontendCmd::SimRemote(remote) => vec![HostMsg::SimSelect(remote)],
            FrontendCmd::CardInsert(inserted) => vec![HostMsg::CardInsert(inserted)],
            FrontendCmd::ModemReset => vec![HostMsg::ModemReset {
                asserted: 2,
                pulse_ms: MODEM_RESET_PULSE_MS,
            }],
            FrontendCmd::SetAtr(atr) if atr.len() > MAX_ATR_LEN => {
                warn!(
                    len = atr.len(),
                    "ATR longer than the firmware holds (33); not sent"
                );
                Vec::new()
            }
            FrontendCmd::SetAtr(atr) => vec![HostMsg::SetAtr(atr)],
            FrontendCmd::Tpdu(response) => self.response(response),
            FrontendCmd::TpduRefused(_) => self.response(vec![0x6F, 0x00]),
        }
    }

    /// The card's answer: INS + data (case 2 or unknown), then SW1 SW2.
    fn response(&mut self, response: Vec<u8>) -> Vec<HostMsg> {
        let Some(a) = self.apdu.take().filter(|a| a.forwarded) else {
            debug!("answer for a TPDU the modem gave up on; discarded");
            return Vec::new();
        };
        if response.len() < 2 {
            warn!(
                len = response.len(),
                "card answer without SW1 SW2; discarded"
            );
            return Vec::new();
        }
        let (data, sw) = response.split_at(response.len() - 2);
        let mut out = Vec::new();
        if !data.is_empty() {
            if matches!(a.case, 0..=2) {
                let mut pb_data = vec![a.header[1]];
                pb_data.extend_from_slice(data);
                out.push(HostMsg::TxData {
                    flags: FLAG_PB_AND_TX,
                    data: pb_data,
                });
            } else {
                warn!(
                    len = data.len(),
                    case = a.case,
                    "response data for a case 3/4 command; not sent"
                );
            }
        }
        out.push(HostMsg::TxData {
            flags: FLAG_PB_AND_TX | FLAG_FINAL,
            data: sw.to_vec(),
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '|'], "")).expect("hex")
    }

    fn dev(e: &mut Engine, bytes: &str) -> Vec<Out> {
        decode_device(&h(bytes))
            .expect("decodes")
            .into_iter()
            .flat_map(|m| e.on_device(m))
            .collect()
    }

    fn encoded(msgs: &[HostMsg]) -> Vec<Vec<u8>> {
        msgs.iter().map(|m| m.encode().expect("encodes")).collect()
    }

    /// The GSM SELECT + GET RESPONSE exchange of the spec (§8), byte for byte.
    #[test]
    fn select_and_get_response_golden_exchange() {
        let mut e = Engine::default();
        // 1-2: header; case 4: the INS procedure byte asks for the data.
        let out = dev(
            &mut e,
            "01 06 00 00 00 00 13 00 | 01 00 00 00 05 00 a0 a4 00 00 02",
        );
        let Out::ToDevice(pb) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(
            pb.encode().expect("encodes"),
            h("01 01 00 00 00 00 0f 00 | 08 00 00 00 01 00 a4")
        );
        // 3-4: the data completes the TPDU, which goes to the bank.
        let out = dev(&mut e, "01 06 00 00 00 00 10 00 | 02 00 00 00 02 00 3f 00");
        assert_eq!(
            out,
            vec![Out::ToCore(ModemEvent::Tpdu(h("a0a40000023f00")))]
        );
        // 5: the SW.
        let out = e.on_frontend(FrontendCmd::Tpdu(h("9f17")));
        assert_eq!(
            encoded(&out),
            vec![h("01 01 00 00 00 00 10 00 | 06 00 00 00 02 00 9f 17")]
        );
        // 6-7: GET RESPONSE (case 2) is forwarded at once.
        let out = dev(
            &mut e,
            "01 06 00 00 00 00 13 00 | 01 00 00 00 05 00 a0 c0 00 00 17",
        );
        assert_eq!(out, vec![Out::ToCore(ModemEvent::Tpdu(h("a0c0000017")))]);
        // 8-9: INS + 23 data bytes, then the SW.
        let mut response: Vec<u8> = (1..=23).collect();
        response.extend([0x90, 0x00]);
        let out = encoded(&e.on_frontend(FrontendCmd::Tpdu(response)));
        let mut data_msg = h("01 01 00 00 00 00 26 00 | 04 00 00 00 18 00 c0");
        data_msg.extend(1..=23u8);
        assert_eq!(
            out,
            vec![
                data_msg,
                h("01 01 00 00 00 00 10 00 | 06 00 00 00 02 00 90 00")
            ]
        );
    }

    #[test]
    fn stale_answers_and_odd_input_are_discarded() {
        let mut e = Engine::default();
        dev(
            &mut e,
            "01 06 00 00 00 00 13 00 | 01 00 00 00 05 00 00 b0 00 00 02",
        );
        // RST asserted: the pending answer belongs to a dead TPDU.
        let out = dev(
            &mut e,
            "01 04 00 00 00 00 15 00 | 13 00 00 00 00 00 09 04 0a 80 25 00 00",
        );
        assert_eq!(
            out,
            vec![Out::ToCore(ModemEvent::Status(SlotPhysStatus {
                reset_active: true,
                vcc_present: Some(true),
                clk_active: Some(true),
                card_present: None
            }))]
        );
        assert!(e.on_frontend(FrontendCmd::Tpdu(h("11229000"))).is_empty());
        // A one-byte answer has no SW.
        dev(
            &mut e,
            "01 06 00 00 00 00 13 00 | 01 00 00 00 05 00 00 b0 00 00 02",
        );
        assert!(e.on_frontend(FrontendCmd::Tpdu(h("90"))).is_empty());
        // Data for a case 3 command is not sent, only the SW.
        dev(
            &mut e,
            "01 06 00 00 00 00 13 00 | 01 00 00 00 05 00 00 d6 00 00 01",
        );
        dev(&mut e, "01 06 00 00 00 00 0f 00 | 02 00 00 00 01 00 aa");
        let out = e.on_frontend(FrontendCmd::Tpdu(h("bb9000")));
        assert_eq!(
            out,
            vec![HostMsg::TxData {
                flags: FLAG_PB_AND_TX | FLAG_FINAL,
                data: h("9000")
            }]
        );
        // Unknown case: the header alone goes to the bank.
        let out = dev(
            &mut e,
            "01 06 00 00 00 00 13 00 | 01 00 00 00 05 00 00 12 00 00 00",
        );
        assert_eq!(out, vec![Out::ToCore(ModemEvent::Tpdu(h("0012000000")))]);
        // An ATR the firmware cannot hold is not sent.
        assert!(
            e.on_frontend(FrontendCmd::SetAtr(vec![0x3B; 34]))
                .is_empty()
        );
    }

    /// Each status bit is read on its own.
    #[test]
    fn status_lines_are_read_bit_by_bit() {
        let mut e = Engine::default();
        let status = |e: &mut Engine, flags: &str| {
            dev(
                e,
                &format!("01 04 00 00 00 00 15 00 | {flags} 00 00 00 00 00 09 04 0a 80 25 00 00"),
            )
        };
        assert_eq!(
            status(&mut e, "03"),
            vec![Out::ToCore(ModemEvent::Status(SlotPhysStatus {
                reset_active: false,
                vcc_present: Some(true),
                clk_active: Some(true),
                card_present: None
            }))]
        );
        assert_eq!(
            status(&mut e, "10"),
            vec![Out::ToCore(ModemEvent::Status(SlotPhysStatus {
                reset_active: true,
                vcc_present: Some(false),
                clk_active: Some(false),
                card_present: None
            }))]
        );
    }

    /// Command data in pieces: one ACK after the header, no more than Lc
    /// bytes taken, and nothing after the TPDU went to the bank.
    #[test]
    fn command_data_in_pieces_is_taken_up_to_lc() {
        let mut e = Engine::default();
        let out = dev(
            &mut e,
            "01 06 00 00 00 00 13 00 | 01 00 00 00 05 00 00 d6 00 00 02",
        );
        assert_eq!(
            out,
            vec![Out::ToDevice(HostMsg::TxData {
                flags: FLAG_PB_AND_RX,
                data: vec![0xd6]
            })]
        );
        assert!(dev(&mut e, "01 06 00 00 00 00 0f 00 | 00 00 00 00 01 00 aa").is_empty());
        let out = dev(
            &mut e,
            "01 06 00 00 00 00 12 00 | 02 00 00 00 04 00 bb cc dd ee",
        );
        assert_eq!(
            out,
            vec![Out::ToCore(ModemEvent::Tpdu(h("00d6000002aabb")))]
        );
        // The longest ATR the firmware holds (33 bytes) is sent.
        assert_eq!(e.on_frontend(FrontendCmd::SetAtr(vec![0x3B; 33])).len(), 1);
        // Forwarded: stray data is not a second TPDU.
        assert!(dev(&mut e, "01 06 00 00 00 00 0f 00 | 02 00 00 00 01 00 ff").is_empty());
    }
}

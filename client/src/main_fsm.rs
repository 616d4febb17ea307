//! The client's main state machine (`CLIENT_MAIN` of the C suite, spec
//! §6.3), sans I/O, shared by every frontend: INIT, UNCONFIGURED,
//! WAIT_BANKD, OPERATIONAL. Inputs are link and modem events; outputs are
//! PDUs for the two links, commands for the bankd link and the frontend,
//! and event-script causes.
//!
//! Fixed against the C client (spec §7 items 27-29): a bankd answering
//! `cardNotPresent` is waited on (the link stays up until SetAtrReq), a
//! server reconnect that repeats the current configuration does not disturb
//! the modem, ResetStateReq and ConfigClientIdReq are handled, and
//! `event-modem-status` fires when the status changes.

use std::net::SocketAddr;

use rspro::{BankSlot, ClientSlot, IpPort, ResultCode, RsproPdu, SlotPhysStatus};
use tracing::{debug, info, warn};

use rspro::pdu::TPDU_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MainState {
    Init,
    Unconfigured,
    WaitBankd,
    Operational,
}

impl MainState {
    pub fn name(self) -> &'static str {
        match self {
            MainState::Init => "INIT",
            MainState::Unconfigured => "UNCONFIGURED",
            MainState::WaitBankd => "WAIT_BANKD",
            MainState::Operational => "OPERATIONAL",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    ServerConnected,
    ServerLost,
    ConfigBank {
        bank: BankSlot,
        bankd: IpPort,
    },
    ConfigClientId(ClientSlot),
    ResetState,
    /// The bankd link is up; `result` is its ConnectClientRes result.
    BankdConnected(ResultCode),
    BankdLost,
    BankdTpdu(Vec<u8>),
    BankdAtr(Vec<u8>),
    ModemTpdu(Vec<u8>),
    ModemStatus(SlotPhysStatus),
}

/// What the frontend (modem side) must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendCmd {
    SimRemote(bool),
    SetAtr(Vec<u8>),
    CardInsert(bool),
    ModemReset,
    /// A response for the modem (data and SW).
    Tpdu(Vec<u8>),
    /// A modem TPDU was not forwarded (bad length, not operational).
    TpduRefused(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    ToServer(RsproPdu),
    ToBankd(RsproPdu),
    /// (Re)start the bankd link towards this address.
    BankdConnect(SocketAddr),
    BankdDisconnect,
    /// Our client slot changed (ConfigClientIdReq): identify as it from now on.
    ClientSlot(ClientSlot),
    Frontend(FrontendCmd),
    Script(&'static str),
}

pub struct MainFsm {
    state: MainState,
    client: ClientSlot,
    bank: Option<BankSlot>,
    bankd: Option<SocketAddr>,
    atr: Vec<u8>,
    ignore_bank_atr: bool,
    /// The bankd link is up but the card is not ready yet (cardNotPresent).
    bankd_waiting: bool,
    last_status: Option<SlotPhysStatus>,
}

impl MainFsm {
    /// `atr`: presented to the modem until the bank card's arrives (`-a`);
    /// `ignore_bank_atr`: `-r`.
    pub fn new(client: ClientSlot, atr: Vec<u8>, ignore_bank_atr: bool) -> Self {
        MainFsm {
            state: MainState::Init,
            client,
            bank: None,
            bankd: None,
            atr,
            ignore_bank_atr,
            bankd_waiting: false,
            last_status: None,
        }
    }

    #[cfg(test)]
    pub fn state(&self) -> MainState {
        self.state
    }

    pub fn client(&self) -> ClientSlot {
        self.client
    }

    pub fn bank(&self) -> Option<BankSlot> {
        self.bank
    }

    pub fn last_status(&self) -> Option<SlotPhysStatus> {
        self.last_status
    }

    pub fn handle(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match (self.state, input) {
            (MainState::Init, Input::ServerConnected) => {
                self.go(MainState::Unconfigured, &mut out);
                out.push(Output::Script("event-server-connect"));
            }
            (_, Input::ServerConnected) => info!("server link back"),
            (_, Input::ServerLost) => info!("server link lost; the bankd link is not disturbed"),
            (MainState::Init, Input::ConfigBank { .. }) => {
                warn!("ConfigClientBankReq before ConnectClientRes; ignored")
            }
            (_, Input::ConfigBank { bank, bankd }) => self.config_bank(bank, bankd, &mut out),
            (_, Input::ConfigClientId(slot)) => {
                info!(%slot, "client slot assigned by the server");
                self.client = slot;
                out.push(Output::ClientSlot(slot));
                out.push(Output::ToServer(RsproPdu::config_client_id_res(
                    ResultCode::Ok,
                )));
            }
            (_, Input::ResetState) => {
                out.push(Output::ToServer(RsproPdu::reset_state_res(ResultCode::Ok)));
                self.bank = None;
                self.bankd = None;
                if self.state != MainState::Init {
                    self.go(MainState::Unconfigured, &mut out);
                }
            }
            (MainState::WaitBankd, Input::BankdConnected(result)) if result.is_ok() => {
                self.bankd_waiting = false;
                self.go(MainState::Operational, &mut out);
                out.push(Output::Script("event-bankd-connect"));
            }
            (MainState::WaitBankd, Input::BankdConnected(result)) => {
                info!(%result, "bankd connected but its card is not ready; waiting for SetAtrReq");
                self.bankd_waiting = true;
            }
            (MainState::WaitBankd, Input::BankdAtr(atr)) if self.bankd_waiting => {
                self.bankd_waiting = false;
                self.go(MainState::Operational, &mut out);
                out.push(Output::Script("event-bankd-connect"));
                self.bank_atr(atr, &mut out);
            }
            (MainState::Operational, Input::BankdLost) => self.go(MainState::WaitBankd, &mut out),
            (_, Input::BankdLost) => self.bankd_waiting = false,
            (MainState::Operational, Input::BankdTpdu(data)) => {
                out.push(Output::Frontend(FrontendCmd::Tpdu(data)));
            }
            (MainState::Operational, Input::BankdAtr(atr)) => self.bank_atr(atr, &mut out),
            (MainState::Operational, Input::ModemStatus(status)) => {
                if let Some(bank) = self.bank {
                    out.push(Output::ToBankd(RsproPdu::client_slot_status_ind(
                        self.client,
                        bank,
                        status,
                    )));
                }
                if self.last_status != Some(status) {
                    out.push(Output::Script("event-modem-status"));
                }
                self.last_status = Some(status);
            }
            (MainState::Operational, Input::ModemTpdu(data)) => match self.bank {
                Some(bank) if TPDU_LEN.contains(&data.len()) => {
                    out.push(Output::ToBankd(RsproPdu::tpdu_modem_to_card(
                        self.client,
                        bank,
                        data,
                    )));
                }
                _ => {
                    warn!(
                        len = data.len(),
                        "modem TPDU of a length the bankd refuses (5..260); not sent"
                    );
                    out.push(Output::Frontend(FrontendCmd::TpduRefused(data)));
                }
            },
            (_, Input::ModemTpdu(data)) => {
                debug!(
                    state = self.state.name(),
                    "modem TPDU while not operational; dropped"
                );
                out.push(Output::Frontend(FrontendCmd::TpduRefused(data)));
            }
            (state, input) => debug!(state = state.name(), ?input, "event ignored in this state"),
        }
        out
    }

    fn bank_atr(&mut self, atr: Vec<u8>, out: &mut Vec<Output>) {
        if !self.ignore_bank_atr {
            out.push(Output::Frontend(FrontendCmd::SetAtr(atr)));
        }
        out.push(Output::ToBankd(RsproPdu::set_atr_res(ResultCode::Ok)));
    }

    fn config_bank(&mut self, bank: BankSlot, bankd: IpPort, out: &mut Vec<Output>) {
        let addr = bankd
            .socket_addr()
            .filter(|a| a.port() != 0 && !a.ip().is_unspecified());
        let unchanged = self.bank == Some(bank)
            && self.bankd == addr
            && matches!(self.state, MainState::WaitBankd | MainState::Operational);
        if unchanged {
            // A server that reconnected repeats the configuration: keep the card.
            info!(%bank, "configuration unchanged; bankd link kept");
        } else {
            self.bank = Some(bank);
            self.bankd = addr;
            match addr {
                None => self.go(MainState::Unconfigured, out),
                Some(a) => {
                    if self.state == MainState::Operational {
                        self.go(MainState::WaitBankd, out);
                    }
                    self.state = MainState::WaitBankd;
                    self.bankd_waiting = false;
                    out.push(Output::BankdConnect(a));
                }
            }
        }
        out.push(Output::ToServer(RsproPdu::config_client_bank_res(
            ResultCode::Ok,
        )));
        out.push(Output::Script("event-config-bankd"));
    }

    /// Moves to `next`, with the C client's leave and enter actions.
    fn go(&mut self, next: MainState, out: &mut Vec<Output>) {
        if self.state == next {
            return;
        }
        info!(from = self.state.name(), to = next.name(), "main state");
        if self.state == MainState::Operational {
            out.push(Output::Frontend(FrontendCmd::CardInsert(false)));
            out.push(Output::Script("request-card-remove"));
            out.push(Output::Frontend(FrontendCmd::SimRemote(false)));
            out.push(Output::Script("request-sim-local"));
            out.push(Output::Frontend(FrontendCmd::ModemReset));
            out.push(Output::Script("request-modem-reset"));
        }
        self.state = next;
        match next {
            MainState::Unconfigured => out.push(Output::BankdDisconnect),
            MainState::Operational => {
                out.push(Output::Frontend(FrontendCmd::SimRemote(true)));
                out.push(Output::Script("request-sim-remote"));
                out.push(Output::Frontend(FrontendCmd::SetAtr(self.atr.clone())));
                out.push(Output::Frontend(FrontendCmd::CardInsert(true)));
                out.push(Output::Script("request-card-insert"));
                out.push(Output::Frontend(FrontendCmd::ModemReset));
                out.push(Output::Script("request-modem-reset"));
            }
            MainState::Init | MainState::WaitBankd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: ClientSlot = ClientSlot {
        client_id: 23,
        slot_nr: 0,
    };
    const B: BankSlot = BankSlot {
        bank_id: 1,
        slot_nr: 0,
    };

    fn addr(s: &str) -> IpPort {
        IpPort::from(s.parse::<SocketAddr>().expect("addr"))
    }

    fn operational() -> MainFsm {
        let mut f = MainFsm::new(C, vec![0x3B, 0x00], false);
        f.handle(Input::ServerConnected);
        f.handle(Input::ConfigBank {
            bank: B,
            bankd: addr("127.0.0.1:9999"),
        });
        f.handle(Input::BankdConnected(ResultCode::Ok));
        assert_eq!(f.state(), MainState::Operational);
        f
    }

    #[test]
    fn happy_path_as_the_c_client() {
        let mut f = MainFsm::new(C, vec![0x3B, 0x00], false);
        let out = f.handle(Input::ServerConnected);
        assert_eq!(
            out,
            vec![
                Output::BankdDisconnect,
                Output::Script("event-server-connect")
            ]
        );
        let out = f.handle(Input::ConfigBank {
            bank: B,
            bankd: addr("127.0.0.1:9999"),
        });
        assert_eq!(
            out[0],
            Output::BankdConnect("127.0.0.1:9999".parse().expect("addr"))
        );
        assert_eq!(
            out[1],
            Output::ToServer(RsproPdu::config_client_bank_res(ResultCode::Ok))
        );
        let out = f.handle(Input::BankdConnected(ResultCode::Ok));
        assert!(out.contains(&Output::Frontend(FrontendCmd::SetAtr(vec![0x3B, 0x00]))));
        assert_eq!(out.last(), Some(&Output::Script("event-bankd-connect")));
        let out = f.handle(Input::BankdAtr(vec![0x3B, 0x9F]));
        assert_eq!(
            out,
            vec![
                Output::Frontend(FrontendCmd::SetAtr(vec![0x3B, 0x9F])),
                Output::ToBankd(RsproPdu::set_atr_res(ResultCode::Ok)),
            ]
        );
        let out = f.handle(Input::ModemTpdu(vec![0xA0, 0xA4, 0, 0, 2, 0x3F, 0]));
        assert_eq!(
            out,
            vec![Output::ToBankd(RsproPdu::tpdu_modem_to_card(
                C,
                B,
                vec![0xA0, 0xA4, 0, 0, 2, 0x3F, 0]
            ))]
        );
    }

    #[test]
    fn card_not_present_is_waited_on() {
        let mut f = MainFsm::new(C, vec![0x3B, 0x00], false);
        f.handle(Input::ServerConnected);
        f.handle(Input::ConfigBank {
            bank: B,
            bankd: addr("127.0.0.1:9999"),
        });
        assert!(
            f.handle(Input::BankdConnected(ResultCode::CardNotPresent))
                .is_empty()
        );
        assert_eq!(f.state(), MainState::WaitBankd);
        let out = f.handle(Input::BankdAtr(vec![0x3B, 0x9F]));
        assert_eq!(f.state(), MainState::Operational);
        assert!(out.contains(&Output::ToBankd(RsproPdu::set_atr_res(ResultCode::Ok))));
        assert_eq!(
            out.iter()
                .rev()
                .find(|o| matches!(o, Output::Frontend(FrontendCmd::SetAtr(_)))),
            Some(&Output::Frontend(FrontendCmd::SetAtr(vec![0x3B, 0x9F])))
        );
    }

    #[test]
    fn repeated_configuration_keeps_the_card() {
        let mut f = operational();
        f.handle(Input::ServerLost);
        f.handle(Input::ServerConnected);
        let out = f.handle(Input::ConfigBank {
            bank: B,
            bankd: addr("127.0.0.1:9999"),
        });
        assert_eq!(
            out,
            vec![
                Output::ToServer(RsproPdu::config_client_bank_res(ResultCode::Ok)),
                Output::Script("event-config-bankd"),
            ]
        );
        assert_eq!(f.state(), MainState::Operational);
        // A real change leaves OPERATIONAL and reconnects.
        let out = f.handle(Input::ConfigBank {
            bank: BankSlot::new(1, 1),
            bankd: addr("127.0.0.1:9999"),
        });
        assert!(out.contains(&Output::Frontend(FrontendCmd::CardInsert(false))));
        assert!(out.contains(&Output::BankdConnect(
            "127.0.0.1:9999".parse().expect("addr")
        )));
        assert_eq!(f.state(), MainState::WaitBankd);
        // 0.0.0.0:0: unconfigured, bankd link stopped.
        let out = f.handle(Input::ConfigBank {
            bank: B,
            bankd: IpPort::none(),
        });
        assert!(out.contains(&Output::BankdDisconnect));
        assert_eq!(f.state(), MainState::Unconfigured);
    }

    #[test]
    fn modem_status_script_fires_on_change_only() {
        let mut f = operational();
        let s = SlotPhysStatus::new(false, true, true, true);
        assert!(
            f.handle(Input::ModemStatus(s))
                .contains(&Output::Script("event-modem-status"))
        );
        assert!(
            !f.handle(Input::ModemStatus(s))
                .contains(&Output::Script("event-modem-status"))
        );
        let t = SlotPhysStatus::new(true, false, false, true);
        assert!(
            f.handle(Input::ModemStatus(t))
                .contains(&Output::Script("event-modem-status"))
        );
    }

    #[test]
    fn bad_tpdus_reset_state_and_client_id() {
        let mut f = operational();
        let out = f.handle(Input::ModemTpdu(vec![0xA0, 0xA4]));
        assert_eq!(
            out,
            vec![Output::Frontend(FrontendCmd::TpduRefused(vec![0xA0, 0xA4]))]
        );
        let out = f.handle(Input::ConfigClientId(ClientSlot::new(7, 1)));
        assert_eq!(out[0], Output::ClientSlot(ClientSlot::new(7, 1)));
        let out = f.handle(Input::ResetState);
        assert_eq!(
            out[0],
            Output::ToServer(RsproPdu::reset_state_res(ResultCode::Ok))
        );
        assert_eq!(f.state(), MainState::Unconfigured);
    }

    #[test]
    fn state_names_are_the_c_clients() {
        let names: Vec<&str> = [
            MainState::Init,
            MainState::Unconfigured,
            MainState::WaitBankd,
            MainState::Operational,
        ]
        .iter()
        .map(|s| s.name())
        .collect();
        assert_eq!(names, ["INIT", "UNCONFIGURED", "WAIT_BANKD", "OPERATIONAL"]);
    }

    /// What the event script sees: the bank slot and the modem's lines.
    #[test]
    fn bank_and_modem_status_are_kept_for_the_script() {
        let mut f = MainFsm::new(C, vec![0x3B, 0x00], false);
        assert_eq!((f.bank(), f.last_status()), (None, None));
        let mut f2 = operational();
        assert_eq!(f2.bank(), Some(B));
        let status = SlotPhysStatus::new(false, true, true, true);
        f2.handle(Input::ModemStatus(status));
        assert_eq!(f2.last_status(), Some(status));
        f.handle(Input::ServerConnected);
        assert_eq!(f.bank(), None);
    }

    /// An ATR from a bankd that has not answered ConnectClientReq yet does
    /// not make the client operational; only a waited-on one does.
    #[test]
    fn an_atr_before_the_bankds_answer_is_not_a_connection() {
        let mut f = MainFsm::new(C, vec![0x3B, 0x00], false);
        f.handle(Input::ServerConnected);
        f.handle(Input::ConfigBank {
            bank: B,
            bankd: addr("127.0.0.1:9999"),
        });
        f.handle(Input::BankdAtr(vec![0x3B, 0x9F]));
        assert_eq!(f.state(), MainState::WaitBankd);
    }

    /// The same bank slot behind another bankd address is a new bankd.
    #[test]
    fn a_moved_bankd_is_reconnected() {
        let mut f = operational();
        let out = f.handle(Input::ConfigBank {
            bank: B,
            bankd: addr("192.0.2.9:9999"),
        });
        assert!(
            out.contains(&Output::BankdConnect(
                "192.0.2.9:9999".parse().expect("addr")
            )),
            "{out:?}"
        );
        assert_eq!(f.state(), MainState::WaitBankd);
    }

    /// A bankd address no client can reach (no host or no port) is no
    /// configuration: the client stays unconfigured.
    #[test]
    fn an_unreachable_bankd_address_unconfigures() {
        for bad in ["0.0.0.0:9999", "127.0.0.1:0"] {
            let mut f = operational();
            let out = f.handle(Input::ConfigBank {
                bank: B,
                bankd: addr(bad),
            });
            assert!(
                !out.iter().any(|o| matches!(o, Output::BankdConnect(_))),
                "{bad}: {out:?}"
            );
            assert_eq!(f.state(), MainState::Unconfigured, "{bad}");
        }
    }
}

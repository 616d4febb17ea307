//! The tokio side of the client: the server link, the bankd link (created
//! when the server names a bankd), the frontend task and the event script,
//! all driven by the main state machine.

use std::net::SocketAddr;
use std::sync::Arc;

use rspro::client_link::{ClientLink, ClientLinkConfig, ClientLinkEvent};
use rspro::keepalive::KeepaliveConfig;
use rspro::link::Upgrade;
use rspro::reconnect::ReconnectConfig;
use rspro::{ClientSlot, ComponentType, Identity, Msg, Pdu, ResultCode, RsproPdu};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::frontend::{FrontendCmd, ModemEvent};
use crate::main_fsm::{Input, MainFsm, Output};
use crate::script::{self, ScriptEnv};

pub struct Config {
    pub server: String,
    pub client: ClientSlot,
    pub identity: Identity,
    pub atr: Vec<u8>,
    pub ignore_bank_atr: bool,
    pub event_script: Option<String>,
    pub keepalive: KeepaliveConfig,
    /// USB path and interface of a SIMtrace2 frontend, for the event script.
    pub usb: Option<(String, u8)>,
    /// TLS towards our own server's TLS port and towards TLS bankds.
    pub server_tls: Option<Arc<dyn Upgrade>>,
    pub bankd_tls: Option<Arc<dyn Upgrade>>,
}

struct Driver {
    config: Config,
    fsm: MainFsm,
    server: ClientLink,
    bankd: Option<(ClientLink, SocketAddr)>,
    frontend: mpsc::Sender<FrontendCmd>,
}

fn link_config(
    config: &Config,
    peer: String,
    client: ClientSlot,
    expect: ComponentType,
) -> ClientLinkConfig {
    ClientLinkConfig {
        peer,
        connect_req: RsproPdu::connect_client_req(config.identity.clone(), Some(client)),
        expect_peer: expect,
        keepalive: config.keepalive,
        reconnect: ReconnectConfig::default(),
        // A bankd still installing our map answers cardNotPresent: wait for it.
        tolerate: if expect == ComponentType::RemsimBankd {
            vec![ResultCode::CardNotPresent]
        } else {
            Vec::new()
        },
        upgrade: if expect == ComponentType::RemsimBankd {
            config.bankd_tls.clone()
        } else {
            config.server_tls.clone()
        },
    }
}

async fn bankd_event(bankd: &mut Option<(ClientLink, SocketAddr)>) -> Option<ClientLinkEvent> {
    match bankd {
        Some((link, _)) => link.event().await,
        None => std::future::pending().await,
    }
}

/// Runs until the frontend reports the modem gone.
pub async fn run(
    config: Config,
    frontend: mpsc::Sender<FrontendCmd>,
    mut modem: mpsc::Receiver<ModemEvent>,
) {
    let server = ClientLink::spawn(link_config(
        &config,
        config.server.clone(),
        config.client,
        ComponentType::RemsimServer,
    ));
    let mut d = Driver {
        fsm: MainFsm::new(config.client, config.atr.clone(), config.ignore_bank_atr),
        config,
        server,
        bankd: None,
        frontend,
    };
    loop {
        let input = tokio::select! {
            event = d.server.event() => match event {
                Some(e) => d.server_event(e),
                None => return,
            },
            event = bankd_event(&mut d.bankd) => match event {
                Some(e) => d.bankd_event(e),
                None => {
                    d.bankd = None;
                    None
                }
            },
            event = modem.recv() => match event {
                Some(ModemEvent::Tpdu(data)) => Some(Input::ModemTpdu(data)),
                Some(ModemEvent::Status(s)) => Some(Input::ModemStatus(s)),
                Some(ModemEvent::Gone) | None => return,
            },
        };
        if let Some(input) = input {
            let outputs = d.fsm.handle(input);
            d.perform(outputs);
        }
    }
}

impl Driver {
    fn server_event(&mut self, event: ClientLinkEvent) -> Option<Input> {
        match event {
            ClientLinkEvent::Connected { .. } => Some(Input::ServerConnected),
            ClientLinkEvent::Lost => Some(Input::ServerLost),
            ClientLinkEvent::Refused { result } => {
                warn!(%result, "server refused ConnectClientReq");
                None
            }
            ClientLinkEvent::Stopped { reason } => {
                warn!(%reason, "server link stopped");
                None
            }
            ClientLinkEvent::Pdu(decoded) => match decoded.pdu {
                Pdu::Known(pdu) => match pdu.msg {
                    Msg::ConfigClientBankReq(m) => Some(Input::ConfigBank {
                        bank: m.bank_slot,
                        bankd: m.bankd,
                    }),
                    Msg::ConfigClientIdReq(m) => Some(Input::ConfigClientId(m.client_slot)),
                    Msg::ResetStateReq(_) => Some(Input::ResetState),
                    other => {
                        info!(msg = other.asn_name(), "message from the server ignored");
                        None
                    }
                },
                Pdu::UnknownMsg { alternative, .. } => {
                    info!(alternative, "unknown message from the server ignored");
                    None
                }
            },
        }
    }

    fn bankd_event(&mut self, event: ClientLinkEvent) -> Option<Input> {
        match event {
            ClientLinkEvent::Connected { result, .. } => Some(Input::BankdConnected(result)),
            ClientLinkEvent::Lost => Some(Input::BankdLost),
            ClientLinkEvent::Refused { result } => {
                warn!(%result, "bankd refused ConnectClientReq");
                None
            }
            ClientLinkEvent::Stopped { reason } => {
                warn!(%reason, "bankd link stopped");
                None
            }
            ClientLinkEvent::Pdu(decoded) => match decoded.pdu {
                Pdu::Known(pdu) => match pdu.msg {
                    Msg::TpduCardToModem(t) => Some(Input::BankdTpdu(t.data.to_vec())),
                    Msg::SetAtrReq(m) => Some(Input::BankdAtr(m.atr.to_vec())),
                    Msg::ErrorInd(e) => {
                        warn!(code = %e.code, text = ?e.error_string, "bankd reports an error");
                        None
                    }
                    other => {
                        info!(msg = other.asn_name(), "message from the bankd ignored");
                        None
                    }
                },
                Pdu::UnknownMsg { alternative, .. } => {
                    info!(alternative, "unknown message from the bankd ignored");
                    None
                }
            },
        }
    }

    fn perform(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::ToServer(pdu) => {
                    if let Err(e) = self.server.send(pdu) {
                        warn!(error = %e, "could not send to the server");
                    }
                }
                Output::ToBankd(pdu) => match &self.bankd {
                    Some((link, _)) => {
                        if let Err(e) = link.send(pdu) {
                            warn!(error = %e, "could not send to the bankd");
                        }
                    }
                    None => warn!(msg = pdu.msg.asn_name(), "no bankd link"),
                },
                Output::BankdConnect(addr) => {
                    info!(%addr, "connecting to the bankd");
                    let config = link_config(
                        &self.config,
                        addr.to_string(),
                        self.fsm.client(),
                        ComponentType::RemsimBankd,
                    );
                    self.bankd = Some((ClientLink::spawn(config), addr));
                }
                Output::BankdDisconnect => self.bankd = None,
                Output::ClientSlot(slot) => {
                    let pdu =
                        RsproPdu::connect_client_req(self.config.identity.clone(), Some(slot));
                    self.server.set_connect_req(pdu.clone());
                    if let Some((link, _)) = &self.bankd {
                        link.set_connect_req(pdu);
                    }
                }
                // Not awaited: the frontend may itself wait on this loop.
                Output::Frontend(cmd) => {
                    if let Err(mpsc::error::TrySendError::Full(cmd)) = self.frontend.try_send(cmd) {
                        warn!(
                            ?cmd,
                            "frontend queue full: the modem side is stuck; command dropped"
                        );
                    }
                }
                Output::Script(cause) => {
                    if let Some(script) = &self.config.event_script {
                        script::run(script, cause, &self.script_env());
                    }
                }
            }
        }
    }

    fn script_env(&self) -> ScriptEnv {
        let status = self.fsm.last_status();
        ScriptEnv {
            server_addr: self.config.server.clone(),
            server_state: self.server.state().name().into(),
            bankd_addr: self
                .bankd
                .as_ref()
                .map_or("(null):0".into(), |(_, a)| a.to_string()),
            bankd_state: self
                .bankd
                .as_ref()
                .map_or("INIT".into(), |(l, _)| l.state().name().into()),
            client_slot: self.fsm.client().to_string(),
            bankd_slot: self.fsm.bank().map_or("0:0".into(), |b| b.to_string()),
            vcc: status.and_then(|s| s.vcc_present),
            rst: status.map(|s| s.reset_active),
            clk: status.and_then(|s| s.clk_active),
            usb: self.config.usb.clone(),
        }
    }
}

//! The link to remsim-server: ConnectBankReq with reconnect and back-off
//! (the `rspro` client link), and the map table it maintains, answered as
//! the C bankd does and published to the client tasks. The table survives
//! a lost server link: clients keep their cards.

use std::sync::Arc;

use rspro::client_link::{ClientLink, ClientLinkConfig, ClientLinkEvent};
use rspro::{Msg, Pdu, RsproPdu};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::maps::MapTable;

pub async fn run(
    config: ClientLinkConfig,
    bank_id: u32,
    slots: u32,
    maps: watch::Sender<Arc<MapTable>>,
) {
    let mut link = ClientLink::spawn(config);
    let mut table = MapTable::default();
    while let Some(event) = link.event().await {
        match event {
            ClientLinkEvent::Connected { peer, addr, .. } => {
                info!(%addr, server = %peer.name, "connected to the server")
            }
            ClientLinkEvent::Lost => warn!("server link lost; clients keep their maps"),
            ClientLinkEvent::Refused { result } => warn!(%result, "server refused ConnectBankReq"),
            ClientLinkEvent::Stopped { reason } => error!(%reason, "server link stopped"),
            ClientLinkEvent::Pdu(decoded) => {
                let Pdu::Known(pdu) = decoded.pdu else {
                    continue;
                };
                let response = match pdu.msg {
                    Msg::CreateMappingReq(m) => {
                        let r = table.create(bank_id, slots, m.bank, m.client);
                        info!(bank = %m.bank, client = %m.client, result = %r, "CreateMappingReq");
                        RsproPdu::create_mapping_res(r)
                    }
                    Msg::RemoveMappingReq(m) => {
                        let r = table.remove(bank_id, slots, m.bank, m.client);
                        info!(bank = %m.bank, client = %m.client, result = %r, "RemoveMappingReq");
                        RsproPdu::remove_mapping_res(r)
                    }
                    Msg::ResetStateReq(_) => {
                        info!(maps = table.len(), "ResetStateReq");
                        RsproPdu::reset_state_res(table.reset())
                    }
                    other => {
                        warn!(
                            msg = other.asn_name(),
                            "unsupported message from the server; ignored"
                        );
                        continue;
                    }
                };
                // Client tasks wake only for a real change, not for every
                // refused or repeated request.
                maps.send_if_modified(|published| {
                    let changed = **published != table;
                    if changed {
                        *published = Arc::new(table.clone());
                    }
                    changed
                });
                if let Err(e) = link.send(response) {
                    warn!(error = %e, "could not answer the server");
                }
            }
        }
    }
}

//! remsimctl's management commands: banks, clients, slot maps, reset,
//! endpoints and watch, over the server's gRPC API.

use std::io::{IsTerminal, Write};

use clap::{Args, Subcommand};
use remsim_api::v1 as pb;
use rspro::validate::MAX_ID;
use tokio_stream_compat::next;

use crate::api::{Client, Failure};
use crate::output;

/// "ID:SLOT" as the C tools write slots.
pub fn parse_slot(text: &str) -> Result<(u32, u32), String> {
    let (a, b) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not ID:SLOT (e.g. 1:0)"))?;
    let n = |s: &str| {
        s.trim()
            .parse::<u32>()
            .ok()
            .filter(|v| *v <= MAX_ID)
            .ok_or_else(|| format!("{text:?}: {s:?} is not a number 0..{MAX_ID}"))
    };
    Ok((n(a)?, n(b)?))
}

fn bank(s: (u32, u32)) -> pb::BankSlot {
    pb::BankSlot {
        bank_id: s.0,
        slot_nr: s.1,
    }
}

fn client(s: (u32, u32)) -> pb::ClientSlot {
    pb::ClientSlot {
        client_id: s.0,
        slot_nr: s.1,
    }
}

/// Names one slot map by one of its slots.
#[derive(Args, Clone)]
#[group(required = true, multiple = false)]
pub struct MapKey {
    /// The map's bank slot, BANK:SLOT.
    #[arg(long, value_parser = parse_slot)]
    bank: Option<(u32, u32)>,
    /// The map's client slot, CLIENT:SLOT.
    #[arg(long, value_parser = parse_slot)]
    client: Option<(u32, u32)>,
}

#[derive(Subcommand)]
pub enum BankCmd {
    /// Banks connected or known from slot maps.
    List,
    /// One bank.
    Show { bank_id: u32 },
    /// Sets the address clients are sent for this bank ("" to use its source address).
    SetEndpoint { bank_id: u32, endpoint: String },
}

#[derive(Subcommand)]
pub enum ClientCmd {
    /// Connected clients.
    List,
    /// One client, by CLIENT:SLOT.
    Show {
        #[arg(value_parser = parse_slot)]
        slot: (u32, u32),
    },
}

#[derive(Subcommand)]
pub enum SlotmapCmd {
    /// All slot maps.
    List,
    /// One slot map.
    Show(MapKey),
    /// Maps a bank slot to a client slot: `create 1:0 23:0`.
    Create {
        #[arg(value_parser = parse_slot)]
        bank: (u32, u32),
        #[arg(value_parser = parse_slot)]
        client: (u32, u32),
    },
    /// Deletes a slot map.
    Delete(MapKey),
    /// Creates the maps of a CSV file (bank_id,bank_slot,client_id,client_slot); maps that exist are left alone.
    Import { file: std::path::PathBuf },
    /// Writes all maps as CSV (to stdout without a file).
    Export { file: Option<std::path::PathBuf> },
}

pub struct Ctx {
    pub client: Client,
    pub json: bool,
}

impl Ctx {
    fn print(&self, json: serde_json::Value, text: String) {
        if self.json {
            println!("{json}");
        } else {
            println!("{}", text.trim_end());
        }
    }
}

pub async fn bank_cmd(ctx: &mut Ctx, cmd: BankCmd) -> Result<(), Failure> {
    match cmd {
        BankCmd::List => {
            let banks = ctx
                .client
                .list_banks(pb::ListBanksRequest {})
                .await?
                .into_inner()
                .banks;
            let json = banks.iter().map(output::bank_json).collect::<Vec<_>>();
            ctx.print(json.into(), output::banks_table(&banks));
        }
        BankCmd::Show { bank_id } => {
            let b = ctx
                .client
                .get_bank(pb::GetBankRequest { bank_id })
                .await?
                .into_inner();
            ctx.print(output::bank_json(&b), output::banks_table(&[b]));
        }
        BankCmd::SetEndpoint { bank_id, endpoint } => {
            let b = ctx
                .client
                .set_bank_endpoint(pb::SetBankEndpointRequest { bank_id, endpoint })
                .await?
                .into_inner();
            ctx.print(output::bank_json(&b), output::banks_table(&[b]));
        }
    }
    Ok(())
}

pub async fn client_cmd(ctx: &mut Ctx, cmd: ClientCmd) -> Result<(), Failure> {
    match cmd {
        ClientCmd::List => {
            let clients = ctx
                .client
                .list_clients(pb::ListClientsRequest {})
                .await?
                .into_inner()
                .clients;
            let json = clients.iter().map(output::client_json).collect::<Vec<_>>();
            ctx.print(json.into(), output::clients_table(&clients));
        }
        ClientCmd::Show { slot } => {
            let c = ctx
                .client
                .get_client(pb::GetClientRequest {
                    client: Some(client(slot)),
                })
                .await?
                .into_inner();
            ctx.print(output::client_json(&c), output::clients_table(&[c]));
        }
    }
    Ok(())
}

fn get_key(k: &MapKey) -> Option<pb::get_slotmap_request::Key> {
    use pb::get_slotmap_request::Key;
    k.bank
        .map(|b| Key::Bank(bank(b)))
        .or(k.client.map(|c| Key::Client(client(c))))
}

fn delete_key(k: &MapKey) -> Option<pb::delete_slotmap_request::Key> {
    use pb::delete_slotmap_request::Key;
    k.bank
        .map(|b| Key::Bank(bank(b)))
        .or(k.client.map(|c| Key::Client(client(c))))
}

pub async fn slotmap_cmd(ctx: &mut Ctx, cmd: SlotmapCmd) -> Result<(), Failure> {
    match cmd {
        SlotmapCmd::List => {
            let maps = ctx
                .client
                .list_slotmaps(pb::ListSlotmapsRequest {})
                .await?
                .into_inner()
                .slotmaps;
            let json = maps.iter().map(output::slotmap_json).collect::<Vec<_>>();
            ctx.print(json.into(), output::slotmaps_table(&maps));
        }
        SlotmapCmd::Show(key) => {
            let m = ctx
                .client
                .get_slotmap(pb::GetSlotmapRequest { key: get_key(&key) })
                .await?
                .into_inner();
            ctx.print(output::slotmap_json(&m), output::slotmaps_table(&[m]));
        }
        SlotmapCmd::Create { bank: b, client: c } => {
            let m = ctx
                .client
                .create_slotmap(pb::CreateSlotmapRequest::new(b, c))
                .await?
                .into_inner();
            ctx.print(output::slotmap_json(&m), output::slotmaps_table(&[m]));
        }
        SlotmapCmd::Delete(key) => {
            let m = ctx
                .client
                .delete_slotmap(pb::DeleteSlotmapRequest {
                    key: delete_key(&key),
                })
                .await?
                .into_inner();
            ctx.print(output::slotmap_json(&m), output::slotmaps_table(&[m]));
        }
        SlotmapCmd::Import { file } => crate::csv_io::import(ctx, &file).await?,
        SlotmapCmd::Export { file } => crate::csv_io::export(ctx, file.as_deref()).await?,
    }
    Ok(())
}

/// Deletes every map; asks first unless `yes`.
pub async fn reset(ctx: &mut Ctx, yes: bool) -> Result<(), Failure> {
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Failure::invalid(
                "reset deletes every slot map: confirm with --yes",
            ));
        }
        eprint!("Delete every slot map on the server? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(Failure::new(crate::api::EXIT_FAILURE, "reset cancelled"));
        }
    }
    let deleted = ctx
        .client
        .reset_all(pb::ResetAllRequest {})
        .await?
        .into_inner()
        .deleted;
    ctx.print(
        serde_json::json!({"deleted": deleted}),
        format!("deleted {deleted} slot map(s)"),
    );
    Ok(())
}

/// Prints events until Ctrl-C or the server ends the stream.
pub async fn watch(ctx: &mut Ctx, snapshot: bool) -> Result<(), Failure> {
    let mut stream = ctx
        .client
        .watch(pb::WatchRequest { snapshot })
        .await?
        .into_inner();
    loop {
        tokio::select! {
            message = next(&mut stream) => match message? {
                Some(event) => {
                    if ctx.json {
                        println!("{}", output::event_json(&event));
                    } else {
                        println!("{}", output::event_line(&event));
                    }
                    let _ = std::io::stdout().flush();
                }
                None => return Ok(()),
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// The next message of a gRPC stream.
mod tokio_stream_compat {
    pub async fn next<T>(stream: &mut tonic::Streaming<T>) -> Result<Option<T>, tonic::Status> {
        stream.message().await
    }
}

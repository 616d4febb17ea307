//! Slot maps as CSV: `bank_id,bank_slot,client_id,client_slot`, one map per
//! line. Import is idempotent (existing identical maps are left alone,
//! conflicting ones reported), runs requests concurrently and shows a
//! progress bar on a terminal; it ends with a summary.

use std::collections::HashMap;
use std::path::Path;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use remsim_api::v1 as pb;

use crate::api::{EXIT_CONFLICT, Failure};
use crate::csv_rows::{HEADER, Row, parse};
use crate::manage::Ctx;

/// Requests in flight during an import.
const CONCURRENCY: usize = 32;

pub async fn import(ctx: &mut Ctx, file: &Path) -> Result<(), Failure> {
    let text = remsim_daemon::files::read_text(file, remsim_daemon::files::FILE_LIMIT)
        .map_err(|e| Failure::invalid(format!("{}: {e}", file.display())))?;
    let rows = parse(&text).map_err(|e| Failure::invalid(format!("{}: {e}", file.display())))?;
    let existing: HashMap<(u32, u32), (u32, u32)> = ctx
        .client
        .list_slotmaps(pb::ListSlotmapsRequest {})
        .await?
        .into_inner()
        .slotmaps
        .iter()
        .filter_map(|m| {
            Some((
                (m.bank.as_ref()?.bank_id, m.bank.as_ref()?.slot_nr),
                (m.client.as_ref()?.client_id, m.client.as_ref()?.slot_nr),
            ))
        })
        .collect();
    let (unchanged, todo): (Vec<Row>, Vec<Row>) = rows
        .into_iter()
        .partition(|(b, c)| existing.get(b) == Some(c));
    let bar = ProgressBar::new(todo.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} maps")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    if todo.len() < 100 {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let client = ctx.client.clone();
    let results: Vec<(Row, Result<(), tonic::Status>)> = futures::stream::iter(todo)
        .map(|(b, c)| {
            let mut client = client.clone();
            let bar = bar.clone();
            async move {
                let req = pb::CreateSlotmapRequest::new(b, c);
                let r = client.create_slotmap(req).await.map(drop);
                bar.inc(1);
                ((b, c), r)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    bar.finish_and_clear();
    let mut created = 0;
    let mut failed = Vec::new();
    for ((b, c), r) in results {
        match r {
            Ok(()) => created += 1,
            Err(s) => failed.push(format!(
                "{}:{} -> {}:{}: {}",
                b.0,
                b.1,
                c.0,
                c.1,
                s.message()
            )),
        }
    }
    failed.sort();
    for f in &failed {
        eprintln!("not imported: {f}");
    }
    let summary = serde_json::json!({"created": created, "unchanged": unchanged.len(), "failed": failed.len()});
    if ctx.json {
        println!("{summary}");
    } else {
        println!(
            "created {created}, unchanged {}, failed {}",
            unchanged.len(),
            failed.len()
        );
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::new(
            EXIT_CONFLICT,
            format!("{} map(s) not imported", failed.len()),
        ))
    }
}

pub async fn export(ctx: &mut Ctx, file: Option<&Path>) -> Result<(), Failure> {
    let maps = ctx
        .client
        .list_slotmaps(pb::ListSlotmapsRequest {})
        .await?
        .into_inner()
        .slotmaps;
    let mut writer = csv::Writer::from_writer(Vec::new());
    let written: csv::Result<()> = (|| {
        writer.write_record(HEADER.split(','))?;
        for m in &maps {
            let (Some(b), Some(c)) = (&m.bank, &m.client) else {
                continue;
            };
            let fields = [b.bank_id, b.slot_nr, c.client_id, c.slot_nr];
            writer.write_record(fields.iter().map(u32::to_string))?;
        }
        writer.flush()?;
        Ok(())
    })();
    let out = written
        .map_err(|e| e.to_string())
        .and_then(|()| writer.into_inner().map_err(|e| e.to_string()))
        .and_then(|bytes| String::from_utf8(bytes).map_err(|e| e.to_string()))
        .map_err(|e| Failure::new(crate::api::EXIT_FAILURE, format!("CSV: {e}")))?;
    match file {
        Some(path) => std::fs::write(path, out).map_err(|e| {
            Failure::new(crate::api::EXIT_FAILURE, format!("{}: {e}", path.display()))
        }),
        None => {
            print!("{out}");
            Ok(())
        }
    }
}

//! The server's SQLite store (sqlx): slot maps, owed removals and bank
//! settings. Schema in `migrations/`, applied at start. Each batch of
//! [`StoreOp`]s commits in one transaction before the caller goes on, so an
//! acknowledged API write survives a crash (WAL; `synchronous=NORMAL` keeps
//! commits across process crashes, FULL also across power loss).

use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;

use anyhow::Context;
use rspro::{BankSlot, ClientSlot};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use crate::engine::StoreOp;

/// A cheap handle: clones share the one connection.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    path: std::sync::Arc<Path>,
}

/// Everything persisted, as read at start.
pub struct Loaded {
    pub maps: Vec<(BankSlot, ClientSlot)>,
    pub removals: Vec<(BankSlot, ClientSlot)>,
    /// bank id, endpoint override.
    pub banks: Vec<(u32, Option<SocketAddr>)>,
}

fn slots(row: &sqlx::sqlite::SqliteRow) -> Result<(BankSlot, ClientSlot), sqlx::Error> {
    Ok((
        BankSlot::new(row.try_get("bank_id")?, row.try_get("bank_slot")?),
        ClientSlot::new(row.try_get("client_id")?, row.try_get("client_slot")?),
    ))
}

/// Rows per INSERT: 4 parameters each, well under SQLite's limit of
/// 32,766 parameters per statement.
const INSERT_ROWS: usize = 1024;

/// One INSERT of the new maps among `ops` (the others are skipped).
fn insert_maps(ops: &[StoreOp]) -> QueryBuilder<Sqlite> {
    let mut insert =
        QueryBuilder::new("INSERT INTO slotmaps (bank_id, bank_slot, client_id, client_slot) ");
    let maps = ops.iter().filter_map(|op| match op {
        StoreOp::InsertMap { bank, client } => Some((bank, client)),
        _ => None,
    });
    insert.push_values(maps, |mut row, (bank, client)| {
        row.push_bind(bank.bank_id)
            .push_bind(bank.slot_nr)
            .push_bind(client.client_id)
            .push_bind(client.slot_nr);
    });
    insert
}

impl Store {
    /// Opens (creating when missing) the database and migrates its schema.
    pub async fn open(path: &Path, full_sync: bool) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if full_sync {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .foreign_keys(true);
        // One connection: the server has a single writer anyway.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .with_context(|| format!("opening database {}", path.display()))?;
        sqlx::migrate!("../migrations")
            .run(&pool)
            .await
            .with_context(|| format!("migrating database {}", path.display()))?;
        Ok(Store {
            pool,
            path: path.into(),
        })
    }

    /// Closes the connection: SQLite then folds the write-ahead log into the
    /// database file, so that the file alone is a complete copy (backups).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn load(&self) -> anyhow::Result<Loaded> {
        let maps = sqlx::query("SELECT bank_id, bank_slot, client_id, client_slot FROM slotmaps ORDER BY bank_id, bank_slot")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(slots)
            .collect::<Result<_, _>>()?;
        let removals = sqlx::query("SELECT bank_id, bank_slot, client_id, client_slot FROM removals ORDER BY bank_id, bank_slot")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(slots)
            .collect::<Result<_, _>>()?;
        let mut banks = Vec::new();
        for row in sqlx::query("SELECT bank_id, endpoint FROM banks")
            .fetch_all(&self.pool)
            .await?
        {
            let bank_id: u32 = row.try_get("bank_id")?;
            let endpoint: Option<String> = row.try_get("endpoint")?;
            let endpoint = match endpoint {
                Some(e) => Some(e.parse().with_context(|| {
                    format!("bank {bank_id}: bad endpoint {e:?} in the database")
                })?),
                None => None,
            };
            banks.push((bank_id, endpoint));
        }
        Ok(Loaded {
            maps,
            removals,
            banks,
        })
    }

    /// Commits the operations in one transaction.
    pub async fn apply(&self, ops: &[StoreOp]) -> anyhow::Result<()> {
        // Every statement is a round trip to SQLite's thread: a batch of
        // new maps (a group commit) goes in one INSERT, and that alone
        // needs no BEGIN and COMMIT around it.
        if ops.is_empty() {
            return Ok(());
        }
        if ops.len() <= INSERT_ROWS && ops.iter().all(|op| matches!(op, StoreOp::InsertMap { .. }))
        {
            insert_maps(ops).build().execute(&self.pool).await?;
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for op in ops {
            match op {
                StoreOp::InsertMap { .. } => {
                    insert_maps(std::slice::from_ref(op))
                        .build()
                        .execute(&mut *tx)
                        .await?;
                }
                StoreOp::DeleteMap { bank, client } => {
                    sqlx::query("DELETE FROM slotmaps WHERE bank_id = ? AND bank_slot = ?")
                        .bind(bank.bank_id)
                        .bind(bank.slot_nr)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("INSERT OR IGNORE INTO removals (bank_id, bank_slot, client_id, client_slot) VALUES (?, ?, ?, ?)")
                        .bind(bank.bank_id)
                        .bind(bank.slot_nr)
                        .bind(client.client_id)
                        .bind(client.slot_nr)
                        .execute(&mut *tx)
                        .await?;
                }
                StoreOp::RemovalDone { bank, client } => {
                    sqlx::query("DELETE FROM removals WHERE bank_id = ? AND bank_slot = ? AND client_id = ? AND client_slot = ?")
                        .bind(bank.bank_id)
                        .bind(bank.slot_nr)
                        .bind(client.client_id)
                        .bind(client.slot_nr)
                        .execute(&mut *tx)
                        .await?;
                }
                StoreOp::BankReset { bank_id } => {
                    sqlx::query("DELETE FROM removals WHERE bank_id = ?")
                        .bind(bank_id)
                        .execute(&mut *tx)
                        .await?;
                }
                StoreOp::SetEndpoint { bank_id, endpoint } => {
                    sqlx::query("INSERT INTO banks (bank_id, endpoint) VALUES (?, ?) ON CONFLICT (bank_id) DO UPDATE SET endpoint = excluded.endpoint")
                        .bind(bank_id)
                        .bind(endpoint.map(|e| e.to_string()))
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// After a failed write: why the database file cannot be written, when
    /// that is the cause (a file system gone read-only after an I/O error,
    /// a read-only file), as the operator needs to hear it. SQLite itself
    /// only says "disk I/O error".
    pub fn unwritable(&self) -> Option<String> {
        std::fs::OpenOptions::new()
            .append(true)
            .open(&*self.path)
            .err()
            .map(|e| format!("{} cannot be written: {e}", self.path.display()))
    }
}

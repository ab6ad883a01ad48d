//! Group commit for sealed letters: concurrent seal requests hand their document row to one
//! writer task, which inserts a batch of them with their audit entries in a single durable
//! transaction. Each request is answered only after the commit that holds its rows, so the
//! guarantee is the same as a transaction per letter, for a fraction of the fsyncs.

use crate::audit::{ActorKind, NewEntry};
use crate::keys::Signer;
use crate::storage::Db;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// One sealed letter to record.
pub struct SealRecord {
    pub id: String,
    pub app_id: String,
    pub app_name: String,
    pub title: String,
    pub letter_number: String,
    pub code: String,
    pub original_sha256: String,
    pub signed_sha256: String,
    pub at: i64,
}

type Job = (SealRecord, oneshot::Sender<Result<(), String>>);

/// Handle to the writer task.
#[derive(Clone)]
pub struct SealBatcher {
    tx: mpsc::Sender<Job>,
}

/// Most letters in one transaction.
const MAX_BATCH: usize = 256;

/// Documents per `INSERT` (8 parameters each: see [`write_batch`]).
const ROWS_PER_INSERT: usize = 256;

/// The letters of `batch` and their audit entries, in one transaction and a handful of
/// statements: one multi-row `INSERT` for the documents, then the audit entries chained and
/// inserted together.
async fn write_batch(db: &Db, batch: &[SealRecord]) -> Result<(), String> {
    let mut tx = db.begin_write().await.map_err(|e| e.to_string())?;
    for chunk in batch.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO documents (id, app_id, title, letter_number, external_ref, status, verification_code, original_sha256, current_sha256, signed_sha256, callback_url, version, created_at, updated_at) VALUES {}",
            crate::storage::values_rows(
                chunk.len(),
                8,
                "({1}, {2}, {3}, {4}, NULL, 'completed', {5}, {6}, {7}, {7}, NULL, 1, {8}, {8})"
            )
        );
        let mut q = sqlx::query(&sql);
        for r in chunk {
            q = q
                .bind(&r.id)
                .bind(&r.app_id)
                .bind(&r.title)
                .bind(&r.letter_number)
                .bind(&r.code)
                .bind(&r.original_sha256)
                .bind(&r.signed_sha256)
                .bind(r.at);
        }
        q.execute(&mut *tx).await.map_err(|e| e.to_string())?;
    }
    let entries: Vec<NewEntry> = batch
        .iter()
        .map(|r| NewEntry {
            actor_kind: ActorKind::App,
            actor_id: r.app_name.clone(),
            action: "document.sealed".into(),
            document_id: Some(r.id.clone()),
            details: serde_json::json!({"sha256": r.signed_sha256, "letter_number": r.letter_number}),
        })
        .collect();
    let timed: Vec<(i64, &NewEntry)> = batch.iter().map(|r| r.at).zip(&entries).collect();
    crate::audit::append_all(&mut tx, db.backend, &timed)
        .await
        .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())
}

impl SealBatcher {
    /// Start the writer task on the current runtime.
    pub fn start(db: Db, auditor: Arc<dyn Signer>, checkpoint_every: u64) -> Self {
        let (tx, mut rx) = mpsc::channel::<Job>(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut jobs = vec![first];
                while jobs.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
                let (records, replies): (Vec<SealRecord>, Vec<_>) = jobs.into_iter().unzip();
                let result = write_batch(&db, &records).await;
                if result.is_err() && records.len() > 1 {
                    // Retry one by one so a single bad row does not fail its neighbours.
                    let mut results = Vec::new();
                    for r in &records {
                        results.push(write_batch(&db, std::slice::from_ref(r)).await);
                    }
                    for (reply, r) in replies.into_iter().zip(results) {
                        let _ = reply.send(r);
                    }
                    continue;
                }
                if result.is_ok() {
                    let at = records.last().map(|r| r.at).unwrap_or(0);
                    if let Err(e) = crate::audit::maybe_checkpoint(
                        &db,
                        auditor.as_ref(),
                        checkpoint_every.max(1),
                        at,
                    )
                    .await
                    {
                        tracing::error!(error = %e, "audit checkpoint failed");
                    }
                }
                for reply in replies {
                    let _ = reply.send(result.clone());
                }
            }
        });
        SealBatcher { tx }
    }

    /// Record `r`; returns once it is committed.
    pub async fn record(&self, r: SealRecord) -> Result<(), String> {
        let (reply, wait) = oneshot::channel();
        self.tx
            .send((r, reply))
            .await
            .map_err(|_| "the seal writer stopped".to_string())?;
        wait.await
            .map_err(|_| "the seal writer stopped".to_string())?
    }
}

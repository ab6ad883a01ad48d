//! The tamper-evident audit log: a hash chain in `audit_log`, its head in `audit_head`, and
//! checkpoints signed by the auditor key in `audit_checkpoints` (migrations/0001_init.sql).
//!
//! Every entry `n` stores `hash_n = hex(SHA-256(hash_{n-1} ‖ 0x0A ‖ E_n))`, where `hash_0` is 64
//! zeros ([`GENESIS_HASH`]) and `E_n` is the canonical JSON array
//! `[seq, at, actor_kind, actor_id, action, document_id|null, details]` with `details` the
//! canonical JSON text of the entry's details, as a string ([`entry_hash`], [`canonical`]).
//! Editing, deleting, inserting or reordering a row therefore breaks the chain where it happened.
//!
//! What the chain alone cannot show, and the checkpoints can:
//! - rows removed from the end together with the head rolled back: the remaining chain is
//!   consistent; only a signed checkpoint at a removed seq reveals it;
//! - a rewritten history re-hashed from the edited row onwards (the hash has no secret): only a
//!   checkpoint after the edit reveals it, and then only that something in the span since the
//!   previous checkpoint changed.
//!
//! So the log is as trustworthy as its latest checkpoint; what was appended after it is
//! evidence only against clumsy tampering. The service checkpoints every
//! `audit_checkpoint_every` entries ([`maybe_checkpoint`]); `segel audit checkpoint` signs the
//! head on demand, e.g. before an export or at the end of the day.

pub mod canonical;
mod checkpoint;
mod verify;

pub use checkpoint::checkpoint_message;
pub use verify::{ChainReport, verify};

use crate::keys::{KeyError, Signer};
use crate::storage::{Backend, Db};
use serde::{Deserialize, Serialize};
use sqlx::{Any, Row, Transaction};
use std::fmt;
use std::str::FromStr;

/// `hash_0`: the head `audit_head` starts from (migrations/0001_init.sql).
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Most entries [`list`] returns at once; also the default when the filter names no limit.
pub const LIST_MAX_LIMIT: u32 = 1000;

/// Audit errors. A chain that does not verify is not an error: [`verify`] reports it.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("the audit head row is missing (migrations not applied?)")]
    NoHead,
    #[error(
        "the audit head moved during the append (was the transaction not a write transaction?)"
    )]
    HeadMoved,
    #[error("signing the checkpoint: {0}")]
    Key(#[from] KeyError),
    #[error("audit entry {seq}: {reason}")]
    Corrupt { seq: i64, reason: String },
    #[error("{0}")]
    Invalid(String),
}

/// Who performed an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    /// A client application, by its API key.
    App,
    /// A signed-in official.
    Official,
    /// An unauthenticated member of the public (verification page).
    Public,
    /// Segel itself (webhook delivery, key maintenance, checkpoints).
    System,
}

impl ActorKind {
    /// The stored and hashed spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::App => "app",
            ActorKind::Official => "official",
            ActorKind::Public => "public",
            ActorKind::System => "system",
        }
    }
}

impl fmt::Display for ActorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ActorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "app" => ActorKind::App,
            "official" => ActorKind::Official,
            "public" => ActorKind::Public,
            "system" => ActorKind::System,
            other => return Err(format!("unknown actor kind {other:?}")),
        })
    }
}

/// An entry to append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEntry {
    pub actor_kind: ActorKind,
    pub actor_id: String,
    pub action: String,
    pub document_id: Option<String>,
    /// Any JSON; stored as its canonical text.
    pub details: serde_json::Value,
}

/// A stored entry, as the auditor API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: i64,
    /// Epoch milliseconds.
    pub at: i64,
    pub actor_kind: ActorKind,
    pub actor_id: String,
    pub action: String,
    pub document_id: Option<String>,
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// The fields one entry's hash covers, as stored.
#[derive(Debug, Clone, Copy)]
pub struct HashInput<'a> {
    pub seq: i64,
    pub at: i64,
    pub actor_kind: &'a str,
    pub actor_id: &'a str,
    pub action: &'a str,
    pub document_id: Option<&'a str>,
    /// The canonical JSON text of the details, exactly as stored.
    pub details: &'a str,
}

/// `hex(SHA-256(prev_hash ‖ 0x0A ‖ [seq,at,actor_kind,actor_id,action,document_id,details]))`,
/// the array written as canonical JSON ([`canonical`]) and `prev_hash` as its lowercase hex text.
pub fn entry_hash(prev_hash: &str, e: &HashInput<'_>) -> String {
    let mut encoded = String::with_capacity(128 + e.details.len());
    encoded.push('[');
    encoded.push_str(&e.seq.to_string());
    encoded.push(',');
    encoded.push_str(&e.at.to_string());
    for s in [e.actor_kind, e.actor_id, e.action] {
        encoded.push(',');
        canonical::write_string(&mut encoded, s);
    }
    encoded.push(',');
    match e.document_id {
        Some(d) => canonical::write_string(&mut encoded, d),
        None => encoded.push_str("null"),
    }
    encoded.push(',');
    canonical::write_string(&mut encoded, e.details);
    encoded.push(']');

    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(prev_hash.as_bytes());
    ctx.update(b"\n");
    ctx.update(encoded.as_bytes());
    hex(ctx.finish().as_ref())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The latest entry: `seq` 0 and [`GENESIS_HASH`] while the log is empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
}

const HEAD: &str = "SELECT seq, hash FROM audit_head WHERE id = 1";
// PostgreSQL: lock the head row until the transaction ends, so appends from several instances
// sharing one database take turns and each sees the head its predecessor wrote.
const HEAD_FOR_UPDATE: &str = "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE";

async fn read_head<'e, E>(executor: E, sql: &'static str) -> Result<Head, AuditError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let row = sqlx::query(sql)
        .fetch_optional(executor)
        .await?
        .ok_or(AuditError::NoHead)?;
    Ok(Head {
        seq: row.try_get("seq")?,
        hash: row.try_get("hash")?,
    })
}

/// The current head.
pub async fn head(db: &Db) -> Result<Head, AuditError> {
    read_head(&db.pool, HEAD).await
}

/// Append `entry` inside the caller's write transaction and return its seq.
///
/// Call it in the same transaction as the action it records, so both commit or neither does,
/// and preferably as the last statement before the commit: on PostgreSQL it locks the head row
/// (`SELECT … FOR UPDATE`) until the transaction ends, which serializes every writer of the log.
/// On SQLite the transaction must come from [`Db::begin_write`] (`BEGIN IMMEDIATE`); from a
/// deferred transaction a concurrent append fails (`database is locked` or [`AuditError::HeadMoved`])
/// instead of forking the chain.
pub async fn append(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    at_millis: i64,
    entry: &NewEntry,
) -> Result<i64, AuditError> {
    append_all(tx, backend, &[(at_millis, entry)]).await
}

/// Most rows in one `INSERT`: 9 parameters each, well under SQLite's 32,766 and PostgreSQL's
/// 65,535 bound parameters per statement.
const ROWS_PER_INSERT: usize = 256;

/// Append `entries` in order inside the caller's write transaction and return the seq of the
/// last one. The same chain as one [`append`] per entry, for three statements per 256 entries:
/// the head is read (and on PostgreSQL locked) once, the hashes are chained in memory, the rows
/// go in with multi-row `INSERT`s and the head moves once. See [`append`] for the transaction
/// the caller must hold.
pub async fn append_all(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    entries: &[(i64, &NewEntry)],
) -> Result<i64, AuditError> {
    let sql = match backend {
        Backend::Postgres => HEAD_FOR_UPDATE,
        Backend::Sqlite => HEAD,
    };
    let head = read_head(&mut **tx, sql).await?;
    let mut rows = Vec::with_capacity(entries.len());
    let (mut seq, mut prev) = (head.seq, head.hash.clone());
    for (at, entry) in entries {
        seq = seq
            .checked_add(1)
            .ok_or_else(|| AuditError::Invalid("the audit log is full".into()))?;
        let details = canonical::to_string(&entry.details);
        let hash = entry_hash(
            &prev,
            &HashInput {
                seq,
                at: *at,
                actor_kind: entry.actor_kind.as_str(),
                actor_id: &entry.actor_id,
                action: &entry.action,
                document_id: entry.document_id.as_deref(),
                details: &details,
            },
        );
        rows.push((
            seq,
            *at,
            *entry,
            details,
            std::mem::replace(&mut prev, hash.clone()),
            hash,
        ));
    }
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO audit_log (seq, at, actor_kind, actor_id, action, document_id, details, prev_hash, hash) VALUES {}",
            crate::storage::values_rows(
                chunk.len(),
                9,
                "({1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9})"
            )
        );
        let mut q = sqlx::query(&sql);
        for (seq, at, entry, details, prev_hash, hash) in chunk {
            q = q
                .bind(*seq)
                .bind(*at)
                .bind(entry.actor_kind.as_str().to_string())
                .bind(entry.actor_id.clone())
                .bind(entry.action.clone())
                .bind(entry.document_id.clone())
                .bind(details.clone())
                .bind(prev_hash.clone())
                .bind(hash.clone());
        }
        q.execute(&mut **tx).await?;
    }
    // `seq = $3` re-checks the head read above: belt and braces behind the row lock.
    let moved = sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1 AND seq = $3")
        .bind(seq)
        .bind(prev)
        .bind(head.seq)
        .execute(&mut **tx)
        .await?;
    if moved.rows_affected() != 1 {
        return Err(AuditError::HeadMoved);
    }
    Ok(seq)
}

/// Sign the current head and store it as a checkpoint. `None` when the log is empty or the head
/// already has a checkpoint.
///
/// Runs outside any write transaction: the signer may be slow (a token), and a checkpoint of a
/// committed head stays true however far the log has moved on meanwhile.
pub async fn checkpoint(
    db: &Db,
    signer: &dyn Signer,
    at_millis: i64,
) -> Result<Option<i64>, AuditError> {
    let head = head(db).await?;
    if head.seq == 0 {
        return Ok(None);
    }
    store_checkpoint(db, signer, head.seq, &head.hash, at_millis).await
}

/// Most checkpoints [`maybe_checkpoint`] signs in one call.
const MAX_CHECKPOINTS_PER_CALL: i64 = 16;

/// Sign a checkpoint at every multiple of `every` the log has reached since the last one — a
/// batch of letters can carry the head past several at once — unless one exists there already
/// (several instances may race for it; one wins). Call it after commits. Returns the highest
/// seq signed, `None` when nothing was signed; `every == 0` disables checkpoints.
pub async fn maybe_checkpoint(
    db: &Db,
    signer: &dyn Signer,
    every: u64,
    at_millis: i64,
) -> Result<Option<i64>, AuditError> {
    let Ok(every) = i64::try_from(every) else {
        return Ok(None);
    };
    if every == 0 {
        return Ok(None);
    }
    let head = head(db).await?;
    let target = head.seq / every * every;
    if target == 0 {
        return Ok(None);
    }
    let last: Option<i64> = sqlx::query_scalar(
        "SELECT MAX(seq) FROM audit_checkpoints WHERE seq <= $1 AND seq % $2 = 0",
    )
    .bind(target)
    .bind(every)
    .fetch_one(&db.pool)
    .await?;
    let mut signed = None;
    let mut seq = last.map_or(every, |l| l + every);
    // A long log without checkpoints (or a smaller `every`) is caught up a bounded step at a
    // time, so no single request pays for all of it.
    let stop = target.min(seq.saturating_add(every.saturating_mul(MAX_CHECKPOINTS_PER_CALL - 1)));
    while seq <= stop {
        let row = sqlx::query("SELECT hash FROM audit_log WHERE seq = $1")
            .bind(seq)
            .fetch_optional(&db.pool)
            .await?
            .ok_or_else(|| AuditError::Corrupt {
                seq,
                reason: "missing while the head is past it".into(),
            })?;
        let hash: String = row.try_get("hash")?;
        if let Some(s) = store_checkpoint(db, signer, seq, &hash, at_millis).await? {
            signed = Some(s);
        }
        seq += every;
    }
    Ok(signed)
}

async fn store_checkpoint(
    db: &Db,
    signer: &dyn Signer,
    seq: i64,
    hash: &str,
    at_millis: i64,
) -> Result<Option<i64>, AuditError> {
    let (signature, certificate) = checkpoint::sign(signer, seq, hash)?;
    let inserted = sqlx::query(
        "INSERT INTO audit_checkpoints (seq, head_hash, at, signature, certificate) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO NOTHING",
    )
    .bind(seq)
    .bind(hash.to_string())
    .bind(at_millis)
    .bind(signature)
    .bind(certificate)
    .execute(&db.pool)
    .await?;
    Ok((inserted.rows_affected() == 1).then_some(seq))
}

/// Which entries [`list`] returns: all conditions given must hold. Entries come in seq order;
/// page with `after_seq` = the last seq received.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Filter {
    pub document_id: Option<String>,
    pub actor_id: Option<String>,
    pub action: Option<String>,
    /// `at >= since_millis`.
    pub since_millis: Option<i64>,
    /// `at < until_millis`.
    pub until_millis: Option<i64>,
    /// `seq > after_seq`.
    pub after_seq: Option<i64>,
    /// At most this many, capped at (and defaulting to) [`LIST_MAX_LIMIT`].
    pub limit: Option<u32>,
}

/// Entries matching `filter`, in seq order.
pub async fn list(db: &Db, filter: &Filter) -> Result<Vec<Entry>, AuditError> {
    let mut sql = String::from(
        "SELECT seq, at, actor_kind, actor_id, action, document_id, details, prev_hash, hash \
         FROM audit_log WHERE 1 = 1",
    );
    let mut n = 0;
    let mut cond = |sql: &mut String, expr: &str| {
        n += 1;
        sql.push_str(&format!(" AND {expr} ${n}"));
    };
    let text = [
        ("document_id =", &filter.document_id),
        ("actor_id =", &filter.actor_id),
        ("action =", &filter.action),
    ];
    let numbers = [
        ("at >=", filter.since_millis),
        ("at <", filter.until_millis),
        ("seq >", filter.after_seq),
    ];
    for (expr, value) in &text {
        if value.is_some() {
            cond(&mut sql, expr);
        }
    }
    for (expr, value) in &numbers {
        if value.is_some() {
            cond(&mut sql, expr);
        }
    }
    n += 1;
    sql.push_str(&format!(" ORDER BY seq LIMIT ${n}"));
    let limit = filter
        .limit
        .unwrap_or(LIST_MAX_LIMIT)
        .clamp(1, LIST_MAX_LIMIT);

    let mut query = sqlx::query(&sql);
    for value in text.into_iter().filter_map(|(_, v)| v.clone()) {
        query = query.bind(value);
    }
    for value in numbers.into_iter().filter_map(|(_, v)| v) {
        query = query.bind(value);
    }
    let rows = query.bind(i64::from(limit)).fetch_all(&db.pool).await?;
    rows.iter().map(entry_from_row).collect()
}

fn entry_from_row(row: &sqlx::any::AnyRow) -> Result<Entry, AuditError> {
    let seq: i64 = row.try_get("seq")?;
    let corrupt = |reason: String| AuditError::Corrupt { seq, reason };
    let kind: String = row.try_get("actor_kind")?;
    let details: String = row.try_get("details")?;
    Ok(Entry {
        seq,
        at: row.try_get("at")?,
        actor_kind: kind.parse().map_err(corrupt)?,
        actor_id: row.try_get("actor_id")?,
        action: row.try_get("action")?,
        document_id: row.try_get("document_id")?,
        details: serde_json::from_str(&details)
            .map_err(|e| corrupt(format!("details are not JSON: {e}")))?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answer, computed outside Rust:
    /// `printf '%s\n%s' 000…000 '[1,1700000000000,"official","budi","sign","doc-1","{\"a\":1}"]' | sha256sum`.
    /// Changing it would invalidate every stored chain.
    #[test]
    fn entry_hash_known_answer() {
        let h = entry_hash(
            GENESIS_HASH,
            &HashInput {
                seq: 1,
                at: 1_700_000_000_000,
                actor_kind: "official",
                actor_id: "budi",
                action: "sign",
                document_id: Some("doc-1"),
                details: r#"{"a":1}"#,
            },
        );
        assert_eq!(
            h,
            "053fa676d4663fda0828eb308e65308c9d435577918f26160ecf24f81551bc90"
        );
    }

    /// A batch of entries chains exactly as the same entries appended one by one, across the
    /// multi-row INSERT boundary, and `verify` accepts the result.
    #[tokio::test]
    async fn a_batch_chains_like_single_appends() {
        let entries: Vec<NewEntry> = (0..300)
            .map(|n| NewEntry {
                actor_kind: if n % 3 == 0 {
                    ActorKind::App
                } else {
                    ActorKind::Official
                },
                actor_id: format!("actor-{}", n % 7),
                action: "document.sealed".into(),
                document_id: (n % 5 != 0).then(|| format!("doc-{n}")),
                details: serde_json::json!({"n": n, "text": "Surat \"edaran\"\n"}),
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let mut heads = Vec::new();
        for batched in [false, true] {
            let url = format!(
                "sqlite://{}",
                dir.path().join(format!("{batched}.db")).display()
            );
            let db = Db::connect(&url).await.unwrap();
            // Three single entries first, so the batch starts from a head that is not genesis.
            for (n, e) in entries.iter().enumerate() {
                if batched && n >= 3 {
                    break;
                }
                let mut tx = db.begin_write().await.unwrap();
                append(&mut tx, db.backend, 1_700_000_000_000 + n as i64, e)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
            if batched {
                let timed: Vec<(i64, &NewEntry)> = entries[3..]
                    .iter()
                    .enumerate()
                    .map(|(n, e)| (1_700_000_000_003 + n as i64, e))
                    .collect();
                let mut tx = db.begin_write().await.unwrap();
                assert_eq!(append_all(&mut tx, db.backend, &timed).await.unwrap(), 300);
                tx.commit().await.unwrap();
            }
            let report = verify::verify(&db, None).await.unwrap();
            assert!(report.ok, "{report:?}");
            assert_eq!(report.entries, 300);
            heads.push(head(&db).await.unwrap());
        }
        assert_eq!(heads[0], heads[1]);
        assert_eq!(heads[1].seq, 300);
    }

    /// A batch that carries the head past several multiples of N gets a checkpoint at each.
    #[tokio::test]
    async fn checkpoints_are_not_skipped_by_batches() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let db = Db::connect(&url).await.unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("keys-example");
        let auditor = crate::keys::SoftwareSigner::from_pem(
            &std::fs::read(root.join("auditor.key.pem")).unwrap(),
            crate::keys::load_certificates_pem(
                &std::fs::read(root.join("auditor.chain.pem")).unwrap(),
            )
            .unwrap(),
            false,
        )
        .unwrap();
        let entry = NewEntry {
            actor_kind: ActorKind::System,
            actor_id: "test".into(),
            action: "document.sealed".into(),
            document_id: None,
            details: serde_json::json!({}),
        };
        let batch = |n: usize| {
            let db = db.clone();
            let entry = entry.clone();
            async move {
                let timed: Vec<(i64, &NewEntry)> = (0..n).map(|_| (1, &entry)).collect();
                let mut tx = db.begin_write().await.unwrap();
                append_all(&mut tx, db.backend, &timed).await.unwrap();
                tx.commit().await.unwrap();
            }
        };
        batch(250).await;
        assert_eq!(
            maybe_checkpoint(&db, &auditor, 100, 2).await.unwrap(),
            Some(200)
        );
        batch(40).await;
        assert_eq!(maybe_checkpoint(&db, &auditor, 100, 3).await.unwrap(), None);
        batch(80).await;
        assert_eq!(
            maybe_checkpoint(&db, &auditor, 100, 4).await.unwrap(),
            Some(300)
        );
        let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM audit_checkpoints ORDER BY seq")
            .fetch_all(&db.pool)
            .await
            .unwrap();
        assert_eq!(seqs, vec![100, 200, 300]);
        let report = verify::verify(&db, None).await.unwrap();
        assert!(report.ok, "{report:?}");
        assert_eq!(report.checkpoints, 3);
    }

    #[test]
    fn actor_kinds_round_trip() {
        for k in [
            ActorKind::App,
            ActorKind::Official,
            ActorKind::Public,
            ActorKind::System,
        ] {
            assert_eq!(k.as_str().parse::<ActorKind>().unwrap(), k);
            assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
        }
    }
}

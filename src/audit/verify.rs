//! Verification of the whole log: the chain recomputed in seq order, the head compared with the
//! last entry, every checkpoint's signature and its `(seq, hash)` checked against the chain.
//!
//! Rows and checkpoints are read in pages of [`PAGE`] by seq (keyset pagination), inside one
//! read transaction (`REPEATABLE READ` on PostgreSQL, a WAL read snapshot on SQLite), so the
//! log may be verified while the service appends to it and millions of rows never sit in memory.

use super::checkpoint::{CheckpointKey, certificate_der};
use super::{AuditError, GENESIS_HASH, HashInput, entry_hash};
use crate::storage::{Backend, Db};
use serde::Serialize;
use sqlx::{AnyConnection, Row};
use std::collections::VecDeque;

/// Rows read per query.
const PAGE: i64 = 1000;

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    /// The chain, the head and every checkpoint are consistent.
    pub ok: bool,
    /// Entries verified (all of them when `ok`; those before the problem otherwise).
    pub entries: i64,
    /// Checkpoints verified.
    pub checkpoints: i64,
    /// The first seq that cannot be trusted. When a checkpoint shows that a span was rewritten
    /// and re-hashed, the rewritten row cannot be located: the span's first seq is named.
    pub first_bad_seq: Option<i64>,
    /// What is wrong, in one line.
    pub problem: Option<String>,
}

/// Verify the whole log. With `trusted_auditor` (a DER certificate), every checkpoint must be
/// signed with exactly that certificate; without it the certificate stored with each checkpoint
/// is used, which shows the checkpoints are intact but not who made them — anyone able to
/// rewrite the database could re-sign with a key of their own.
pub async fn verify(db: &Db, trusted_auditor: Option<&[u8]>) -> Result<ChainReport, AuditError> {
    let mut tx = match db.backend {
        Backend::Postgres => {
            db.pool
                .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await?
        }
        Backend::Sqlite => db.pool.begin().await?,
    };
    let report = Walk {
        trusted: trusted_auditor,
        ..Walk::default()
    }
    .run(&mut tx)
    .await;
    tx.rollback().await?;
    report
}

/// One stored row, as read.
struct RawRow {
    seq: i64,
    at: i64,
    actor_kind: String,
    actor_id: String,
    action: String,
    document_id: Option<String>,
    details: String,
    prev_hash: String,
    hash: String,
}

impl RawRow {
    fn computed_hash(&self) -> String {
        entry_hash(
            &self.prev_hash,
            &HashInput {
                seq: self.seq,
                at: self.at,
                actor_kind: &self.actor_kind,
                actor_id: &self.actor_id,
                action: &self.action,
                document_id: self.document_id.as_deref(),
                details: &self.details,
            },
        )
    }
}

struct RawCheckpoint {
    seq: i64,
    head_hash: String,
    signature: String,
    certificate: String,
}

/// A problem: the first bad seq and what is wrong.
type Bad = (i64, String);

#[derive(Default)]
struct Walk<'a> {
    trusted: Option<&'a [u8]>,
    entries: i64,
    checkpoints: i64,
    /// The seq of the last checkpoint that matched the chain (0: none yet).
    attested: i64,
    key: Option<CheckpointKey>,
    pending: VecDeque<RawCheckpoint>,
    checkpoints_after: Option<i64>,
    checkpoints_done: bool,
}

impl Walk<'_> {
    async fn run(mut self, conn: &mut AnyConnection) -> Result<ChainReport, AuditError> {
        let outcome = self.walk(conn).await?;
        let (first_bad_seq, problem) = match outcome {
            Ok(()) => (None, None),
            Err((seq, problem)) => (Some(seq), Some(problem)),
        };
        Ok(ChainReport {
            ok: first_bad_seq.is_none(),
            entries: self.entries,
            checkpoints: self.checkpoints,
            first_bad_seq,
            problem,
        })
    }

    /// `Err` is a database failure; `Ok(Err(bad))` a log that does not verify.
    async fn walk(&mut self, conn: &mut AnyConnection) -> Result<Result<(), Bad>, AuditError> {
        let mut expected = 1i64;
        let mut prev: Option<RawRow> = None;
        let mut after: Option<i64> = None;
        loop {
            let page = rows_page(conn, after).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.seq);
            let short = (page.len() as i64) < PAGE;
            for row in page {
                if row.seq != expected {
                    return Ok(Err(if row.seq > expected {
                        (
                            expected,
                            format!(
                                "entry {expected} is missing (the next entry is {})",
                                row.seq
                            ),
                        )
                    } else {
                        (
                            row.seq,
                            format!("entry {} is out of sequence (expected {expected})", row.seq),
                        )
                    }));
                }
                if row.computed_hash() != row.hash {
                    return Ok(Err((
                        row.seq,
                        format!(
                            "entry {} was altered: its content does not match its hash",
                            row.seq
                        ),
                    )));
                }
                let prev_hash = prev.as_ref().map_or(GENESIS_HASH, |p| p.hash.as_str());
                if row.prev_hash != prev_hash {
                    // This row is consistent in itself, so its prev_hash is what the entry
                    // before it hashed to when this one was appended: that entry was replaced.
                    return Ok(Err(match &prev {
                        Some(p) => (
                            p.seq,
                            format!(
                                "entry {} was replaced: entry {} chains to a different hash",
                                p.seq, row.seq
                            ),
                        ),
                        None => (1, "entry 1 does not chain to the genesis hash".to_string()),
                    }));
                }
                if let Err(bad) = self.checkpoints_through(conn, &row).await? {
                    return Ok(Err(bad));
                }
                self.entries += 1;
                expected += 1;
                prev = Some(row);
            }
            if short {
                break;
            }
        }
        let last_seq = expected - 1;

        // Checkpoints past the end name entries that are gone.
        if let Some(cp) = self.next_checkpoint(conn).await? {
            return Ok(Err(match self.check_signature(&cp) {
                Err(bad) => bad,
                Ok(()) => (
                    last_seq + 1,
                    format!(
                        "the log ends at entry {last_seq} but a checkpoint was signed at {}: entries were removed from the end",
                        cp.seq
                    ),
                ),
            }));
        }

        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_optional(&mut *conn)
            .await?;
        let Some(head) = head else {
            return Ok(Err((last_seq + 1, "the head row is missing".to_string())));
        };
        let head_seq: i64 = head.try_get("seq")?;
        let head_hash: String = head.try_get("hash")?;
        let last_hash = prev.as_ref().map_or(GENESIS_HASH, |p| p.hash.as_str());
        Ok(if head_seq > last_seq {
            Err((
                last_seq + 1,
                format!(
                    "the log ends at entry {last_seq} but the head is at {head_seq}: entries were removed from the end"
                ),
            ))
        } else if head_seq < last_seq {
            Err((
                head_seq + 1,
                format!(
                    "the head is at {head_seq} but the log continues to {last_seq}: entries were added behind the head"
                ),
            ))
        } else if head_hash != last_hash {
            Err((
                last_seq,
                format!("entry {last_seq} or the head was altered: their hashes differ"),
            ))
        } else {
            Ok(())
        })
    }

    /// Check every checkpoint with a seq up to `row.seq` against `row`.
    async fn checkpoints_through(
        &mut self,
        conn: &mut AnyConnection,
        row: &RawRow,
    ) -> Result<Result<(), Bad>, AuditError> {
        while let Some(cp) = self.peek_checkpoint(conn).await? {
            if cp.seq > row.seq {
                break;
            }
            let Some(cp) = self.pending.pop_front() else {
                break;
            };
            if cp.seq < row.seq {
                // Rows are checked gap-free from 1, so only a seq below 1 gets here.
                return Ok(Err((
                    cp.seq,
                    format!("a checkpoint names entry {}, which cannot exist", cp.seq),
                )));
            }
            if let Err(bad) = self.check_signature(&cp) {
                return Ok(Err(bad));
            }
            if cp.head_hash != row.hash {
                let from = self.attested + 1;
                return Ok(Err((
                    from,
                    format!(
                        "entry {}'s hash differs from the checkpoint signed at {}: an entry in {from}..={} was rewritten and the chain re-hashed",
                        cp.seq, cp.seq, cp.seq
                    ),
                )));
            }
            self.attested = cp.seq;
            self.checkpoints += 1;
        }
        Ok(Ok(()))
    }

    /// The certificate (pinned when a trusted auditor is given) and the signature of `cp`.
    fn check_signature(&mut self, cp: &RawCheckpoint) -> Result<(), Bad> {
        let bad = |why: String| (cp.seq, format!("checkpoint {}: {why}", cp.seq));
        let der = certificate_der(&cp.certificate).map_err(bad)?;
        if self.trusted.is_some_and(|trusted| der != trusted) {
            return Err(bad(
                "signed with a certificate other than the trusted auditor's".into(),
            ));
        }
        // Consecutive checkpoints normally share one certificate: parse it once.
        let key = match self.key.take() {
            Some(key) if key.cert_der == der => key,
            _ => CheckpointKey::from_der(der).map_err(bad)?,
        };
        let verified = key
            .verify(cp.seq, &cp.head_hash, &cp.signature)
            .map_err(bad);
        self.key = Some(key);
        verified
    }

    async fn peek_checkpoint(
        &mut self,
        conn: &mut AnyConnection,
    ) -> Result<Option<&RawCheckpoint>, AuditError> {
        if self.pending.is_empty() && !self.checkpoints_done {
            let page = checkpoints_page(conn, self.checkpoints_after).await?;
            self.checkpoints_done = (page.len() as i64) < PAGE;
            if let Some(last) = page.last() {
                self.checkpoints_after = Some(last.seq);
            }
            self.pending.extend(page);
        }
        Ok(self.pending.front())
    }

    async fn next_checkpoint(
        &mut self,
        conn: &mut AnyConnection,
    ) -> Result<Option<RawCheckpoint>, AuditError> {
        self.peek_checkpoint(conn).await?;
        Ok(self.pending.pop_front())
    }
}

const ROW_COLUMNS: &str =
    "seq, at, actor_kind, actor_id, action, document_id, details, prev_hash, hash";

/// Up to [`PAGE`] rows with a seq above `after` (all seqs when `None`, so that even a forged
/// row at `i64::MIN` is read), in seq order.
async fn rows_page(
    conn: &mut AnyConnection,
    after: Option<i64>,
) -> Result<Vec<RawRow>, AuditError> {
    let rows = match after {
        None => {
            sqlx::query(&format!(
                "SELECT {ROW_COLUMNS} FROM audit_log ORDER BY seq LIMIT $1"
            ))
            .bind(PAGE)
            .fetch_all(&mut *conn)
            .await?
        }
        Some(after) => {
            sqlx::query(&format!(
                "SELECT {ROW_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
            ))
            .bind(after)
            .bind(PAGE)
            .fetch_all(&mut *conn)
            .await?
        }
    };
    rows.iter()
        .map(|r| {
            Ok(RawRow {
                seq: r.try_get("seq")?,
                at: r.try_get("at")?,
                actor_kind: r.try_get("actor_kind")?,
                actor_id: r.try_get("actor_id")?,
                action: r.try_get("action")?,
                document_id: r.try_get("document_id")?,
                details: r.try_get("details")?,
                prev_hash: r.try_get("prev_hash")?,
                hash: r.try_get("hash")?,
            })
        })
        .collect()
}

async fn checkpoints_page(
    conn: &mut AnyConnection,
    after: Option<i64>,
) -> Result<Vec<RawCheckpoint>, AuditError> {
    const COLUMNS: &str = "seq, head_hash, signature, certificate";
    let rows = match after {
        None => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM audit_checkpoints ORDER BY seq LIMIT $1"
            ))
            .bind(PAGE)
            .fetch_all(&mut *conn)
            .await?
        }
        Some(after) => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM audit_checkpoints WHERE seq > $1 ORDER BY seq LIMIT $2"
            ))
            .bind(after)
            .bind(PAGE)
            .fetch_all(&mut *conn)
            .await?
        }
    };
    rows.iter()
        .map(|r| {
            Ok(RawCheckpoint {
                seq: r.try_get("seq")?,
                head_hash: r.try_get("head_hash")?,
                signature: r.try_get("signature")?,
                certificate: r.try_get("certificate")?,
            })
        })
        .collect()
}

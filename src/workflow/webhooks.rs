//! Webhooks to the submitting application on completed / rejected / cancelled documents:
//! queued in the same transaction as the change, delivered by a background worker with
//! exponential backoff, every attempt recorded, so deliveries survive a restart.

use super::documents::DocumentView;
use super::{Workflow, WorkflowError, random_token};
use sqlx::Row;
use std::time::Duration;

/// Attempts before a webhook is given up (about 9 hours of backoff in all).
pub const MAX_ATTEMPTS: i64 = 16;

/// Backoff before attempt `n` (n ≥ 1): 1 s, 2 s, 4 s … capped at 1 hour.
pub fn backoff_ms(n: i64) -> i64 {
    (1000i64 << n.clamp(0, 12)).min(3_600_000)
}

/// `sha256=<hex HMAC-SHA256 of the body with the application's secret>`.
pub fn signature_header(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    format!(
        "sha256={}",
        tag.as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

impl Workflow {
    /// Queue a webhook for `doc` inside the transaction that changes it.
    pub async fn enqueue_webhook(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        doc: &DocumentView,
        event: &str,
    ) -> Result<(), WorkflowError> {
        let Some(url) = &doc.callback_url else {
            return Ok(());
        };
        let status = match event {
            "document.completed" => "completed",
            "document.rejected" => "rejected",
            "document.revoked" => "revoked",
            _ => "cancelled",
        };
        let body = serde_json::json!({
            "event": event,
            "document": {
                "id": doc.id, "status": status, "title": doc.title, "letter_number": doc.letter_number,
                "external_ref": doc.external_ref, "verification_code": doc.verification_code,
                "verification_url": doc.verification_url,
            },
        });
        let now = self.now_ms();
        sqlx::query("INSERT INTO webhooks (id, document_id, app_id, url, event, body, status, attempts, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7)")
            .bind(random_token(12)).bind(&doc.id).bind(&doc.app_id).bind(url).bind(event).bind(body.to_string()).bind(now)
            .execute(&mut **tx).await?;
        Ok(())
    }

    /// Deliver the webhooks that are due; returns how many were attempted.
    ///
    /// Each is claimed first by moving its next attempt into the future (a lease), so several
    /// instances never deliver the same attempt twice.
    pub async fn deliver_due_webhooks(
        &self,
        client: &reqwest::Client,
    ) -> Result<usize, WorkflowError> {
        let now = self.now_ms();
        let due = sqlx::query("SELECT id, app_id, url, body, attempts, next_attempt_at FROM webhooks WHERE status = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT 20")
            .bind(now).fetch_all(&self.db.pool).await?;
        let mut attempted = 0;
        for row in due {
            let id: String = row.try_get("id")?;
            let attempts: i64 = row.try_get("attempts")?;
            let next: i64 = row.try_get("next_attempt_at")?;
            let claimed = sqlx::query("UPDATE webhooks SET next_attempt_at = $1 WHERE id = $2 AND next_attempt_at = $3 AND status = 'pending'")
                .bind(now + 60_000).bind(&id).bind(next).execute(&self.db.pool).await?.rows_affected();
            if claimed != 1 {
                continue;
            }
            attempted += 1;
            let app = self.app_by_id(&row.try_get::<String, _>("app_id")?).await?;
            let url: String = row.try_get("url")?;
            let body: String = row.try_get("body")?;
            let result = client
                .post(&url)
                .header("Content-Type", "application/json")
                .header(
                    "X-Segel-Signature",
                    signature_header(&app.webhook_secret, body.as_bytes()),
                )
                .header("X-Segel-Delivery", &id)
                .timeout(Duration::from_secs(10))
                .body(body)
                .send()
                .await;
            let (code, error) = match &result {
                Ok(r) => (
                    Some(i64::from(r.status().as_u16())),
                    (!r.status().is_success()).then(|| format!("HTTP {}", r.status())),
                ),
                Err(e) => (None, Some(e.to_string())),
            };
            let n = attempts + 1;
            let done = error.is_none();
            let status = if done {
                "delivered"
            } else if n >= MAX_ATTEMPTS {
                "failed"
            } else {
                "pending"
            };
            let mut tx = self.db.begin_write().await?;
            sqlx::query("INSERT INTO webhook_attempts (webhook_id, n, at, status_code, error) VALUES ($1, $2, $3, $4, $5)")
                .bind(&id).bind(n).bind(self.now_ms()).bind(code).bind(error.clone()).execute(&mut *tx).await?;
            sqlx::query("UPDATE webhooks SET attempts = $1, status = $2, next_attempt_at = $3 WHERE id = $4")
                .bind(n).bind(status).bind(self.now_ms() + backoff_ms(n)).bind(&id).execute(&mut *tx).await?;
            tx.commit().await?;
            metrics::counter!("segel_webhook_attempts_total", "result" => if done { "ok" } else { "error" }).increment(1);
        }
        Ok(attempted)
    }

    /// Every attempt of every webhook of a document, for the document's history.
    pub async fn webhook_attempts(
        &self,
        doc_id: &str,
    ) -> Result<Vec<serde_json::Value>, WorkflowError> {
        let rows = sqlx::query("SELECT w.id, w.event, w.status, a.n, a.at, a.status_code, a.error FROM webhooks w LEFT JOIN webhook_attempts a ON a.webhook_id = w.id WHERE w.document_id = $1 ORDER BY w.created_at, a.n")
            .bind(doc_id).fetch_all(&self.db.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(serde_json::json!({
                    "webhook": r.try_get::<String, _>("id")?, "event": r.try_get::<String, _>("event")?,
                    "status": r.try_get::<String, _>("status")?, "attempt": r.try_get::<Option<i64>, _>("n")?,
                    "at": r.try_get::<Option<i64>, _>("at")?, "status_code": r.try_get::<Option<i64>, _>("status_code")?,
                    "error": r.try_get::<Option<String>, _>("error")?,
                }))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(WorkflowError::from)
    }
}

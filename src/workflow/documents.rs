//! Documents and their steps: submit, read, approve (paraf, then the final signature),
//! reject, cancel, seal; the public record behind a verification code.

use super::accounts::{App, Official};
use super::{Workflow, WorkflowError, random_token, sha256_hex};
use crate::keys::Signer;
use crate::keys::keystore::Passphrase;
use crate::pdf::sign::{SignRequest, sign_pdf};
use crate::pdf::{ParsedPdf, Placement, StampText, Visibility};
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Paraf,
    Sign,
}

/// Where a step's stamp goes: a page rectangle, an anchor text, or nowhere (invisible).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PlacementSpec {
    Rect {
        page: u32,
        rect: [f32; 4],
    },
    Anchor {
        anchor: String,
        #[serde(default)]
        width: Option<f32>,
        #[serde(default)]
        height: Option<f32>,
    },
    Invisible {
        invisible: bool,
    },
}

impl PlacementSpec {
    fn to_placement(&self) -> Option<Placement> {
        match self {
            PlacementSpec::Rect { page, rect } => Some(Placement::Rect {
                page: *page,
                rect: *rect,
            }),
            PlacementSpec::Anchor {
                anchor,
                width,
                height,
            } => Some(Placement::Anchor {
                text: anchor.clone(),
                size: match (width, height) {
                    (Some(w), Some(h)) => Some((*w, *h)),
                    _ => None,
                },
            }),
            PlacementSpec::Invisible { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Username or NIP of the official.
    pub official: String,
    pub action: Action,
    #[serde(default)]
    pub placement: Option<PlacementSpec>,
}

/// The `metadata` part of a submission.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitMeta {
    pub title: String,
    pub letter_number: String,
    #[serde(default)]
    pub external_ref: Option<String>,
    pub steps: Vec<StepSpec>,
    #[serde(default)]
    pub callback_url: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepView {
    pub n: i64,
    pub official: String,
    pub official_name: String,
    pub action: String,
    pub status: String,
    pub acted_at: Option<i64>,
    pub reason: Option<String>,
    #[serde(skip)]
    pub official_id: String,
    #[serde(skip)]
    pub placement: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DocumentView {
    pub id: String,
    pub status: String,
    pub title: String,
    pub letter_number: String,
    pub external_ref: Option<String>,
    pub verification_code: String,
    pub verification_url: String,
    pub original_sha256: String,
    pub current_sha256: String,
    pub signed_sha256: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// When and why the submitting application revoked the completed letter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation_reason: Option<String>,
    pub steps: Vec<StepView>,
    #[serde(skip)]
    pub app_id: String,
    #[serde(skip)]
    pub version: i64,
    #[serde(skip)]
    pub callback_url: Option<String>,
}

/// The public record behind a verification code.
#[derive(Debug, Clone, Serialize)]
pub struct PublicRecord {
    pub verification_code: String,
    pub title: String,
    pub letter_number: String,
    /// `valid` (completed), `revoked` (completed, then revoked by the submitting
    /// application), `rejected`, `cancelled` or `in_review`.
    pub status: String,
    pub signed_sha256: Option<String>,
    pub signers: Vec<PublicSigner>,
    /// When the letter was revoked (epoch ms) and why; absent unless revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PublicSigner {
    pub name: String,
    pub title: String,
    pub action: String,
    pub signed_at: Option<i64>,
}

/// Which stored version of a document to download.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    Original,
    Current,
    Signed,
}

fn initials(name: &str) -> String {
    name.split_whitespace()
        .filter(|w| w.chars().next().is_some_and(char::is_uppercase) && !w.ends_with('.'))
        .filter_map(|w| w.chars().next())
        .take(3)
        .collect()
}

/// A placement lands on the document: its page exists and its rectangle has an area, or its
/// anchor text is found. `what` names it in the error.
fn check_placement(
    parsed: &ParsedPdf,
    placement: Option<&Placement>,
    what: &str,
) -> Result<(), WorkflowError> {
    match placement {
        Some(Placement::Rect { page, rect }) => {
            let pages = parsed.pages().len();
            if *page == 0 || *page as usize > pages {
                return Err(WorkflowError::invalid(
                    "invalid_placement",
                    format!("{what}: page {page} does not exist ({pages} pages)"),
                ));
            }
            if !(rect[2] > 0.0 && rect[3] > 0.0) {
                return Err(WorkflowError::invalid(
                    "invalid_placement",
                    format!("{what}: the rectangle needs a positive width and height"),
                ));
            }
        }
        Some(Placement::Anchor { text, .. }) => {
            if crate::pdf::anchor::find_anchor(parsed, text).is_none() {
                return Err(WorkflowError::invalid(
                    "invalid_placement",
                    format!("{what}: anchor {text:?} not found"),
                ));
            }
        }
        None => {}
    }
    Ok(())
}

impl Workflow {
    pub fn verification_url(&self, code: &str) -> String {
        format!("{}/v/{code}", self.cfg.public_url.trim_end_matches('/'))
    }

    /// Check placements against the PDF now, so a bad step fails the submission, not the approval.
    fn check_placements(&self, pdf: &[u8], steps: &[StepSpec]) -> Result<(), WorkflowError> {
        let parsed = ParsedPdf::parse_lean(pdf)?;
        if parsed.docmdp_permission()?.is_some() {
            return Err(WorkflowError::invalid(
                "document_locked",
                "the document is certified; Segel adds paraf and signature fields, which certification forbids",
            ));
        }
        for (i, s) in steps.iter().enumerate() {
            let placement = s.placement.as_ref().and_then(PlacementSpec::to_placement);
            check_placement(&parsed, placement.as_ref(), &format!("step {}", i + 1))?;
        }
        Ok(())
    }

    /// That `pdf` can be read and `placement` (if any) lands on it: checked for every file of
    /// a request before the key is unlocked, so that a bad file fails the request before any
    /// file of it is signed.
    pub fn check_signable(
        &self,
        pdf: &[u8],
        placement: Option<&Placement>,
        what: &str,
    ) -> Result<(), WorkflowError> {
        let parsed = ParsedPdf::parse_lean(pdf)?;
        check_placement(&parsed, placement, what)
    }

    /// Register a document with its steps.
    pub async fn submit(
        &self,
        app: &App,
        pdf: Vec<u8>,
        meta: SubmitMeta,
    ) -> Result<DocumentView, WorkflowError> {
        if meta.title.trim().is_empty() || meta.letter_number.trim().is_empty() {
            return Err(WorkflowError::invalid(
                "invalid_metadata",
                "title and letter_number are required",
            ));
        }
        if meta.steps.is_empty() || meta.steps.len() > 20 {
            return Err(WorkflowError::invalid(
                "invalid_steps",
                "give 1 to 20 steps",
            ));
        }
        let signs = meta
            .steps
            .iter()
            .filter(|s| s.action == Action::Sign)
            .count();
        if signs != 1 || meta.steps.last().map(|s| s.action) != Some(Action::Sign) {
            return Err(WorkflowError::invalid(
                "invalid_steps",
                "exactly one final `sign` step is required, after the paraf steps",
            ));
        }
        if let Some(url) = &meta.callback_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(WorkflowError::invalid(
                    "invalid_callback_url",
                    "callback_url must be an http(s) URL",
                ));
            }
        }
        let mut officials = Vec::new();
        for (i, s) in meta.steps.iter().enumerate() {
            let o = match self.official_by("username", &s.official).await {
                Ok(o) => o,
                Err(_) => self.official_by("nip", &s.official).await.map_err(|_| {
                    WorkflowError::invalid(
                        "unknown_official",
                        format!("step {}: no official {:?}", i + 1, s.official),
                    )
                })?,
            };
            officials.push(o);
        }
        self.check_placements(&pdf, &meta.steps)?;
        let sha = {
            let blobs = self.blobs.clone();
            tokio::task::spawn_blocking(move || blobs.put(&pdf))
                .await
                .map_err(|e| WorkflowError::Internal(e.to_string()))??
        };
        let id = random_token(12);
        let code = random_token(16);
        let now = self.now_ms();
        let mut tx = self.db.begin_write().await?;
        sqlx::query("INSERT INTO documents (id, app_id, title, letter_number, external_ref, status, verification_code, original_sha256, current_sha256, signed_sha256, callback_url, version, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'in_review', $6, $7, $7, NULL, $8, 1, $9, $9)")
            .bind(&id).bind(&app.id).bind(&meta.title).bind(&meta.letter_number).bind(meta.external_ref.clone()).bind(&code).bind(&sha).bind(meta.callback_url.clone()).bind(now)
            .execute(&mut *tx).await?;
        for (i, (s, o)) in meta.steps.iter().zip(&officials).enumerate() {
            let placement = serde_json::to_string(&s.placement).unwrap_or_else(|_| "null".into());
            sqlx::query("INSERT INTO steps (document_id, n, official_id, action, placement, status, acted_at, reason) VALUES ($1, $2, $3, $4, $5, 'pending', NULL, NULL)")
                .bind(&id).bind(i as i64 + 1).bind(&o.id).bind(if s.action == Action::Sign { "sign" } else { "paraf" }).bind(placement)
                .execute(&mut *tx).await?;
        }
        self.audit(&mut tx, &app.actor(), "document.submitted", Some(&id), serde_json::json!({
            "title": meta.title, "letter_number": meta.letter_number, "sha256": sha,
            "steps": meta.steps.iter().zip(&officials).map(|(s, o)| serde_json::json!({"official": o.username, "action": s.action})).collect::<Vec<_>>(),
        })).await?;
        tx.commit().await?;
        self.after_commit().await;
        metrics::counter!("segel_documents_submitted_total").increment(1);
        self.document(&id).await
    }

    pub async fn document(&self, id: &str) -> Result<DocumentView, WorkflowError> {
        let row = sqlx::query("SELECT id, app_id, title, letter_number, external_ref, status, verification_code, original_sha256, current_sha256, signed_sha256, callback_url, version, created_at, updated_at, revoked_at, revocation_reason FROM documents WHERE id = $1")
            .bind(id).fetch_optional(&self.db.pool).await?
            .ok_or_else(|| WorkflowError::NotFound(format!("no document {id:?}")))?;
        let steps = sqlx::query("SELECT s.n, s.official_id, s.action, s.placement, s.status, s.acted_at, s.reason, o.username, o.name FROM steps s JOIN officials o ON o.id = s.official_id WHERE s.document_id = $1 ORDER BY s.n")
            .bind(id).fetch_all(&self.db.pool).await?
            .iter()
            .map(|r| -> Result<StepView, sqlx::Error> {
                Ok(StepView {
                    n: r.try_get("n")?,
                    official: r.try_get("username")?,
                    official_name: r.try_get("name")?,
                    action: r.try_get("action")?,
                    status: r.try_get("status")?,
                    acted_at: r.try_get("acted_at")?,
                    reason: r.try_get("reason")?,
                    official_id: r.try_get("official_id")?,
                    placement: r.try_get("placement")?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let code: String = row.try_get("verification_code")?;
        Ok(DocumentView {
            id: row.try_get("id")?,
            status: row.try_get("status")?,
            title: row.try_get("title")?,
            letter_number: row.try_get("letter_number")?,
            external_ref: row.try_get("external_ref")?,
            verification_url: self.verification_url(&code),
            verification_code: code,
            original_sha256: row.try_get("original_sha256")?,
            current_sha256: row.try_get("current_sha256")?,
            signed_sha256: row.try_get("signed_sha256")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            revoked_at: row.try_get("revoked_at")?,
            revocation_reason: row.try_get("revocation_reason")?,
            steps,
            app_id: row.try_get("app_id")?,
            version: row.try_get("version")?,
            callback_url: row.try_get("callback_url")?,
        })
    }

    /// A document of `app` (others are 404, not 403, so ids do not leak).
    pub async fn app_document(&self, app: &App, id: &str) -> Result<DocumentView, WorkflowError> {
        let d = self.document(id).await?;
        if d.app_id != app.id {
            return Err(WorkflowError::NotFound(format!("no document {id:?}")));
        }
        Ok(d)
    }

    pub async fn file(
        &self,
        doc: &DocumentView,
        version: Version,
    ) -> Result<Vec<u8>, WorkflowError> {
        let sha = match version {
            Version::Original => doc.original_sha256.clone(),
            Version::Current => doc.current_sha256.clone(),
            Version::Signed => doc
                .signed_sha256
                .clone()
                .ok_or_else(|| WorkflowError::Conflict("the document is not signed yet".into()))?,
        };
        let blobs = self.blobs.clone();
        Ok(tokio::task::spawn_blocking(move || blobs.get(&sha))
            .await
            .map_err(|e| WorkflowError::Internal(e.to_string()))??)
    }

    /// Documents whose next pending step is this official's.
    pub async fn inbox(&self, official: &Official) -> Result<Vec<DocumentView>, WorkflowError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT s.document_id FROM steps s JOIN documents d ON d.id = s.document_id \
             WHERE s.official_id = $1 AND s.status = 'pending' AND d.status = 'in_review' \
             AND NOT EXISTS (SELECT 1 FROM steps p WHERE p.document_id = s.document_id AND p.n < s.n AND p.status <> 'done') \
             ORDER BY d.created_at",
        )
        .bind(&official.id).fetch_all(&self.db.pool).await?;
        let mut out = Vec::new();
        for id in ids {
            out.push(self.document(&id).await?);
        }
        Ok(out)
    }

    /// The step `n` of `doc` if `official` may act on it now.
    fn actionable<'a>(
        &self,
        doc: &'a DocumentView,
        n: i64,
        official: &Official,
    ) -> Result<&'a StepView, WorkflowError> {
        let step = doc
            .steps
            .iter()
            .find(|s| s.n == n)
            .ok_or_else(|| WorkflowError::NotFound(format!("no step {n}")))?;
        if step.official_id != official.id {
            return Err(WorkflowError::NotAssigned(format!(
                "step {n} is assigned to another official"
            )));
        }
        if doc.status != "in_review" {
            return Err(WorkflowError::Conflict(format!(
                "the document is {}",
                doc.status
            )));
        }
        if step.status != "pending" {
            return Err(WorkflowError::Conflict(format!(
                "step {n} is already {}",
                step.status
            )));
        }
        if doc.steps.iter().any(|s| s.n < n && s.status != "done") {
            return Err(WorkflowError::Conflict(format!(
                "earlier steps of the document are not done yet"
            )));
        }
        Ok(step)
    }

    /// Apply step `n`'s signature with the official's unlocked key.
    pub async fn approve_with(
        &self,
        official: &Official,
        signer: std::sync::Arc<dyn Signer>,
        doc_id: &str,
        n: i64,
    ) -> Result<DocumentView, WorkflowError> {
        let doc = self.document(doc_id).await?;
        let step = self.actionable(&doc, n, official)?.clone();
        let input = self.file(&doc, Version::Current).await?;
        let placement: Option<PlacementSpec> =
            serde_json::from_str(&step.placement).unwrap_or(None);
        let placement = placement.as_ref().and_then(PlacementSpec::to_placement);
        let final_step = step.action == "sign";
        let visibility = match (final_step, placement) {
            (true, placement) => Visibility::Stamp {
                placement: placement.unwrap_or(Placement::Anchor {
                    text: "${ttd}".into(),
                    size: None,
                }),
                text: StampText {
                    name: official.name.clone(),
                    title: Some(official.title.clone()).filter(|t| !t.is_empty()),
                    signer_id: Some(official.nip.clone()).filter(|t| !t.is_empty()),
                    time_text: String::new(),
                    qr_url: Some(self.verification_url(&doc.verification_code)),
                    issuer_org: issuer_org(signer.certificate_chain()),
                },
            },
            (false, Some(placement)) => Visibility::Initials {
                placement,
                initials: initials(&official.name),
            },
            (false, None) => Visibility::Invisible,
        };
        let zone = self.zone.clone();
        let clock = self.clock.clone();
        let tsa = self.tsa.clone();
        let reason = if final_step {
            format!("Ditandatangani: {}", doc.letter_number)
        } else {
            format!("Paraf: {}", doc.letter_number)
        };
        let name = official.name.clone();
        let signed = tokio::task::spawn_blocking(move || {
            let req = SignRequest {
                field_name: Some(format!("{}{n}", if final_step { "TTD" } else { "Paraf" })),
                reason: Some(reason),
                location: None,
                contact_info: None,
                signer_name: Some(name),
                visibility,
                certify: None,
                timestamper: Some(tsa.as_ref()),
                zone,
            };
            sign_pdf(input, signer.as_ref(), &req, clock.as_ref())
        })
        .await
        .map_err(|e| WorkflowError::Internal(e.to_string()))??;
        let bytes = signed.bytes;
        let sha = {
            let blobs = self.blobs.clone();
            tokio::task::spawn_blocking(move || blobs.put(&bytes))
                .await
                .map_err(|e| WorkflowError::Internal(e.to_string()))??
        };
        let now = self.now_ms();
        let status = if final_step { "completed" } else { "in_review" };
        let mut tx = self.db.begin_write().await?;
        // Optimistic concurrency: only the approval that still sees the version it read wins.
        let updated = sqlx::query("UPDATE documents SET current_sha256 = $1, signed_sha256 = $2, status = $3, version = version + 1, updated_at = $4 WHERE id = $5 AND version = $6 AND status = 'in_review'")
            .bind(&sha).bind(if final_step { Some(sha.clone()) } else { None }).bind(status).bind(now).bind(doc_id).bind(doc.version)
            .execute(&mut *tx).await?.rows_affected();
        if updated != 1 {
            return Err(WorkflowError::Conflict(
                "the document changed while this approval was being signed; nothing was applied"
                    .into(),
            ));
        }
        let updated = sqlx::query("UPDATE steps SET status = 'done', acted_at = $1 WHERE document_id = $2 AND n = $3 AND status = 'pending'")
            .bind(now).bind(doc_id).bind(n).execute(&mut *tx).await?.rows_affected();
        if updated != 1 {
            return Err(WorkflowError::Conflict(format!(
                "step {n} was already acted on"
            )));
        }
        self.audit(
            &mut tx,
            &official.actor(),
            if final_step {
                "document.signed"
            } else {
                "document.paraf"
            },
            Some(doc_id),
            serde_json::json!({
                "step": n, "sha256": sha, "field": signed.field_name,
            }),
        )
        .await?;
        if final_step {
            self.enqueue_webhook(&mut tx, &doc, "document.completed")
                .await?;
        }
        tx.commit().await?;
        self.after_commit().await;
        metrics::counter!("segel_signatures_total", "kind" => if final_step { "sign" } else { "paraf" }).increment(1);
        self.document(doc_id).await
    }

    /// Unlock the official's key and approve step `n`.
    pub async fn approve(
        &self,
        official: &Official,
        doc_id: &str,
        n: i64,
        passphrase: Passphrase,
    ) -> Result<DocumentView, WorkflowError> {
        // Refuse early (no Argon2 work) when the step cannot be approved.
        let doc = self.document(doc_id).await?;
        self.actionable(&doc, n, official)?;
        let signer = self.unlock_key(official, passphrase, false).await?;
        self.approve_with(official, signer, doc_id, n).await
    }

    /// Approve the current step of each document with one passphrase entry.
    pub async fn approve_batch(
        &self,
        official: &Official,
        ids: &[String],
        passphrase: Passphrase,
    ) -> Result<Vec<serde_json::Value>, WorkflowError> {
        let signer: std::sync::Arc<dyn Signer> =
            self.unlock_key(official, passphrase, false).await?;
        let mut results = Vec::new();
        for id in ids {
            let step = match self.document(id).await {
                Ok(d) => d.steps.iter().find(|s| s.status == "pending").map(|s| s.n),
                Err(e) => {
                    results
                        .push(serde_json::json!({"id": id, "ok": false, "error": e.to_string()}));
                    continue;
                }
            };
            let r = match step {
                Some(n) => self
                    .approve_with(official, signer.clone(), id, n)
                    .await
                    .map(|d| d.status),
                None => Err(WorkflowError::Conflict("no pending step".into())),
            };
            results.push(match r {
                Ok(status) => serde_json::json!({"id": id, "ok": true, "status": status}),
                Err(e) => serde_json::json!({"id": id, "ok": false, "error": e.to_string()}),
            });
        }
        Ok(results)
    }

    pub async fn reject(
        &self,
        official: &Official,
        doc_id: &str,
        n: i64,
        reason: &str,
    ) -> Result<DocumentView, WorkflowError> {
        if reason.trim().is_empty() {
            return Err(WorkflowError::invalid(
                "reason_required",
                "a rejection needs a reason",
            ));
        }
        let doc = self.document(doc_id).await?;
        self.actionable(&doc, n, official)?;
        let now = self.now_ms();
        let mut tx = self.db.begin_write().await?;
        let updated = sqlx::query("UPDATE documents SET status = 'rejected', version = version + 1, updated_at = $1 WHERE id = $2 AND version = $3 AND status = 'in_review'")
            .bind(now).bind(doc_id).bind(doc.version).execute(&mut *tx).await?.rows_affected();
        if updated != 1 {
            return Err(WorkflowError::Conflict(
                "the document changed meanwhile".into(),
            ));
        }
        sqlx::query("UPDATE steps SET status = 'rejected', acted_at = $1, reason = $2 WHERE document_id = $3 AND n = $4")
            .bind(now).bind(reason).bind(doc_id).bind(n).execute(&mut *tx).await?;
        self.audit(
            &mut tx,
            &official.actor(),
            "document.rejected",
            Some(doc_id),
            serde_json::json!({"step": n, "reason": reason}),
        )
        .await?;
        self.enqueue_webhook(&mut tx, &doc, "document.rejected")
            .await?;
        tx.commit().await?;
        self.after_commit().await;
        self.document(doc_id).await
    }

    pub async fn cancel(&self, app: &App, doc_id: &str) -> Result<DocumentView, WorkflowError> {
        let doc = self.app_document(app, doc_id).await?;
        if doc.status != "in_review" {
            return Err(WorkflowError::Conflict(format!(
                "a {} document cannot be cancelled",
                doc.status
            )));
        }
        let mut tx = self.db.begin_write().await?;
        let updated = sqlx::query("UPDATE documents SET status = 'cancelled', version = version + 1, updated_at = $1 WHERE id = $2 AND version = $3")
            .bind(self.now_ms()).bind(doc_id).bind(doc.version).execute(&mut *tx).await?.rows_affected();
        if updated != 1 {
            return Err(WorkflowError::Conflict(
                "the document changed meanwhile".into(),
            ));
        }
        self.audit(
            &mut tx,
            &app.actor(),
            "document.cancelled",
            Some(doc_id),
            serde_json::json!({}),
        )
        .await?;
        self.enqueue_webhook(&mut tx, &doc, "document.cancelled")
            .await?;
        tx.commit().await?;
        self.after_commit().await;
        self.document(doc_id).await
    }

    /// Sign at once with the organisation seal (no approval) and register the letter.
    pub async fn seal(
        &self,
        app: &App,
        pdf: Vec<u8>,
        title: &str,
        letter_number: &str,
        placement: Option<PlacementSpec>,
    ) -> Result<(DocumentView, Vec<u8>), WorkflowError> {
        let id = random_token(12);
        let code = random_token(16);
        let original = sha256_hex(&pdf);
        let seal = self.seal.clone();
        let clock = self.clock.clone();
        let qr = self.verification_url(&code);
        let placement = placement.as_ref().and_then(PlacementSpec::to_placement);
        let (org, _) = subject_cn_org(seal.certificate_chain());
        let issuer = issuer_org(seal.certificate_chain());
        let blobs = self.blobs.clone();
        let signed = tokio::task::spawn_blocking(move || {
            let visibility = match placement {
                Some(p) => Visibility::Stamp {
                    placement: p,
                    text: StampText {
                        name: org.clone().unwrap_or_default(),
                        title: Some("Segel elektronik".into()),
                        signer_id: None,
                        time_text: String::new(),
                        qr_url: Some(qr),
                        issuer_org: issuer,
                    },
                },
                None => Visibility::Invisible,
            };
            let req = SignRequest {
                field_name: Some("Segel".into()),
                reason: Some("Segel elektronik".into()),
                signer_name: org,
                visibility,
                ..Default::default()
            };
            let signed = sign_pdf(pdf, seal.as_ref(), &req, clock.as_ref())?;
            // Stored (and flushed) in the same blocking task: one hand-off per letter.
            let sha = blobs.put(&signed.bytes)?;
            Ok::<_, WorkflowError>((signed.bytes, sha))
        })
        .await
        .map_err(|e| WorkflowError::Internal(e.to_string()))??;
        let (bytes, sha) = signed;
        let record = super::batcher::SealRecord {
            id: id.clone(),
            app_id: app.id.clone(),
            app_name: app.name.clone(),
            title: title.to_string(),
            letter_number: letter_number.to_string(),
            code,
            original_sha256: original,
            signed_sha256: sha,
            at: self.now_ms(),
        };
        // The view is what was just committed; reading it back would cost a query per letter.
        let view = DocumentView {
            id: record.id.clone(),
            status: "completed".into(),
            title: record.title.clone(),
            letter_number: record.letter_number.clone(),
            external_ref: None,
            verification_url: self.verification_url(&record.code),
            verification_code: record.code.clone(),
            original_sha256: record.original_sha256.clone(),
            current_sha256: record.signed_sha256.clone(),
            signed_sha256: Some(record.signed_sha256.clone()),
            created_at: record.at,
            updated_at: record.at,
            revoked_at: None,
            revocation_reason: None,
            steps: Vec::new(),
            app_id: record.app_id.clone(),
            version: 1,
            callback_url: None,
        };
        self.seals
            .record(record)
            .await
            .map_err(WorkflowError::Internal)?;
        metrics::counter!("segel_signatures_total", "kind" => "seal").increment(1);
        Ok((view, bytes))
    }

    /// Start a batch seal job over `files`; progress is in the `jobs` table. The job runs in
    /// the background; each letter is sealed and recorded like `POST /api/v1/seal`.
    pub async fn start_seal_batch(
        self: &std::sync::Arc<Self>,
        app: &App,
        files: Vec<Vec<u8>>,
        title: String,
        letter_number: String,
    ) -> Result<serde_json::Value, WorkflowError> {
        if files.is_empty() || files.len() > 1000 {
            return Err(WorkflowError::invalid(
                "invalid_batch",
                "give 1 to 1000 files",
            ));
        }
        let id = random_token(12);
        let now = self.now_ms();
        let total = files.len() as i64;
        let mut tx = self.db.begin_write().await?;
        sqlx::query("INSERT INTO jobs (id, app_id, total, done, failed, status, results, created_at, updated_at) VALUES ($1, $2, $3, 0, 0, 'running', '[]', $4, $4)")
            .bind(&id).bind(&app.id).bind(total).bind(now).execute(&mut *tx).await?;
        self.audit(
            &mut tx,
            &app.actor(),
            "seal.batch_started",
            None,
            serde_json::json!({"job": id, "files": total}),
        )
        .await?;
        tx.commit().await?;
        let wf = self.clone();
        let app = app.clone();
        let job = id.clone();
        tokio::spawn(async move {
            let mut results = Vec::new();
            let (mut done, mut failed) = (0i64, 0i64);
            for (i, pdf) in files.into_iter().enumerate() {
                let number = if letter_number.is_empty() {
                    format!("{}", i + 1)
                } else {
                    format!("{letter_number}/{}", i + 1)
                };
                match wf.seal(&app, pdf, &title, &number, None).await {
                    Ok((doc, _)) => {
                        done += 1;
                        results.push(serde_json::json!({"index": i, "ok": true, "document_id": doc.id, "verification_url": doc.verification_url}));
                    }
                    Err(e) => {
                        failed += 1;
                        results.push(
                            serde_json::json!({"index": i, "ok": false, "error": e.to_string()}),
                        );
                    }
                }
                let status = if (done + failed) == total {
                    "finished"
                } else {
                    "running"
                };
                // Only while still running: a job another instance declared interrupted (and
                // audited as such) stays interrupted, and this one stops sealing.
                let r = sqlx::query("UPDATE jobs SET done = $1, failed = $2, status = $3, results = $4, updated_at = $5 WHERE id = $6 AND status = 'running'")
                    .bind(done).bind(failed).bind(status).bind(serde_json::Value::Array(results.clone()).to_string()).bind(wf.now_ms()).bind(&job)
                    .execute(&wf.db.pool).await;
                match r {
                    Ok(r) if r.rows_affected() == 0 => {
                        tracing::warn!(job, "batch job no longer running; stopping");
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, job, "batch progress not recorded"),
                }
            }
        });
        Ok(serde_json::json!({"job_id": id, "status": "running", "total": total}))
    }

    /// Progress of a batch seal job of `app`.
    pub async fn seal_batch(
        &self,
        app: &App,
        id: &str,
    ) -> Result<serde_json::Value, WorkflowError> {
        let row = sqlx::query(
            "SELECT app_id, total, done, failed, status, results FROM jobs WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await?
        .ok_or_else(|| WorkflowError::NotFound(format!("no job {id:?}")))?;
        if row.try_get::<String, _>("app_id")? != app.id {
            return Err(WorkflowError::NotFound(format!("no job {id:?}")));
        }
        let results: serde_json::Value =
            serde_json::from_str(&row.try_get::<String, _>("results")?).unwrap_or_default();
        Ok(serde_json::json!({
            "job_id": id, "status": row.try_get::<String, _>("status")?, "total": row.try_get::<i64, _>("total")?,
            "done": row.try_get::<i64, _>("done")?, "failed": row.try_get::<i64, _>("failed")?, "results": results,
        }))
    }

    /// Sign at once as `official` (BSrE-compatible API) and register the completed letter.
    #[allow(clippy::too_many_arguments)]
    pub async fn sign_direct(
        &self,
        app: &App,
        official: &Official,
        signer: std::sync::Arc<dyn Signer>,
        pdf: Vec<u8>,
        mut visibility: Visibility,
        reason: Option<String>,
        location: Option<String>,
    ) -> Result<(DocumentView, Vec<u8>), WorkflowError> {
        let id = random_token(12);
        let code = random_token(16);
        let original = sha256_hex(&pdf);
        if let Visibility::Stamp { text, .. } = &mut visibility {
            text.qr_url
                .get_or_insert_with(|| self.verification_url(&code));
            if text.issuer_org.is_none() {
                text.issuer_org = issuer_org(signer.certificate_chain());
            }
        }
        let (zone, clock, name) = (self.zone.clone(), self.clock.clone(), official.name.clone());
        // Time-stamped (PAdES B-T) like an approval's signature.
        let tsa = self.tsa.clone();
        let signed = tokio::task::spawn_blocking(move || {
            let req = SignRequest {
                reason,
                location,
                signer_name: Some(name),
                visibility,
                timestamper: Some(tsa.as_ref()),
                zone,
                ..Default::default()
            };
            sign_pdf(pdf, signer.as_ref(), &req, clock.as_ref())
        })
        .await
        .map_err(|e| WorkflowError::Internal(e.to_string()))??;
        let bytes = signed.bytes;
        let blobs = self.blobs.clone();
        let stored = bytes.clone();
        let sha = tokio::task::spawn_blocking(move || blobs.put(&stored))
            .await
            .map_err(|e| WorkflowError::Internal(e.to_string()))??;
        let now = self.now_ms();
        let mut tx = self.db.begin_write().await?;
        sqlx::query("INSERT INTO documents (id, app_id, title, letter_number, external_ref, status, verification_code, original_sha256, current_sha256, signed_sha256, callback_url, version, created_at, updated_at) VALUES ($1, $2, $3, $4, NULL, 'completed', $5, $6, $7, $7, NULL, 1, $8, $8)")
            .bind(&id).bind(&app.id).bind("(signed through the BSrE-compatible API)").bind("-").bind(&code).bind(&original).bind(&sha).bind(now)
            .execute(&mut *tx).await?;
        sqlx::query("INSERT INTO steps (document_id, n, official_id, action, placement, status, acted_at, reason) VALUES ($1, 1, $2, 'sign', 'null', 'done', $3, NULL)")
            .bind(&id).bind(&official.id).bind(now).execute(&mut *tx).await?;
        self.audit(
            &mut tx,
            &official.actor(),
            "document.signed",
            Some(&id),
            serde_json::json!({"sha256": sha, "via": "bsre-v2", "app": app.name}),
        )
        .await?;
        tx.commit().await?;
        self.after_commit().await;
        metrics::counter!("segel_signatures_total", "kind" => "bsre").increment(1);
        Ok((self.document(&id).await?, bytes))
    }

    /// Revoke a completed letter on behalf of the application that submitted it: the record
    /// then shows it as revoked, with the reason and time. Audited in the same transaction;
    /// the `document.revoked` webhook goes to the callback URL, if any.
    pub async fn revoke(
        &self,
        app: &App,
        doc_id: &str,
        reason: &str,
    ) -> Result<DocumentView, WorkflowError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(WorkflowError::invalid(
                "reason_required",
                "a revocation needs a reason",
            ));
        }
        if reason.chars().count() > 1000 {
            return Err(WorkflowError::invalid(
                "reason_too_long",
                "the reason may have at most 1000 characters",
            ));
        }
        let doc = self.app_document(app, doc_id).await?;
        if doc.status != "completed" {
            return Err(WorkflowError::Conflict(format!(
                "a {} document cannot be revoked; only completed letters can",
                doc.status
            )));
        }
        let now = self.now_ms();
        let mut tx = self.db.begin_write().await?;
        let updated = sqlx::query("UPDATE documents SET status = 'revoked', revoked_at = $1, revocation_reason = $2, version = version + 1, updated_at = $1 WHERE id = $3 AND version = $4 AND status = 'completed'")
            .bind(now).bind(reason).bind(doc_id).bind(doc.version).execute(&mut *tx).await?.rows_affected();
        if updated != 1 {
            return Err(WorkflowError::Conflict(
                "the document changed meanwhile".into(),
            ));
        }
        self.audit(
            &mut tx,
            &app.actor(),
            "document.revoked",
            Some(doc_id),
            serde_json::json!({"reason": reason}),
        )
        .await?;
        self.enqueue_webhook(&mut tx, &doc, "document.revoked")
            .await?;
        tx.commit().await?;
        self.after_commit().await;
        self.document(doc_id).await
    }

    /// The public record behind a verification code.
    pub async fn public_record(&self, code: &str) -> Result<PublicRecord, WorkflowError> {
        let id: Option<String> =
            sqlx::query_scalar("SELECT id FROM documents WHERE verification_code = $1")
                .bind(code)
                .fetch_optional(&self.db.pool)
                .await?;
        let id = id.ok_or_else(|| WorkflowError::NotFound("unknown verification code".into()))?;
        let doc = self.document(&id).await?;
        let mut signers = Vec::new();
        for s in &doc.steps {
            let o = self.official_by("id", &s.official_id).await?;
            signers.push(PublicSigner {
                name: o.name,
                title: o.title,
                action: s.action.clone(),
                signed_at: s.acted_at.filter(|_| s.status == "done"),
            });
        }
        if doc.steps.is_empty() {
            let (cn, _) = subject_cn_org(self.seal.certificate_chain());
            signers.push(PublicSigner {
                name: cn.unwrap_or_default(),
                title: "Segel elektronik".into(),
                action: "seal".into(),
                signed_at: Some(doc.created_at),
            });
        }
        let status = match doc.status.as_str() {
            "completed" => "valid",
            other => other,
        }
        .to_string();
        Ok(PublicRecord {
            verification_code: doc.verification_code,
            title: doc.title,
            letter_number: doc.letter_number,
            status,
            signed_sha256: doc.signed_sha256,
            signers,
            revoked_at: doc.revoked_at,
            revocation_reason: doc.revocation_reason,
        })
    }
}

fn subject_cn_org(chain: &[Vec<u8>]) -> (Option<String>, Option<String>) {
    let Some(Ok((_, c))) = chain
        .first()
        .map(|d| x509_parser::parse_x509_certificate(d))
    else {
        return (None, None);
    };
    let cn = c
        .subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string);
    let o = c
        .subject()
        .iter_organization()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string);
    (cn, o)
}

fn issuer_org(chain: &[Vec<u8>]) -> Option<String> {
    let (_, c) = x509_parser::parse_x509_certificate(chain.first()?).ok()?;
    c.issuer()
        .iter_organization()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    #[test]
    fn initials_skip_academic_titles() {
        assert_eq!(super::initials("Dr. Budi Santoso, M.Si."), "BS");
        assert_eq!(super::initials("Siti Rahmawati, S.H."), "SR");
    }
}

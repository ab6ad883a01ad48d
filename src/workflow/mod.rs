//! The business rules of the signing window: applications submit documents with steps
//! (paraf by reviewers in order, then one final signature), officials approve with their
//! passphrase or reject, the organisation seal signs bulk letters at once, and every action
//! is audited in the same transaction that performs it.

pub mod accounts;
pub mod batcher;
pub mod documents;
pub mod webhooks;

use crate::clock::Clock;
use crate::config::Config;
use crate::keys::Signer;
use crate::keys::keystore::FileKeyStore;
use crate::pdf::sign::DisplayZone;
use crate::storage::Db;
use crate::storage::blobs::BlobStore;
use crate::trust::TrustStore;
use serde::Serialize;
use std::sync::Arc;

/// What went wrong, in terms the HTTP layer maps to a status and a stable code.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    /// The step is assigned to another official (409 `not_assigned`).
    #[error("{0}")]
    NotAssigned(String),
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("wrong passphrase; {attempts_left} attempt(s) left before signing is locked")]
    WrongPassphrase { attempts_left: u32 },
    #[error("signing is locked after too many wrong passphrases; try again after {until}")]
    Locked { until: String },
    #[error("signing key unavailable: {0}")]
    KeyUnavailable(String),
    #[error("internal error")]
    Internal(String),
}

impl WorkflowError {
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        WorkflowError::Invalid {
            code,
            message: message.into(),
        }
    }
}

impl From<crate::storage::StorageError> for WorkflowError {
    fn from(e: crate::storage::StorageError) -> Self {
        WorkflowError::Internal(e.to_string())
    }
}

impl From<sqlx::Error> for WorkflowError {
    fn from(e: sqlx::Error) -> Self {
        WorkflowError::Internal(format!("database: {e}"))
    }
}

impl From<crate::audit::AuditError> for WorkflowError {
    fn from(e: crate::audit::AuditError) -> Self {
        WorkflowError::Internal(format!("audit: {e}"))
    }
}

impl From<std::io::Error> for WorkflowError {
    fn from(e: std::io::Error) -> Self {
        WorkflowError::Internal(format!("blob store: {e}"))
    }
}

impl From<crate::pdf::PdfError> for WorkflowError {
    fn from(e: crate::pdf::PdfError) -> Self {
        use crate::pdf::PdfError as P;
        let code = match &e {
            P::Empty | P::NotPdf | P::Truncated(_) | P::XrefDamaged(_) | P::Malformed(_) => {
                "invalid_pdf"
            }
            P::Encrypted => "encrypted_pdf",
            P::CertifiedNoChanges
            | P::CertifiedNewVisibleField(_)
            | P::CertifyAfterSignature
            | P::FieldSigned(_) => "document_locked",
            P::NoSuchPage { .. } | P::AnchorNotFound(_) | P::Placement(_) => "invalid_placement",
            // A token that went away between unlocking and signing is the same outage as one
            // that could not be opened: 503, so the client retries, never a 500.
            P::Cms(crate::cms::CmsError::Key(crate::keys::KeyError::Unavailable(why))) => {
                return WorkflowError::KeyUnavailable(why.clone());
            }
            P::ContentsTooSmall { .. } | P::Cms(_) => {
                return WorkflowError::Internal(e.to_string());
            }
        };
        WorkflowError::invalid(code, e.to_string())
    }
}

/// Everything the workflow needs.
pub struct Workflow {
    pub cfg: Arc<Config>,
    pub db: Db,
    pub blobs: Arc<dyn BlobStore>,
    pub keys: Arc<FileKeyStore>,
    pub trust: Arc<TrustStore>,
    pub seal: Arc<dyn Signer>,
    pub tsa: Arc<crate::cms::BuiltinTsa>,
    pub auditor: Arc<dyn Signer>,
    pub clock: Arc<dyn Clock>,
    pub zone: DisplayZone,
    /// Group commit of sealed letters.
    pub seals: batcher::SealBatcher,
}

/// Who did something, for the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct Actor {
    pub kind: crate::audit::ActorKind,
    pub id: String,
}

impl Workflow {
    pub fn now_ms(&self) -> i64 {
        crate::storage::millis(self.clock.now())
    }

    /// Append an audit entry inside `tx`.
    pub async fn audit(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        actor: &Actor,
        action: &str,
        document_id: Option<&str>,
        details: serde_json::Value,
    ) -> Result<i64, WorkflowError> {
        let entry = crate::audit::NewEntry {
            actor_kind: actor.kind,
            actor_id: actor.id.clone(),
            action: action.to_string(),
            document_id: document_id.map(str::to_string),
            details,
        };
        Ok(crate::audit::append(tx, self.db.backend, self.now_ms(), &entry).await?)
    }

    /// Sign a checkpoint when the chain reached the configured interval (after a commit).
    pub async fn after_commit(&self) {
        let every = self.cfg.audit_checkpoint_every.max(1);
        if let Err(e) =
            crate::audit::maybe_checkpoint(&self.db, self.auditor.as_ref(), every, self.now_ms())
                .await
        {
            tracing::error!(error = %e, "audit checkpoint failed");
        }
    }
}

/// 128 random bits, URL-safe base64 (22 characters): ids, verification codes, tokens.
pub fn random_token(bytes: usize) -> String {
    use base64::Engine as _;
    let mut b = vec![0u8; bytes];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

pub fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::WorkflowError;
    use crate::keys::{
        KeyError, SignatureAlgorithm, Signer, SoftwareSigner, load_certificates_pem,
    };

    /// A key whose token is pulled out after it was opened: it presents its chain, then
    /// fails the signing call itself.
    struct TokenPulled(SoftwareSigner);

    impl Signer for TokenPulled {
        fn algorithm(&self) -> SignatureAlgorithm {
            self.0.algorithm()
        }
        fn certificate_chain(&self) -> &[Vec<u8>] {
            self.0.certificate_chain()
        }
        fn sign(&self, _: &[u8]) -> Result<Vec<u8>, KeyError> {
            Err(KeyError::Unavailable(
                "PKCS#11 token \"segel\": removed".into(),
            ))
        }
        fn max_signature_len(&self) -> usize {
            self.0.max_signature_len()
        }
    }

    #[test]
    fn a_token_lost_while_signing_is_unavailable_not_internal() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let key = std::fs::read(dir.join("keys-example/seal.key.pem")).unwrap();
        let chain = std::fs::read(dir.join("keys-example/seal.chain.pem")).unwrap();
        let signer = TokenPulled(
            SoftwareSigner::from_pem(&key, load_certificates_pem(&chain).unwrap(), false).unwrap(),
        );
        let pdf = std::fs::read(dir.join("fixtures/pdf/letter.pdf")).unwrap();
        let clock = crate::clock::FixedClock(time::macros::datetime!(2026-11-30 09:00 UTC));
        let err = crate::pdf::sign_pdf(pdf, &signer, &Default::default(), &clock).unwrap_err();
        match WorkflowError::from(err) {
            WorkflowError::KeyUnavailable(m) => assert!(m.contains("removed"), "{m}"),
            other => panic!("expected KeyUnavailable, got {other:?}"),
        }
    }
}

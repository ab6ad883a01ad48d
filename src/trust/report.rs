//! The verification report: per-signature facts, ETSI EN 319 102-1 indications, Segel's verdict
//! and one-sentence summaries in Indonesian and English.

use super::revocation::RevocationStatus;
use crate::pdf::diff::Modification;
use serde::Serialize;
use time::OffsetDateTime;

/// ETSI EN 319 102-1 §5.1.3 main status indication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Indication {
    TotalPassed,
    TotalFailed,
    Indeterminate,
}

/// Segel's verdict, in order of precedence (the first that applies wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Invalid,
    Revoked,
    Expired,
    Untrusted,
    Modified,
    Valid,
}

#[derive(Debug, Clone, Serialize)]
pub struct SignerInfoReport {
    pub name: Option<String>,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_after: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimestampReport {
    #[serde(with = "time::serde::rfc3339::option")]
    pub time: Option<OffsetDateTime>,
    pub tsa: Option<String>,
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RevocationReport {
    /// `good`, `revoked` or `unknown` for the signer's certificate (or a CA above it).
    pub status: &'static str,
    pub source: Option<super::revocation::RevocationSource>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub time: Option<OffsetDateTime>,
    /// Subject of the revoked certificate when it is a CA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

impl RevocationReport {
    pub fn from_status(s: &RevocationStatus, subject: Option<String>) -> Self {
        match s {
            RevocationStatus::Good { source } => RevocationReport {
                status: "good",
                source: Some(*source),
                time: None,
                certificate: None,
            },
            RevocationStatus::Revoked { source, time, .. } => RevocationReport {
                status: "revoked",
                source: Some(*source),
                time: Some(*time),
                certificate: subject,
            },
            RevocationStatus::Unknown => RevocationReport {
                status: "unknown",
                source: None,
                time: None,
                certificate: None,
            },
        }
    }
}

/// One signature's report.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureReport {
    pub field: String,
    /// `signature` or `document_timestamp`.
    pub kind: &'static str,
    /// 1-based revision this signature signs.
    pub revision: Option<usize>,
    /// `whole_document` or `earlier_revision`.
    pub coverage: Option<&'static str>,
    pub subfilter: String,
    pub algorithm: Option<String>,
    pub signer: Option<SignerInfoReport>,
    /// /M as written by the signer.
    pub claimed_time: Option<String>,
    pub timestamp: Option<TimestampReport>,
    /// Subjects from the signer up to the anchor (or as far as the chain could be built).
    pub chain: Vec<String>,
    pub integrity: bool,
    pub crypto_valid: bool,
    pub trusted: bool,
    pub revocation: RevocationReport,
    pub modifications_after: Vec<Modification>,
    pub indication: Indication,
    pub subindication: Option<&'static str>,
    pub verdict: Verdict,
    /// Why, when not valid (English, technical).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub summary_id: String,
    pub summary_en: String,
}

/// The report for a whole file.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub file: String,
    pub sha256: String,
    pub revisions: usize,
    #[serde(with = "time::serde::rfc3339")]
    pub validation_time: OffsetDateTime,
    pub signatures: Vec<SignatureReport>,
    pub signature_count: usize,
    pub valid_signatures: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Report {
    /// At least one signature, and every signature valid.
    pub fn all_valid(&self) -> bool {
        !self.signatures.is_empty() && self.signatures.iter().all(|s| s.verdict == Verdict::Valid)
    }
}

/// The one-sentence summaries (Indonesian, English) of a verdict.
pub fn summaries(verdict: Verdict, signer: Option<&str>, reason: Option<&str>) -> (String, String) {
    let who = signer.unwrap_or("penanda tangan");
    let who_en = signer.unwrap_or("the signer");
    match verdict {
        Verdict::Valid => (
            format!("Tanda tangan sah: dokumen tidak berubah sejak ditandatangani oleh {who} dan sertifikatnya tepercaya."),
            format!("Valid signature: the document has not changed since {who_en} signed it and the certificate is trusted."),
        ),
        Verdict::Invalid => (
            "Tanda tangan tidak sah: isi dokumen atau data tanda tangan tidak cocok dengan yang ditandatangani.".into(),
            format!("Invalid signature: {}.", reason.unwrap_or("the document or the signature data does not match what was signed")),
        ),
        Verdict::Revoked => (
            format!("Sertifikat {who} telah dicabut pada atau sebelum waktu penandatanganan."),
            format!("The certificate of {who_en} was revoked at or before the signing time."),
        ),
        Verdict::Expired => (
            format!("Sertifikat {who} tidak berlaku pada waktu penandatanganan."),
            format!("The certificate of {who_en} was not valid at the signing time."),
        ),
        Verdict::Untrusted => (
            "Tanda tangan utuh, tetapi sertifikat penanda tangan tidak dapat dipercaya (tidak berasal dari otoritas yang dikonfigurasi atau algoritmanya lemah).".into(),
            format!("The signature is intact but cannot be trusted: {}.", reason.unwrap_or("the certificate does not chain to a configured trust anchor")),
        ),
        Verdict::Modified => (
            "Tanda tangan utuh, tetapi dokumen diubah setelah ditandatangani dengan cara yang tidak diizinkan.".into(),
            "The signature is intact but the document was changed after signing in a way that is not allowed.".into(),
        ),
    }
}

//! Trust: certificate path validation (rustls-webpki plus Segel's own checks), revocation from
//! CRLs and OCSP responses, and the verification of whole signed PDFs into a report.

pub mod chain;
pub mod report;
pub mod revocation;
pub mod verify;

pub use chain::{ChainOutcome, ChainProblem, EkuPolicy, validate_chain};
pub use report::{Indication, Report, SignatureReport, Verdict};
pub use revocation::{RevocationSource, RevocationStatus};
pub use verify::{VerifyOptions, verify_pdf};

use std::path::Path;

/// Errors loading trust material.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
}

/// Trust anchors, extra CA certificates and CRLs the verifier relies on.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    pub anchors: Vec<Vec<u8>>,
    pub intermediates: Vec<Vec<u8>>,
    pub crls: Vec<Vec<u8>>,
}

fn pem_or_der(data: &[u8], tag: &str) -> Vec<Vec<u8>> {
    match pem::parse_many(data) {
        Ok(blocks) if !blocks.is_empty() => blocks
            .into_iter()
            .filter(|b| b.tag() == tag)
            .map(|b| b.into_contents())
            .collect(),
        _ => vec![data.to_vec()],
    }
}

impl TrustStore {
    /// Add certificates from a PEM/DER file, or every `.pem`/`.crt`/`.cer`/`.der` file of a
    /// directory: self-signed ones become anchors, the others intermediates.
    pub fn add_certificates(&mut self, path: &Path) -> Result<(), TrustError> {
        let err = |message: String| TrustError::File {
            path: path.display().to_string(),
            message,
        };
        if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(path)
                .map_err(|e| err(e.to_string()))?
                .flatten()
                .collect();
            entries.sort_by_key(|e| e.path());
            for e in entries {
                let p = e.path();
                let ext = p.extension().and_then(|x| x.to_str()).unwrap_or("");
                if ["pem", "crt", "cer", "der"].contains(&ext)
                    && !p.to_string_lossy().ends_with(".key.pem")
                {
                    self.add_certificates(&p)?;
                }
            }
            return Ok(());
        }
        let data = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let certs = pem_or_der(&data, "CERTIFICATE");
        for der in certs {
            let (_, cert) = x509_parser::parse_x509_certificate(&der)
                .map_err(|e| err(format!("not a certificate: {e}")))?;
            if cert.subject().as_raw() == cert.issuer().as_raw() {
                if !self.anchors.contains(&der) {
                    self.anchors.push(der);
                }
            } else if !self.intermediates.contains(&der) {
                self.intermediates.push(der);
            }
        }
        Ok(())
    }

    /// Trust only this certificate as an anchor (even when it is not self-signed).
    pub fn add_anchor_der(&mut self, der: Vec<u8>) {
        if !self.anchors.contains(&der) {
            self.anchors.push(der);
        }
    }

    /// Add a CRL (PEM or DER).
    pub fn add_crl(&mut self, path: &Path) -> Result<(), TrustError> {
        let data = std::fs::read(path).map_err(|e| TrustError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        for der in pem_or_der(&data, "X509 CRL") {
            x509_parser::parse_x509_crl(&der).map_err(|e| TrustError::File {
                path: path.display().to_string(),
                message: format!("not a CRL: {e}"),
            })?;
            self.crls.push(der);
        }
        Ok(())
    }
}

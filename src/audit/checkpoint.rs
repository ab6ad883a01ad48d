//! Signed checkpoints: the auditor key signs `(seq, hash)` of the chain so that anyone holding
//! the auditor certificate can tell that the log up to `seq` is the one that existed when it
//! was signed. A plain hash chain only shows that the rows agree with each other; whoever can
//! write the database can re-hash a rewritten history, but cannot re-sign it.
//!
//! Stored form (table `audit_checkpoints`, migrations/0001_init.sql):
//! - `signature`: `ALG:BASE64`, where ALG names how to verify (`rsa-pkcs1-sha256`,
//!   `rsa-pss-sha256`, `ecdsa-p256-sha256`, `ecdsa-p384-sha384`) and BASE64 is the standard
//!   encoding of the signature value as [`Signer::sign`] returns it (RSA block, or DER
//!   `ECDSA-Sig-Value`, RFC 3279 §2.2.3);
//! - `certificate`: the signer's certificate as one PEM `CERTIFICATE` block (RFC 7468 §5).
//!
//! The signed message is [`checkpoint_message`]; the `at` column is informational and not signed.

use crate::keys::{SignatureAlgorithm, Signer, certificate_public_key};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};

/// The bytes the auditor key signs: `segel-audit-checkpoint\n` ‖ seq (decimal) ‖ `\n` ‖ hash
/// (lowercase hex).
pub fn checkpoint_message(seq: i64, hash: &str) -> Vec<u8> {
    format!("segel-audit-checkpoint\n{seq}\n{hash}").into_bytes()
}

fn algorithm_name(alg: SignatureAlgorithm) -> &'static str {
    match alg {
        SignatureAlgorithm::RsaPkcs1Sha256 => "rsa-pkcs1-sha256",
        SignatureAlgorithm::RsaPssSha256 => "rsa-pss-sha256",
        SignatureAlgorithm::EcdsaP256Sha256 => "ecdsa-p256-sha256",
        SignatureAlgorithm::EcdsaP384Sha384 => "ecdsa-p384-sha384",
    }
}

fn verification_algorithm(name: &str) -> Option<&'static dyn VerificationAlgorithm> {
    Some(match name {
        "rsa-pkcs1-sha256" => &signature::RSA_PKCS1_2048_8192_SHA256,
        "rsa-pss-sha256" => &signature::RSA_PSS_2048_8192_SHA256,
        "ecdsa-p256-sha256" => &signature::ECDSA_P256_SHA256_ASN1,
        "ecdsa-p384-sha384" => &signature::ECDSA_P384_SHA384_ASN1,
        _ => return None,
    })
}

/// A signed checkpoint ready to store: `(signature column, certificate column)`.
pub(crate) fn sign(
    signer: &dyn Signer,
    seq: i64,
    hash: &str,
) -> Result<(String, String), super::AuditError> {
    let cert = signer.certificate_chain().first().ok_or_else(|| {
        super::AuditError::Invalid("the checkpoint signer has no certificate".into())
    })?;
    let value = signer.sign(&checkpoint_message(seq, hash))?;
    let signature = format!(
        "{}:{}",
        algorithm_name(signer.algorithm()),
        STANDARD.encode(value)
    );
    let pem = pem::encode_config(
        &pem::Pem::new("CERTIFICATE", cert.clone()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    );
    Ok((signature, pem))
}

/// The DER of the first `CERTIFICATE` block of a stored certificate column.
pub(crate) fn certificate_der(pem_text: &str) -> Result<Vec<u8>, String> {
    let blocks = pem::parse_many(pem_text).map_err(|e| format!("stored certificate: {e}"))?;
    blocks
        .into_iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .ok_or_else(|| "stored certificate: no CERTIFICATE block".into())
}

/// A public key taken from a stored certificate, kept while consecutive checkpoints share it.
pub(crate) struct CheckpointKey {
    pub cert_der: Vec<u8>,
    public_key: Vec<u8>,
}

impl CheckpointKey {
    pub fn from_der(cert_der: Vec<u8>) -> Result<Self, String> {
        let public_key = certificate_public_key(&cert_der).map_err(|e| e.to_string())?;
        Ok(CheckpointKey {
            cert_der,
            public_key,
        })
    }

    /// Check a stored `ALG:BASE64` signature over [`checkpoint_message`]`(seq, hash)`.
    pub fn verify(&self, seq: i64, hash: &str, stored: &str) -> Result<(), String> {
        let (name, b64) = stored
            .split_once(':')
            .ok_or("the signature has no algorithm prefix")?;
        let alg = verification_algorithm(name)
            .ok_or_else(|| format!("unknown signature algorithm {name:?}"))?;
        let value = STANDARD
            .decode(b64)
            .map_err(|e| format!("the signature is not base64: {e}"))?;
        UnparsedPublicKey::new(alg, &self.public_key)
            .verify(&checkpoint_message(seq, hash), &value)
            .map_err(|_| "the signature does not verify with the stored certificate".into())
    }
}

//! Keys behind a trait: the engine asks a [`Signer`] for a signature over bytes and never sees key
//! material, so PEM/PKCS#12 files, the encrypted keystore and PKCS#11 tokens plug in alike.

pub mod devpki;
pub mod keystore;
pub mod pkcs11;
mod software;

pub use software::{SoftwareSigner, load_certificates_pem};

use std::fmt;

/// Digest algorithms Segel produces (and the verifier accepts without a crypto-constraints warning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl DigestAlgorithm {
    /// The `ring` implementation of this digest.
    pub fn ring(self) -> &'static ring::digest::Algorithm {
        match self {
            DigestAlgorithm::Sha256 => &ring::digest::SHA256,
            DigestAlgorithm::Sha384 => &ring::digest::SHA384,
            DigestAlgorithm::Sha512 => &ring::digest::SHA512,
        }
    }

    /// Digest `data` in one call.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        ring::digest::digest(self.ring(), data).as_ref().to_vec()
    }

    /// A streaming context for digesting several slices.
    pub fn context(self) -> ring::digest::Context {
        ring::digest::Context::new(self.ring())
    }

    /// Output length in bytes.
    pub fn output_len(self) -> usize {
        self.ring().output_len()
    }
}

/// Signature algorithms Segel signs with (ETSI TS 119 312 recommended suites).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RsaPkcs1Sha256,
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256, salt length 32 (RFC 4055).
    RsaPssSha256,
    /// ECDSA on P-256 with SHA-256.
    EcdsaP256Sha256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384Sha384,
}

impl SignatureAlgorithm {
    /// The digest used for the document and the signed attributes.
    pub fn digest(self) -> DigestAlgorithm {
        match self {
            SignatureAlgorithm::EcdsaP384Sha384 => DigestAlgorithm::Sha384,
            _ => DigestAlgorithm::Sha256,
        }
    }

    /// Short human name, as shown in reports.
    pub fn name(self) -> &'static str {
        match self {
            SignatureAlgorithm::RsaPkcs1Sha256 => "RSA PKCS#1 v1.5 SHA-256",
            SignatureAlgorithm::RsaPssSha256 => "RSA-PSS SHA-256",
            SignatureAlgorithm::EcdsaP256Sha256 => "ECDSA P-256 SHA-256",
            SignatureAlgorithm::EcdsaP384Sha384 => "ECDSA P-384 SHA-384",
        }
    }
}

impl fmt::Display for SignatureAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a key could not be loaded or could not sign.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file: {0}")]
    Format(String),
    #[error("unsupported key: {0}")]
    Unsupported(String),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("the certificate does not match the private key")]
    CertificateMismatch,
    #[error("PKCS#12: {0}")]
    Pkcs12(String),
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("wrong passphrase (or the stored key is damaged)")]
    WrongPassphrase,
    #[error("the key is disabled")]
    Disabled,
    #[error("the signing certificate cannot be used: {0}")]
    CertificateState(String),
    #[error("key store unavailable: {0}")]
    Unavailable(String),
}

/// Something that signs with one private key and presents its certificate chain.
///
/// `sign` receives the message itself (for CMS: the DER of the signed attributes) and returns
/// the signature value as CMS carries it: the RSA signature block, or a DER `ECDSA-Sig-Value`.
/// Implementations that can only sign a digest (PKCS#11 `CKM_ECDSA`) hash with
/// [`SignatureAlgorithm::digest`] first.
pub trait Signer: Send + Sync {
    /// The algorithm this key signs with.
    fn algorithm(&self) -> SignatureAlgorithm;
    /// DER certificates: the signer's first, then its issuers (the root may be omitted).
    fn certificate_chain(&self) -> &[Vec<u8>];
    /// Sign `message`.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError>;
    /// An upper bound of the signature value's length, for sizing placeholders.
    fn max_signature_len(&self) -> usize;
    /// Whether the key can sign now, for readiness probes: a key in process memory always can;
    /// a key in a token can when the token is reachable and logged in.
    fn health(&self) -> Result<(), KeyError> {
        Ok(())
    }
}

impl<T: Signer + ?Sized> Signer for std::sync::Arc<T> {
    fn algorithm(&self) -> SignatureAlgorithm {
        (**self).algorithm()
    }
    fn certificate_chain(&self) -> &[Vec<u8>] {
        (**self).certificate_chain()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        (**self).sign(message)
    }
    fn max_signature_len(&self) -> usize {
        (**self).max_signature_len()
    }
    fn health(&self) -> Result<(), KeyError> {
        (**self).health()
    }
}

/// The subjectPublicKey bits of a DER certificate (RSAPublicKey DER or an uncompressed EC point).
pub fn certificate_public_key(cert_der: &[u8]) -> Result<Vec<u8>, KeyError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| KeyError::Certificate(format!("not a DER X.509 certificate: {e}")))?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

/// Name, title, serialNumber of the subject and O of the issuer of a DER certificate.
pub fn certificate_identity(
    der: &[u8],
) -> (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
) {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return (None, None, None, None);
    };
    let get = |name: &x509_parser::x509::X509Name, oid: &str| {
        name.iter_attributes()
            .find(|a| a.attr_type().to_id_string() == oid)
            .and_then(|a| a.as_str().ok())
            .map(str::to_string)
    };
    (
        get(cert.subject(), "2.5.4.3"),
        get(cert.subject(), "2.5.4.12"),
        get(cert.subject(), "2.5.4.5"),
        get(cert.issuer(), "2.5.4.10"),
    )
}

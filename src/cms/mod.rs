//! CMS SignedData for PAdES (RFC 5652 §5, ETSI EN 319 122-1 baseline B) and RFC 3161 time-stamp
//! tokens, built from the `cms`/`der`/`x509-cert` types rather than hand-assembled DER.

pub mod ber;
mod builder;
pub mod oids;
pub mod parse;
pub mod tsp;
pub mod verify;

pub use builder::{PadesSignature, build_pades_cms, signature_algorithm_identifier};
pub use parse::{DigestKind, SignedCms};
pub use tsp::{BuiltinTsa, HttpTsa, TimeStamper};

use der::asn1::OctetString;
use der::{Decode, Sequence, asn1::SetOfVec};
use spki::AlgorithmIdentifierOwned;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::serial_number::SerialNumber;

/// Errors while building or reading CMS structures.
#[derive(Debug, thiserror::Error)]
pub enum CmsError {
    #[error("ASN.1 encoding of {what}: {source}")]
    Encoding {
        what: &'static str,
        source: der::Error,
    },
    #[error("certificate {0}")]
    Certificate(String),
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    #[error("malformed CMS: {0}")]
    Malformed(String),
    #[error("time-stamp authority: {0}")]
    Timestamp(String),
}

pub(crate) fn enc(what: &'static str) -> impl FnOnce(der::Error) -> CmsError {
    move |source| CmsError::Encoding { what, source }
}

/// `IssuerSerial ::= SEQUENCE { issuer GeneralNames, serialNumber CertificateSerialNumber }`
/// (RFC 5035 §4).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct IssuerSerial {
    pub issuer: Vec<GeneralName>,
    pub serial_number: SerialNumber,
}

/// `ESSCertIDv2 ::= SEQUENCE { hashAlgorithm AlgorithmIdentifier DEFAULT {algorithm id-sha256},
/// certHash Hash, issuerSerial IssuerSerial OPTIONAL }` (RFC 5035 §4). The default SHA-256 is
/// encoded by leaving `hash_algorithm` out, as DER requires.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct EssCertIdV2 {
    #[asn1(optional = "true")]
    pub hash_algorithm: Option<AlgorithmIdentifierOwned>,
    pub cert_hash: OctetString,
    #[asn1(optional = "true")]
    pub issuer_serial: Option<IssuerSerial>,
}

/// `SigningCertificateV2 ::= SEQUENCE { certs SEQUENCE OF ESSCertIDv2, policies SEQUENCE OF
/// PolicyInformation OPTIONAL }` (RFC 5035 §3); Segel writes no policies.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct SigningCertificateV2 {
    pub certs: Vec<EssCertIdV2>,
}

/// An attribute with a single value.
pub(crate) fn single_attribute<T: der::Encode>(
    oid: der::oid::ObjectIdentifier,
    value: &T,
    what: &'static str,
) -> Result<x509_cert::attr::Attribute, CmsError> {
    let any = der::Any::from_der(&value.to_der().map_err(enc(what))?).map_err(enc(what))?;
    let mut values = SetOfVec::new();
    values.insert(any).map_err(enc(what))?;
    Ok(x509_cert::attr::Attribute { oid, values })
}

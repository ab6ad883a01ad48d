//! Reading a CMS SignedData from a signature's /Contents (RFC 5652 §5): tolerant of the zero
//! padding after it and of BER, strict about everything it then relies on.

use super::ber;
use super::oids::*;
use super::{CmsError, EssCertIdV2, SigningCertificateV2, enc};
use crate::keys::DigestAlgorithm;
use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::revocation::RevocationInfoChoice;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use der::asn1::OctetString;
use der::{Decode, Encode, Sequence};
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

/// The largest CMS Segel reads from a signature (a chain with revocation data stays far below).
pub const MAX_CMS_LEN: usize = 8 << 20;

/// Digest algorithms a signature may name, including ones that are too weak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestKind {
    Sha1,
    Sha2(DigestAlgorithm),
}

impl DigestKind {
    pub fn from_oid(oid: &der::oid::ObjectIdentifier) -> Option<Self> {
        match *oid {
            o if o == SHA1 => Some(DigestKind::Sha1),
            o if o == SHA256 => Some(DigestKind::Sha2(DigestAlgorithm::Sha256)),
            o if o == SHA384 => Some(DigestKind::Sha2(DigestAlgorithm::Sha384)),
            o if o == SHA512 => Some(DigestKind::Sha2(DigestAlgorithm::Sha512)),
            _ => None,
        }
    }

    pub fn ring(self) -> &'static ring::digest::Algorithm {
        match self {
            DigestKind::Sha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            DigestKind::Sha2(a) => a.ring(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DigestKind::Sha1 => "SHA-1",
            DigestKind::Sha2(DigestAlgorithm::Sha256) => "SHA-256",
            DigestKind::Sha2(DigestAlgorithm::Sha384) => "SHA-384",
            DigestKind::Sha2(DigestAlgorithm::Sha512) => "SHA-512",
        }
    }

    pub fn digest_parts(self, parts: &[&[u8]]) -> Vec<u8> {
        let mut ctx = ring::digest::Context::new(self.ring());
        for p in parts {
            ctx.update(p);
        }
        ctx.finish().as_ref().to_vec()
    }
}

/// ESS signing-certificate (v1, SHA-1) of RFC 2634 §5.4; only the hash is read.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct EssCertId {
    cert_hash: OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<super::IssuerSerial>,
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct SigningCertificateV1 {
    certs: Vec<EssCertId>,
}

/// A decoded SignedData with its first SignerInfo.
#[derive(Debug, Clone)]
pub struct SignedCms {
    /// DER of the ContentInfo (normalized from BER when needed).
    pub der: Vec<u8>,
    /// Whether the producer wrote BER (indefinite or non-minimal lengths).
    pub was_ber: bool,
    pub signed_data: SignedData,
    pub signer: SignerInfo,
    pub signer_count: usize,
    /// The signed attributes exactly as received, with the SET OF tag (RFC 5652 §5.4).
    pub signed_attrs_raw: Option<Vec<u8>>,
    pub certificates: Vec<Vec<u8>>,
    pub crls: Vec<Vec<u8>>,
    pub ocsp_responses: Vec<Vec<u8>>,
}

/// Skip one TLV at `pos` in DER, returning the next position.
fn skip(der: &[u8], pos: usize) -> Option<usize> {
    Some(pos + ber::definite_len(der.get(pos..)?)?)
}

/// Content start of the TLV at `pos`.
fn enter(der: &[u8], pos: usize) -> Option<usize> {
    let len = ber::definite_len(der.get(pos..)?)?;
    let content_len = {
        let h1 = der.get(pos + 1)?;
        if h1 & 0x80 == 0 {
            2
        } else {
            2 + usize::from(h1 & 0x7f)
        }
    };
    (content_len <= len).then_some(pos + content_len)
}

/// Locate the raw signed attributes of the first SignerInfo in a DER ContentInfo.
fn raw_signed_attrs(der: &[u8]) -> Option<Vec<u8>> {
    let mut p = enter(der, 0)?; // ContentInfo
    p = skip(der, p)?; // contentType
    p = enter(der, p)?; // [0] EXPLICIT
    p = enter(der, p)?; // SignedData
    p = skip(der, p)?; // version
    p = skip(der, p)?; // digestAlgorithms
    p = skip(der, p)?; // encapContentInfo
    while matches!(der.get(p), Some(0xA0) | Some(0xA1)) {
        p = skip(der, p)?; // certificates, crls
    }
    p = enter(der, p)?; // signerInfos SET
    p = enter(der, p)?; // SignerInfo
    p = skip(der, p)?; // version
    p = skip(der, p)?; // sid
    p = skip(der, p)?; // digestAlgorithm
    if der.get(p) != Some(&0xA0) {
        return None;
    }
    let end = skip(der, p)?;
    let mut raw = der[p..end].to_vec();
    raw[0] = 0x31;
    Some(raw)
}

impl SignedCms {
    /// Decode /Contents bytes (zero padding after the value is ignored).
    pub fn parse(contents: &[u8]) -> Result<Self, CmsError> {
        let (der, was_ber) = match ber::definite_len(contents) {
            Some(len) if len <= MAX_CMS_LEN && ContentInfo::from_der(&contents[..len]).is_ok() => {
                (contents[..len].to_vec(), false)
            }
            _ => {
                if contents.len() > MAX_CMS_LEN * 2 {
                    return Err(CmsError::Malformed(format!(
                        "the CMS is larger than {} MB",
                        MAX_CMS_LEN >> 20
                    )));
                }
                let der = ber::to_der(contents)
                    .map_err(|e| CmsError::Malformed(format!("not BER/DER: {e}")))?;
                if der.len() > MAX_CMS_LEN {
                    return Err(CmsError::Malformed(format!(
                        "the CMS is larger than {} MB",
                        MAX_CMS_LEN >> 20
                    )));
                }
                (der, true)
            }
        };
        let ci = ContentInfo::from_der(&der)
            .map_err(|e| CmsError::Malformed(format!("ContentInfo: {e}")))?;
        if ci.content_type != ID_SIGNED_DATA {
            return Err(CmsError::Malformed(format!(
                "content type {} is not signedData",
                ci.content_type
            )));
        }
        let signed_data: SignedData = ci
            .content
            .decode_as()
            .map_err(|e| CmsError::Malformed(format!("SignedData: {e}")))?;
        let signer_count = signed_data.signer_infos.0.len();
        let signer = signed_data
            .signer_infos
            .0
            .iter()
            .next()
            .cloned()
            .ok_or_else(|| CmsError::Malformed("SignedData has no SignerInfo".into()))?;
        let mut certificates = Vec::new();
        if let Some(set) = &signed_data.certificates {
            for c in set.0.iter() {
                if let CertificateChoices::Certificate(cert) = c {
                    certificates.push(cert.to_der().map_err(enc("certificate"))?);
                }
            }
        }
        let mut crls = Vec::new();
        let mut ocsp_responses = Vec::new();
        if let Some(set) = &signed_data.crls {
            for r in set.0.iter() {
                match r {
                    RevocationInfoChoice::Crl(crl) => crls.push(crl.to_der().map_err(enc("CRL"))?),
                    RevocationInfoChoice::Other(other) => {
                        // id-ri-ocsp-response (RFC 5940): an OCSPResponse.
                        if other.other_format.oid.to_string() == "1.3.6.1.5.5.7.16.2" {
                            ocsp_responses
                                .push(other.other.to_der().map_err(enc("OCSP response"))?);
                        }
                    }
                }
            }
        }
        let signed_attrs_raw = raw_signed_attrs(&der);
        let mut cms = SignedCms {
            der,
            was_ber,
            signed_data,
            signer,
            signer_count,
            signed_attrs_raw,
            certificates,
            crls,
            ocsp_responses,
        };
        cms.collect_revocation_archival();
        Ok(cms)
    }

    /// Values of a signed attribute.
    pub fn signed_attr(&self, oid: der::oid::ObjectIdentifier) -> Option<&der::Any> {
        self.signer
            .signed_attrs
            .as_ref()?
            .iter()
            .find(|a| a.oid == oid)?
            .values
            .iter()
            .next()
    }

    fn unsigned_attr(&self, oid: der::oid::ObjectIdentifier) -> Option<&der::Any> {
        self.signer
            .unsigned_attrs
            .as_ref()?
            .iter()
            .find(|a| a.oid == oid)?
            .values
            .iter()
            .next()
    }

    pub fn digest_kind(&self) -> Option<DigestKind> {
        DigestKind::from_oid(&self.signer.digest_alg.oid)
    }

    pub fn message_digest(&self) -> Option<Vec<u8>> {
        let v: OctetString = self.signed_attr(ID_MESSAGE_DIGEST)?.decode_as().ok()?;
        Some(v.as_bytes().to_vec())
    }

    pub fn content_type_attr(&self) -> Option<der::oid::ObjectIdentifier> {
        self.signed_attr(ID_CONTENT_TYPE)?.decode_as().ok()
    }

    /// The signing-time attribute (CMS / PAdES B-B does not use it; adbe.pkcs7 often does).
    pub fn signing_time(&self) -> Option<time::OffsetDateTime> {
        let t = x509_cert::time::Time::from_der(&self.signed_attr(ID_SIGNING_TIME)?.to_der().ok()?)
            .ok()?;
        let secs = t.to_unix_duration().as_secs();
        time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).ok()?).ok()
    }

    /// (digest, hash of the signer certificate) from signing-certificate-v2 or v1.
    pub fn ess_cert_hash(&self) -> Option<(DigestKind, Vec<u8>)> {
        if let Some(v) = self.signed_attr(ID_AA_SIGNING_CERTIFICATE_V2) {
            let sc: SigningCertificateV2 = v.decode_as().ok()?;
            let first: &EssCertIdV2 = sc.certs.first()?;
            let kind = match &first.hash_algorithm {
                None => DigestKind::Sha2(DigestAlgorithm::Sha256),
                Some(a) => DigestKind::from_oid(&a.oid)?,
            };
            return Some((kind, first.cert_hash.as_bytes().to_vec()));
        }
        let v = self.signed_attr(ID_AA_SIGNING_CERTIFICATE)?;
        let sc: SigningCertificateV1 = v.decode_as().ok()?;
        Some((
            DigestKind::Sha1,
            sc.certs.first()?.cert_hash.as_bytes().to_vec(),
        ))
    }

    /// The signature time-stamp token (RFC 3161 via id-aa-signatureTimeStampToken), DER.
    pub fn timestamp_token(&self) -> Option<Vec<u8>> {
        self.unsigned_attr(ID_AA_SIGNATURE_TIME_STAMP_TOKEN)?
            .to_der()
            .ok()
    }

    /// The embedded certificate the SignerIdentifier names.
    pub fn signer_certificate(&self) -> Option<&[u8]> {
        self.certificates
            .iter()
            .map(Vec::as_slice)
            .find(|der| self.is_signer_cert(der))
    }

    pub fn is_signer_cert(&self, der: &[u8]) -> bool {
        let Ok(cert) = Certificate::from_der(der) else {
            return false;
        };
        match &self.signer.sid {
            SignerIdentifier::IssuerAndSerialNumber(ias) => {
                cert.tbs_certificate.issuer == ias.issuer
                    && cert.tbs_certificate.serial_number == ias.serial_number
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => {
                let Ok((_, parsed)) = x509_parser::parse_x509_certificate(der) else {
                    return false;
                };
                parsed.extensions().iter().any(|e| {
                    matches!(e.parsed_extension(), x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) if k.0 == ski.0.as_bytes())
                })
            }
        }
    }

    /// The encapsulated content (time-stamp tokens carry their TSTInfo here).
    pub fn econtent(&self) -> Option<Vec<u8>> {
        let any = self.signed_data.encap_content_info.econtent.as_ref()?;
        let octets: OctetString = any.decode_as().ok()?;
        Some(octets.as_bytes().to_vec())
    }

    pub fn signature_algorithm(&self) -> &AlgorithmIdentifierOwned {
        &self.signer.signature_algorithm
    }

    /// CRLs and OCSP responses in adbe-revocationInfoArchival (ISO 32000-1 §12.8.3.3.2):
    /// `RevocationInfoArchival ::= SEQUENCE { crl [0] EXPLICIT SEQUENCE OF CRLs OPTIONAL,
    /// ocsp [1] EXPLICIT SEQUENCE OF OCSPResponse OPTIONAL, otherRevInfo [2] … OPTIONAL }`.
    fn collect_revocation_archival(&mut self) {
        let Some(any) = self.signed_attr(ADBE_REVOCATION_INFO_ARCHIVAL) else {
            return;
        };
        let Ok(der) = any.to_der() else { return };
        let Some(mut p) = enter(&der, 0) else { return };
        while p < der.len() {
            let tag = der[p];
            let Some(next) = skip(&der, p) else { return };
            if let (Some(inner), true) = (enter(&der, p), tag == 0xA0 || tag == 0xA1) {
                // [n] EXPLICIT SEQUENCE OF …
                if let Some(mut q) = enter(&der, inner) {
                    let seq_end = skip(&der, inner).unwrap_or(next);
                    while q < seq_end {
                        let Some(e) = skip(&der, q) else { break };
                        let item = der[q..e].to_vec();
                        if tag == 0xA0 {
                            self.crls.push(item)
                        } else {
                            self.ocsp_responses.push(item)
                        }
                        q = e;
                    }
                }
            }
            p = next;
        }
    }
}

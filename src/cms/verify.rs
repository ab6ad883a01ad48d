//! Checking a SignerInfo (RFC 5652 §5.6): the message digest against the signed content, and
//! the signature value against the signer's public key, with `ring`. Also the checks of an
//! RFC 3161 time-stamp token that do not need a trust store.

use super::oids::*;
use super::parse::{DigestKind, SignedCms};
use crate::keys::DigestAlgorithm;
use der::{Decode, Encode};
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use time::OffsetDateTime;
use x509_tsp::TstInfo;

/// The outcome of checking one SignerInfo.
#[derive(Debug, Clone)]
pub struct SignerCheck {
    pub digest: Option<DigestKind>,
    /// The message-digest attribute (or, without signed attributes, the signature itself)
    /// covers the content.
    pub digest_matches: bool,
    /// The signature value verifies under the certificate's public key.
    pub signature_valid: bool,
    /// Human name of the algorithm, e.g. "RSA PKCS#1 v1.5 SHA-256".
    pub algorithm: String,
    /// The digest or signature algorithm is too weak to rely on (SHA-1).
    pub weak: bool,
    /// Why the check could not be carried out (unsupported algorithm, malformed attributes).
    pub problem: Option<String>,
}

/// Public key of a certificate: (algorithm OID, curve OID for EC, key bits).
fn public_key(cert_der: &[u8]) -> Option<(String, Option<String>, Vec<u8>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    spki_parts(cert.public_key())
}

fn spki_parts(
    spki: &x509_parser::x509::SubjectPublicKeyInfo,
) -> Option<(String, Option<String>, Vec<u8>)> {
    let alg = spki.algorithm.algorithm.to_id_string();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    Some((alg, curve, spki.subject_public_key.data.to_vec()))
}

/// The hash named inside RSASSA-PSS-params (RFC 4055), SHA-1 when absent.
fn pss_hash(params: Option<&der::Any>) -> Option<DigestKind> {
    let Some(params) = params else {
        return Some(DigestKind::Sha1);
    };
    let der = params.to_der().ok()?;
    // SEQUENCE { [0] EXPLICIT AlgorithmIdentifier OPTIONAL, … }
    if der.len() < 4 || der[0] != 0x30 {
        return None;
    }
    let content_start = if der[1] & 0x80 == 0 {
        2
    } else {
        2 + usize::from(der[1] & 0x7f)
    };
    if der.get(content_start) != Some(&0xA0) {
        return Some(DigestKind::Sha1);
    }
    // [0] with a short-form length; the parameters are any bytes the signer wrote, so the
    // length is checked against what is there.
    let inner = content_start + 2;
    let inner_len = usize::from(*der.get(content_start + 1)?);
    let alg = spki::AlgorithmIdentifierOwned::from_der(der.get(inner..inner + inner_len)?).ok()?;
    DigestKind::from_oid(&alg.oid)
}

/// RSASSA-PSS verification with any salt length (RFC 8017 §9.1.2), via OpenSSL.
fn pss_any_salt(
    rsa_public_key: &[u8],
    digest: DigestKind,
    message: &[u8],
    signature: &[u8],
) -> bool {
    use openssl::{
        hash::MessageDigest,
        pkey::PKey,
        rsa::{Padding, Rsa},
        sign::{RsaPssSaltlen, Verifier},
    };
    let md = match digest {
        DigestKind::Sha2(DigestAlgorithm::Sha256) => MessageDigest::sha256(),
        DigestKind::Sha2(DigestAlgorithm::Sha384) => MessageDigest::sha384(),
        DigestKind::Sha2(DigestAlgorithm::Sha512) => MessageDigest::sha512(),
        DigestKind::Sha1 => return false,
    };
    let result = (|| -> Result<bool, openssl::error::ErrorStack> {
        let key = PKey::from_rsa(Rsa::public_key_from_der_pkcs1(rsa_public_key)?)?;
        let mut v = Verifier::new(md, &key)?;
        v.set_rsa_padding(Padding::PKCS1_PSS)?;
        v.set_rsa_mgf1_md(md)?;
        v.set_rsa_pss_saltlen(RsaPssSaltlen::custom(-2))?; // RSA_PSS_SALTLEN_AUTO
        v.update(message)?;
        v.verify(signature)
    })();
    result.unwrap_or(false)
}

/// Verify `signature` over `message` with the key in a DER SubjectPublicKeyInfo (OCSP
/// responses, CRLs); the hash comes from the signature algorithm.
pub fn verify_with_spki(
    spki_der: &[u8],
    sig_alg: &spki::AlgorithmIdentifierOwned,
    message: &[u8],
    signature: &[u8],
) -> bool {
    use x509_parser::prelude::FromDer;
    let Ok((_, spki)) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der) else {
        return false;
    };
    let Some((key_alg, curve, key)) = spki_parts(&spki) else {
        return false;
    };
    let default = DigestKind::Sha2(DigestAlgorithm::Sha256);
    match verification_algorithm(sig_alg, default, &key_alg, curve.as_deref()) {
        Ok((alg, _, _)) => UnparsedPublicKey::new(alg, &key)
            .verify(message, signature)
            .is_ok(),
        Err(_) => false,
    }
}

/// Choose the ring verification algorithm for a SignerInfo and a public key.
fn verification_algorithm(
    sig_alg: &spki::AlgorithmIdentifierOwned,
    digest: DigestKind,
    key_alg: &str,
    curve: Option<&str>,
) -> Result<(&'static dyn VerificationAlgorithm, String, bool), String> {
    use DigestAlgorithm::*;
    let oid = sig_alg.oid;
    let rsa_key = key_alg == "1.2.840.113549.1.1.1" || key_alg == "1.2.840.113549.1.1.10";
    let ec_key = key_alg == "1.2.840.10045.2.1";
    let hash_of = |o| match o {
        o if o == SHA1_WITH_RSA || o == ECDSA_WITH_SHA1 => Some(DigestKind::Sha1),
        o if o == SHA256_WITH_RSA || o == ECDSA_WITH_SHA256 => Some(DigestKind::Sha2(Sha256)),
        o if o == SHA384_WITH_RSA || o == ECDSA_WITH_SHA384 => Some(DigestKind::Sha2(Sha384)),
        o if o == SHA512_WITH_RSA || o == ECDSA_WITH_SHA512 => Some(DigestKind::Sha2(Sha512)),
        _ => None,
    };
    if rsa_key
        && (oid == RSA_ENCRYPTION
            || [
                SHA1_WITH_RSA,
                SHA256_WITH_RSA,
                SHA384_WITH_RSA,
                SHA512_WITH_RSA,
            ]
            .contains(&oid))
    {
        let hash = hash_of(oid).unwrap_or(digest);
        return Ok(match hash {
            DigestKind::Sha1 => (
                &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                "RSA PKCS#1 v1.5 SHA-1".into(),
                true,
            ),
            DigestKind::Sha2(Sha256) => (
                &signature::RSA_PKCS1_2048_8192_SHA256,
                "RSA PKCS#1 v1.5 SHA-256".into(),
                false,
            ),
            DigestKind::Sha2(Sha384) => (
                &signature::RSA_PKCS1_2048_8192_SHA384,
                "RSA PKCS#1 v1.5 SHA-384".into(),
                false,
            ),
            DigestKind::Sha2(Sha512) => (
                &signature::RSA_PKCS1_2048_8192_SHA512,
                "RSA PKCS#1 v1.5 SHA-512".into(),
                false,
            ),
        });
    }
    if rsa_key && oid == RSASSA_PSS {
        return match pss_hash(sig_alg.parameters.as_ref()) {
            Some(DigestKind::Sha2(Sha256)) => Ok((
                &signature::RSA_PSS_2048_8192_SHA256,
                "RSA-PSS SHA-256".into(),
                false,
            )),
            Some(DigestKind::Sha2(Sha384)) => Ok((
                &signature::RSA_PSS_2048_8192_SHA384,
                "RSA-PSS SHA-384".into(),
                false,
            )),
            Some(DigestKind::Sha2(Sha512)) => Ok((
                &signature::RSA_PSS_2048_8192_SHA512,
                "RSA-PSS SHA-512".into(),
                false,
            )),
            _ => Err("RSA-PSS with SHA-1 or unreadable parameters".into()),
        };
    }
    if ec_key
        && (oid == EC_PUBLIC_KEY
            || [
                ECDSA_WITH_SHA1,
                ECDSA_WITH_SHA256,
                ECDSA_WITH_SHA384,
                ECDSA_WITH_SHA512,
            ]
            .contains(&oid))
    {
        let hash = hash_of(oid).unwrap_or(digest);
        let p256 = curve == Some("1.2.840.10045.3.1.7");
        let p384 = curve == Some("1.3.132.0.34");
        return match (hash, p256, p384) {
            (DigestKind::Sha2(Sha256), true, _) => Ok((
                &signature::ECDSA_P256_SHA256_ASN1,
                "ECDSA P-256 SHA-256".into(),
                false,
            )),
            (DigestKind::Sha2(Sha384), true, _) => Ok((
                &signature::ECDSA_P256_SHA384_ASN1,
                "ECDSA P-256 SHA-384".into(),
                false,
            )),
            (DigestKind::Sha2(Sha256), _, true) => Ok((
                &signature::ECDSA_P384_SHA256_ASN1,
                "ECDSA P-384 SHA-256".into(),
                false,
            )),
            (DigestKind::Sha2(Sha384), _, true) => Ok((
                &signature::ECDSA_P384_SHA384_ASN1,
                "ECDSA P-384 SHA-384".into(),
                false,
            )),
            (DigestKind::Sha1, _, _) => Err("ECDSA with SHA-1".into()),
            _ => Err(format!(
                "ECDSA with {} on curve {}",
                hash.name(),
                curve.unwrap_or("?")
            )),
        };
    }
    Err(format!("signature algorithm {oid} with a {key_alg} key"))
}

/// Check the first SignerInfo of `cms` against `cert_der` over `content` (the signed bytes, in
/// pieces: for a PDF, the two ByteRange parts).
///
/// `precomputed` is the content digest when the caller already hashed the content with the
/// signer's digest algorithm.
pub fn verify_signer(
    cms: &SignedCms,
    cert_der: &[u8],
    content: &[&[u8]],
    precomputed: Option<Vec<u8>>,
) -> SignerCheck {
    let digest = cms.digest_kind();
    let mut check = SignerCheck {
        digest,
        digest_matches: false,
        signature_valid: false,
        algorithm: String::new(),
        weak: matches!(digest, Some(DigestKind::Sha1)),
        problem: None,
    };
    let Some(digest) = digest else {
        check.problem = Some(format!(
            "unsupported digest algorithm {}",
            cms.signer.digest_alg.oid
        ));
        return check;
    };
    let Some((key_alg, curve, key)) = public_key(cert_der) else {
        check.problem = Some("the signer certificate cannot be parsed".into());
        return check;
    };
    let (alg, name, weak) = match verification_algorithm(
        cms.signature_algorithm(),
        digest,
        &key_alg,
        curve.as_deref(),
    ) {
        Ok(v) => v,
        Err(e) => {
            check.weak |= e.contains("SHA-1");
            check.algorithm = e.clone();
            check.problem = Some(format!("unsupported: {e}"));
            return check;
        }
    };
    check.algorithm = name;
    check.weak |= weak;
    let signature = cms.signer.signature.as_bytes();
    let pss_digest = (cms.signature_algorithm().oid == RSASSA_PSS)
        .then(|| pss_hash(cms.signature_algorithm().parameters.as_ref()))
        .flatten();
    let key_bytes = key.clone();
    let key = UnparsedPublicKey::new(alg, &key);
    // ring verifies RSA-PSS only with a salt as long as the digest; other salt lengths
    // (pyHanko uses the maximum) go through OpenSSL, which recovers the salt length.
    let verify = |m: &[u8]| {
        key.verify(m, signature).is_ok()
            || pss_digest.is_some_and(|d| pss_any_salt(&key_bytes, d, m, signature))
    };
    match &cms.signer.signed_attrs {
        Some(attrs) => {
            let computed = precomputed.unwrap_or_else(|| digest.digest_parts(content));
            check.digest_matches = cms.message_digest().is_some_and(|md| md == computed);
            if cms.content_type_attr().is_none() {
                check.problem =
                    Some("signed attributes without content-type (RFC 5652 §11.1)".into());
            }
            let reencoded = attrs.to_der().ok();
            check.signature_valid = cms
                .signed_attrs_raw
                .iter()
                .chain(reencoded.iter())
                .any(|m| verify(m));
        }
        None => {
            // RFC 5652 §5.4: without signed attributes the signature covers the content itself.
            let message: Vec<u8> = content.concat();
            check.signature_valid = verify(&message);
            check.digest_matches = check.signature_valid;
        }
    }
    check
}

/// A time-stamp token checked without a trust store.
#[derive(Debug, Clone)]
pub struct TimestampCheck {
    pub gen_time: Option<OffsetDateTime>,
    /// The TSA's certificate (from the token) and the other certificates it carries.
    pub tsa_certificate: Option<Vec<u8>>,
    pub certificates: Vec<Vec<u8>>,
    /// The messageImprint matches the time-stamped data.
    pub imprint_ok: bool,
    /// The token's own signature verifies.
    pub signature_ok: bool,
    pub weak: bool,
    pub problem: Option<String>,
    pub policy: Option<String>,
}

/// Check an RFC 3161 token over `data` (for a signature time-stamp: the signature value).
pub fn verify_timestamp(token: &[u8], data: &[&[u8]]) -> TimestampCheck {
    let mut check = TimestampCheck {
        gen_time: None,
        tsa_certificate: None,
        certificates: vec![],
        imprint_ok: false,
        signature_ok: false,
        weak: false,
        problem: None,
        policy: None,
    };
    let cms = match SignedCms::parse(token) {
        Ok(c) => c,
        Err(e) => {
            check.problem = Some(format!("time-stamp token: {e}"));
            return check;
        }
    };
    check.certificates = cms.certificates.clone();
    if cms.signed_data.encap_content_info.econtent_type != ID_CT_TST_INFO {
        check.problem = Some("the token does not contain a TSTInfo".into());
        return check;
    }
    let Some(tst_der) = cms.econtent() else {
        check.problem = Some("the token has no TSTInfo content".into());
        return check;
    };
    let info = match TstInfo::from_der(&tst_der) {
        Ok(i) => i,
        Err(e) => {
            check.problem = Some(format!("TSTInfo: {e}"));
            return check;
        }
    };
    check.policy = Some(info.policy.to_string());
    let secs = info.gen_time.to_unix_duration().as_secs();
    check.gen_time = i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok());
    match DigestKind::from_oid(&info.message_imprint.hash_algorithm.oid) {
        Some(kind) => {
            check.weak |= kind == DigestKind::Sha1;
            check.imprint_ok =
                kind.digest_parts(data) == info.message_imprint.hashed_message.as_bytes();
        }
        None => check.problem = Some("unsupported messageImprint hash".into()),
    }
    match cms.signer_certificate() {
        Some(cert) => {
            let signer = verify_signer(&cms, cert, &[&tst_der], None);
            check.signature_ok = signer.digest_matches && signer.signature_valid;
            check.weak |= signer.weak;
            if check.problem.is_none() {
                check.problem = signer.problem;
            }
            check.tsa_certificate = Some(cert.to_vec());
        }
        None => check.problem = Some("the token does not carry the TSA certificate".into()),
    }
    check
}

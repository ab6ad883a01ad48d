//! Certificate path validation with rustls-webpki (RFC 5280 §6), plus what webpki leaves out for
//! signatures: end-entity keyUsage (digitalSignature or nonRepudiation) and a document-signing
//! EKU policy. Revocation is checked separately against the signing time.

use rustls_pki_types::{CertificateDer, UnixTime};
use std::time::Duration;
use time::OffsetDateTime;
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter};

/// Which extended key usages a certificate may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EkuPolicy {
    /// Document signing: no EKU, or one of documentSigning (RFC 9336), emailProtection,
    /// Microsoft document signing, Adobe Authentic Documents, clientAuth, anyExtendedKeyUsage.
    DocumentSigning,
    /// A time-stamping authority: id-kp-timeStamping must be present (RFC 3161 §2.3).
    TimeStamping,
}

const DOC_SIGNING_EKUS: [&[usize]; 6] = [
    &[1, 3, 6, 1, 5, 5, 7, 3, 36],
    &[1, 3, 6, 1, 5, 5, 7, 3, 4],
    &[1, 3, 6, 1, 4, 1, 311, 10, 3, 12],
    &[1, 2, 840, 113583, 1, 1, 5],
    &[1, 3, 6, 1, 5, 5, 7, 3, 2],
    &[2, 5, 29, 37, 0],
];
const TIME_STAMPING: &[usize] = &[1, 3, 6, 1, 5, 5, 7, 3, 8];

impl ExtendedKeyUsageValidator for EkuPolicy {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        let mut present = Vec::new();
        for id in iter {
            present.push(id?.to_decoded_oid());
        }
        let ok = match self {
            EkuPolicy::DocumentSigning => {
                present.is_empty()
                    || present
                        .iter()
                        .any(|p| DOC_SIGNING_EKUS.contains(&p.as_slice()))
            }
            // webpki applies the policy to CA certificates too; those often have no EKU. The
            // TSA certificate itself must carry timeStamping: `validate_chain` checks that.
            EkuPolicy::TimeStamping => {
                present.is_empty() || present.iter().any(|p| p.as_slice() == TIME_STAMPING)
            }
        };
        #[allow(deprecated)] // the context variant needs a `KeyUsage`, which names one OID only
        if ok {
            Ok(())
        } else {
            Err(webpki::Error::RequiredEkuNotFound)
        }
    }
}

/// Why a path could not be validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainProblem {
    /// No path to a configured trust anchor.
    NoChain(String),
    /// A certificate of the path was expired at the validation time.
    Expired(String),
    /// A certificate of the path was not yet valid at the validation time.
    NotYetValid(String),
    /// The path exists but breaks a constraint (signature, EKU, keyUsage, basic constraints…).
    Constraints(String),
}

/// Result of path validation.
#[derive(Debug, Clone)]
pub struct ChainOutcome {
    /// The certificates from the end entity up to and including the anchor when trusted;
    /// otherwise the best chain that could be assembled from the available certificates.
    pub chain: Vec<Vec<u8>>,
    pub trusted: bool,
    pub problem: Option<ChainProblem>,
}

fn algs() -> &'static [&'static dyn rustls_pki_types::SignatureVerificationAlgorithm] {
    use webpki::ring::*;
    static ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
        ECDSA_P256_SHA256,
        ECDSA_P256_SHA384,
        ECDSA_P384_SHA256,
        ECDSA_P384_SHA384,
        ED25519,
        RSA_PKCS1_2048_8192_SHA256,
        RSA_PKCS1_2048_8192_SHA384,
        RSA_PKCS1_2048_8192_SHA512,
        RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
        RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
        RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
        RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
        RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
    ];
    ALGS
}

/// Assemble issuer links by name from `pool`, starting at `ee` (for reporting untrusted chains).
pub fn naive_chain(ee: &[u8], pool: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut chain = vec![ee.to_vec()];
    for _ in 0..8 {
        let Some(last) = chain.last() else { break };
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(last) else {
            break;
        };
        if cert.subject().as_raw() == cert.issuer().as_raw() {
            break;
        }
        let issuer = cert.issuer().as_raw().to_vec();
        let Some(next) = pool.iter().find(|c| {
            !chain.contains(c)
                && x509_parser::parse_x509_certificate(c)
                    .is_ok_and(|(_, p)| p.subject().as_raw() == issuer.as_slice())
        }) else {
            break;
        };
        chain.push(next.clone());
    }
    chain
}

/// A trusted path and the interval in which every certificate of it is valid.
#[derive(Clone)]
struct CachedPath {
    chain: Vec<Vec<u8>>,
    from: i64,
    until: i64,
}

/// Trusted paths found before, keyed by SHA-256 over (end entity, anchors, EKU policy).
///
/// Everything webpki checks besides validity periods (signatures, names, constraints, EKU)
/// does not depend on the time, so a path found trusted stays trusted at any instant inside
/// all its certificates' validity periods. Revocation is not cached: it is checked per call.
static PATH_CACHE: std::sync::OnceLock<
    std::sync::Mutex<std::collections::HashMap<Vec<u8>, CachedPath>>,
> = std::sync::OnceLock::new();
const PATH_CACHE_MAX: usize = 4096;

/// Forget every remembered path (benchmarks of the cold case, tests).
pub fn clear_path_cache() {
    if let Some(Ok(mut c)) = PATH_CACHE.get().map(|c| c.lock()) {
        c.clear();
    }
}

fn cache_key(ee: &[u8], anchors: &[Vec<u8>], eku: EkuPolicy) -> Vec<u8> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&[eku as u8]);
    ctx.update(&(ee.len() as u64).to_be_bytes());
    ctx.update(ee);
    for a in anchors {
        ctx.update(&(a.len() as u64).to_be_bytes());
        ctx.update(a);
    }
    ctx.finish().as_ref().to_vec()
}

fn validity_window(chain: &[Vec<u8>]) -> Option<(i64, i64)> {
    let mut from = i64::MIN;
    let mut until = i64::MAX;
    for c in chain {
        let (_, cert) = x509_parser::parse_x509_certificate(c).ok()?;
        from = from.max(cert.validity().not_before.timestamp());
        until = until.min(cert.validity().not_after.timestamp());
    }
    Some((from, until))
}

/// Validate `ee` at `at` against `anchors`, with `intermediates` as candidate issuers.
/// Trusted paths are remembered (see [`PATH_CACHE`]), so verifying many letters from the same
/// officials does not repeat the CA signature checks.
pub fn validate_chain(
    ee: &[u8],
    intermediates: &[Vec<u8>],
    anchors: &[Vec<u8>],
    at: OffsetDateTime,
    eku: EkuPolicy,
) -> ChainOutcome {
    let key = cache_key(ee, anchors, eku);
    let cache = PATH_CACHE.get_or_init(Default::default);
    let t = at.unix_timestamp();
    if let Some(hit) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        if hit.from <= t && t <= hit.until {
            return ChainOutcome {
                chain: hit.chain,
                trusted: true,
                problem: None,
            };
        }
    }
    let outcome = validate_chain_uncached(ee, intermediates, anchors, at, eku);
    if outcome.trusted {
        if let (Some((from, until)), Ok(mut c)) = (validity_window(&outcome.chain), cache.lock()) {
            if c.len() >= PATH_CACHE_MAX {
                c.clear();
            }
            c.insert(
                key,
                CachedPath {
                    chain: outcome.chain.clone(),
                    from,
                    until,
                },
            );
        }
    }
    outcome
}

fn validate_chain_uncached(
    ee: &[u8],
    intermediates: &[Vec<u8>],
    anchors: &[Vec<u8>],
    at: OffsetDateTime,
    eku: EkuPolicy,
) -> ChainOutcome {
    let mut pool: Vec<Vec<u8>> = intermediates.to_vec();
    pool.extend(anchors.iter().cloned());
    let naive = naive_chain(ee, &pool);
    let fail = |problem| ChainOutcome {
        chain: naive.clone(),
        trusted: false,
        problem: Some(problem),
    };

    // Own check first: keyUsage of a signing certificate (RFC 5280 §4.2.1.3).
    if eku == EkuPolicy::DocumentSigning {
        if let Ok((_, cert)) = x509_parser::parse_x509_certificate(ee) {
            if let Ok(Some(ku)) = cert.key_usage() {
                if !ku.value.digital_signature() && !ku.value.non_repudiation() {
                    return fail(ChainProblem::Constraints(
                        "the signer certificate's keyUsage allows neither digitalSignature nor nonRepudiation".into(),
                    ));
                }
            }
        }
    }

    if eku == EkuPolicy::TimeStamping {
        let has = x509_parser::parse_x509_certificate(ee)
            .ok()
            .and_then(|(_, c)| {
                c.extended_key_usage()
                    .ok()
                    .flatten()
                    .map(|e| e.value.time_stamping)
            })
            .unwrap_or(false);
        if !has {
            return fail(ChainProblem::Constraints(
                "the TSA certificate lacks the timeStamping extended key usage".into(),
            ));
        }
    }

    let ee_der = CertificateDer::from(ee);
    let Ok(cert) = EndEntityCert::try_from(&ee_der) else {
        return fail(ChainProblem::Constraints(
            "the certificate cannot be parsed for path validation".into(),
        ));
    };
    let anchor_ders: Vec<CertificateDer<'_>> = anchors
        .iter()
        .map(|a| CertificateDer::from(a.as_slice()))
        .collect();
    let trust_anchors: Vec<_> = anchor_ders
        .iter()
        .filter_map(|a| webpki::anchor_from_trusted_cert(a).ok())
        .collect();
    let inter: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .filter(|c| c.as_slice() != ee)
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let secs = u64::try_from(at.unix_timestamp()).unwrap_or(0);
    let time = UnixTime::since_unix_epoch(Duration::from_secs(secs));
    match cert.verify_for_usage(algs(), &trust_anchors, &inter, time, eku, None, None) {
        Ok(path) => {
            let mut chain = vec![ee.to_vec()];
            chain.extend(path.intermediate_certificates().map(|c| c.der().to_vec()));
            let anchor = path.anchor();
            if let Some(a) = anchors.iter().zip(&trust_anchors).find(|(_, t)| {
                t.subject == anchor.subject
                    && t.subject_public_key_info == anchor.subject_public_key_info
            }) {
                chain.push(a.0.clone());
            }
            ChainOutcome {
                chain,
                trusted: true,
                problem: None,
            }
        }
        Err(e) => {
            let text = format!("{e:?}");
            let problem = match e {
                webpki::Error::CertExpired { .. } => {
                    ChainProblem::Expired(format!("a certificate had expired at {at}"))
                }
                webpki::Error::CertNotValidYet { .. } => {
                    ChainProblem::NotYetValid(format!("a certificate was not yet valid at {at}"))
                }
                webpki::Error::UnknownIssuer => {
                    ChainProblem::NoChain("no path to a trusted root".into())
                }
                #[allow(deprecated)]
                webpki::Error::RequiredEkuNotFound
                | webpki::Error::RequiredEkuNotFoundContext(_) => {
                    ChainProblem::Constraints(format!(
                        "extended key usage does not allow {}",
                        match eku {
                            EkuPolicy::DocumentSigning => "document signing",
                            EkuPolicy::TimeStamping => "time-stamping",
                        }
                    ))
                }
                _ => ChainProblem::Constraints(text),
            };
            fail(problem)
        }
    }
}

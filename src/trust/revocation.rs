//! Revocation status of a certificate at a point in time, from CRLs (RFC 5280 §5) and OCSP
//! responses (RFC 6960) — given by the caller, embedded in the signature or the DSS, or
//! fetched from the certificate's CRL distribution point.

use ::time::OffsetDateTime;
use der::{Decode, Encode};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use x509_parser::prelude::*;

/// Where the deciding revocation information came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationSource {
    /// A CRL from the trust store, the command line, or fetched.
    Crl,
    /// An OCSP response.
    Ocsp,
    /// Data embedded in the signature or the document (CMS, adbe attribute, DSS).
    Embedded,
}

/// The status of one certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum RevocationStatus {
    Good {
        source: RevocationSource,
    },
    Revoked {
        source: RevocationSource,
        #[serde(with = "::time::serde::rfc3339")]
        time: OffsetDateTime,
        reason: Option<String>,
    },
    Unknown,
}

/// Revocation material, each item tagged with where it came from.
#[derive(Debug, Clone, Default)]
pub struct RevocationData {
    pub crls: Vec<(Vec<u8>, RevocationSource)>,
    pub ocsp: Vec<(Vec<u8>, RevocationSource)>,
}

fn to_time(t: ASN1Time) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(t.timestamp()).ok()
}

/// CRL signatures already found valid, by SHA-256 of the CRL and of the issuer's public key.
/// A verifier meets the same few CRLs on every request (trust store, DSS of letters from the
/// same office), and checking one is a public-key operation; the bytes are hashed anyway.
static VALID_CRL_SIGNATURES: std::sync::LazyLock<Mutex<std::collections::HashSet<[u8; 64]>>> =
    std::sync::LazyLock::new(Default::default);
/// Bound on remembered signatures; the set starts over when it is full.
const REMEMBERED_CRL_SIGNATURES: usize = 4096;

fn crl_signature_valid(
    crl_der: &[u8],
    crl: &CertificateRevocationList,
    issuer: &X509Certificate,
) -> bool {
    let sha = |b: &[u8]| ring::digest::digest(&ring::digest::SHA256, b);
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(sha(crl_der).as_ref());
    key[32..].copy_from_slice(sha(issuer.public_key().raw).as_ref());
    let lock = || {
        VALID_CRL_SIGNATURES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    };
    if lock().contains(&key) {
        return true;
    }
    if crl.verify_signature(issuer.public_key()).is_err() {
        return false;
    }
    let mut known = lock();
    if known.len() >= REMEMBERED_CRL_SIGNATURES {
        known.clear();
    }
    known.insert(key);
    true
}

/// Status of `cert` (issued by `issuer`) according to one CRL, if that CRL is the issuer's and
/// its signature verifies.
fn crl_status(
    crl_der: &[u8],
    cert: &X509Certificate,
    issuer: &X509Certificate,
) -> Option<(Option<OffsetDateTime>, Option<String>)> {
    let (_, crl) = parse_x509_crl(crl_der).ok()?;
    if crl.issuer().as_raw() != cert.issuer().as_raw() {
        return None;
    }
    if !crl_signature_valid(crl_der, &crl, issuer) {
        return None;
    }
    for revoked in crl.iter_revoked_certificates() {
        if revoked.raw_serial() == cert.raw_serial() {
            let reason = revoked.reason_code().map(|(_, r)| format!("{r}"));
            return Some((
                to_time(revoked.revocation_date).or(Some(OffsetDateTime::UNIX_EPOCH)),
                reason,
            ));
        }
    }
    Some((None, None))
}

/// Status according to one OCSPResponse, if it answers for `cert` and is signed by the issuer
/// or by a responder the issuer delegated (id-kp-OCSPSigning, RFC 6960 §4.2.2.2).
fn ocsp_status(
    resp_der: &[u8],
    cert: &X509Certificate,
    issuer: &X509Certificate,
) -> Option<(Option<OffsetDateTime>, Option<String>)> {
    use x509_ocsp::{BasicOcspResponse, CertStatus, OcspResponse};
    let resp = OcspResponse::from_der(resp_der).ok()?;
    let bytes = resp.response_bytes?;
    if bytes.response_type.to_string() != "1.3.6.1.5.5.7.48.1.1" {
        return None;
    }
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes()).ok()?;
    let tbs = basic.tbs_response_data.to_der().ok()?;
    let sig = basic.signature.as_bytes()?;
    let by = |spki: &SubjectPublicKeyInfo| {
        crate::cms::verify::verify_with_spki(spki.raw, &basic.signature_algorithm, &tbs, sig)
    };
    let mut signed = by(issuer.public_key());
    if !signed {
        for c in basic.certs.iter().flatten() {
            let Ok(der) = c.to_der() else { continue };
            let Ok((_, responder)) = parse_x509_certificate(&der) else {
                continue;
            };
            let delegated = responder.issuer().as_raw() == issuer.subject().as_raw()
                && responder
                    .verify_signature(Some(issuer.public_key()))
                    .is_ok()
                && responder
                    .extended_key_usage()
                    .ok()
                    .flatten()
                    .is_some_and(|e| e.value.ocsp_signing);
            if delegated && by(responder.public_key()) {
                signed = true;
                break;
            }
        }
    }
    if !signed {
        return None;
    }
    let key_bits = issuer.public_key().subject_public_key.data.as_ref();
    for single in &basic.tbs_response_data.responses {
        let id = &single.cert_id;
        if id.serial_number.as_bytes() != cert.raw_serial() {
            continue;
        }
        let kind = crate::cms::DigestKind::from_oid(&id.hash_algorithm.oid)?;
        if kind.digest_parts(&[key_bits]) != id.issuer_key_hash.as_bytes() {
            continue;
        }
        return match &single.cert_status {
            CertStatus::Good(_) => Some((None, None)),
            CertStatus::Revoked(info) => {
                let secs = info.revocation_time.0.to_unix_duration().as_secs();
                let t = OffsetDateTime::from_unix_timestamp(i64::try_from(secs).ok()?).ok();
                Some((
                    t.or(Some(OffsetDateTime::UNIX_EPOCH)),
                    info.revocation_reason.map(|r| format!("{r:?}")),
                ))
            }
            CertStatus::Unknown(_) => None,
        };
    }
    None
}

/// The status of `cert_der` issued by `issuer_der` from the given data. A revocation found in
/// any source wins; otherwise a good answer; otherwise unknown.
pub fn status(cert_der: &[u8], issuer_der: &[u8], data: &RevocationData) -> RevocationStatus {
    let (Ok((_, cert)), Ok((_, issuer))) = (
        parse_x509_certificate(cert_der),
        parse_x509_certificate(issuer_der),
    ) else {
        return RevocationStatus::Unknown;
    };
    let mut good = None;
    let answers = data
        .crls
        .iter()
        .filter_map(|(d, s)| crl_status(d, &cert, &issuer).map(|a| (a, *s, RevocationSource::Crl)))
        .chain(data.ocsp.iter().filter_map(|(d, s)| {
            ocsp_status(d, &cert, &issuer).map(|a| (a, *s, RevocationSource::Ocsp))
        }));
    for ((revoked_at, reason), given, kind) in answers {
        let source = if given == RevocationSource::Embedded {
            RevocationSource::Embedded
        } else {
            kind
        };
        match revoked_at {
            Some(time) => {
                return RevocationStatus::Revoked {
                    source,
                    time,
                    reason,
                };
            }
            None => good = good.or(Some(source)),
        }
    }
    match good {
        Some(source) => RevocationStatus::Good { source },
        None => RevocationStatus::Unknown,
    }
}

/// CRL distribution point URLs (http/https) of a certificate.
pub fn crl_urls(cert_der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = parse_x509_certificate(cert_der) else {
        return vec![];
    };
    let mut urls = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::CRLDistributionPoints(points) = ext.parsed_extension() {
            for p in points.points.iter() {
                if let Some(DistributionPointName::FullName(names)) = &p.distribution_point {
                    for n in names {
                        if let GeneralName::URI(u) = n {
                            if u.starts_with("http://") || u.starts_with("https://") {
                                urls.push(u.to_string());
                            }
                        }
                    }
                }
            }
        }
    }
    urls
}

/// Fetches CRLs over HTTP with a time limit, a size limit and an in-process cache.
pub struct CrlFetcher {
    timeout: Duration,
    ttl: Duration,
    max_len: usize,
    cache: Mutex<HashMap<String, (Instant, Option<Vec<u8>>)>>,
}

impl Default for CrlFetcher {
    fn default() -> Self {
        CrlFetcher {
            timeout: Duration::from_secs(10),
            ttl: Duration::from_secs(3600),
            max_len: 32 << 20,
            cache: Mutex::default(),
        }
    }
}

impl CrlFetcher {
    /// The CRL at `url` (DER), from the cache when fresh; failures are cached briefly too.
    pub fn fetch(&self, url: &str) -> Option<Vec<u8>> {
        if let Ok(cache) = self.cache.lock() {
            if let Some((at, v)) = cache.get(url) {
                let ttl = if v.is_some() {
                    self.ttl
                } else {
                    Duration::from_secs(60)
                };
                if at.elapsed() < ttl {
                    return v.clone();
                }
            }
        }
        let result = (|| {
            let client = reqwest::blocking::Client::builder()
                .timeout(self.timeout)
                .build()
                .ok()?;
            let resp = client.get(url).send().ok()?;
            if !resp.status().is_success()
                || resp
                    .content_length()
                    .is_some_and(|l| l as usize > self.max_len)
            {
                return None;
            }
            let body = resp.bytes().ok()?;
            if body.len() > self.max_len {
                return None;
            }
            let der = match ::pem::parse(&body[..]) {
                Ok(p) if p.tag() == "X509 CRL" => p.into_contents(),
                _ => body.to_vec(),
            };
            parse_x509_crl(&der).ok()?;
            Some(der)
        })();
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(url.to_string(), (Instant::now(), result.clone()));
        }
        result
    }
}

/// CRL files re-read whenever one changes (modification time or size), so a revocation
/// published while the service runs applies to the next lifecycle check. A file that no longer
/// parses, or that goes missing, keeps its last good contents: revocations are never forgotten
/// because a file was damaged or removed (a file never seen yields no CRL).
#[derive(Debug, Default)]
pub struct CrlFiles {
    paths: Vec<std::path::PathBuf>,
    loaded: Mutex<Vec<LoadedCrl>>,
}

#[derive(Debug, Default, Clone)]
struct LoadedCrl {
    stamp: Option<FileStamp>,
    ders: Vec<Vec<u8>>,
}

/// What tells a changed file: modification time, size and (on Unix) inode, which a file
/// replaced by rename changes even within one timestamp tick.
type FileStamp = (std::time::SystemTime, u64, u64);

fn file_stamp(m: &std::fs::Metadata) -> Option<FileStamp> {
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(m);
    #[cfg(not(unix))]
    let ino = 0;
    Some((m.modified().ok()?, m.len(), ino))
}

/// The CRLs (DER) in a PEM or DER file's bytes; `None` when any of them does not parse.
fn parse_crl_file(data: &[u8]) -> Option<Vec<Vec<u8>>> {
    let ders: Vec<Vec<u8>> = match ::pem::parse_many(data) {
        Ok(blocks) if !blocks.is_empty() => blocks
            .into_iter()
            .filter(|b| b.tag() == "X509 CRL")
            .map(|b| b.into_contents())
            .collect(),
        _ => vec![data.to_vec()],
    };
    ders.iter()
        .all(|d| parse_x509_crl(d).is_ok())
        .then_some(ders)
}

impl CrlFiles {
    pub fn new(paths: Vec<std::path::PathBuf>) -> Self {
        let loaded = Mutex::new(vec![LoadedCrl::default(); paths.len()]);
        CrlFiles { paths, loaded }
    }

    /// The watched paths.
    pub fn paths(&self) -> &[std::path::PathBuf] {
        &self.paths
    }

    /// The current CRLs of every file, re-reading the files whose stamp changed.
    pub fn current(&self) -> Vec<Vec<u8>> {
        let Ok(mut loaded) = self.loaded.lock() else {
            return vec![];
        };
        let mut out = Vec::new();
        for (path, slot) in self.paths.iter().zip(loaded.iter_mut()) {
            let stamp = std::fs::metadata(path).ok().and_then(|m| file_stamp(&m));
            if stamp != slot.stamp {
                match stamp {
                    None => tracing::warn!(
                        path = %path.display(),
                        "CRL file missing; keeping its previous contents"
                    ),
                    Some(_) => match std::fs::read(path).ok().and_then(|d| parse_crl_file(&d)) {
                        Some(ders) => *slot = LoadedCrl { stamp, ders },
                        None => tracing::warn!(
                            path = %path.display(),
                            "CRL file unreadable; keeping its previous contents"
                        ),
                    },
                }
            }
            out.extend(slot.ders.iter().cloned());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> Vec<u8> {
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
    }

    #[test]
    fn crl_files_follow_changes_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crl");
        let files = CrlFiles::new(vec![path.clone()]);
        assert!(files.current().is_empty(), "a missing file gives no CRL");
        let a = fixture("fixtures/pki/intermediate-ca.crl.der");
        let b = fixture("keys-example/crl/issuing-ca.crl");
        assert_ne!(a, b);
        std::fs::write(&path, &a).unwrap();
        assert_eq!(files.current(), vec![a.clone()]);
        // Replaced by rename, as `segel dev-pki` does.
        let tmp = dir.path().join("new.crl");
        std::fs::write(&tmp, &b).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(files.current(), vec![b.clone()]);
        // PEM is read too.
        std::fs::write(
            &path,
            ::pem::encode(&::pem::Pem::new("X509 CRL", a.clone())),
        )
        .unwrap();
        assert_eq!(files.current(), vec![a.clone()]);
        // A file that stops parsing keeps its last good contents.
        std::fs::write(&path, b"not a CRL at all").unwrap();
        assert_eq!(files.current(), vec![a.clone()]);
        // So does one that goes missing: its revocations still count.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(files.current(), vec![a]);
    }
}

//! Verifying every signature of a PDF: structure (ByteRange, /Contents, CMS), integrity and
//! signature value, signature time-stamp, certificate path and revocation at the best signing
//! time, and what later revisions changed.

use super::TrustStore;
use super::chain::{ChainProblem, EkuPolicy, validate_chain};
use super::report::*;
use super::revocation::{
    CrlFetcher, RevocationData, RevocationSource, RevocationStatus, crl_urls, status,
};
use crate::clock::Clock;
use crate::cms::verify::{verify_signer, verify_timestamp};
use crate::cms::{DigestKind, SignedCms};
use crate::pdf::PdfError;
use crate::pdf::diff::{Permission, analyse};
use crate::pdf::parse::ParsedPdf;
use crate::pdf::signatures::{ByteRange, FoundSignature, SignatureKind, find_signatures};
use ::time::OffsetDateTime;
use lopdf::Object;
use x509_parser::prelude::*;

/// How to verify.
#[derive(Default)]
pub struct VerifyOptions {
    /// Validation time; the clock's time when absent.
    pub at: Option<OffsetDateTime>,
    /// Fetch CRLs from the certificates' distribution points when nothing else answers.
    pub fetcher: Option<CrlFetcher>,
    /// Name reported as `file`.
    pub file_name: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn subject_of(der: &[u8]) -> String {
    parse_x509_certificate(der)
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_else(|_| "(unparsable certificate)".into())
}

fn signer_report(der: &[u8]) -> Option<SignerInfoReport> {
    let (_, c) = parse_x509_certificate(der).ok()?;
    let name = c
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    Some(SignerInfoReport {
        name,
        subject: c.subject().to_string(),
        issuer: c.issuer().to_string(),
        serial: c.raw_serial_as_string().replace(':', ""),
        not_before: OffsetDateTime::from_unix_timestamp(c.validity().not_before.timestamp()).ok(),
        not_after: OffsetDateTime::from_unix_timestamp(c.validity().not_after.timestamp()).ok(),
    })
}

/// Certificates, CRLs and OCSP responses of the Document Security Store (ETSI EN 319 142-1
/// §5.4.2: /DSS with /Certs, /CRLs, /OCSPs arrays of streams).
fn dss(pdf: &ParsedPdf) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut out = (Vec::new(), Vec::new(), Vec::new());
    let Ok(catalog) = pdf.catalog() else {
        return out;
    };
    let Ok(dss) = catalog
        .get(b"DSS")
        .and_then(|d| Ok(pdf.doc.dereference(d)?.1))
        .and_then(Object::as_dict)
    else {
        return out;
    };
    for (key, target) in [
        (&b"Certs"[..], &mut out.0),
        (b"CRLs", &mut out.1),
        (b"OCSPs", &mut out.2),
    ] {
        let Ok(arr) = dss
            .get(key)
            .and_then(|a| Ok(pdf.doc.dereference(a)?.1))
            .and_then(Object::as_array)
        else {
            continue;
        };
        for item in arr {
            let Ok((_, Object::Stream(s))) = pdf.doc.dereference(item) else {
                continue;
            };
            let data = s
                .decompressed_content()
                .unwrap_or_else(|_| s.content.clone());
            if !data.is_empty() {
                target.push(data);
            }
        }
    }
    out
}

struct Context<'a> {
    bytes: &'a [u8],
    pdf: &'a ParsedPdf,
    store: &'a TrustStore,
    at: OffsetDateTime,
    fetcher: Option<&'a CrlFetcher>,
    revision_ends: Vec<(usize, usize)>,
    dss_certs: Vec<Vec<u8>>,
    dss_crls: Vec<Vec<u8>>,
    dss_ocsp: Vec<Vec<u8>>,
    certification: Option<(usize, i64)>,
    /// The digest of the whole-document signature, computed while hashing the file.
    precomputed: Option<(usize, DigestKind, Vec<u8>)>,
}

/// Revision ends: (just past `%%EOF`, past its end-of-line).
fn revision_ends(bytes: &[u8]) -> Vec<(usize, usize)> {
    crate::pdf::signatures::revision_ends(bytes)
        .into_iter()
        .map(|end| {
            let mut marker_end = end;
            while marker_end > 0 && matches!(bytes[marker_end - 1], b'\r' | b'\n') {
                marker_end -= 1;
            }
            (marker_end, end)
        })
        .collect()
}

impl Context<'_> {
    /// The revision (1-based) a ByteRange ends, and whether it is the whole file.
    fn coverage(&self, br: &ByteRange) -> Result<(usize, bool), String> {
        let trailing_ws = self.bytes[br.end.min(self.bytes.len())..]
            .iter()
            .all(|b| b.is_ascii_whitespace() || *b == 0);
        let rev = self
            .revision_ends
            .iter()
            .position(|&(m, e)| br.end >= m && br.end <= e);
        match rev {
            Some(i) => Ok((
                i + 1,
                trailing_ws || i + 1 == self.revision_ends.len() && br.end == self.bytes.len(),
            )),
            None if trailing_ws => Ok((self.revision_ends.len().max(1), true)),
            None => Err("the ByteRange does not end at the end of a revision".into()),
        }
    }

    fn revision_of(&self, offset: usize) -> usize {
        self.revision_ends
            .iter()
            .position(|&(_, e)| offset < e)
            .map(|i| i + 1)
            .unwrap_or(self.revision_ends.len())
    }

    fn revocation_data(&self, cms_crls: &[Vec<u8>], cms_ocsp: &[Vec<u8>]) -> RevocationData {
        let mut d = RevocationData::default();
        d.crls.extend(
            self.store
                .crls
                .iter()
                .map(|c| (c.clone(), RevocationSource::Crl)),
        );
        d.crls.extend(
            cms_crls
                .iter()
                .chain(&self.dss_crls)
                .map(|c| (c.clone(), RevocationSource::Embedded)),
        );
        d.ocsp.extend(
            cms_ocsp
                .iter()
                .chain(&self.dss_ocsp)
                .map(|c| (c.clone(), RevocationSource::Embedded)),
        );
        d
    }

    /// Revocation along `chain` (signer first): the first revoked certificate, else the
    /// signer's own status.
    fn chain_revocation(
        &self,
        chain: &[Vec<u8>],
        data: &mut RevocationData,
    ) -> (RevocationStatus, Option<String>) {
        let mut signer_status = RevocationStatus::Unknown;
        for (i, pair) in chain.windows(2).enumerate() {
            let mut s = status(&pair[0], &pair[1], data);
            if s == RevocationStatus::Unknown {
                if let Some(fetcher) = self.fetcher {
                    for url in crl_urls(&pair[0]) {
                        if let Some(crl) = fetcher.fetch(&url) {
                            data.crls.push((crl, RevocationSource::Crl));
                        }
                    }
                    s = status(&pair[0], &pair[1], data);
                }
            }
            if let RevocationStatus::Revoked { .. } = s {
                return (s, (i > 0).then(|| subject_of(&pair[0])));
            }
            if i == 0 {
                signer_status = s;
            }
        }
        (signer_status, None)
    }

    fn find_cert(&self, cms: &SignedCms) -> Option<Vec<u8>> {
        if let Some(c) = cms.signer_certificate() {
            return Some(c.to_vec());
        }
        self.dss_certs
            .iter()
            .chain(&self.store.intermediates)
            .find(|c| cms.is_signer_cert(c))
            .cloned()
    }

    fn pool(&self, extra: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut pool: Vec<Vec<u8>> = extra.to_vec();
        pool.extend(self.dss_certs.iter().cloned());
        pool.extend(self.store.intermediates.iter().cloned());
        pool
    }
}

struct Draft {
    r: SignatureReport,
    problems: Vec<(Verdict, Indication, &'static str, String)>,
}

impl Draft {
    fn fail(&mut self, v: Verdict, i: Indication, sub: &'static str, why: impl Into<String>) {
        self.problems.push((v, i, sub, why.into()));
    }

    fn finish(mut self) -> SignatureReport {
        self.problems.sort_by_key(|p| p.0);
        let signer = self.r.signer.as_ref().and_then(|s| s.name.clone());
        match self.problems.into_iter().next() {
            Some((v, i, sub, why)) => {
                self.r.verdict = v;
                self.r.indication = i;
                self.r.subindication = Some(sub);
                let (id, en) = summaries(v, signer.as_deref(), Some(&why));
                self.r.reason = Some(why);
                self.r.summary_id = id;
                self.r.summary_en = en;
            }
            None => {
                let (id, en) = summaries(Verdict::Valid, signer.as_deref(), None);
                self.r.summary_id = id;
                self.r.summary_en = en;
            }
        }
        self.r
    }
}

fn verify_one(cx: &Context, index: usize, sig: &FoundSignature) -> SignatureReport {
    let is_doc_ts = sig.kind == SignatureKind::DocTimeStamp || sig.subfilter == "ETSI.RFC3161";
    let mut d = Draft {
        r: SignatureReport {
            field: sig.field.clone(),
            kind: if is_doc_ts {
                "document_timestamp"
            } else {
                "signature"
            },
            revision: None,
            coverage: None,
            subfilter: sig.subfilter.clone(),
            algorithm: None,
            signer: None,
            claimed_time: sig.claimed_time.clone(),
            timestamp: None,
            chain: vec![],
            integrity: false,
            crypto_valid: false,
            trusted: false,
            revocation: RevocationReport::from_status(&RevocationStatus::Unknown, None),
            modifications_after: vec![],
            indication: Indication::TotalPassed,
            subindication: None,
            verdict: Verdict::Valid,
            reason: None,
            summary_id: String::new(),
            summary_en: String::new(),
        },
        problems: vec![],
    };
    use Indication::*;
    let br = match &sig.byte_range {
        Ok(br) => *br,
        Err(e) => {
            d.fail(Verdict::Invalid, TotalFailed, "FORMAT_FAILURE", e.clone());
            return d.finish();
        }
    };
    let (revision, whole) = match cx.coverage(&br) {
        Ok(c) => c,
        Err(e) => {
            d.fail(Verdict::Invalid, TotalFailed, "FORMAT_FAILURE", e);
            return d.finish();
        }
    };
    d.r.revision = Some(revision);
    d.r.coverage = Some(if whole {
        "whole_document"
    } else {
        "earlier_revision"
    });
    let contents = match &sig.contents {
        Ok(c) => c,
        Err(e) => {
            d.fail(Verdict::Invalid, TotalFailed, "FORMAT_FAILURE", e.clone());
            return d.finish();
        }
    };
    if !is_doc_ts
        && !["ETSI.CAdES.detached", "adbe.pkcs7.detached"].contains(&sig.subfilter.as_str())
    {
        d.fail(
            Verdict::Invalid,
            TotalFailed,
            "FORMAT_FAILURE",
            format!("unsupported SubFilter {:?}", sig.subfilter),
        );
        return d.finish();
    }
    let parts: [&[u8]; 2] = [&cx.bytes[..br.gap_start], &cx.bytes[br.gap_end..br.end]];
    let cms = match SignedCms::parse(contents) {
        Ok(c) => c,
        Err(e) => {
            d.fail(
                Verdict::Invalid,
                TotalFailed,
                "FORMAT_FAILURE",
                e.to_string(),
            );
            return d.finish();
        }
    };

    // The signer (or, for a document time-stamp, the TSA) and the integrity checks.
    let (cert, best_time, eku, extra_certs) = if is_doc_ts {
        let ts = verify_timestamp(contents, &parts);
        d.r.integrity = ts.imprint_ok;
        d.r.crypto_valid = ts.signature_ok;
        d.r.algorithm = Some(format!(
            "RFC 3161 time-stamp ({})",
            cms.digest_kind().map(|k| k.name()).unwrap_or("?")
        ));
        if !ts.imprint_ok {
            d.fail(
                Verdict::Invalid,
                TotalFailed,
                "HASH_FAILURE",
                "the time-stamp does not cover this document revision",
            );
        }
        if !ts.signature_ok {
            d.fail(
                Verdict::Invalid,
                TotalFailed,
                "SIG_CRYPTO_FAILURE",
                ts.problem
                    .clone()
                    .unwrap_or_else(|| "the time-stamp signature does not verify".into()),
            );
        }
        d.r.timestamp = Some(TimestampReport {
            time: ts.gen_time,
            tsa: ts.tsa_certificate.as_deref().map(subject_of),
            valid: ts.imprint_ok && ts.signature_ok,
            problem: ts.problem.clone(),
        });
        let Some(cert) = ts.tsa_certificate.clone() else {
            d.fail(
                Verdict::Invalid,
                Indeterminate,
                "NO_SIGNING_CERTIFICATE_FOUND",
                "the time-stamp carries no TSA certificate",
            );
            return d.finish();
        };
        (
            cert,
            ts.gen_time.unwrap_or(cx.at),
            EkuPolicy::TimeStamping,
            ts.certificates.clone(),
        )
    } else {
        let Some(cert) = cx.find_cert(&cms) else {
            d.fail(
                Verdict::Invalid,
                Indeterminate,
                "NO_SIGNING_CERTIFICATE_FOUND",
                "the signer's certificate is not in the signature",
            );
            return d.finish();
        };
        if let Some((kind, hash)) = cms.ess_cert_hash() {
            if kind.digest_parts(&[&cert]) != hash {
                d.fail(
                    Verdict::Invalid,
                    TotalFailed,
                    "SIG_CONSTRAINTS_FAILURE",
                    "the signing-certificate attribute names another certificate",
                );
            }
        }
        let pre = cx
            .precomputed
            .as_ref()
            .filter(|(i, k, _)| *i == index && Some(*k) == cms.digest_kind())
            .map(|p| p.2.clone());
        let check = verify_signer(&cms, &cert, &parts, pre);
        d.r.algorithm = Some(check.algorithm.clone());
        d.r.integrity = check.digest_matches;
        d.r.crypto_valid = check.signature_valid;
        if let Some(p) = &check.problem {
            if !check.weak {
                d.fail(Verdict::Invalid, Indeterminate, "FORMAT_FAILURE", p.clone());
            }
        }
        if !check.digest_matches {
            d.fail(
                Verdict::Invalid,
                TotalFailed,
                "HASH_FAILURE",
                "the document bytes do not match the signed digest",
            );
        } else if !check.signature_valid && check.problem.is_none() {
            d.fail(
                Verdict::Invalid,
                TotalFailed,
                "SIG_CRYPTO_FAILURE",
                "the signature value does not verify with the certificate's public key",
            );
        }
        if check.weak {
            d.fail(
                Verdict::Untrusted,
                Indeterminate,
                "CRYPTO_CONSTRAINTS_FAILURE",
                "SHA-1 is no longer acceptable for signatures",
            );
        }
        // Signature time-stamp (PAdES B-T): proof of existence at genTime.
        let mut best = cx.at;
        if let Some(token) = cms.timestamp_token() {
            let ts = verify_timestamp(&token, &[cms.signer.signature.as_bytes()]);
            let mut valid = ts.imprint_ok && ts.signature_ok;
            let mut problem = ts.problem.clone();
            if let (Some(tsa), Some(gen_time)) = (&ts.tsa_certificate, ts.gen_time) {
                let pool = cx.pool(&ts.certificates);
                let outcome = validate_chain(
                    tsa,
                    &pool,
                    &cx.store.anchors,
                    gen_time,
                    EkuPolicy::TimeStamping,
                );
                if !outcome.trusted {
                    valid = false;
                    problem =
                        problem.or(outcome.problem.map(|p| format!("TSA certificate: {p:?}")));
                }
            }
            if valid {
                best = ts.gen_time.unwrap_or(cx.at);
            }
            d.r.timestamp = Some(TimestampReport {
                time: ts.gen_time,
                tsa: ts.tsa_certificate.as_deref().map(subject_of),
                valid,
                problem,
            });
        }
        let mut extra = cms.certificates.clone();
        extra.extend(cms.crls.iter().cloned().take(0));
        (cert, best, EkuPolicy::DocumentSigning, extra)
    };
    d.r.signer = signer_report(&cert);

    // Certificate path at the best signing time.
    let pool = cx.pool(&extra_certs);
    let outcome = validate_chain(&cert, &pool, &cx.store.anchors, best_time, eku);
    d.r.trusted = outcome.trusted;
    d.r.chain = outcome.chain.iter().map(|c| subject_of(c)).collect();
    let has_poe = d.r.timestamp.as_ref().is_some_and(|t| t.valid) || is_doc_ts;
    match &outcome.problem {
        None => {}
        Some(ChainProblem::Expired(why)) => d.fail(
            Verdict::Expired,
            Indeterminate,
            if has_poe {
                "EXPIRED"
            } else {
                "OUT_OF_BOUNDS_NO_POE"
            },
            why.clone(),
        ),
        Some(ChainProblem::NotYetValid(why)) => d.fail(
            Verdict::Expired,
            Indeterminate,
            "NOT_YET_VALID",
            why.clone(),
        ),
        Some(ChainProblem::NoChain(why)) => d.fail(
            Verdict::Untrusted,
            Indeterminate,
            "NO_CERTIFICATE_CHAIN_FOUND",
            why.clone(),
        ),
        Some(ChainProblem::Constraints(why)) => d.fail(
            Verdict::Untrusted,
            Indeterminate,
            "CHAIN_CONSTRAINTS_FAILURE",
            why.clone(),
        ),
    }
    // Revocation, compared with the best signing time.
    let mut data = cx.revocation_data(&cms.crls, &cms.ocsp_responses);
    let (rev, revoked_ca) = cx.chain_revocation(&outcome.chain, &mut data);
    if let RevocationStatus::Revoked { time, .. } = &rev {
        if *time <= best_time {
            let sub = if has_poe { "REVOKED" } else { "REVOKED_NO_POE" };
            let ind = if has_poe { TotalFailed } else { Indeterminate };
            let who = revoked_ca
                .clone()
                .map(|s| format!("the CA certificate {s}"))
                .unwrap_or_else(|| "the signer's certificate".into());
            d.fail(
                Verdict::Revoked,
                ind,
                sub,
                format!("{who} was revoked at {time}, at or before the signing time {best_time}"),
            );
        }
    }
    d.r.revocation = RevocationReport::from_status(&rev, revoked_ca);

    // Changes in later revisions.
    if !whole {
        match ParsedPdf::parse_for_reading(&cx.bytes[..br.end]) {
            Ok(old) => {
                let level = sig
                    .docmdp
                    .or(cx
                        .certification
                        .filter(|(i, _)| *i <= index)
                        .map(|(_, p)| p))
                    .unwrap_or(2);
                let offsets = &cx.pdf.doc.reference_table;
                let revision_of = |id: lopdf::ObjectId| match offsets.get(id.0) {
                    Some(lopdf::xref::XrefEntry::Normal { offset, .. }) => {
                        cx.revision_of(*offset as usize)
                    }
                    Some(lopdf::xref::XrefEntry::Compressed { container, .. }) => {
                        match offsets.get(*container) {
                            Some(lopdf::xref::XrefEntry::Normal { offset, .. }) => {
                                cx.revision_of(*offset as usize)
                            }
                            _ => cx.revision_ends.len(),
                        }
                    }
                    _ => cx.revision_ends.len(),
                };
                d.r.modifications_after = analyse(
                    (&old, &cx.bytes[..br.end]),
                    (cx.pdf, cx.bytes),
                    Permission(level),
                    &revision_of,
                );
                if let Some(m) = d.r.modifications_after.iter().find(|m| !m.allowed) {
                    d.fail(
                        Verdict::Modified,
                        TotalFailed,
                        "FORMAT_FAILURE",
                        format!("revision {}: {}", m.revision, m.description),
                    );
                }
            }
            Err(e) => d.fail(
                Verdict::Modified,
                Indeterminate,
                "FORMAT_FAILURE",
                format!("the signed revision cannot be read: {e}"),
            ),
        }
    }
    d.finish()
}

/// Verify every signature in `bytes`.
pub fn verify_pdf(
    bytes: &[u8],
    store: &TrustStore,
    opts: &VerifyOptions,
    clock: &dyn Clock,
) -> Result<Report, PdfError> {
    let pdf = ParsedPdf::parse_for_reading(bytes)?;
    let found = find_signatures(&pdf, bytes)?;
    let (dss_certs, dss_crls, dss_ocsp) = dss(&pdf);
    let certification = found
        .iter()
        .enumerate()
        .find_map(|(i, s)| s.docmdp.map(|p| (i, p)));

    // Hash the file once; the whole-document signature's digest comes out of the same pass.
    let mut precomputed = None;
    let whole = found
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, s)| match &s.byte_range {
            Ok(br) if br.end == bytes.len() => Some((i, *br, s)),
            _ => None,
        });
    let file_digest = match whole.and_then(|(i, br, s)| {
        let kind = s
            .contents
            .as_ref()
            .ok()
            .and_then(|c| SignedCms::parse(c).ok())
            .and_then(|c| c.digest_kind())?;
        Some((i, br, kind))
    }) {
        Some((i, br, DigestKind::Sha2(crate::keys::DigestAlgorithm::Sha256))) => {
            let mut head = ring::digest::Context::new(&ring::digest::SHA256);
            head.update(&bytes[..br.gap_start]);
            let mut sig = head.clone();
            head.update(&bytes[br.gap_start..]);
            sig.update(&bytes[br.gap_end..]);
            precomputed = Some((
                i,
                DigestKind::Sha2(crate::keys::DigestAlgorithm::Sha256),
                sig.finish().as_ref().to_vec(),
            ));
            head.finish()
        }
        _ => ring::digest::digest(&ring::digest::SHA256, bytes),
    };

    let at = opts.at.unwrap_or_else(|| clock.now());
    let cx = Context {
        bytes,
        pdf: &pdf,
        store,
        at,
        fetcher: opts.fetcher.as_ref(),
        revision_ends: revision_ends(bytes),
        dss_certs,
        dss_crls,
        dss_ocsp,
        certification,
        precomputed,
    };
    let signatures: Vec<SignatureReport> = found
        .iter()
        .enumerate()
        .map(|(i, s)| verify_one(&cx, i, s))
        .collect();
    let valid = signatures
        .iter()
        .filter(|s| s.verdict == Verdict::Valid)
        .count();
    Ok(Report {
        file: opts.file_name.clone(),
        sha256: hex(file_digest.as_ref()),
        revisions: cx.revision_ends.len(),
        validation_time: at,
        signature_count: signatures.len(),
        valid_signatures: valid,
        signatures,
        warnings: pdf.warnings.clone(),
    })
}

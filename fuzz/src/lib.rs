//! What each fuzz target does with its input, in one place: the libFuzzer targets in
//! `fuzz_targets/` call these functions, and the main test suite (`tests/it/fuzz_smoke.rs`)
//! includes this file to feed the saved crashing inputs and seeded mutations of the fixtures
//! to exactly the same entry points on stable Rust.
//!
//! Every function takes arbitrary bytes and must return without panicking; what Segel answers
//! (a report, an error) does not matter here.

use segel::clock::FixedClock;
use segel::cms::SignedCms;
use segel::cms::verify::{verify_signer, verify_timestamp};
use segel::keys::{SoftwareSigner, load_certificates_pem};
use segel::pdf::anchor::find_anchor;
use segel::pdf::parse::find_startxref;
use segel::pdf::signatures::{find_signatures, revision_ends};
use segel::pdf::{ParsedPdf, Placement, SignRequest, Visibility, sign_pdf};
use segel::trust::chain::naive_chain;
use segel::trust::revocation::{RevocationData, crl_urls, status};
use segel::trust::{EkuPolicy, RevocationSource, TrustStore, VerifyOptions, validate_chain};
use std::sync::LazyLock;
use time::OffsetDateTime;

/// The validation time of every target: 2026-01-01T00:00:00Z, inside the fixture PKI's validity.
pub fn fixed_time() -> OffsetDateTime {
    // 1_767_225_600 is a valid Unix timestamp, so the conversion cannot fail.
    OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The fixture PKI (fixtures/pki, see fixtures/NOTES.md) as trust store: the root as anchor,
/// the intermediate CA and its CRL, so the fixture signatures reach chain building and CRL
/// checks with valid signatures.
static STORE: LazyLock<TrustStore> = LazyLock::new(|| TrustStore {
    anchors: vec![include_bytes!("../../fixtures/pki/root-ca.cert.der").to_vec()],
    intermediates: vec![include_bytes!("../../fixtures/pki/intermediate-ca.cert.der").to_vec()],
    crls: vec![include_bytes!("../../fixtures/pki/intermediate-ca.crl.der").to_vec()],
});

/// The fixture P-256 signer (test key, fixtures/pki) with its chain; `None` only if the fixture
/// files are broken, which the smoke test's signing of an intact letter would show.
static SIGNER: LazyLock<Option<SoftwareSigner>> = LazyLock::new(|| {
    let mut chain =
        load_certificates_pem(include_bytes!("../../fixtures/pki/signer-ec.cert.pem")).ok()?;
    chain.extend(
        load_certificates_pem(include_bytes!(
            "../../fixtures/pki/intermediate-ca.cert.pem"
        ))
        .ok()?,
    );
    SoftwareSigner::from_pem(
        include_bytes!("../../fixtures/pki/signer-ec.key.pem"),
        chain,
        false,
    )
    .ok()
});

/// Target `pdf_sign`: what the service does with an uploaded PDF, signing it by incremental
/// update three ways: invisibly, with an initials stamp over the anchor `${ttd}`, and with one
/// at a fixed rectangle of page 1 (parse for appending, form fields, DocMDP, anchor search,
/// appearance, writing the revision and the /ByteRange). Returns how many signings succeeded.
pub fn pdf_sign(data: &[u8]) -> usize {
    let Some(signer) = SIGNER.as_ref() else {
        return 0;
    };
    let clock = FixedClock(fixed_time());
    let initials = |placement| Visibility::Initials {
        placement,
        initials: "BS".into(),
    };
    let visibilities = [
        Visibility::Invisible,
        initials(Placement::Anchor {
            text: "${ttd}".into(),
            size: None,
        }),
        initials(Placement::Rect {
            page: 1,
            rect: [50.0, 50.0, 80.0, 40.0],
        }),
    ];
    let mut signed = 0;
    for visibility in visibilities {
        let req = SignRequest {
            visibility,
            reason: Some("Fuzz".into()),
            ..Default::default()
        };
        if sign_pdf(data.to_vec(), signer, &req, &clock).is_ok() {
            signed += 1;
        }
    }
    signed
}

/// Target `stamp_image`: a signer's uploaded signature specimen (PNG of any colour type and bit
/// depth, or JPEG headers), decoded and drawn into a stamp appearance. Returns whether it was
/// accepted.
pub fn stamp_image(data: &[u8]) -> bool {
    let Ok(image) = segel::pdf::StampImage::decode(data) else {
        return false;
    };
    let _ = image.has_mask();
    let mut next = 10;
    let _ = image.write_objects(|_| {
        next += 1;
        (next, 0)
    });
    segel::pdf::appearance::image_stamp(&image, 120.0, 60.0).is_ok()
}

/// Target `pdf_parse`: the three ways Segel reads a PDF (for signing, lean for signing, for
/// verification), then what signing and verification read from the parsed document: form
/// fields, DocMDP, signatures with their /ByteRange and /Contents, and the anchor text search
/// over every page's content stream. Returns how many signatures the reading parse found.
pub fn pdf_parse(data: &[u8]) -> Option<usize> {
    let _ = find_startxref(data);
    let _ = revision_ends(data);
    let mut found = None;
    for (lenient, parsed) in [
        (false, ParsedPdf::parse(data)),
        (false, ParsedPdf::parse_lean(data)),
        (true, ParsedPdf::parse_for_reading(data)),
    ] {
        let Ok(pdf) = parsed else { continue };
        let _ = pdf.catalog();
        let _ = pdf.pages();
        let _ = pdf.acro_form();
        let _ = pdf.fields();
        let _ = pdf.docmdp_permission();
        let _ = pdf.has_signatures();
        if let Ok(signatures) = find_signatures(&pdf, data)
            && lenient
        {
            found = Some(signatures.len());
        }
        if !lenient {
            // Signing searches the anchor in documents it is about to sign.
            let _ = find_anchor(&pdf, "${ttd}");
        }
    }
    found
}

/// Target `verify_pdf`: the whole verifier (PDF structure, CMS, certificates, CRLs and OCSP
/// responses from the CMS and the DSS, time-stamps, path validation, the changes of later
/// revisions) with the fixture trust store at a fixed time. Returns the number of signatures
/// reported, or `None` when the file was refused.
pub fn verify_pdf(data: &[u8]) -> Option<usize> {
    let at = fixed_time();
    let opts = VerifyOptions {
        at: Some(at),
        fetcher: None,
        file_name: "fuzz.pdf".into(),
    };
    segel::trust::verify_pdf(data, &STORE, &opts, &FixedClock(at))
        .ok()
        .map(|r| r.signature_count)
}

/// Target `cms_parse`: the BER normalizer and the SignedData reader on /Contents-like bytes,
/// the reader of a TSA's TimeStampResp, every accessor the verifier uses, the signer check
/// against each embedded certificate, and the RFC 3161 token checks. Returns whether the
/// bytes read as a SignedData.
pub fn cms_parse(data: &[u8]) -> bool {
    let _ = segel::cms::ber::definite_len(data);
    let _ = segel::cms::ber::to_der(data);
    let _ = segel::cms::tsp::token_tst_info(data);
    // A time-stamp authority's answer is untrusted bytes from the network as well.
    let _ = segel::cms::tsp::decode_response(
        data,
        segel::keys::DigestAlgorithm::Sha256,
        &[0; 32],
        &[1],
    );
    let _ = verify_timestamp(data, &[b"segel"]);
    let Ok(cms) = SignedCms::parse(data) else {
        return false;
    };
    let _ = cms.digest_kind();
    let _ = cms.message_digest();
    let _ = cms.content_type_attr();
    let _ = cms.signing_time();
    let _ = cms.ess_cert_hash();
    let _ = cms.econtent();
    let _ = cms.signer_certificate();
    for cert in cms.certificates.iter().take(4) {
        let _ = cms.is_signer_cert(cert);
        let _ = verify_signer(&cms, cert, &[data], None);
    }
    if let Some(token) = cms.timestamp_token() {
        let _ = verify_timestamp(&token, &[cms.signer.signature.as_bytes()]);
    }
    true
}

/// Split `data` into parts, each written as a kind byte, a big-endian u16 length and that many
/// bytes (the last part may be shorter than its length says).
pub fn split_parts(data: &[u8]) -> Vec<(u8, &[u8])> {
    let mut parts = Vec::new();
    let mut rest = data;
    while rest.len() >= 3 && parts.len() < 16 {
        let kind = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        let end = (3 + len).min(rest.len());
        parts.push((kind, &rest[3..end]));
        rest = &rest[end..];
    }
    parts
}

/// The inverse of [`split_parts`], for writing seeds and tests.
pub fn join_parts(parts: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, bytes) in parts {
        let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
        out.push(*kind);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&bytes[..usize::from(len)]);
    }
    out
}

/// Target `revocation`: input split by [`split_parts`] into a certificate, its issuer and
/// revocation data (kind byte even: a CRL, odd: an OCSP response). Runs the revocation status,
/// the CRL distribution points, and path validation of the certificate with the issuer as
/// anchor, as the verifier does with what a signature carries.
pub fn revocation(data: &[u8]) -> Option<bool> {
    let parts = split_parts(data);
    let [(_, cert), (_, issuer), rest @ ..] = parts.as_slice() else {
        return None;
    };
    let mut revocation = RevocationData::default();
    for (i, (kind, bytes)) in rest.iter().enumerate() {
        let source = if i % 2 == 0 {
            RevocationSource::Embedded
        } else {
            RevocationSource::Crl
        };
        if kind % 2 == 0 {
            revocation.crls.push((bytes.to_vec(), source));
        } else {
            revocation.ocsp.push((bytes.to_vec(), source));
        }
    }
    let answer = status(cert, issuer, &revocation);
    let _ = crl_urls(cert);
    let pool = vec![issuer.to_vec()];
    let _ = naive_chain(cert, &pool);
    for eku in [EkuPolicy::DocumentSigning, EkuPolicy::TimeStamping] {
        let _ = validate_chain(cert, &[], &pool, fixed_time(), eku);
    }
    Some(answer != segel::trust::RevocationStatus::Unknown)
}

/// A one-page PDF whose page content stream is `content`, drawn with a Helvetica font that
/// has /Widths, so the text interpreter runs over arbitrary operators and operands.
pub fn pdf_with_content(content: &[u8]) -> Vec<u8> {
    let widths: Vec<String> = (32..127)
        .map(|c| (400 + (c * 7) % 300).to_string())
        .collect();
    let objects: [Vec<u8>; 5] = [
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>".to_vec(),
        [
            format!("<< /Length {} >>\nstream\n", content.len()).as_bytes(),
            content,
            b"\nendstream",
        ]
        .concat(),
        format!(
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /FirstChar 32 /LastChar 126 /Widths [{}] >>",
            widths.join(" ")
        )
        .into_bytes(),
    ];
    let mut pdf = b"%PDF-1.7\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(pdf.len());
        pdf.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        pdf.extend_from_slice(body);
        pdf.extend_from_slice(b"\nendobj\n");
    }
    let xref = pdf.len();
    pdf.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for o in offsets {
        pdf.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    pdf.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    pdf
}

/// Target `anchor`: the first byte (mod 16) is the length of the anchor text that follows, the
/// rest is a page content stream; the anchor is searched in it. Returns whether it was found.
pub fn anchor(data: &[u8]) -> bool {
    let Some((&n, rest)) = data.split_first() else {
        return false;
    };
    let n = usize::from(n % 16).min(rest.len());
    let (needle, content) = rest.split_at(n);
    let needle = String::from_utf8_lossy(needle);
    let pdf = pdf_with_content(content);
    match ParsedPdf::parse(&pdf) {
        Ok(parsed) => find_anchor(&parsed, &needle).is_some(),
        Err(_) => false,
    }
}

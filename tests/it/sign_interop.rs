//! Signing interop: every output is checked by pyHanko, poppler's pdfsig and qpdf --check,
//! across input structures × algorithms × visibility, sequential signatures, certification,
//! and signature time-stamps (built-in TSA, over HTTP, and openssl ts).

use crate::common::*;
use crate::validators;
use segel::cms::{BuiltinTsa, HttpTsa, TimeStamper};
use segel::keys::Signer;
use segel::pdf::sign::{SignRequest, SignedPdf};
use segel::pdf::{Certification, PdfError, Placement, StampText, Visibility, sign_pdf};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Run all three validators on `pdf`; every signature must be valid and trusted.
pub fn assert_validators_accept(pdf: &Path, expected_signatures: usize, no_strict: bool) {
    let roots = trust_roots();
    let others = other_certs();
    let roots: Vec<&Path> = roots.iter().map(PathBuf::as_path).collect();
    let others: Vec<&Path> = others.iter().map(PathBuf::as_path).collect();
    // Segel's own verifier, with the development and fixture trust anchors.
    let report = crate::verify::verify(
        &std::fs::read(pdf).unwrap(),
        &crate::verify::default_store(),
    );
    assert!(
        report.all_valid(),
        "segel verify {}: {:#?}",
        pdf.display(),
        report.signatures
    );
    assert_eq!(report.signatures.len(), expected_signatures);
    if validators::require("qpdf") {
        let (ok, out) = validators::qpdf_check(pdf);
        assert!(ok, "qpdf --check {}:\n{out}", pdf.display());
    }
    if validators::require("pdfsig") {
        let (ok, out) = validators::pdfsig(pdf);
        assert!(ok, "pdfsig {}:\n{out}", pdf.display());
        assert_eq!(
            validators::parse_pdfsig(&out).len(),
            expected_signatures,
            "pdfsig count\n{out}"
        );
    }
    if validators::require("pyhanko") {
        let opts = validators::PyHankoOpts {
            no_strict,
            ..Default::default()
        };
        let r = validators::pyhanko_validate_opts(pdf, &roots, &others, &opts);
        assert!(r.ok, "pyHanko {}:\n{}", pdf.display(), r.output);
        let sigs = validators::pyhanko_signatures_opts(pdf, &roots, &others, &opts);
        assert_eq!(
            sigs.len(),
            expected_signatures,
            "pyHanko signature count:\n{}",
            r.output
        );
    }
}

fn stamp_text() -> StampText {
    StampText {
        name: "Dr. Budi Santoso, M.Si.".into(),
        title: Some("Sekretaris Jenderal".into()),
        signer_id: Some("197001012000031001".into()),
        time_text: String::new(),
        qr_url: Some("https://segel.example.go.id/v/3kq9x".into()),
        issuer_org: Some("Segel Development PKI".into()),
    }
}

fn request<'a>(visibility: Visibility) -> SignRequest<'a> {
    SignRequest {
        reason: Some("Disetujui".into()),
        location: Some("Jakarta".into()),
        visibility,
        ..Default::default()
    }
}

fn sign(input: Vec<u8>, signer: &dyn Signer, req: &SignRequest) -> SignedPdf {
    sign_pdf(input, signer, req, &now()).unwrap()
}

fn existing_signatures(name: &str) -> usize {
    match name {
        "signed/signed-once.pdf" => 1,
        "signed/signed-twice.pdf" => 2,
        _ => 0,
    }
}

/// One input × {RSA, RSA-PSS, P-256, P-384} × {invisible, visible rectangle, anchor}.
fn matrix(name: &str, input: Vec<u8>, anchor: bool) {
    let dir = tempdir();
    let signers: Vec<(&str, Box<dyn Signer>)> = vec![
        ("rsa", Box::new(dev_rsa())),
        ("pss", Box::new(ossl("signer-rsa", true))),
        ("p256", Box::new(ossl("signer-ec", false))),
        ("p384", Box::new(ossl("signer-p384", false))),
    ];
    let visibilities = [
        ("invisible", Visibility::Invisible),
        (
            "rect",
            Visibility::Stamp {
                placement: Placement::Rect {
                    page: 1,
                    rect: [300.0, 60.0, 240.0, 100.0],
                },
                text: stamp_text(),
            },
        ),
        (
            "anchor",
            Visibility::Stamp {
                placement: Placement::Anchor {
                    text: "${ttd}".into(),
                    size: None,
                },
                text: stamp_text(),
            },
        ),
    ];
    let before = existing_signatures(name);
    for (alg, signer) in &signers {
        for (vis_name, vis) in &visibilities {
            if *vis_name == "anchor" && !anchor {
                continue;
            }
            let signed = sign(input.clone(), signer.as_ref(), &request(vis.clone()));
            assert_eq!(
                &signed.bytes[..input.len()],
                &input[..],
                "the original bytes must stay unchanged"
            );
            assert!(signed.cms_len <= signed.reserved);
            let out = write(dir.path(), &format!("{alg}-{vis_name}.pdf"), &signed.bytes);
            assert_validators_accept(&out, before + 1, name.contains("hybrid"));
        }
    }
}

fn fixture_matrix(name: &str) {
    matrix(name, read(&format!("fixtures/{name}")), true);
}

#[test]
fn matrix_classic_xref() {
    fixture_matrix("pdf/letter.pdf");
}

#[test]
fn matrix_tj_anchor() {
    fixture_matrix("pdf/letter-tj.pdf");
}

#[test]
fn matrix_xref_stream_with_object_streams() {
    fixture_matrix("pdf/letter-objstm.pdf");
}

#[test]
fn matrix_linearized() {
    fixture_matrix("pdf/letter-linearized.pdf");
}

#[test]
fn matrix_hybrid_reference() {
    fixture_matrix("pdf/letter-hybrid.pdf");
}

#[test]
fn matrix_existing_acroform_indirect() {
    fixture_matrix("pdf/form.pdf");
}

#[test]
fn matrix_existing_acroform_direct() {
    fixture_matrix("pdf/form-direct.pdf");
}

#[test]
fn matrix_thirty_pages() {
    fixture_matrix("pdf/letter-30pages.pdf");
}

#[test]
fn matrix_signed_once_by_pyhanko() {
    fixture_matrix("signed/signed-once.pdf");
}

#[test]
fn matrix_signed_twice_by_pyhanko() {
    fixture_matrix("signed/signed-twice.pdf");
}

#[test]
fn matrix_twenty_megabyte_scan() {
    matrix("big", big_pdf(20 << 20), true);
}

#[test]
fn anchor_on_the_last_of_thirty_pages_is_found_there() {
    let input = read("fixtures/pdf/letter-30pages.pdf");
    let parsed = segel::pdf::ParsedPdf::parse(&input).unwrap();
    let hit = segel::pdf::anchor::find_anchor(&parsed, "${ttd}").unwrap();
    assert_eq!(hit.page, 30);
}

#[test]
fn anchor_position_matches_the_content_stream() {
    // letter.pdf draws the anchor with `BT /F1 11 Tf 350 250 Td (${ttd}) Tj ET` (fixtures/NOTES.md).
    let parsed = segel::pdf::ParsedPdf::parse(&read("fixtures/pdf/letter.pdf")).unwrap();
    let hit = segel::pdf::anchor::find_anchor(&parsed, "${ttd}").unwrap();
    assert_eq!(hit.page, 1);
    assert!((hit.size - 11.0).abs() < 0.01, "{hit:?}");
    assert!(hit.x_end > hit.x + 20.0, "{hit:?}");
}

#[test]
fn missing_anchor_is_an_error() {
    let req = request(Visibility::Stamp {
        placement: Placement::Anchor {
            text: "${nope}".into(),
            size: None,
        },
        text: stamp_text(),
    });
    let err = sign_pdf(read("fixtures/pdf/letter.pdf"), &dev_ec(), &req, &now()).unwrap_err();
    assert!(matches!(err, PdfError::AnchorNotFound(_)), "{err}");
}

#[test]
fn page_out_of_range_is_an_error() {
    let req = request(Visibility::Stamp {
        placement: Placement::Rect {
            page: 2,
            rect: [10.0, 10.0, 200.0, 90.0],
        },
        text: stamp_text(),
    });
    let err = sign_pdf(read("fixtures/pdf/letter.pdf"), &dev_ec(), &req, &now()).unwrap_err();
    assert!(
        matches!(err, PdfError::NoSuchPage { page: 2, count: 1 }),
        "{err}"
    );
}

#[test]
fn three_sequential_signatures_keep_earlier_ones_valid() {
    let dir = tempdir();
    let paraf = request(Visibility::Initials {
        placement: Placement::Rect {
            page: 1,
            rect: [60.0, 60.0, 60.0, 30.0],
        },
        initials: "SR".into(),
    });
    let one = sign(read("fixtures/pdf/letter.pdf"), &dev_ec(), &paraf);
    assert_validators_accept(&write(dir.path(), "one.pdf", &one.bytes), 1, false);
    let two = sign(
        one.bytes.clone(),
        &ossl("signer-p384", false),
        &request(Visibility::Invisible),
    );
    assert_eq!(&two.bytes[..one.bytes.len()], &one.bytes[..]);
    assert_validators_accept(&write(dir.path(), "two.pdf", &two.bytes), 2, false);
    let final_req = request(Visibility::Stamp {
        placement: Placement::Anchor {
            text: "${ttd}".into(),
            size: None,
        },
        text: stamp_text(),
    });
    let three = sign(two.bytes.clone(), &dev_rsa(), &final_req);
    assert_validators_accept(&write(dir.path(), "three.pdf", &three.bytes), 3, false);
    assert_eq!(
        [one.field_name, two.field_name, three.field_name],
        ["Signature1", "Signature2", "Signature3"]
    );
}

#[test]
fn certification_then_approval_signature() {
    let dir = tempdir();
    let mut cert_req = request(Visibility::Stamp {
        placement: Placement::Rect {
            page: 1,
            rect: [40.0, 40.0, 240.0, 100.0],
        },
        text: stamp_text(),
    });
    cert_req.certify = Some(Certification::FormFill);
    let certified = sign(read("fixtures/pdf/letter.pdf"), &dev_rsa(), &cert_req);
    let path = write(dir.path(), "certified.pdf", &certified.bytes);
    assert_validators_accept(&path, 1, false);
    let sigs = validators::pyhanko_signatures(&path, &[&trust_roots()[0]], &[]);
    assert_eq!(sigs[0]["certification"], "FILL_FORMS", "{sigs:?}");

    // An approval signature after certification (invisible: a new visible field is not permitted).
    let approved = sign(
        certified.bytes.clone(),
        &dev_ec(),
        &request(Visibility::Invisible),
    );
    assert_validators_accept(
        &write(dir.path(), "approved.pdf", &approved.bytes),
        2,
        false,
    );

    let visible = request(Visibility::Stamp {
        placement: Placement::Anchor {
            text: "${ttd}".into(),
            size: None,
        },
        text: stamp_text(),
    });
    let err = sign_pdf(certified.bytes.clone(), &dev_ec(), &visible, &now()).unwrap_err();
    assert!(
        matches!(err, PdfError::CertifiedNewVisibleField(2)),
        "{err}"
    );
}

#[test]
fn certify_no_changes_refuses_later_signatures() {
    let mut req = request(Visibility::Invisible);
    req.certify = Some(Certification::NoChanges);
    let certified = sign(read("fixtures/pdf/letter.pdf"), &dev_rsa(), &req);
    let err = sign_pdf(
        certified.bytes,
        &dev_ec(),
        &request(Visibility::Invisible),
        &now(),
    )
    .unwrap_err();
    assert!(matches!(err, PdfError::CertifiedNoChanges), "{err}");
    // Also for a document certified by other software (pyHanko, P=1).
    let err = sign_pdf(
        read("fixtures/signed/certified-p1.pdf"),
        &dev_ec(),
        &request(Visibility::Invisible),
        &now(),
    )
    .unwrap_err();
    assert!(matches!(err, PdfError::CertifiedNoChanges), "{err}");
}

#[test]
fn certifying_an_already_signed_document_is_refused() {
    let mut req = request(Visibility::Invisible);
    req.certify = Some(Certification::Annotate);
    let err = sign_pdf(
        read("fixtures/signed/signed-once.pdf"),
        &dev_rsa(),
        &req,
        &now(),
    )
    .unwrap_err();
    assert!(matches!(err, PdfError::CertifyAfterSignature), "{err}");
}

#[test]
fn approval_on_a_document_certified_by_pyhanko() {
    let dir = tempdir();
    let signed = sign(
        read("fixtures/signed/certified-p2.pdf"),
        &dev_rsa(),
        &request(Visibility::Invisible),
    );
    assert_validators_accept(&write(dir.path(), "p2.pdf", &signed.bytes), 2, false);
}

fn builtin_tsa() -> BuiltinTsa {
    let tsa = signer(
        "keys-example/tsa.key.pem",
        &["keys-example/tsa.chain.pem"],
        false,
    );
    BuiltinTsa::new(
        Arc::new(tsa),
        segel::cms::tsp::DEV_TSA_POLICY,
        Arc::new(now()),
    )
    .unwrap()
}

fn assert_timestamped(path: &Path) {
    if !validators::require("pyhanko") {
        return;
    }
    let roots = trust_roots();
    let roots: Vec<&Path> = roots.iter().map(PathBuf::as_path).collect();
    let sigs = validators::pyhanko_signatures(path, &roots, &[]);
    let last = sigs.last().expect("a signature");
    assert!(
        !last["signature_timestamp"].is_null(),
        "pyHanko sees no signature time-stamp: {last}"
    );
}

#[test]
fn b_t_with_the_builtin_tsa() {
    let dir = tempdir();
    let tsa = builtin_tsa();
    let mut req = request(Visibility::Invisible);
    req.timestamper = Some(&tsa);
    let signed = sign(read("fixtures/pdf/letter.pdf"), &dev_ec(), &req);
    let path = write(dir.path(), "bt.pdf", &signed.bytes);
    assert_validators_accept(&path, 1, false);
    assert_timestamped(&path);
}

/// `segel tsa` in a child process, on a free port.
struct TsaProcess {
    child: std::process::Child,
    url: String,
}

impl Drop for TsaProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_segel_tsa() -> TsaProcess {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_segel"))
        .args(["tsa", "--listen", "127.0.0.1:0"])
        .current_dir(root())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stderr)
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "unexpected: {line}");
    TsaProcess { child, url }
}

#[test]
fn b_t_through_http_with_segel_tsa() {
    let dir = tempdir();
    let tsa = spawn_segel_tsa();
    let http = HttpTsa::new(format!("{}/tsa", tsa.url));
    let mut req = request(Visibility::Invisible);
    req.timestamper = Some(&http);
    let signed = sign(read("fixtures/pdf/letter-objstm.pdf"), &dev_rsa(), &req);
    let path = write(dir.path(), "bt-http.pdf", &signed.bytes);
    assert_validators_accept(&path, 1, false);
    assert_timestamped(&path);
}

/// A one-shot-per-request HTTP server that answers time-stamp queries by running
/// `openssl ts -reply` with the openssl-made TSA in fixtures/pki: an independent TSA.
fn spawn_openssl_tsa() -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body).unwrap();
            // `openssl ts -reply` with the fixture TSA; its serial file lives in a temp dir.
            let resp = validators::openssl_ts_reply(&body).expect("openssl ts");
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/timestamp-reply\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                resp.len()
            );
            let _ = stream.write_all(&resp);
        }
    });
    url
}

#[test]
fn b_t_with_openssl_ts_as_an_independent_tsa() {
    if !validators::require("openssl") {
        return;
    }
    let dir = tempdir();
    let http = HttpTsa::new(spawn_openssl_tsa());
    let mut req = request(Visibility::Invisible);
    req.timestamper = Some(&http);
    let signed = sign(
        read("fixtures/pdf/letter.pdf"),
        &ossl("signer-ec", false),
        &req,
    );
    let path = write(dir.path(), "bt-openssl.pdf", &signed.bytes);
    assert_validators_accept(&path, 1, false);
    assert_timestamped(&path);
}

/// A time-stamper returning an oversized (but well-formed) token, to exercise placeholder sizing.
struct HugeToken;

impl TimeStamper for HugeToken {
    fn timestamp(
        &self,
        _: segel::keys::DigestAlgorithm,
        _: &[u8],
    ) -> Result<Vec<u8>, segel::cms::CmsError> {
        let payload = vec![0x5a; 40_000];
        let mut der = vec![0x04, 0x82];
        der.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        der.extend_from_slice(&payload);
        Ok(der)
    }
}

#[test]
fn contents_reservation_grows_with_the_cms_and_is_never_truncated() {
    let mut req = request(Visibility::Invisible);
    req.timestamper = Some(&HugeToken);
    let signed = sign(read("fixtures/pdf/letter.pdf"), &dev_ec(), &req);
    assert!(
        signed.cms_len > 40_000 && signed.cms_len <= signed.reserved,
        "{} / {}",
        signed.cms_len,
        signed.reserved
    );
    let gap = signed.byte_range[2] - signed.byte_range[1];
    assert_eq!(
        gap,
        2 * signed.reserved + 2,
        "the ByteRange gap is exactly the /Contents string"
    );
    let hex = &signed.bytes[signed.byte_range[1] + 1..signed.byte_range[2] - 1];
    let tail = &hex[2 * signed.cms_len..];
    assert!(
        tail.iter().all(|&b| b == b'0'),
        "padding after the CMS is zeros"
    );
}

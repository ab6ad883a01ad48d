//! STYLE habit 9 on stable Rust: the parsers of untrusted bytes never panic.
//!
//! The fuzz targets of `fuzz/` (cargo-fuzz, nightly) and these tests drive the same functions
//! (`fuzz/src/lib.rs`, included below). Here they get the crashing inputs the fuzzers found
//! (`fuzz/regressions/<target>/`) and a fixed set of seeded pseudo-random mutations of the
//! fixtures: bit flips, truncations, insertions, deletions, splices from another fixture, and
//! edits aimed at /ByteRange, /Contents and the numbers that locate objects.

#[path = "../../fuzz/src/lib.rs"]
mod harness;

use crate::common::root;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Every PDF under fixtures/, sorted (signed, unsigned and deliberately broken ones).
fn fixture_pdfs() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "pdf") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join("fixtures"), &mut out);
    out.sort();
    assert!(out.len() >= 40, "fixtures/ holds {} PDFs", out.len());
    out
}

/// Where `needle` occurs in `hay`.
fn occurrences(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// A number that is likely to sit on an edge for an offset or length into `len` bytes.
fn edgy_number(rng: &mut Rng, len: usize, near: i64) -> i64 {
    match rng.below(8) {
        0 => 0,
        1 => -1,
        2 => len as i64,
        3 => len as i64 - 1 + rng.below(3) as i64,
        4 => near.saturating_add(rng.below(5) as i64 - 2),
        5 => i64::MAX - rng.below(2) as i64,
        6 => 1 << 32,
        _ => rng.below(len + 10) as i64,
    }
}

/// The span of the value after `key` up to (excluding) the first byte in `stop`.
fn value_span(data: &[u8], key: usize, key_len: usize, stop: &[u8]) -> Option<(usize, usize)> {
    let start = key + key_len;
    let end = data[start..].iter().position(|b| stop.contains(b))? + start;
    Some((start, end))
}

/// One mutation of `data`; `donor` is another fixture to splice from.
fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, donor: &[u8]) {
    let len = data.len();
    match rng.below(9) {
        0 => {
            for _ in 0..1 + rng.below(8) {
                if len > 0 {
                    let i = rng.below(len);
                    data[i] ^= 1 << rng.below(8);
                }
            }
        }
        1 => data.truncate(rng.below(len + 1)),
        2 => {
            const TOKENS: [&[u8]; 12] = [
                b"<",
                b">",
                b"<<",
                b">>",
                b"[",
                b"]",
                b"(",
                b"0 R",
                b" obj",
                b"endobj",
                b"stream\n",
                b"%%EOF\n",
            ];
            let at = rng.below(len + 1);
            let insert: Vec<u8> = if rng.below(2) == 0 {
                TOKENS[rng.below(TOKENS.len())].to_vec()
            } else {
                (0..1 + rng.below(16)).map(|_| rng.byte()).collect()
            };
            data.splice(at..at, insert);
        }
        3 => {
            let at = rng.below(len + 1);
            let end = (at + 1 + rng.below(64)).min(len);
            data.drain(at..end);
        }
        4 => {
            // Rewrite the numbers of one /ByteRange.
            let found = occurrences(data, b"/ByteRange");
            if let Some(&at) = found.get(rng.below(found.len()))
                && let Some((s, e)) = value_span(data, at, 10, b"]")
            {
                let old: Vec<i64> = String::from_utf8_lossy(&data[s..e])
                    .split(|c: char| !c.is_ascii_digit() && c != '-')
                    .filter_map(|t| t.parse().ok())
                    .collect();
                let mut nums = Vec::new();
                for i in 0..(3 + rng.below(3)) {
                    let near = old.get(i).copied().unwrap_or(0);
                    nums.push(if rng.below(3) == 0 {
                        near
                    } else {
                        edgy_number(rng, len, near)
                    });
                }
                let text = nums
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(" ");
                data.splice(s..e, format!(" [{text}").into_bytes());
            }
        }
        5 => {
            // Damage the CMS inside one /Contents hex string, mostly its first bytes (the DER
            // headers), keeping it hex so the /ByteRange still holds.
            let found = occurrences(data, b"/Contents <");
            if let Some(&at) = found.get(rng.below(found.len()))
                && let Some((s, e)) = value_span(data, at, 11, b">")
            {
                let span = (e - s).min(if rng.below(2) == 0 { 64 } else { 8192 });
                for _ in 0..1 + rng.below(4) {
                    let i = s + rng.below(span);
                    data[i] = b"0123456789abcdef"[rng.below(16)];
                }
            }
        }
        6 => {
            // Shorten, lengthen or break a /Contents hex string.
            let found = occurrences(data, b"/Contents <");
            if let Some(&at) = found.get(rng.below(found.len()))
                && let Some((s, e)) = value_span(data, at, 11, b">")
            {
                match rng.below(3) {
                    0 => {
                        data.drain(s + rng.below(e - s + 1)..e);
                    }
                    1 => data.insert(s + rng.below(e - s + 1), b'0'),
                    _ => data[s + rng.below((e - s).max(1)).min(e - s)] = b'x',
                }
            }
        }
        7 => {
            // Splice a piece of another fixture over a piece of this one.
            if !donor.is_empty() {
                let from = rng.below(donor.len());
                let piece = &donor[from..(from + 1 + rng.below(512)).min(donor.len())];
                let at = rng.below(len + 1);
                let end = (at + rng.below(512)).min(len);
                data.splice(at..end, piece.iter().copied());
            }
        }
        _ => {
            // Change one decimal number (offsets, /Length, /Size, object numbers).
            if len > 0 {
                let start = rng.below(len);
                if let Some(d) = data[start..].iter().position(u8::is_ascii_digit) {
                    let s = start + d;
                    let e = data[s..]
                        .iter()
                        .position(|b| !b.is_ascii_digit())
                        .map_or(len, |n| s + n);
                    let near: i64 = std::str::from_utf8(&data[s..e])
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0);
                    let n = edgy_number(rng, len, near).unsigned_abs();
                    data.splice(s..e, n.to_string().into_bytes());
                }
            }
        }
    }
}

/// A mutant: one to three mutations of `data`.
fn mutant(rng: &mut Rng, data: &[u8], donor: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    for _ in 0..1 + rng.below(3) {
        mutate_once(rng, &mut out, donor);
    }
    out
}

/// Run `f` on `input`; a panic is recorded (with the input saved for `cargo fuzz run` or
/// the regression directory) instead of stopping the loop, so one run lists every failure.
fn no_panic<T>(
    what: &str,
    input: &[u8],
    failures: &mut Vec<String>,
    f: impl FnOnce(&[u8]) -> T,
) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(|| f(input))) {
        Ok(v) => Some(v),
        Err(_) => {
            let dir = std::env::temp_dir().join("segel-fuzz-smoke");
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("{}-{}", what.replace('/', "_"), failures.len()));
            let _ = std::fs::write(&path, input);
            failures.push(format!("{what} (input saved as {})", path.display()));
            None
        }
    }
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

/// The crashing inputs the fuzzers found, each fed to the target that found it.
#[test]
fn saved_crashing_inputs_no_longer_panic() {
    let dir = root().join("fuzz/regressions");
    let mut failures = Vec::new();
    let mut count = 0;
    let mut targets: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    targets.sort();
    for target in targets {
        let name = target.file_name().unwrap().to_string_lossy().into_owned();
        let run: fn(&[u8]) = match name.as_str() {
            "pdf_parse" => |d| {
                let _ = harness::pdf_parse(d);
            },
            "verify_pdf" => |d| {
                let _ = harness::verify_pdf(d);
            },
            "cms_parse" => |d| {
                let _ = harness::cms_parse(d);
            },
            "revocation" => |d| {
                let _ = harness::revocation(d);
            },
            "anchor" => |d| {
                let _ = harness::anchor(d);
            },
            "pdf_sign" => |d| {
                let _ = harness::pdf_sign(d);
            },
            "stamp_image" => |d| {
                let _ = harness::stamp_image(d);
            },
            other => panic!("fuzz/regressions/{other}: no such fuzz target"),
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&target)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_none_or(|x| x != "md"))
            .collect();
        files.sort();
        for f in files {
            let input = std::fs::read(&f).unwrap();
            no_panic(&rel(&f), &input, &mut failures, run);
            // The PDF inputs also go through the other PDF entry points.
            if ["pdf_parse", "verify_pdf", "pdf_sign"].contains(&name.as_str()) {
                no_panic(&rel(&f), &input, &mut failures, harness::pdf_parse);
                no_panic(&rel(&f), &input, &mut failures, harness::verify_pdf);
                no_panic(&rel(&f), &input, &mut failures, harness::pdf_sign);
            }
            count += 1;
        }
    }
    assert!(count > 0, "fuzz/regressions holds no input");
    assert!(failures.is_empty(), "panicked on:\n{}", failures.join("\n"));
}

/// Each fixture PDF, mutated: the parser and the whole verifier answer without panicking,
/// and enough mutants still carry readable signatures for the CMS and trust code to run.
#[test]
fn mutated_fixture_pdfs_never_panic_the_parser_or_verifier() {
    let pdfs = fixture_pdfs();
    let originals: Vec<Vec<u8>> = pdfs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let mut failures = Vec::new();
    let (mut reports, mut with_signatures, mut refused) = (0, 0, 0);
    for (i, (path, data)) in pdfs.iter().zip(&originals).enumerate() {
        let mut rng = Rng(0x5E6E_1000 + i as u64);
        let donor = &originals[(i + 1) % originals.len()];
        let signed = data.windows(10).any(|w| w == b"/ByteRange");
        let rounds = if signed { 250 } else { 100 };
        for round in 0..rounds {
            let input = mutant(&mut rng, data, donor);
            let what = format!("{} mutant {round}", rel(path));
            no_panic(&what, &input, &mut failures, harness::pdf_parse);
            match no_panic(&what, &input, &mut failures, harness::verify_pdf) {
                Some(Some(n)) => {
                    reports += 1;
                    if n > 0 {
                        with_signatures += 1;
                    }
                }
                Some(None) => refused += 1,
                None => {}
            }
        }
    }
    eprintln!(
        "fixture PDFs: {refused} refused, {reports} reports, {with_signatures} with signatures"
    );
    assert!(failures.is_empty(), "panicked on:\n{}", failures.join("\n"));
    // The mutants exercise both the refusals and the signature checks.
    assert!(refused > 1000, "only {refused} mutants were refused");
    assert!(
        with_signatures > 1000,
        "only {with_signatures} of {reports} reports had signatures"
    );
}

/// The unsigned fixture PDFs (inputs the service signs), mutated, through signing.
#[test]
fn mutated_inputs_never_panic_signing() {
    let pdfs: Vec<PathBuf> = fixture_pdfs()
        .into_iter()
        .filter(|p| {
            p.parent()
                .is_some_and(|d| d.ends_with("pdf") || d.ends_with("bad"))
        })
        .collect();
    let letter = std::fs::read(root().join("fixtures/pdf/letter.pdf")).unwrap();
    assert_eq!(
        harness::pdf_sign(&letter),
        3,
        "the intact letter signs three ways"
    );
    let mut failures = Vec::new();
    let mut signed = 0;
    for (i, path) in pdfs.iter().enumerate() {
        let data = std::fs::read(path).unwrap();
        let mut rng = Rng(0x5167_0000 + i as u64);
        for round in 0..30 {
            let input = mutant(&mut rng, &data, &letter);
            let what = format!("{} signing mutant {round}", rel(path));
            signed += no_panic(&what, &input, &mut failures, harness::pdf_sign).unwrap_or(0);
        }
    }
    eprintln!(
        "signing: {signed} signed documents from {} mutants",
        pdfs.len() * 30
    );
    assert!(failures.is_empty(), "panicked on:\n{}", failures.join("\n"));
    assert!(signed > 100, "only {signed} mutants could be signed");
}

/// The CMS of every signed fixture, mutated as bytes.
#[test]
fn mutated_signatures_never_panic_the_cms_reader() {
    let mut failures = Vec::new();
    let mut cms_count = 0;
    let mut still_cms = 0;
    for (i, path) in fixture_pdfs().iter().enumerate() {
        let data = std::fs::read(path).unwrap();
        let Ok(pdf) = segel::pdf::ParsedPdf::parse_for_reading(&data) else {
            continue;
        };
        let Ok(found) = segel::pdf::signatures::find_signatures(&pdf, &data) else {
            continue;
        };
        for sig in found {
            let Ok(mut cms) = sig.contents else { continue };
            if let Some(n) = segel::cms::ber::definite_len(&cms) {
                cms.truncate(n);
            }
            cms_count += 1;
            let mut rng = Rng(0xC0DE_0000 + i as u64);
            for round in 0..100 {
                let mut input = cms.clone();
                for _ in 0..1 + rng.below(3) {
                    match rng.below(4) {
                        0 | 1 => {
                            // DER headers sit at the front and at nested starts: flip anywhere,
                            // but often near the start.
                            let span = if rng.below(2) == 0 { 64 } else { input.len() };
                            let at = rng.below(span.min(input.len()));
                            if let Some(b) = input.get_mut(at) {
                                *b ^= 1 << rng.below(8);
                            }
                        }
                        2 => input.truncate(rng.below(input.len() + 1)),
                        _ => {
                            let at = rng.below(input.len() + 1);
                            let b = [0x00, 0x80, 0x81, 0xff, 0x30, 0xa0][rng.below(6)];
                            input.insert(at, b);
                        }
                    }
                }
                let what = format!("{} CMS mutant {round}", rel(path));
                if no_panic(&what, &input, &mut failures, harness::cms_parse) == Some(true) {
                    still_cms += 1;
                }
            }
        }
    }
    assert!(failures.is_empty(), "panicked on:\n{}", failures.join("\n"));
    eprintln!("CMS: {cms_count} signatures, {still_cms} mutants still read as CMS");
    assert!(
        cms_count >= 20,
        "only {cms_count} signatures in the fixtures"
    );
    assert!(
        still_cms > 200,
        "only {still_cms} mutants still read as CMS"
    );
}

/// Certificates, CRLs and OCSP data of the fixture PKI, mutated, through the revocation check
/// and path validation.
#[test]
fn mutated_certificates_and_crls_never_panic_revocation() {
    let der = |rel: &str| {
        let data = std::fs::read(root().join(rel)).unwrap();
        match pem::parse(&data) {
            Ok(p) => p.into_contents(),
            Err(_) => data,
        }
    };
    let inter = der("fixtures/pki/intermediate-ca.cert.der");
    let root_ca = der("fixtures/pki/root-ca.cert.der");
    let crl = der("fixtures/pki/intermediate-ca.crl.der");
    let mut failures = Vec::new();
    let mut answered = 0;
    for (i, signer) in [
        "signer-rsa",
        "signer-revoked",
        "signer-ec",
        "signer-expired",
    ]
    .iter()
    .enumerate()
    {
        let cert = der(&format!("fixtures/pki/{signer}.cert.pem"));
        let intact = harness::join_parts(&[(0, &cert), (0, &inter), (0, &crl)]);
        assert_eq!(
            harness::revocation(&intact),
            Some(true),
            "{signer}: no answer from the CRL"
        );
        let mut rng = Rng(0x0C5F_0000 + i as u64);
        for round in 0..60 {
            let mut parts = [cert.clone(), inter.clone(), crl.clone(), root_ca.clone()];
            for _ in 0..1 + rng.below(2) {
                let p = &mut parts[rng.below(3)];
                match rng.below(3) {
                    0 => {
                        let at = rng.below(p.len());
                        p[at] ^= 1 << rng.below(8);
                    }
                    1 => p.truncate(rng.below(p.len() + 1)),
                    _ => {
                        let at = rng.below(p.len() + 1);
                        p.insert(at, rng.byte());
                    }
                }
            }
            let input = harness::join_parts(&[
                (0, &parts[0]),
                (0, &parts[1]),
                (0, &parts[2]),
                (1, &parts[3]),
            ]);
            let what = format!("{signer} revocation mutant {round}");
            if no_panic(&what, &input, &mut failures, harness::revocation) == Some(Some(true)) {
                answered += 1;
            }
        }
    }
    assert!(failures.is_empty(), "panicked on:\n{}", failures.join("\n"));
    // Mutants whose damage misses what the check reads still get an answer from the CRL.
    eprintln!("revocation: {answered} of 240 mutants answered");
    assert!(
        answered > 20,
        "only {answered} mutants got a revocation answer"
    );
}

/// Page content streams, mutated, through the anchor search.
#[test]
fn mutated_content_streams_never_panic_the_anchor_search() {
    let letter = std::fs::read(root().join("fixtures/pdf/letter.pdf")).unwrap();
    let start = occurrences(&letter, b"BT").first().copied().unwrap();
    let end = occurrences(&letter, b"endstream").first().copied().unwrap();
    let content = &letter[start..end];
    let mut seed = vec![6u8];
    seed.extend_from_slice(b"${ttd}");
    seed.extend_from_slice(content);
    assert!(
        harness::anchor(&seed),
        "the unmutated letter has the anchor"
    );
    let mut failures = Vec::new();
    let mut found = 0;
    let mut rng = Rng(0xA4C4_0000);
    for round in 0..300 {
        let input = mutant(&mut rng, &seed, content);
        if no_panic(
            &format!("anchor mutant {round}"),
            &input,
            &mut failures,
            harness::anchor,
        ) == Some(true)
        {
            found += 1;
        }
    }
    assert!(failures.is_empty(), "panicked on:\n{}", failures.join("\n"));
    eprintln!("anchor: found in {found} of 300 mutants");
    assert!(found > 30, "the anchor survived in only {found} mutants");
}

/// An RGBA PNG with a gradient and partial transparency.
fn rgba_png() -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, 16, 8);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().unwrap();
    let data: Vec<u8> = (0..16 * 8 * 4).map(|i| (i * 7) as u8).collect();
    w.write_image_data(&data).unwrap();
    drop(w);
    out
}

/// The headers of a baseline RGB JPEG (all that Segel reads of it).
fn jpeg_headers() -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8];
    j.extend_from_slice(&[0xFF, 0xC0, 0, 17, 8, 0, 30, 0, 20, 3]);
    j.extend_from_slice(&[1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0]);
    j.extend_from_slice(&[0xFF, 0xDA, 0, 12, 3, 1, 0, 2, 0, 3, 0, 0, 0x3F, 0]);
    j.extend_from_slice(&[0; 8]);
    j.extend_from_slice(&[0xFF, 0xD9]);
    j
}

/// Signature specimen images, mutated, through decoding and the stamp appearance.
#[test]
fn mutated_images_never_panic_the_stamp() {
    let mut failures = Vec::new();
    let mut accepted = 0;
    for (i, seed) in [rgba_png(), jpeg_headers()].into_iter().enumerate() {
        assert!(harness::stamp_image(&seed), "intact image {i} is accepted");
        let mut rng = Rng(0x1A6E_0000 + i as u64);
        for round in 0..300 {
            let mut input = seed.clone();
            for _ in 0..1 + rng.below(3) {
                let len = input.len();
                match rng.below(3) {
                    0 => input[rng.below(len)] ^= 1 << rng.below(8),
                    1 => input.truncate(rng.below(len + 1).max(3)),
                    _ => input.insert(rng.below(len + 1), rng.byte()),
                }
            }
            let what = format!("image {i} mutant {round}");
            if no_panic(&what, &input, &mut failures, harness::stamp_image) == Some(true) {
                accepted += 1;
            }
        }
    }
    eprintln!("images: {accepted} of 600 mutants accepted");
    assert!(failures.is_empty(), "panicked on:\n{}", failures.join("\n"));
    assert!(accepted > 30, "only {accepted} mutants were accepted");
}

/// A PDF with a content stream above the 256 KB at which signing leaves stream data out of the
/// document model (`ParsedPdf::parse_lean`), with its /Length, `endstream` and the bytes
/// around them damaged: the in-place emptying of large streams never panics.
#[test]
fn mutated_large_streams_never_panic_the_lean_parser() {
    let mut content = b"BT /F1 11 Tf 350 250 Td (${ttd}) Tj ET\n".to_vec();
    while content.len() < 300 * 1024 {
        content.extend_from_slice(b"% filler filler filler filler filler filler filler\n");
    }
    let pdf = harness::pdf_with_content(&content);
    assert_eq!(harness::pdf_parse(&pdf), Some(0), "the intact PDF reads");
    let length_at = occurrences(&pdf, b"/Length ")[0] + 8;
    let digits_end = length_at
        + pdf[length_at..]
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap();
    let endstream = occurrences(&pdf, b"endstream")[0];
    let mut failures = Vec::new();
    let mut read = 0;
    let mut rng = Rng(0xB1C0_0000);
    for round in 0..200 {
        let mut input = pdf.clone();
        match rng.below(4) {
            0 => {
                let n = edgy_number(&mut rng, content.len(), content.len() as i64);
                input.splice(
                    length_at..digits_end,
                    n.unsigned_abs().to_string().into_bytes(),
                );
            }
            1 => {
                let at = endstream - 3 + rng.below(6);
                input.insert(at, b"\n\r \0x"[rng.below(5)]);
            }
            2 => {
                let at = endstream - 2 + rng.below(12);
                input.drain(at..at + 1 + rng.below(3));
            }
            _ => input.truncate(endstream - rng.below(10) + rng.below(40)),
        }
        let what = format!("large stream mutant {round}");
        if no_panic(&what, &input, &mut failures, harness::pdf_parse) == Some(Some(0)) {
            read += 1;
        }
        no_panic(&what, &input, &mut failures, harness::verify_pdf);
    }
    eprintln!("large streams: {read} of 200 mutants still read");
    assert!(failures.is_empty(), "panicked on:\n{}", failures.join("\n"));
    assert!(read > 20, "only {read} mutants still read");
}

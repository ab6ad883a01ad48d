//! `segel sign` as a user runs it: key formats, stdin/stdout, atomic output, bad input (exit 2
//! with one line and no output file), and the visible stamp rendered by poppler.

use crate::common::*;
use crate::sign_interop::assert_validators_accept;
use crate::validators;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn segel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_segel"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

const DEV_KEY: [&str; 4] = [
    "--key",
    "keys-example/officials/siti.key.pem",
    "--cert",
    "keys-example/officials/siti.chain.pem",
];

fn assert_refused(args: &[&str], out: &Path, needle: &str) {
    let o = segel(args);
    assert_eq!(o.status.code(), Some(2), "{:?}: {}", args, stderr(&o));
    let err = stderr(&o);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    assert!(
        err.to_lowercase().contains(needle),
        "{needle:?} not in {err}"
    );
    assert!(!out.exists(), "no output may be written on failure");
    let leftovers: Vec<_> = std::fs::read_dir(out.parent().unwrap()).unwrap().collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
}

#[test]
fn bad_inputs_exit_2_with_one_line_and_no_output() {
    let dir = tempdir();
    let out = dir.path().join("out.pdf");
    let o = out.to_str().unwrap();
    for (input, needle) in [
        ("fixtures/bad/not-a-pdf.pdf", "not a pdf"),
        ("fixtures/bad/empty.pdf", "empty"),
        ("fixtures/bad/truncated.pdf", "truncated"),
        ("fixtures/bad/no-eof.pdf", "truncated"),
        ("fixtures/bad/wrong-startxref.pdf", "cross-reference"),
        ("fixtures/bad/broken-xref.pdf", "cross-reference"),
        ("fixtures/pdf/encrypted.pdf", "encrypted"),
        ("fixtures/pdf/encrypted-empty-user.pdf", "encrypted"),
        ("fixtures/signed/certified-p1.pdf", "docmdp"),
        ("fixtures/does-not-exist.pdf", "no such file"),
    ] {
        let mut args = vec!["sign", input, "-o", o];
        args.extend(DEV_KEY);
        assert_refused(&args, &out, needle);
    }
}

#[test]
fn certificate_not_matching_the_key_is_refused_before_writing() {
    let dir = tempdir();
    let out = dir.path().join("out.pdf");
    assert_refused(
        &[
            "sign",
            "fixtures/pdf/letter.pdf",
            "-o",
            out.to_str().unwrap(),
            "--key",
            "keys-example/officials/siti.key.pem",
            "--cert",
            "keys-example/officials/budi.chain.pem",
        ],
        &out,
        "does not match",
    );
}

#[test]
fn bad_options_are_refused() {
    let dir = tempdir();
    let out = dir.path().join("out.pdf");
    let o = out.to_str().unwrap();
    for (extra, needle) in [
        (vec!["--visible"], "--visible needs"),
        (vec!["--visible", "--anchor", "${absent}"], "anchor"),
        (
            vec!["--visible", "--page", "9", "--rect", "10,10,200,90"],
            "page 9",
        ),
        (
            vec!["--visible", "--page", "1", "--rect", "10,10,x,90"],
            "--rect",
        ),
        (vec!["--certify", "sometimes"], "--certify"),
        (vec!["--timestamp", "ftp://x"], "--timestamp"),
        (vec!["--timestamp", "http://127.0.0.1:9/"], "time-stamp"),
    ] {
        let mut args = vec!["sign", "fixtures/pdf/letter.pdf", "-o", o];
        args.extend(DEV_KEY);
        args.extend(extra);
        assert_refused(&args, &out, needle);
    }
}

#[test]
fn key_formats_pkcs8_pkcs1_sec1_and_pkcs12() {
    let dir = tempdir();
    let cases: Vec<(&str, Vec<&str>, Vec<(&str, &str)>)> = vec![
        (
            "pkcs1",
            vec![
                "--key",
                "fixtures/pki/signer-rsa.pkcs1.key.pem",
                "--cert",
                "fixtures/pki/signer-rsa.cert.pem",
                "--chain",
                "fixtures/pki/chain.pem",
            ],
            vec![],
        ),
        (
            "sec1",
            vec![
                "--key",
                "fixtures/pki/signer-ec.sec1.key.pem",
                "--cert",
                "fixtures/pki/signer-ec.cert.pem",
                "--chain",
                "fixtures/pki/chain.pem",
            ],
            vec![],
        ),
        (
            "p12",
            vec!["--p12", "fixtures/pki/signer-rsa.p12"],
            vec![("SEGEL_P12_PASSWORD", "test1234")],
        ),
        (
            "p12-legacy",
            vec!["--p12", "fixtures/pki/signer-rsa-legacy.p12"],
            vec![("SEGEL_P12_PASSWORD", "test1234")],
        ),
        (
            "p384",
            vec![
                "--key",
                "fixtures/pki/signer-p384.key.pem",
                "--cert",
                "fixtures/pki/signer-p384.cert.pem",
                "--chain",
                "fixtures/pki/chain.pem",
            ],
            vec![],
        ),
    ];
    for (name, keyargs, env) in cases {
        let out = dir.path().join(format!("{name}.pdf"));
        let mut args = vec![
            "sign",
            "fixtures/pdf/letter.pdf",
            "-o",
            out.to_str().unwrap(),
        ];
        args.extend(keyargs);
        let o = Command::new(env!("CARGO_BIN_EXE_segel"))
            .args(&args)
            .envs(env)
            .current_dir(root())
            .output()
            .unwrap();
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert_validators_accept(&out, 1, false);
    }
    // A wrong PKCS#12 password is one clear line.
    let out = dir.path().join("wrong.pdf");
    let o = Command::new(env!("CARGO_BIN_EXE_segel"))
        .args([
            "sign",
            "fixtures/pdf/letter.pdf",
            "-o",
            out.to_str().unwrap(),
            "--p12",
            "fixtures/pki/signer-rsa.p12",
        ])
        .env("SEGEL_P12_PASSWORD", "wrong")
        .current_dir(root())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("PKCS#12"), "{}", stderr(&o));
    assert!(!out.exists());
}

#[test]
fn stdin_to_stdout() {
    use std::io::Write;
    let mut args = vec!["sign", "-", "-o", "-", "--pss"];
    args.extend([
        "--key",
        "keys-example/officials/budi.key.pem",
        "--cert",
        "keys-example/officials/budi.chain.pem",
    ]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_segel"))
        .args(&args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = read("fixtures/pdf/letter.pdf");
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.starts_with(&input));
    let dir = tempdir();
    assert_validators_accept(&write(dir.path(), "piped.pdf", &o.stdout), 1, false);
}

/// Render `page` of `pdf` at 144 dpi, cropped to `rect` (points, PDF coordinates).
fn render_crop(pdf: &Path, page: u32, rect: [f32; 4], page_height: f32) -> image::GrayImage {
    let scale = 2.0; // 144 dpi / 72
    let dir = tempdir();
    let prefix = dir.path().join("page");
    let x = (rect[0] * scale) as i64;
    let y = ((page_height - rect[1] - rect[3]) * scale) as i64;
    let o = Command::new("pdftoppm")
        .args([
            "-r",
            "144",
            "-gray",
            "-png",
            "-singlefile",
            "-f",
            &page.to_string(),
            "-l",
            &page.to_string(),
        ])
        .args(["-x", &x.to_string(), "-y", &y.to_string()])
        .args([
            "-W",
            &((rect[2] * scale) as i64).to_string(),
            "-H",
            &((rect[3] * scale) as i64).to_string(),
        ])
        .arg(pdf)
        .arg(&prefix)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "pdftoppm: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    image::open(dir.path().join("page.png")).unwrap().to_luma8()
}

fn dark_fraction(img: &image::GrayImage) -> f32 {
    img.pixels().filter(|p| p.0[0] < 128).count() as f32
        / (img.width() * img.height()).max(1) as f32
}

#[test]
fn visible_stamp_renders_and_its_qr_decodes_to_the_url() {
    if !validators::require("pdftoppm") {
        return;
    }
    let dir = tempdir();
    let input = root().join("fixtures/pdf/letter.pdf");
    let url = "https://segel.example.go.id/v/Zk3q9xW2mT7pL4aB8cD1eF";
    let rect = [300.0, 40.0, 240.0, 100.0];
    let blank = render_crop(&input, 1, rect, 842.0);
    assert!(
        dark_fraction(&blank) < 0.001,
        "the target rectangle must start blank"
    );
    let out = dir.path().join("stamped.pdf");
    let mut args = vec![
        "sign",
        "fixtures/pdf/letter.pdf",
        "-o",
        out.to_str().unwrap(),
        "--visible",
        "--page",
        "1",
        "--rect",
        "300,40,240,100",
        "--qr-url",
        url,
    ];
    args.extend([
        "--key",
        "keys-example/officials/budi.key.pem",
        "--cert",
        "keys-example/officials/budi.chain.pem",
    ]);
    let o = segel(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let stamped = render_crop(&out, 1, rect, 842.0);
    assert!(
        dark_fraction(&stamped) > 0.05,
        "the stamp must draw in its rectangle"
    );

    // The QR occupies the left part of the stamp; decode it from the rendering.
    let mut prepared = rqrr::PreparedImage::prepare(stamped);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code expected");
    let (_, content) = grids[0].decode().unwrap();
    assert_eq!(content, url);

    // The stamp's words are in the page as text (poppler extracts them).
    if validators::require("pdftotext") {
        let o = Command::new("pdftotext")
            .arg(&out)
            .arg("-")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for needle in [
            "Budi Santoso",
            "Sekretaris Jenderal",
            "NIP. 197001012000031001",
            "WIB",
            "Dokumen ini telah ditandatangani secara elektronik menggunakan sertifikat elektronik",
        ] {
            assert!(text.contains(needle), "{needle:?} not rendered in: {text}");
        }
    }
}

#[test]
fn anchor_stamp_covers_the_anchor_text() {
    if !validators::require("pdftotext") {
        return;
    }
    let dir = tempdir();
    let out = dir.path().join("anchored.pdf");
    let mut args = vec![
        "sign",
        "fixtures/pdf/letter.pdf",
        "-o",
        out.to_str().unwrap(),
        "--visible",
        "--anchor",
        "${ttd}",
        "--qr-url",
        "https://x.example/v/1",
    ];
    args.extend(DEV_KEY);
    let o = segel(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    // Render the whole page and check the anchor's area is covered by the stamp (not blank).
    let parsed = segel::pdf::ParsedPdf::parse(&read("fixtures/pdf/letter.pdf")).unwrap();
    let hit = segel::pdf::anchor::find_anchor(&parsed, "${ttd}").unwrap();
    let area = [hit.x, hit.y - 2.0, hit.x_end - hit.x, hit.size + 2.0];
    let img = render_crop(&out, 1, area, 842.0);
    assert!(
        dark_fraction(&img) < 0.5,
        "the anchor's glyphs must be covered by the stamp background"
    );
}

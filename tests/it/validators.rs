//! Interop harness: runs third-party validators (pyHanko, poppler's `pdfsig`,
//! `qpdf`, `openssl ts`) on PDFs that Segel writes, so that Segel's output is
//! judged by code that is not Segel's.
//!
//! Wire-up: `mod validators;` in tests/it/main.rs. std + serde_json only.
//!
//! Typical use:
//! ```ignore
//! if validators::require("pyhanko") {
//!     let root = validators::pki("root-ca.cert.pem");
//!     let int = validators::pki("intermediate-ca.cert.pem");
//!     let r = validators::pyhanko_validate(&out, &[&root], &[&int]);
//!     assert!(r.ok, "{}", r.output);
//! }
//! if validators::require("pdfsig") {
//!     let (ok, out) = validators::pdfsig(&out);
//!     assert!(ok, "{out}");
//! }
//! ```
//!
//! `require(tool)` returns false (after printing a loud SKIPPED line) when a
//! tool is missing, and panics instead when the environment has `CI=true`, so
//! CI can never pass by silently skipping interop checks.
//!
//! Environment knobs: `SEGEL_PYTHON` (python interpreter, default `python3`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// The crate root (where fixtures/ and tests/ live).
pub fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `fixtures/<rel>`, e.g. `fixture("pdf/letter.pdf")`.
pub fn fixture(rel: &str) -> PathBuf {
    crate_root().join("fixtures").join(rel)
}

/// `fixtures/pki/<name>`, e.g. `pki("root-ca.cert.pem")`.
pub fn pki(name: &str) -> PathBuf {
    crate_root().join("fixtures").join("pki").join(name)
}

/// tests/pyhanko_validate.py, the helper that validates every signature.
pub fn pyhanko_helper() -> PathBuf {
    crate_root().join("tests").join("pyhanko_validate.py")
}

fn python() -> String {
    std::env::var("SEGEL_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn is_ci() -> bool {
    std::env::var("CI")
        .map(|v| {
            let v = v.trim().to_ascii_lowercase();
            v == "true" || v == "1" || v == "yes"
        })
        .unwrap_or(false)
}

/// Runs a command, capturing output; None if it could not be started at all.
fn run(cmd: &mut Command) -> Option<Output> {
    cmd.stdin(Stdio::null()).output().ok()
}

fn combined(o: &Output) -> String {
    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr);
    if !err.is_empty() {
        if !s.is_empty() && !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str(&err);
    }
    s
}

/// Whether `tool` can be run here. Known tools: "pyhanko" (python3 with the
/// pyhanko package, plus tests/pyhanko_validate.py), "pdfsig", "qpdf",
/// "openssl", "python3"; any other name is probed with `<tool> --version`.
///
/// When the tool is missing: with env CI=true this panics with a clear
/// message; otherwise it prints `SKIPPED: <tool> missing` to stderr and
/// returns false. Results are cached per process.
pub fn require(tool: &str) -> bool {
    static CACHE: OnceLock<Mutex<HashMap<String, Result<(), String>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let found = {
        let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(tool.to_string())
            .or_insert_with(|| probe(tool))
            .clone()
    };
    match found {
        Ok(()) => true,
        Err(why) => {
            if is_ci() {
                panic!(
                    "interop validator `{tool}` is missing but CI=true, so this test may not be \
                     skipped: {why}. Install it (see fixtures/NOTES.md) or fix the CI image."
                );
            }
            eprintln!();
            eprintln!("**************************************************************");
            eprintln!("SKIPPED: {tool} missing ({why})");
            eprintln!("**************************************************************");
            false
        }
    }
}

fn probe(tool: &str) -> Result<(), String> {
    let (mut cmd, what) = match tool {
        "pyhanko" => {
            let helper = pyhanko_helper();
            if !helper.is_file() {
                return Err(format!("{} not found", helper.display()));
            }
            let mut c = Command::new(python());
            c.args(["-c", "import pyhanko, pyhanko_certvalidator"]);
            (c, format!("{} -c 'import pyhanko'", python()))
        }
        "python3" | "python" => {
            let mut c = Command::new(python());
            c.arg("--version");
            (c, format!("{} --version", python()))
        }
        "pdfsig" | "pdftoppm" | "pdftotext" => {
            let mut c = Command::new(tool);
            c.arg("-v");
            (c, format!("{tool} -v"))
        }
        "openssl" => {
            let mut c = Command::new("openssl");
            c.arg("version");
            (c, "openssl version".to_string())
        }
        other => {
            let mut c = Command::new(other);
            c.arg("--version");
            (c, format!("{other} --version"))
        }
    };
    match run(&mut cmd) {
        None => Err(format!("`{what}` could not be started")),
        Some(o) if o.status.success() => Ok(()),
        Some(o) => Err(format!("`{what}` failed: {}", combined(&o).trim())),
    }
}

// ---------------------------------------------------------------------------
// pyHanko
// ---------------------------------------------------------------------------

/// Verdict of pyHanko over ALL signatures of a file.
#[derive(Debug, Clone)]
pub struct PyHankoResult {
    /// true iff the helper ran, found at least one signature, and every
    /// signature (and document timestamp) is intact, valid, trusted and has
    /// pyHanko's bottom line true (which includes the DocMDP / incremental
    /// update analysis).
    pub ok: bool,
    /// Everything the helper printed (JSON lines, then stderr), for messages.
    pub output: String,
}

/// Extra knobs for [`pyhanko_validate_opts`].
#[derive(Debug, Clone, Default)]
pub struct PyHankoOpts<'a> {
    /// CRLs (PEM or DER) pyHanko should consult, e.g.
    /// `fixtures/pki/intermediate-ca.crl.pem` to see signer-revoked as revoked.
    pub crls: Vec<&'a Path>,
    /// Open the file with pyHanko's `strict=False`. Needed for files whose
    /// original revision is hybrid-reference (letter-hybrid.pdf): in strict
    /// mode pyHanko refuses to validate ("Settings do not permit validation
    /// of signatures in hybrid-reference files.").
    pub no_strict: bool,
    /// Password for an encrypted file (the empty password is tried if None).
    pub password: Option<&'a str>,
    /// Validate at this ISO 8601 moment instead of now.
    pub validation_time: Option<&'a str>,
}

/// Runs tests/pyhanko_validate.py on `pdf`: pyHanko's `validate_pdf_signature`
/// (or `validate_pdf_timestamp`) over every `embedded_signatures` entry, with a
/// ValidationContext of `trust_roots` + `other_certs`, no fetching, soft-fail
/// revocation. See [`PyHankoResult::ok`] for the verdict.
pub fn pyhanko_validate(pdf: &Path, trust_roots: &[&Path], other_certs: &[&Path]) -> PyHankoResult {
    pyhanko_validate_opts(pdf, trust_roots, other_certs, &PyHankoOpts::default())
}

/// [`pyhanko_validate`] with [`PyHankoOpts`].
pub fn pyhanko_validate_opts(
    pdf: &Path,
    trust_roots: &[&Path],
    other_certs: &[&Path],
    opts: &PyHankoOpts<'_>,
) -> PyHankoResult {
    let (status_ok, sigs, output) = run_pyhanko(pdf, trust_roots, other_certs, opts);
    let every_sig_ok = !sigs.is_empty() && sigs.iter().all(signature_ok);
    PyHankoResult {
        ok: status_ok && every_sig_ok,
        output,
    }
}

/// The per-signature JSON objects printed by the helper, oldest signature
/// first. Keys: index, field, kind ("signature" | "doc_timestamp"), intact,
/// valid, trusted, revoked, trust_problem, coverage ("ENTIRE_FILE",
/// "ENTIRE_REVISION", "CONTIGUOUS_BLOCK_FROM_START", "UNCLEAR"),
/// modification_level ("NONE", "LTA_UPDATES", "FORM_FILLING", "ANNOTATIONS",
/// "OTHER"), docmdp_ok (bool or null = not evaluated), certification (null,
/// "NO_CHANGES", "FILL_FORMS", "ANNOTATE"), bottom_line, ok, summary,
/// subfilter, signer, signer_cert_sha256, md_algorithm, mechanism,
/// signed_revision, byte_range, signer_reported_time, signature_timestamp,
/// error (exception text when pyHanko could not validate at all), log.
/// Empty when the helper could not read the file (its stderr is printed).
pub fn pyhanko_signatures(
    pdf: &Path,
    trust_roots: &[&Path],
    other_certs: &[&Path],
) -> Vec<serde_json::Value> {
    pyhanko_signatures_opts(pdf, trust_roots, other_certs, &PyHankoOpts::default())
}

/// [`pyhanko_signatures`] with [`PyHankoOpts`].
pub fn pyhanko_signatures_opts(
    pdf: &Path,
    trust_roots: &[&Path],
    other_certs: &[&Path],
    opts: &PyHankoOpts<'_>,
) -> Vec<serde_json::Value> {
    let (_, sigs, output) = run_pyhanko(pdf, trust_roots, other_certs, opts);
    if sigs.is_empty() {
        eprintln!(
            "pyhanko_validate.py reported no signatures for {}:\n{output}",
            pdf.display()
        );
    }
    sigs
}

fn signature_ok(v: &serde_json::Value) -> bool {
    let t = |k: &str| v.get(k).and_then(serde_json::Value::as_bool) == Some(true);
    t("ok") && t("intact") && t("valid") && t("trusted") && t("bottom_line")
}

/// (exit status 0, parsed JSON lines, combined output)
fn run_pyhanko(
    pdf: &Path,
    trust_roots: &[&Path],
    other_certs: &[&Path],
    opts: &PyHankoOpts<'_>,
) -> (bool, Vec<serde_json::Value>, String) {
    let mut cmd = Command::new(python());
    cmd.arg(pyhanko_helper()).arg(pdf);
    for r in trust_roots {
        cmd.arg("--trust").arg(r);
    }
    for c in other_certs {
        cmd.arg("--other-certs").arg(c);
    }
    for c in &opts.crls {
        cmd.arg("--crl").arg(c);
    }
    if opts.no_strict {
        cmd.arg("--no-strict");
    }
    if let Some(p) = opts.password {
        cmd.arg("--password").arg(p);
    }
    if let Some(t) = opts.validation_time {
        cmd.arg("--validation-time").arg(t);
    }
    let Some(out) = run(&mut cmd) else {
        return (
            false,
            Vec::new(),
            format!(
                "could not start {} {}",
                python(),
                pyhanko_helper().display()
            ),
        );
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut sigs = Vec::new();
    let mut parse_errors = String::new();
    for line in stdout.lines().filter(|l| l.trim_start().starts_with('{')) {
        match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => sigs.push(v),
            Err(e) => parse_errors.push_str(&format!("unparsable helper line ({e}): {line}\n")),
        }
    }
    let mut output = combined(&out);
    output.push_str(&parse_errors);
    output.push_str(&format!("[pyhanko_validate.py {}]\n", out.status));
    (
        out.status.success() && parse_errors.is_empty(),
        sigs,
        output,
    )
}

// ---------------------------------------------------------------------------
// poppler pdfsig
// ---------------------------------------------------------------------------

/// One "Signature #n" block of `pdfsig` output.
#[derive(Debug, Clone, Default)]
pub struct PdfsigSignature {
    pub field: String,
    /// "Signature Type:" value: "ETSI.CAdES.detached", "adbe.pkcs7.detached",
    /// or "unknown" (poppler 22 says that for ETSI.RFC3161 document timestamps).
    pub sig_type: String,
    /// The text after "Signature Validation:", e.g. "Signature is Valid.",
    /// "Digest Mismatch.", "Signature is Invalid.",
    /// "Signature has not yet been verified." (document timestamps).
    pub validation: String,
    /// The text after "Certificate Validation:" (absent when the signature
    /// itself is not valid), e.g. "Certificate issuer isn't Trusted.",
    /// "Certificate issuer is unknown.", "Certificate has Expired".
    pub certificate: Option<String>,
    /// "Total document signed" (true) vs "Not total document signed" (false).
    pub total_document_signed: bool,
    /// "Signed Ranges:" line as printed.
    pub ranges: String,
}

impl PdfsigSignature {
    pub fn signature_valid(&self) -> bool {
        self.validation.trim() == "Signature is Valid."
    }
    /// A document timestamp poppler cannot verify (it prints type "unknown"
    /// and "Signature has not yet been verified.").
    pub fn is_unverified_timestamp(&self) -> bool {
        let t = self.sig_type.trim();
        (t == "unknown" || t.contains("RFC3161"))
            && self.validation.contains("not yet been verified")
    }
}

/// Parses `pdfsig` stdout into its signature blocks.
pub fn parse_pdfsig(output: &str) -> Vec<PdfsigSignature> {
    let mut sigs: Vec<PdfsigSignature> = Vec::new();
    for line in output.lines() {
        if line.starts_with("Signature #") {
            sigs.push(PdfsigSignature::default());
            continue;
        }
        let Some(cur) = sigs.last_mut() else { continue };
        let l = line.trim_start().trim_start_matches("- ").trim();
        let after = |prefix: &str| l.strip_prefix(prefix).map(|v| v.trim().to_string());
        if let Some(v) = after("Signature Field Name:") {
            cur.field = v;
        } else if let Some(v) = after("Signature Type:") {
            cur.sig_type = v;
        } else if let Some(v) = after("Signature Validation:") {
            cur.validation = v;
        } else if let Some(v) = after("Certificate Validation:") {
            cur.certificate = Some(v);
        } else if let Some(v) = after("Signed Ranges:") {
            cur.ranges = v;
        } else if l == "Total document signed" {
            cur.total_document_signed = true;
        } else if l == "Not total document signed" {
            cur.total_document_signed = false;
        }
    }
    sigs
}

/// Runs `pdfsig -no-ocsp <pdf>` (poppler; the test PKI has no OCSP anyway).
/// Returns (ok, report): ok iff pdfsig found at least one signature and every
/// signature says "Signature Validation: Signature is Valid." — document
/// timestamps, which poppler cannot verify ("Signature has not yet been
/// verified."), are tolerated but need at least one real valid signature
/// beside them. Certificate trust is NOT required (poppler's NSS store does
/// not know the test root, so it prints "Certificate issuer isn't Trusted.");
/// the report lists each signature's certificate status separately, followed
/// by pdfsig's raw output.
pub fn pdfsig(pdf: &Path) -> (bool, String) {
    let Some(out) = run(Command::new("pdfsig").arg("-no-ocsp").arg(pdf)) else {
        return (false, "could not start pdfsig".to_string());
    };
    let raw = combined(&out);
    let sigs = parse_pdfsig(&String::from_utf8_lossy(&out.stdout));
    let mut report = String::new();
    let mut ok = !sigs.is_empty();
    let mut real_valid = 0usize;
    for (i, s) in sigs.iter().enumerate() {
        let verdict = if s.signature_valid() {
            real_valid += 1;
            "VALID"
        } else if s.is_unverified_timestamp() {
            "TIMESTAMP (not verifiable by poppler, tolerated)"
        } else {
            ok = false;
            "INVALID"
        };
        report.push_str(&format!(
            "#{} field={:?} type={:?} signature={:?} -> {verdict}; certificate={:?}; total_document_signed={}\n",
            i + 1,
            s.field,
            s.sig_type,
            s.validation,
            s.certificate.as_deref().unwrap_or("-"),
            s.total_document_signed,
        ));
    }
    if real_valid == 0 {
        ok = false;
    }
    if sigs.is_empty() {
        report.push_str("pdfsig found no signatures\n");
    }
    report.push_str(&format!("--- pdfsig output ({}) ---\n", out.status));
    report.push_str(&raw);
    (ok, report)
}

/// The parsed signature blocks of `pdfsig -no-ocsp <pdf>` (empty on failure).
pub fn pdfsig_signatures(pdf: &Path) -> Vec<PdfsigSignature> {
    match run(Command::new("pdfsig").arg("-no-ocsp").arg(pdf)) {
        Some(out) => parse_pdfsig(&String::from_utf8_lossy(&out.stdout)),
        None => Vec::new(),
    }
}

// ---------------------------------------------------------------------------
// qpdf
// ---------------------------------------------------------------------------

/// `qpdf --check <pdf>`: ok iff exit status 0 and no line mentions WARNING
/// (qpdf exits 3 when it only has warnings, 2 on errors).
pub fn qpdf_check(pdf: &Path) -> (bool, String) {
    qpdf_check_args(pdf, &[])
}

/// [`qpdf_check`] for an encrypted file.
pub fn qpdf_check_password(pdf: &Path, password: &str) -> (bool, String) {
    qpdf_check_args(pdf, &[format!("--password={password}")])
}

fn qpdf_check_args(pdf: &Path, extra: &[String]) -> (bool, String) {
    let Some(out) = run(Command::new("qpdf").arg("--check").args(extra).arg(pdf)) else {
        return (false, "could not start qpdf".to_string());
    };
    let text = combined(&out);
    let warned = text.lines().any(|l| l.contains("WARNING"));
    let ok = out.status.success() && !warned;
    (ok, format!("{text}[qpdf --check {}]\n", out.status))
}

// ---------------------------------------------------------------------------
// openssl ts (the test TSA)
// ---------------------------------------------------------------------------

fn unique_temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("segel-{tag}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Answers an RFC 3161 TimeStampReq (DER) with the test TSA
/// (fixtures/pki/tsa.cnf) via `openssl ts -reply`; returns the DER
/// TimeStampResp. The TSA's serial file is kept in a temp dir, so the fixture
/// tree is not modified.
pub fn openssl_ts_reply(query_der: &[u8]) -> Result<Vec<u8>, String> {
    let dir = unique_temp_dir("tsa");
    let q = dir.join("q.tsq");
    let r = dir.join("r.tsr");
    std::fs::write(&q, query_der).map_err(|e| e.to_string())?;
    let out = run(Command::new("openssl")
        .args(["ts", "-reply", "-config"])
        .arg(pki("tsa.cnf"))
        .arg("-queryfile")
        .arg(&q)
        .arg("-out")
        .arg(&r)
        .env("SEGEL_PKI_DIR", pki(""))
        .env("TSA_SERIAL", dir.join("tsaserial")))
    .ok_or_else(|| "could not start openssl".to_string())?;
    let result = if out.status.success() {
        std::fs::read(&r).map_err(|e| format!("{e}; openssl said: {}", combined(&out)))
    } else {
        Err(format!(
            "openssl ts -reply failed ({}): {}",
            out.status,
            combined(&out)
        ))
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

// ---------------------------------------------------------------------------
// Self-tests of the harness against the committed fixtures
// ---------------------------------------------------------------------------

#[cfg(test)]
mod harness_tests {
    use super::*;

    fn roots() -> (PathBuf, PathBuf) {
        (pki("root-ca.cert.pem"), pki("intermediate-ca.cert.pem"))
    }

    #[test]
    fn harness_pyhanko_accepts_third_party_signed_fixtures() {
        if !require("pyhanko") {
            return;
        }
        let (root, int) = roots();
        for (name, n_sigs) in [
            ("signed/signed-once.pdf", 1),
            ("signed/signed-twice.pdf", 2),
            ("signed/certified-p1.pdf", 1),
            ("signed/certified-p2.pdf", 1),
        ] {
            let pdf = fixture(name);
            let r = pyhanko_validate(&pdf, &[&root], &[&int]);
            assert!(r.ok, "{name}: {}", r.output);
            let sigs = pyhanko_signatures(&pdf, &[&root], &[&int]);
            assert_eq!(sigs.len(), n_sigs, "{name}");
        }
        let twice = pyhanko_signatures(&fixture("signed/signed-twice.pdf"), &[&root], &[&int]);
        assert_eq!(twice[0]["field"], "Sig1");
        assert_eq!(twice[0]["coverage"], "ENTIRE_REVISION");
        assert_eq!(twice[0]["modification_level"], "FORM_FILLING");
        assert_eq!(twice[1]["field"], "Sig2");
        assert_eq!(twice[1]["coverage"], "ENTIRE_FILE");
        let p2 = pyhanko_signatures(&fixture("signed/certified-p2.pdf"), &[&root], &[&int]);
        assert_eq!(p2[0]["certification"], "FILL_FORMS");
    }

    #[test]
    fn harness_pyhanko_rejects_wrong_root_and_unsigned() {
        if !require("pyhanko") {
            return;
        }
        let other_root = pki("untrusted-root.cert.pem");
        let int = pki("intermediate-ca.cert.pem");
        let r = pyhanko_validate(&fixture("signed/signed-once.pdf"), &[&other_root], &[&int]);
        assert!(
            !r.ok,
            "must not be trusted under an unrelated root: {}",
            r.output
        );
        let (root, int) = roots();
        let r = pyhanko_validate(&fixture("pdf/letter.pdf"), &[&root], &[&int]);
        assert!(!r.ok, "an unsigned file is not ok: {}", r.output);
        let r = pyhanko_validate(&fixture("bad/not-a-pdf.pdf"), &[&root], &[&int]);
        assert!(!r.ok);
        // DocMDP P=1 violated by a later approval signature: every signature is
        // cryptographically fine, but pyHanko's bottom line for Sig1 is false.
        let pdf = fixture("signed/certified-p1-violated.pdf");
        let r = pyhanko_validate(&pdf, &[&root], &[&int]);
        assert!(!r.ok, "{}", r.output);
        let sigs = pyhanko_signatures(&pdf, &[&root], &[&int]);
        assert_eq!(sigs.len(), 2);
        assert_eq!(sigs[0]["certification"], "NO_CHANGES");
        assert_eq!(sigs[0]["intact"], true);
        assert_eq!(sigs[0]["docmdp_ok"], false);
        assert_eq!(sigs[0]["modification_level"], "FORM_FILLING");
        assert_eq!(sigs[1]["ok"], true);
    }

    #[test]
    fn harness_pdfsig_reads_fixtures() {
        if !require("pdfsig") {
            return;
        }
        let (ok, out) = pdfsig(&fixture("signed/signed-twice.pdf"));
        assert!(ok, "{out}");
        let sigs = pdfsig_signatures(&fixture("signed/signed-twice.pdf"));
        assert_eq!(sigs.len(), 2, "{out}");
        assert_eq!(sigs[0].field, "Sig1");
        assert!(!sigs[0].total_document_signed);
        assert!(sigs[1].total_document_signed);
        assert_eq!(
            sigs[1].certificate.as_deref(),
            Some("Certificate issuer isn't Trusted.")
        );
        let (ok, out) = pdfsig(&fixture("pdf/letter.pdf"));
        assert!(!ok, "unsigned file: {out}");
        // poppler does not evaluate DocMDP: both signatures are "valid" to it.
        let (ok, out) = pdfsig(&fixture("signed/certified-p1-violated.pdf"));
        assert!(ok, "{out}");
    }

    #[test]
    fn harness_qpdf_check_fixtures() {
        if !require("qpdf") {
            return;
        }
        for f in [
            "pdf/letter.pdf",
            "pdf/letter-hybrid.pdf",
            "signed/signed-twice.pdf",
        ] {
            let (ok, out) = qpdf_check(&fixture(f));
            assert!(ok, "{f}: {out}");
        }
        let (ok, _) = qpdf_check(&fixture("bad/broken-xref.pdf"));
        assert!(!ok, "broken-xref.pdf must give qpdf warnings");
        let (ok, out) = qpdf_check_password(&fixture("pdf/encrypted.pdf"), "user");
        assert!(ok, "{out}");
    }

    #[test]
    fn harness_openssl_tsa_answers() {
        if !require("openssl") {
            return;
        }
        // Build a query with openssl itself, answer it with the test TSA.
        let dir = unique_temp_dir("tsq");
        let data = dir.join("data");
        std::fs::write(&data, b"segel").unwrap();
        let q = dir.join("q.tsq");
        let st = Command::new("openssl")
            .args(["ts", "-query", "-sha256", "-cert", "-data"])
            .arg(&data)
            .arg("-out")
            .arg(&q)
            .output()
            .unwrap();
        assert!(st.status.success(), "{}", combined(&st));
        let resp = openssl_ts_reply(&std::fs::read(&q).unwrap()).expect("TSA reply");
        assert!(
            resp.len() > 500 && resp[0] == 0x30,
            "DER TimeStampResp expected"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! `segel verify`: a verdict on every signature of a PDF. Exit 0 when there is at least one
//! signature and all are valid, 1 otherwise, 2 when the file cannot be read.

use super::CliError;
use crate::clock::SystemClock;
use crate::trust::revocation::CrlFetcher;
use crate::trust::{TrustStore, VerifyOptions, verify_pdf};
use std::io::Read;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The PDF to verify, or - for standard input.
    input: PathBuf,
    /// Trust anchor certificate (PEM/DER) or a directory of them; repeatable. Non-self-signed
    /// certificates given here are used as intermediates.
    #[arg(long)]
    trust: Vec<PathBuf>,
    /// CRL (PEM/DER) to consult; repeatable.
    #[arg(long)]
    crl: Vec<PathBuf>,
    /// Fetch CRLs from the certificates' distribution points (HTTP, cached, 10 s limit).
    #[arg(long)]
    fetch_revocation: bool,
    /// Validation time (RFC 3339), default now.
    #[arg(long)]
    at: Option<String>,
    /// Print the JSON report.
    #[arg(long)]
    json: bool,
    /// Service configuration whose trust anchors and CRLs are used when no --trust/--crl is
    /// given (default: ./segel.toml when present).
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Returns the exit status (0 or 1); errors become status 2.
pub fn run(args: VerifyArgs) -> Result<u8, CliError> {
    let bytes = if args.input.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::stdin().read_to_end(&mut b)?;
        b
    } else {
        std::fs::read(&args.input)
            .map_err(|e| CliError(format!("{}: {e}", args.input.display())))?
    };
    let mut store = TrustStore::default();
    let (mut trust, mut crls) = (args.trust.clone(), args.crl.clone());
    // Without --trust/--crl, the service's trust store is the default when a config file exists.
    if trust.is_empty()
        && crls.is_empty()
        && (args.config.is_some() || std::path::Path::new("segel.toml").exists())
    {
        let cfg = crate::config::Config::load(args.config.as_deref())?;
        trust = cfg.trust_paths();
        crls = cfg.crls.clone();
    }
    for t in &trust {
        store.add_certificates(t)?;
    }
    for c in &crls {
        store.add_crl(c)?;
    }
    let at = match &args.at {
        Some(s) => Some(
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map_err(|e| CliError(format!("--at {s:?}: {e}")))?,
        ),
        None => None,
    };
    let opts = VerifyOptions {
        at,
        fetcher: args.fetch_revocation.then(CrlFetcher::default),
        file_name: args.input.display().to_string(),
    };
    let report = verify_pdf(&bytes, &store, &opts, &SystemClock)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}  sha256 {}  {} revision(s)",
            report.file, report.sha256, report.revisions
        );
        if report.signatures.is_empty() {
            println!("no signatures");
        }
        for s in &report.signatures {
            let who = s
                .signer
                .as_ref()
                .and_then(|x| x.name.clone())
                .unwrap_or_else(|| "?".into());
            println!(
                "{} [{}] revision {} ({}): {} — {} — {}",
                s.field,
                s.kind,
                s.revision
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "?".into()),
                s.coverage.unwrap_or("?"),
                format!("{:?}", s.verdict).to_uppercase(),
                who,
                s.summary_en
            );
            for m in s.modifications_after.iter().filter(|m| !m.allowed) {
                println!(
                    "    not allowed after signing (revision {}): {}",
                    m.revision, m.description
                );
            }
        }
        for w in &report.warnings {
            println!("warning: {w}");
        }
    }
    Ok(if report.all_valid() { 0 } else { 1 })
}

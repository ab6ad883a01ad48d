//! `segel sign`: sign one PDF from the command line.

use super::CliError;
use crate::clock::SystemClock;
use crate::cms::{HttpTsa, TimeStamper};
use crate::keys::{Signer, SoftwareSigner, certificate_identity, load_certificates_pem};
use crate::pdf::sign::{DisplayZone, SignRequest};
use crate::pdf::{Certification, Placement, StampText, Visibility, sign_pdf};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("keysource").required(true).args(["key", "p12", "official"])))]
pub struct SignArgs {
    /// Input PDF, or - for standard input.
    input: PathBuf,
    /// Output PDF, or - for standard output.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Private key (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Signer certificate (PEM); may also hold the chain.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Further CA certificates (PEM).
    #[arg(long)]
    chain: Option<PathBuf>,
    /// PKCS#12 file with key and chain; password from SEGEL_P12_PASSWORD or a prompt.
    #[arg(long, conflicts_with_all = ["key", "cert"])]
    p12: Option<PathBuf>,
    /// Sign with an official's key from the encrypted keystore (passphrase: SEGEL_PASSPHRASE
    /// or a prompt). Expired, not yet valid, revoked (per --crl) or disabled keys are refused.
    #[arg(long, conflicts_with_all = ["key", "cert", "p12"])]
    official: Option<String>,
    /// Keystore directory for --official.
    #[arg(long, env = "SEGEL_KEYSTORE", default_value = "data/keys")]
    keystore: PathBuf,
    /// CRLs consulted before signing with --official; repeatable.
    #[arg(long)]
    crl: Vec<PathBuf>,
    /// Sign RSA keys with RSASSA-PSS instead of PKCS#1 v1.5.
    #[arg(long)]
    pss: bool,
    /// Signature field name (an existing empty signature field is filled).
    #[arg(long)]
    field: Option<String>,
    #[arg(long)]
    reason: Option<String>,
    #[arg(long)]
    location: Option<String>,
    #[arg(long)]
    contact: Option<String>,
    /// Draw the visible stamp (needs --page and --rect, or --anchor).
    #[arg(long)]
    visible: bool,
    /// Page for --rect (1-based).
    #[arg(long, requires = "rect")]
    page: Option<u32>,
    /// Stamp rectangle X,Y,W,H in points from the page's lower-left corner.
    #[arg(long, requires = "page", conflicts_with = "anchor")]
    rect: Option<String>,
    /// Anchor text to place the stamp over, e.g. '${ttd}'.
    #[arg(long)]
    anchor: Option<String>,
    /// Draw the small initials (paraf) stamp instead of the full stamp.
    #[arg(long, conflicts_with = "visible")]
    initials: Option<String>,
    /// Signer's name on the stamp (default: the certificate's CN).
    #[arg(long)]
    name: Option<String>,
    /// Position (jabatan) on the stamp (default: the certificate's title attribute).
    #[arg(long)]
    title: Option<String>,
    /// Identifier (NIP) on the stamp (default: the certificate's serialNumber attribute).
    #[arg(long = "signer-id")]
    signer_id: Option<String>,
    /// Verification URL for the QR code; `{code}` is left as given outside the service.
    #[arg(long = "qr-url")]
    qr_url: Option<String>,
    /// Add a signature time-stamp: `builtin` (Segel's TSA key) or the URL of an RFC 3161 TSA.
    #[arg(long)]
    timestamp: Option<String>,
    /// TSA key for --timestamp builtin (default: the development PKI's).
    #[arg(long)]
    tsa_key: Option<PathBuf>,
    /// TSA certificate chain for --timestamp builtin.
    #[arg(long)]
    tsa_cert: Option<PathBuf>,
    /// Certify the document (DocMDP): no-changes, form-fill or annotate.
    #[arg(long)]
    certify: Option<String>,
    /// Time zone of /M and the stamp: Asia/Jakarta (WIB), Asia/Makassar, Asia/Jayapura, UTC, ±HH:MM.
    #[arg(long, default_value = "Asia/Jakarta", env = "SEGEL_TIME_ZONE")]
    time_zone: String,
}

fn read_input(path: &Path) -> Result<Vec<u8>, CliError> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        Ok(buf)
    } else {
        // Spare capacity for the appended revision, so signing never copies the file.
        let mut file =
            std::fs::File::open(path).map_err(|e| CliError(format!("{}: {e}", path.display())))?;
        let len = file.metadata().map(|m| m.len() as usize).unwrap_or(0);
        let mut buf = Vec::with_capacity(len + (256 << 10));
        file.read_to_end(&mut buf)
            .map_err(|e| CliError(format!("{}: {e}", path.display())))?;
        Ok(buf)
    }
}

/// Write `data` to `path` atomically: a temporary file in the same directory, then a rename.
pub fn write_output(path: &Path, data: &[u8]) -> Result<(), CliError> {
    if path == Path::new("-") {
        let mut out = std::io::stdout().lock();
        out.write_all(data)?;
        out.flush()?;
        return Ok(());
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)
        .map_err(|e| CliError(format!("{}: {e}", dir.display())))?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .map_err(|e| CliError(format!("{}: {}", path.display(), e.error)))?;
    Ok(())
}

fn p12_password() -> Result<zeroize::Zeroizing<String>, CliError> {
    if let Ok(p) = std::env::var("SEGEL_P12_PASSWORD") {
        return Ok(zeroize::Zeroizing::new(p));
    }
    if std::io::stdin().is_terminal() {
        return Ok(zeroize::Zeroizing::new(rpassword::prompt_password(
            "PKCS#12 password: ",
        )?));
    }
    Err(CliError(
        "set SEGEL_P12_PASSWORD (no terminal to ask for the PKCS#12 password)".into(),
    ))
}

fn load_signer(args: &SignArgs) -> Result<std::sync::Arc<dyn Signer>, CliError> {
    if let Some(official) = &args.official {
        let store = crate::keys::keystore::FileKeyStore::open(&args.keystore)?;
        let mut crls = Vec::new();
        for c in &args.crl {
            let mut ts = crate::trust::TrustStore::default();
            ts.add_crl(c)?;
            crls.extend(ts.crls);
        }
        let pp = super::keys::passphrase(
            "SEGEL_PASSPHRASE",
            &format!("Signing passphrase for {official}"),
            false,
        )?;
        let events = super::keys::CollectedEvents::default();
        let unlocked = store.unlock_signer(
            official,
            &pp,
            args.pss,
            time::OffsetDateTime::now_utc(),
            &crls,
            &events,
        );
        // A failed unlock is a key event for the audit log.
        super::keys::audit_events(events)?;
        return Ok(unlocked?);
    }
    if let Some(p12) = &args.p12 {
        let data = std::fs::read(p12).map_err(|e| CliError(format!("{}: {e}", p12.display())))?;
        return Ok(std::sync::Arc::new(SoftwareSigner::from_pkcs12(
            &data,
            &p12_password()?,
            args.pss,
        )?));
    }
    let (Some(key), Some(cert)) = (&args.key, &args.cert) else {
        return Err(CliError("give --key and --cert, or --p12".into()));
    };
    let key_pem = std::fs::read(key).map_err(|e| CliError(format!("{}: {e}", key.display())))?;
    let mut chain = load_certificates_pem(
        &std::fs::read(cert).map_err(|e| CliError(format!("{}: {e}", cert.display())))?,
    )?;
    if let Some(extra) = &args.chain {
        let more = load_certificates_pem(
            &std::fs::read(extra).map_err(|e| CliError(format!("{}: {e}", extra.display())))?,
        )?;
        for c in more {
            if !chain.contains(&c) {
                chain.push(c);
            }
        }
    }
    Ok(std::sync::Arc::new(SoftwareSigner::from_pem(
        &key_pem, chain, args.pss,
    )?))
}

fn parse_rect(s: &str) -> Result<[f32; 4], CliError> {
    let v: Vec<f32> = s
        .split(',')
        .map(|p| p.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|_| CliError(format!("--rect {s:?} is not X,Y,W,H")))?;
    <[f32; 4]>::try_from(v).map_err(|_| CliError(format!("--rect {s:?} is not X,Y,W,H")))
}

pub fn run(args: SignArgs) -> Result<(), CliError> {
    let signer = load_signer(&args)?;
    let input = read_input(&args.input)?;
    let zone = DisplayZone::parse(&args.time_zone).map_err(CliError)?;
    let certify = match args.certify.as_deref() {
        None => None,
        Some("no-changes") => Some(Certification::NoChanges),
        Some("form-fill") => Some(Certification::FormFill),
        Some("annotate") => Some(Certification::Annotate),
        Some(other) => {
            return Err(CliError(format!(
                "--certify {other:?}: use no-changes, form-fill or annotate"
            )));
        }
    };
    let placement = match (&args.anchor, &args.page, &args.rect) {
        (Some(a), _, _) => Some(Placement::Anchor {
            text: a.clone(),
            size: None,
        }),
        (None, Some(page), Some(rect)) => Some(Placement::Rect {
            page: *page,
            rect: parse_rect(rect)?,
        }),
        _ => None,
    };
    let (cn, cert_title, serial, issuer_o) = certificate_identity(&signer.certificate_chain()[0]);
    let visibility = match (&args.initials, args.visible, placement) {
        (Some(initials), _, Some(placement)) => Visibility::Initials {
            placement,
            initials: initials.clone(),
        },
        (Some(_), _, None) => {
            return Err(CliError(
                "--initials needs --page/--rect or --anchor".into(),
            ));
        }
        (None, true, Some(placement)) => Visibility::Stamp {
            placement,
            text: StampText {
                name: args.name.clone().or(cn.clone()).unwrap_or_default(),
                title: args.title.clone().or(cert_title),
                signer_id: args.signer_id.clone().or(serial),
                time_text: String::new(),
                qr_url: args.qr_url.clone(),
                issuer_org: issuer_o,
            },
        },
        (None, true, None) => {
            return Err(CliError(
                "--visible needs --page and --rect, or --anchor".into(),
            ));
        }
        (None, false, Some(_)) => {
            return Err(CliError(
                "--page/--rect/--anchor need --visible or --initials".into(),
            ));
        }
        (None, false, None) => Visibility::Invisible,
    };
    let timestamper: Option<Box<dyn TimeStamper>> = match args.timestamp.as_deref() {
        None => None,
        Some("builtin") => Some(Box::new(super::tsa::load_tsa(
            args.tsa_key.clone(),
            args.tsa_cert.clone(),
            crate::cms::tsp::DEV_TSA_POLICY,
        )?)),
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
            Some(Box::new(HttpTsa::new(url)))
        }
        Some(other) => {
            return Err(CliError(format!(
                "--timestamp {other:?}: use builtin or an http(s) URL"
            )));
        }
    };
    let req = SignRequest {
        field_name: args.field.clone(),
        reason: args.reason.clone(),
        location: args.location.clone(),
        contact_info: args.contact.clone(),
        signer_name: args.name.clone().or(cn),
        visibility,
        certify,
        timestamper: timestamper.as_deref(),
        zone,
    };
    let signed = sign_pdf(input, signer.as_ref(), &req, &SystemClock)?;
    write_output(&args.output, &signed.bytes)?;
    if args.output != Path::new("-") {
        eprintln!(
            "signed field {} ({}, CMS {} of {} bytes reserved) -> {}",
            signed.field_name,
            signer.algorithm(),
            signed.cms_len,
            signed.reserved,
            args.output.display()
        );
    }
    Ok(())
}

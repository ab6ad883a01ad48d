//! `segel keys`: officials' keys in the encrypted keystore (and, with --hsm-*, in a PKCS#11
//! token): generate with a CSR, import the issued certificate or a PKCS#12, list, re-wrap.

use super::CliError;
use crate::keys::devpki::KeyAlgorithm;
use crate::keys::keystore::{
    FileKeyStore, KdfParams, KeyLocation, Passphrase, days_to_expiry, key_status,
};
use crate::keys::load_certificates_pem;
use clap::Subcommand;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct KeysArgs {
    /// Keystore directory.
    #[arg(
        long,
        global = true,
        env = "SEGEL_KEYSTORE",
        default_value = "data/keys"
    )]
    keystore: PathBuf,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Generate an official's key and write a PKCS#10 CSR for the CA.
    New {
        #[arg(long)]
        official: String,
        #[arg(long, default_value = "p256")]
        algorithm: KeyAlgorithm,
        /// The official's name (CN of the CSR subject).
        #[arg(long)]
        name: String,
        /// Position (jabatan), the subject's title attribute.
        #[arg(long)]
        title: String,
        /// NIP, the subject's serialNumber attribute.
        #[arg(long)]
        nip: String,
        #[arg(long, default_value = "Kementerian Contoh Republik Indonesia")]
        organisation: String,
        /// Where to write the CSR (PEM); default OFFICIAL.csr.pem in the keystore.
        #[arg(long)]
        csr: Option<PathBuf>,
        /// Generate the key inside this PKCS#11 module's token instead of the keystore.
        #[arg(long, requires = "hsm_token")]
        hsm_module: Option<PathBuf>,
        /// Token label for --hsm-module.
        #[arg(long)]
        hsm_token: Option<String>,
        /// Environment variable holding the token PIN.
        #[arg(long)]
        hsm_pin_env: Option<String>,
        /// File holding the token PIN.
        #[arg(long)]
        hsm_pin_file: Option<PathBuf>,
    },
    /// Attach the certificate (and chain) the CA issued for an official's key.
    ImportCert {
        official: String,
        chain: PathBuf,
        /// Trust anchors the chain must reach (default: the configured ones, `trust` in
        /// segel.toml, else the root of the keys directory).
        #[arg(long)]
        trust: Vec<PathBuf>,
    },
    /// Import a key and chain delivered as PKCS#12 (password: SEGEL_P12_PASSWORD or a prompt).
    ImportP12 {
        official: String,
        file: PathBuf,
        /// Overwrite the official's existing key (otherwise refused).
        #[arg(long)]
        replace: bool,
    },
    /// Show every key: official, algorithm, location, certificate, expiry, status.
    List,
    /// Change an official's signing passphrase: re-wraps a keystore key, or re-derives the
    /// passphrase verifier of an HSM key (the token PIN is not changed).
    Passphrase { official: String },
    /// Refuse signing with an official's key.
    Disable { official: String },
    /// Allow signing with a disabled key again.
    Enable { official: String },
}

/// Shortest new signing passphrase accepted.
const MIN_PASSPHRASE_CHARS: usize = 8;

/// A passphrase from `var`, else asked on the terminal. `new` (a passphrase being set) is
/// asked twice and must have at least 8 characters, wherever it comes from.
pub fn passphrase(var: &str, prompt: &str, new: bool) -> Result<Passphrase, CliError> {
    let p = match std::env::var(var) {
        Ok(p) => zeroize::Zeroizing::new(p),
        Err(_) if std::io::stdin().is_terminal() => {
            let p = zeroize::Zeroizing::new(rpassword::prompt_password(format!("{prompt}: "))?);
            if new {
                let again = zeroize::Zeroizing::new(rpassword::prompt_password(format!(
                    "{prompt} (again): "
                ))?);
                if *again != *p {
                    return Err(CliError("the passphrases differ".into()));
                }
            }
            p
        }
        Err(_) => {
            return Err(CliError(format!(
                "set {var} (no terminal to ask for the passphrase)"
            )));
        }
    };
    if new && p.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(CliError(format!(
            "a signing passphrase needs at least {MIN_PASSPHRASE_CHARS} characters"
        )));
    }
    Ok(Passphrase::new(p.as_str()))
}

/// Argon2id parameters: the recommended ones, unless SEGEL_INSECURE_FAST_KDF=1 (tests only).
pub fn kdf() -> KdfParams {
    if std::env::var("SEGEL_INSECURE_FAST_KDF").is_ok_and(|v| v == "1") {
        tracing::warn!(
            "SEGEL_INSECURE_FAST_KDF=1: keys are sealed with test-only Argon2 parameters"
        );
        KdfParams::insecure_fast()
    } else {
        KdfParams::recommended()
    }
}

/// Key events of one command, written to the service's audit log when the command succeeds.
#[derive(Default)]
pub(super) struct CollectedEvents(std::sync::Mutex<Vec<(String, String, String)>>);

impl crate::keys::keystore::KeyEvents for CollectedEvents {
    fn record(&self, official: &str, event: &str, detail: &str) {
        tracing::info!(official, event, detail, "key event");
        if let Ok(mut v) = self.0.lock() {
            v.push((official.to_string(), event.to_string(), detail.to_string()));
        }
    }
}

/// The audit log of the configured database, opened (and checked writable) before a command
/// changes anything, so that a command whose events could not be recorded changes nothing.
pub(super) struct AuditLog {
    rt: tokio::runtime::Runtime,
    db: crate::storage::Db,
}

impl AuditLog {
    pub(super) fn open() -> Result<Self, CliError> {
        let cfg = crate::config::Config::load(None)?;
        let rt = tokio::runtime::Runtime::new()?;
        let db = rt.block_on(async {
            let db = crate::storage::Db::connect(&cfg.database_url)
                .await
                .map_err(|e| CliError(format!("audit log: {e}")))?;
            // A write transaction proves the log can be appended to (SQLite takes its lock).
            let tx = db
                .begin_write()
                .await
                .map_err(|e| CliError(format!("audit log: {e}")))?;
            tx.rollback()
                .await
                .map_err(|e| CliError(format!("audit log: {e}")))?;
            Ok::<_, CliError>(db)
        })?;
        Ok(AuditLog { rt, db })
    }

    /// Append the collected key events in one transaction.
    pub(super) fn append(&self, events: CollectedEvents) -> Result<(), CliError> {
        let events = events.0.into_inner().unwrap_or_default();
        if events.is_empty() {
            return Ok(());
        }
        let db = &self.db;
        self.rt.block_on(async move {
            let mut tx = db.begin_write().await?;
            let user = std::env::var("USER").unwrap_or_else(|_| "operator".into());
            let at = crate::storage::millis(time::OffsetDateTime::now_utc());
            for (official, event, detail) in events {
                let entry = crate::audit::NewEntry {
                    actor_kind: crate::audit::ActorKind::System,
                    actor_id: format!("cli:{user}"),
                    action: event,
                    document_id: None,
                    details: serde_json::json!({"official": official, "detail": detail}),
                };
                crate::audit::append(&mut tx, db.backend, at, &entry)
                    .await
                    .map_err(|e| CliError(e.to_string()))?;
            }
            tx.commit().await.map_err(|e| CliError(e.to_string()))?;
            Ok(())
        })
    }
}

/// Append the collected key events to the audit log of the configured database.
pub(super) fn audit_events(events: CollectedEvents) -> Result<(), CliError> {
    if events.0.lock().map(|v| v.is_empty()).unwrap_or(false) {
        return Ok(());
    }
    AuditLog::open()?.append(events)
}

pub fn run(args: KeysArgs) -> Result<(), CliError> {
    // Commands that change a key (everything but `list`) open the audit log first: if their
    // events cannot be recorded, nothing is changed.
    let audit = match args.command {
        KeysCommand::List => None,
        _ => Some(AuditLog::open()?),
    };
    let events = CollectedEvents::default();
    let result = run_with(args, &events);
    // Failed unlocks are recorded even when the command fails.
    let audited = match audit {
        Some(log) => log.append(events),
        None => audit_events(events),
    };
    result.and(audited)
}

fn run_with(args: KeysArgs, events: &CollectedEvents) -> Result<(), CliError> {
    let store = FileKeyStore::open(&args.keystore)?;
    let now = time::OffsetDateTime::now_utc();
    match args.command {
        KeysCommand::New {
            official,
            algorithm,
            name,
            title,
            nip,
            organisation,
            csr,
            hsm_module,
            hsm_token,
            hsm_pin_env,
            hsm_pin_file,
        } => {
            let pp = passphrase(
                "SEGEL_PASSPHRASE",
                &format!("New signing passphrase for {official}"),
                true,
            )?;
            let identity = (
                name.as_str(),
                title.as_str(),
                nip.as_str(),
                organisation.as_str(),
            );
            // The CSR's directory must exist before a key is generated for it.
            let path = csr.unwrap_or_else(|| args.keystore.join(format!("{official}.csr.pem")));
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
                && !parent.is_dir()
            {
                return Err(CliError(format!(
                    "{}: no such directory for the CSR",
                    parent.display()
                )));
            }
            let pem = match (hsm_module, hsm_token) {
                (Some(module), Some(token_label)) => {
                    let spec = crate::keys::keystore::HsmSpec {
                        module,
                        token_label,
                        pin_env: hsm_pin_env,
                        pin_file: hsm_pin_file,
                    };
                    store.generate_in_hsm(
                        &official,
                        algorithm,
                        identity,
                        &spec,
                        &pp,
                        &kdf(),
                        now,
                        events,
                    )?
                }
                _ => store.generate(&official, algorithm, identity, &pp, &kdf(), now, events)?,
            };
            super::sign::write_output(&path, pem.as_bytes())?;
            eprintln!(
                "key for {official} ({algorithm:?}) sealed in {}; CSR written to {}",
                args.keystore.display(),
                path.display()
            );
        }
        KeysCommand::ImportCert {
            official,
            chain,
            trust,
        } => {
            let certs = load_certificates_pem(
                &std::fs::read(&chain)
                    .map_err(|e| CliError(format!("{}: {e}", chain.display())))?,
            )?;
            let mut anchors = crate::trust::TrustStore::default();
            let trust = if trust.is_empty() {
                crate::config::Config::load(None)?.trust_paths()
            } else {
                trust
            };
            for t in &trust {
                anchors.add_certificates(t)?;
            }
            let mut all = certs.clone();
            all.extend(anchors.intermediates.iter().cloned());
            store.import_certificate(&official, all, &anchors.anchors, now, events)?;
            eprintln!("certificate imported for {official}");
        }
        KeysCommand::ImportP12 {
            official,
            file,
            replace,
        } => {
            let data =
                std::fs::read(&file).map_err(|e| CliError(format!("{}: {e}", file.display())))?;
            let password = match std::env::var("SEGEL_P12_PASSWORD") {
                Ok(p) => p,
                Err(_) if std::io::stdin().is_terminal() => {
                    rpassword::prompt_password("PKCS#12 password: ")?
                }
                Err(_) => {
                    return Err(CliError(
                        "set SEGEL_P12_PASSWORD (no terminal to ask for it)".into(),
                    ));
                }
            };
            let pp = passphrase(
                "SEGEL_PASSPHRASE",
                &format!("New signing passphrase for {official}"),
                true,
            )?;
            store.import_p12(
                &official,
                &data,
                &password,
                replace,
                &pp,
                &kdf(),
                now,
                events,
            )?;
            eprintln!("PKCS#12 imported for {official} and sealed under the signing passphrase");
        }
        KeysCommand::List => {
            // Revocation as the service sees it: the configured CRLs, else the development CA's.
            let cfg = crate::config::Config::load(None)?;
            let crls = crate::trust::revocation::CrlFiles::new(
                crate::keys::keystore::lifecycle_crl_paths(&cfg.crls, &cfg.keys_dir),
            )
            .current();
            println!(
                "{:<16} {:<8} {:<9} {:<13} {:<6} {}",
                "OFFICIAL",
                "ALG",
                "LOCATION",
                "STATUS",
                "DAYS",
                "CERTIFICATE (subject | issuer | expiry)"
            );
            for r in store.list()? {
                let location = match r.location {
                    KeyLocation::Keystore { .. } => "keystore",
                    KeyLocation::Hsm { .. } => "hsm",
                };
                let (cert, days) = match &r.chain_pem {
                    Some(pem) => {
                        let der = load_certificates_pem(pem.as_bytes())?.remove(0);
                        let (_, c) = x509_parser::parse_x509_certificate(&der)
                            .map_err(|e| CliError(e.to_string()))?;
                        (
                            format!(
                                "{} | {} | {}",
                                c.subject(),
                                c.issuer(),
                                c.validity().not_after
                            ),
                            days_to_expiry(pem, now),
                        )
                    }
                    None => (
                        "(no certificate yet: import the CA's answer to the CSR)".into(),
                        None,
                    ),
                };
                let status = key_status(&r, now, &crls);
                let days = days.map(|d| d.to_string()).unwrap_or_else(|| "-".into());
                println!(
                    "{:<16} {:<8} {:<9} {:<13} {:<6} {}",
                    r.id,
                    format!("{:?}", r.algorithm).to_lowercase(),
                    location,
                    status,
                    days,
                    cert
                );
            }
        }
        KeysCommand::Passphrase { official } => {
            let old = passphrase(
                "SEGEL_PASSPHRASE",
                &format!("Current passphrase for {official}"),
                false,
            )?;
            let new = passphrase(
                "SEGEL_NEW_PASSPHRASE",
                &format!("New passphrase for {official}"),
                true,
            )?;
            store.change_passphrase(&official, &old, &new, &kdf(), events)?;
            eprintln!("passphrase changed for {official}; key and certificate unchanged");
        }
        KeysCommand::Disable { official } => store.set_disabled(&official, true, events)?,
        KeysCommand::Enable { official } => store.set_disabled(&official, false, events)?,
    }
    Ok(())
}

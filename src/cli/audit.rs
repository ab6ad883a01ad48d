//! `segel audit`: verify the audit log's hash chain and checkpoints (exit 0 intact, 1 broken,
//! 2 on errors), or sign a checkpoint of its head with the auditor key.

use super::CliError;
use crate::audit;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::keys::{SoftwareSigner, load_certificates_pem};
use crate::storage::{Db, millis};
use clap::Subcommand;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Recompute the hash chain and check the head and every signed checkpoint
    /// (exit 0 intact, 1 broken, 2 on errors).
    Verify(VerifyArgs),
    /// Sign the current head with the auditor key and store it as a checkpoint.
    Checkpoint(CheckpointArgs),
}

/// Where the database is: as `segel serve` finds it.
#[derive(clap::Args, Debug)]
struct DatabaseArgs {
    /// Configuration file (default: ./segel.toml when present).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Database URL; overrides the configuration (default sqlite://data/segel.db).
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(clap::Args, Debug)]
struct VerifyArgs {
    #[command(flatten)]
    db: DatabaseArgs,
    /// The auditor certificate (PEM) every checkpoint must be signed with. Without it each
    /// checkpoint is checked against the certificate stored next to it.
    #[arg(long)]
    auditor_cert: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct CheckpointArgs {
    #[command(flatten)]
    db: DatabaseArgs,
    /// Auditor private key (PEM); default: keys_dir/auditor.key.pem from the configuration.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Auditor certificate chain (PEM, auditor first); default: keys_dir/auditor.chain.pem.
    #[arg(long)]
    cert: Option<PathBuf>,
}

/// Returns the exit status (0, or 1 for a broken log); errors become status 2.
pub fn run(args: AuditArgs) -> Result<u8, CliError> {
    match args.command {
        AuditCommand::Verify(args) => verify(args),
        AuditCommand::Checkpoint(args) => checkpoint(args).map(|()| 0),
    }
}

fn verify(args: VerifyArgs) -> Result<u8, CliError> {
    let (_, url) = database(&args.db)?;
    let trusted = match &args.auditor_cert {
        Some(path) => {
            let certs = load_certificates_pem(&read(path)?)
                .map_err(|e| CliError(format!("{}: {e}", path.display())))?;
            // load_certificates_pem returns at least one certificate or an error.
            certs.into_iter().next()
        }
        None => None,
    };
    let rt = tokio::runtime::Runtime::new()?;
    let report = rt.block_on(async {
        let db = Db::connect(&url).await?;
        let report = audit::verify(&db, trusted.as_deref()).await;
        db.pool.close().await;
        Ok::<_, CliError>(report?)
    })?;
    match (report.ok, report.first_bad_seq) {
        (true, _) => {
            println!(
                "audit log intact: {} entries, {} signed checkpoints",
                report.entries, report.checkpoints
            );
            if trusted.is_none() && report.checkpoints > 0 {
                eprintln!(
                    "note: checkpoints were checked against their stored certificates; pass --auditor-cert to pin the auditor"
                );
            }
            Ok(0)
        }
        (false, seq) => {
            let seq = seq.map_or_else(|| "?".to_string(), |s| s.to_string());
            let problem = report.problem.unwrap_or_default().replace('\n', " ");
            println!("audit log BROKEN at seq {seq}: {problem}");
            Ok(1)
        }
    }
}

fn checkpoint(args: CheckpointArgs) -> Result<(), CliError> {
    let (config, url) = database(&args.db)?;
    let key = args
        .key
        .unwrap_or_else(|| config.keys_dir.join("auditor.key.pem"));
    let cert = args
        .cert
        .unwrap_or_else(|| config.keys_dir.join("auditor.chain.pem"));
    let chain = load_certificates_pem(&read(&cert)?)
        .map_err(|e| CliError(format!("{}: {e}", cert.display())))?;
    let signer = SoftwareSigner::from_pem(&read(&key)?, chain, false)
        .map_err(|e| CliError(format!("{}: {e}", key.display())))?;
    let at = millis(SystemClock.now());
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let db = Db::connect(&url).await?;
        let signed = audit::checkpoint(&db, &signer, at).await;
        let head = audit::head(&db).await;
        db.pool.close().await;
        match (signed?, head?) {
            (Some(seq), _) => println!("checkpoint signed at entry {seq}"),
            (None, head) if head.seq == 0 => println!("the audit log is empty: nothing to sign"),
            (None, head) => println!("entry {} already has a checkpoint", head.seq),
        }
        Ok(())
    })
}

/// The configuration and the database URL; an SQLite file must already exist (verifying or
/// checkpointing a log that is not there is a mistake, not an empty log).
fn database(args: &DatabaseArgs) -> Result<(Config, String), CliError> {
    let config = Config::load(args.config.as_deref())?;
    let url = args
        .database_url
        .clone()
        .unwrap_or_else(|| config.database_url.clone());
    if let Some(path) = sqlite_path(&url).filter(|p| p != Path::new(":memory:") && !p.exists()) {
        return Err(CliError(format!(
            "no database at {} ({url})",
            path.display()
        )));
    }
    Ok((config, url))
}

/// The file of an `sqlite:` URL, as `Db::connect` reads it.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    Some(PathBuf::from(rest.split('?').next().unwrap_or(rest)))
}

fn read(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError(format!("{}: {e}", path.display())))
}

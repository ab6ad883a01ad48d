//! Command-line front end. Errors print one line and exit with status 2.

mod audit;
mod keys;
mod serve;
mod sign;
mod tsa;
mod verify;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "segel",
    version,
    about = "Signs and verifies administrative documents (PAdES)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HTTP service (embedded defaults without a config file).
    Serve(serve::ServeArgs),
    /// Back-office applications and their API keys.
    Apps(serve::AppsArgs),
    /// Officials who review and sign.
    Officials(serve::OfficialsArgs),
    /// Sign a PDF with a PAdES signature (incremental update).
    Sign(Box<sign::SignArgs>),
    /// Verify every signature of a PDF (exit 0 all valid, 1 not, 2 unreadable).
    Verify(verify::VerifyArgs),
    /// Run Segel's RFC 3161 time-stamp authority over HTTP.
    Tsa(tsa::TsaArgs),
    /// Officials' signing keys: generate, import certificates or PKCS#12, list, re-wrap.
    Keys(keys::KeysArgs),
    /// Tamper-evident audit log: verify the hash chain and checkpoints, sign a checkpoint.
    Audit(audit::AuditArgs),
    /// Development PKI (never for production).
    #[command(subcommand, name = "dev-pki")]
    DevPki(DevPkiCommand),
}

#[derive(Subcommand, Debug)]
enum DevPkiCommand {
    /// Create root CA, issuing CA, officials, TSA, seal and audit keys in DIR.
    Init {
        dir: PathBuf,
        /// Base URL of the service, for the CRL distribution point.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        base_url: String,
        /// Organisation named in the seal and officials' certificates.
        #[arg(long, default_value = "Kementerian Contoh Republik Indonesia")]
        organisation: String,
    },
    /// Issue a key and certificate for another official (written under officials/ID).
    Issue {
        #[arg(long, default_value = "keys-example")]
        dir: PathBuf,
        /// File stem under officials/.
        #[arg(long)]
        id: String,
        #[arg(long)]
        cn: String,
        #[arg(long, default_value = "")]
        title: String,
        #[arg(long, default_value = "")]
        nip: String,
        #[arg(long, default_value = "p256")]
        algorithm: crate::keys::devpki::KeyAlgorithm,
    },
    /// Revoke a certificate (hex serial) and re-issue the CRL.
    Revoke {
        #[arg(long, default_value = "keys-example")]
        dir: PathBuf,
        serial: String,
    },
    /// Re-issue the issuing CA's CRL now (same revocations, next CRL number, valid 7 days).
    Crl {
        #[arg(long, default_value = "keys-example")]
        dir: PathBuf,
    },
}

/// A failure reported to the user as one line.
pub struct CliError(pub String);

impl<E: std::fmt::Display> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError(e.to_string())
    }
}

/// Parse arguments, run the subcommand, map errors to exit status 2.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SEGEL_LOG")
                .unwrap_or_else(|_| "segel=warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let result = match cli.command {
        Command::Verify(args) => match verify::run(args) {
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
        Command::Audit(args) => match audit::run(args) {
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
        Command::Sign(args) => sign::run(*args),
        Command::Serve(args) => serve::serve(args),
        Command::Apps(args) => serve::apps(args),
        Command::Officials(args) => serve::officials(args),
        Command::Keys(args) => keys::run(args),
        Command::Tsa(args) => tsa::run(args),
        Command::DevPki(DevPkiCommand::Init {
            dir,
            base_url,
            organisation,
        }) => {
            let opts = crate::keys::devpki::InitOptions {
                base_url,
                organisation,
                now: time::OffsetDateTime::now_utc(),
            };
            crate::keys::devpki::DevPki::init(&dir, &opts)
                .map(|_| {
                    eprintln!(
                        "development PKI written to {} (never use it in production)",
                        dir.display()
                    );
                })
                .map_err(CliError::from)
        }
        Command::DevPki(DevPkiCommand::Issue {
            dir,
            id,
            cn,
            title,
            nip,
            algorithm,
        }) => {
            let spec = crate::keys::devpki::OfficialSpec {
                id: id.clone(),
                name: cn,
                title,
                nip,
                algorithm,
            };
            crate::keys::devpki::DevPki { dir: dir.clone() }
                .issue_official(&spec, time::OffsetDateTime::now_utc())
                .map(|der| {
                    let serial = x509_parser::parse_x509_certificate(&der)
                        .map(|(_, c)| c.raw_serial_as_string().replace(':', ""))
                        .unwrap_or_default();
                    println!("{serial}");
                    eprintln!(
                        "issued {}/officials/{id}.pem (serial {serial})",
                        dir.display()
                    );
                })
                .map_err(CliError::from)
        }
        Command::DevPki(DevPkiCommand::Crl { dir }) => {
            let pki = crate::keys::devpki::DevPki { dir };
            pki.write_crl(time::OffsetDateTime::now_utc())
                .map(|()| {
                    eprintln!(
                        "CRL re-issued in {}/crl (next update {})",
                        pki.dir.display(),
                        pki.crl_next_update()
                            .map(|t| t.to_string())
                            .unwrap_or_default()
                    );
                })
                .map_err(CliError::from)
        }
        Command::DevPki(DevPkiCommand::Revoke { dir, serial }) => {
            crate::keys::devpki::DevPki { dir }
                .revoke(&serial, time::OffsetDateTime::now_utc())
                .map_err(CliError::from)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError(msg)) => {
            let line = msg.replace('\n', " ");
            eprintln!("segel: error: {line}");
            ExitCode::from(2)
        }
    }
}

/// Directory of the development PKI: `SEGEL_KEYS_DIR`, else `./keys-example`.
pub fn keys_dir() -> PathBuf {
    std::env::var_os("SEGEL_KEYS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("keys-example"))
}

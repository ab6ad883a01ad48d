//! `segel serve`, `segel apps`, `segel officials`: the service and its accounts.

use super::CliError;
use crate::config::Config;
use crate::workflow::{Actor, random_token};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Configuration file (default: ./segel.toml when present, else embedded defaults).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct AppsArgs {
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: AppsCommand,
}

#[derive(Subcommand, Debug)]
enum AppsCommand {
    /// Create an application and print its API key and webhook secret once, as JSON
    /// `{"app", "api_key", "webhook_secret"}`.
    Create {
        name: String,
        /// Comma-separated: submit, seal, read.
        #[arg(long, default_value = "submit,read")]
        scopes: String,
    },
    /// Revoke an application's key.
    Revoke { name: String },
}

#[derive(clap::Args, Debug)]
pub struct OfficialsArgs {
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: OfficialsCommand,
}

#[derive(Subcommand, Debug)]
enum OfficialsCommand {
    /// Enrol an official (password: SEGEL_OFFICIAL_PASSWORD or a prompt) linked to a keystore key.
    Add {
        #[arg(long)]
        username: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        title: String,
        #[arg(long)]
        nip: String,
        #[arg(long)]
        email: Option<String>,
        /// Comma-separated roles: reviewer, signer, auditor.
        #[arg(long, default_value = "signer")]
        roles: String,
        /// Keystore key id (see `segel keys list`).
        #[arg(long)]
        key: Option<String>,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(tokio::runtime::Runtime::new()?)
}

fn operator() -> Actor {
    let user = std::env::var("USER").unwrap_or_else(|_| "operator".into());
    Actor {
        kind: crate::audit::ActorKind::System,
        id: format!("cli:{user}"),
    }
}

pub fn serve(args: ServeArgs) -> Result<(), CliError> {
    let cfg = Config::load(args.config.as_deref())?;
    let now = time::OffsetDateTime::now_utc();
    if let Some(next) = crate::keys::devpki::refresh_dev_crl(&cfg.keys_dir, now)? {
        eprintln!("development CRL re-issued (next update {next})");
    }
    runtime()?.block_on(async move {
        let app = crate::service::Application::build(cfg).await?;
        eprintln!(
            "segel listening on http://{} (port {})",
            app.state.wf.cfg.listen, app.port
        );
        app.run().await?;
        Ok(())
    })
}

pub fn apps(args: AppsArgs) -> Result<(), CliError> {
    let cfg = Config::load(args.config.as_deref())?;
    runtime()?.block_on(async move {
        let wf =
            crate::service::workflow(cfg, std::sync::Arc::new(crate::clock::SystemClock)).await?;
        match args.command {
            AppsCommand::Create { name, scopes } => {
                let scopes: Vec<String> = scopes
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                let (app, key) = wf
                    .create_app(&name, &scopes, &operator())
                    .await
                    .map_err(|e| CliError(e.to_string()))?;
                eprintln!(
                    "application {} created with scopes {}; its API key and the secret its webhooks are signed with (X-Segel-Signature: sha256=HMAC-SHA256(secret, body)), shown only now:",
                    app.name,
                    app.scopes.join(",")
                );
                println!(
                    "{}",
                    serde_json::json!({"app": app.name, "api_key": key, "webhook_secret": app.webhook_secret})
                );
            }
            AppsCommand::Revoke { name } => {
                wf.revoke_app(&name, &operator())
                    .await
                    .map_err(|e| CliError(e.to_string()))?;
                eprintln!("application {name} revoked");
            }
        }
        Ok(())
    })
}

pub fn officials(args: OfficialsArgs) -> Result<(), CliError> {
    let cfg = Config::load(args.config.as_deref())?;
    runtime()?.block_on(async move {
        let wf =
            crate::service::workflow(cfg, std::sync::Arc::new(crate::clock::SystemClock)).await?;
        match args.command {
            OfficialsCommand::Add {
                username,
                name,
                title,
                nip,
                email,
                roles,
                key,
            } => {
                let password = match std::env::var("SEGEL_OFFICIAL_PASSWORD") {
                    Ok(p) => p,
                    Err(_) => {
                        let p = random_token(12);
                        eprintln!("generated password for {username} (shown only now): {p}");
                        p
                    }
                };
                if let Some(k) = &key {
                    wf.keys.get(k).map_err(|e| CliError(e.to_string()))?;
                }
                let roles: Vec<String> = roles
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                let o = wf
                    .add_official(
                        &username,
                        &password,
                        &name,
                        &title,
                        &nip,
                        email.as_deref(),
                        &roles,
                        key.as_deref(),
                        &operator(),
                    )
                    .await
                    .map_err(|e| CliError(e.to_string()))?;
                eprintln!(
                    "official {} enrolled (roles {})",
                    o.username,
                    o.roles.join(",")
                );
            }
        }
        Ok(())
    })
}

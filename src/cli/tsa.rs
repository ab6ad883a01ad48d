//! `segel tsa`: Segel's time-stamp authority over HTTP (RFC 3161 §3.4).

use super::{CliError, keys_dir};
use crate::clock::SystemClock;
use crate::cms::BuiltinTsa;
use crate::cms::tsp::DEV_TSA_POLICY;
use crate::keys::{SoftwareSigner, load_certificates_pem};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct TsaArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:3180")]
    listen: String,
    /// TSA private key (PEM); default: the development PKI's tsa.key.pem.
    #[arg(long)]
    key: Option<PathBuf>,
    /// TSA certificate chain (PEM, TSA first); default: the development PKI's tsa.chain.pem.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// TSA policy OID written in every token.
    #[arg(long, default_value = DEV_TSA_POLICY)]
    policy: String,
}

/// Load a TSA from key and chain files (defaults: the development PKI).
pub fn load_tsa(
    key: Option<PathBuf>,
    cert: Option<PathBuf>,
    policy: &str,
) -> Result<BuiltinTsa, CliError> {
    let key = key.unwrap_or_else(|| keys_dir().join("tsa.key.pem"));
    let cert = cert.unwrap_or_else(|| keys_dir().join("tsa.chain.pem"));
    let key_pem = std::fs::read(&key).map_err(|e| CliError(format!("{}: {e}", key.display())))?;
    let chain = load_certificates_pem(
        &std::fs::read(&cert).map_err(|e| CliError(format!("{}: {e}", cert.display())))?,
    )?;
    let signer = SoftwareSigner::from_pem(&key_pem, chain, false)?;
    Ok(BuiltinTsa::new(
        Arc::new(signer),
        policy,
        Arc::new(SystemClock),
    )?)
}

/// The router answering time-stamp queries at `/` and `/tsa`.
pub fn router(tsa: Arc<BuiltinTsa>) -> Router {
    Router::new()
        .route("/", post(answer))
        .route("/tsa", post(answer))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(tsa)
}

async fn answer(State(tsa): State<Arc<BuiltinTsa>>, body: Bytes) -> impl IntoResponse {
    let tsa = tsa.clone();
    match tokio::task::spawn_blocking(move || tsa.respond(&body)).await {
        Ok(resp) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/timestamp-reply")],
            resp,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

pub fn run(args: TsaArgs) -> Result<(), CliError> {
    let tsa = Arc::new(load_tsa(args.key, args.cert, &args.policy)?);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .map_err(|e| CliError(format!("{}: {e}", args.listen)))?;
        eprintln!("segel tsa listening on http://{}", listener.local_addr()?);
        axum::serve(listener, router(tsa)).await?;
        Ok(())
    })
}

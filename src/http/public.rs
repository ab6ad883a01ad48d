//! Public endpoints (no login, rate-limited): verification by upload, the record behind a
//! QR code as an HTML page and as JSON, the CRL and the time-stamp authority.

use super::AppState;
use super::documents::read_multipart;
use super::error::ApiError;
use crate::trust::{Report, VerifyOptions, verify_pdf};
use crate::workflow::documents::PublicRecord;
use askama::Template;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Multipart, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

pub async fn run_verify(st: &AppState, bytes: Vec<u8>, name: &str) -> Result<Report, ApiError> {
    let trust = st.wf.trust.clone();
    let clock = st.wf.clock.clone();
    let name = name.to_string();
    let report = tokio::task::spawn_blocking(move || {
        verify_pdf(
            &bytes,
            &trust,
            &VerifyOptions {
                file_name: name,
                ..Default::default()
            },
            clock.as_ref(),
        )
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unreadable_pdf",
            e.to_string(),
        )
    })?;
    metrics::counter!("segel_verifications_total", "result" => if report.all_valid() { "valid" } else { "not_valid" }).increment(1);
    Ok(report)
}

#[utoipa::path(
    post, path = "/api/v1/verify", tag = "public",
    request_body(content = crate::http::openapi::UploadForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "The verification report", body = serde_json::Value), (status = 400, description = "Malformed request", body = crate::http::openapi::ErrorBody), (status = 422, description = "The PDF could not be read", body = crate::http::openapi::ErrorBody), (status = 429, description = "Rate limited", body = crate::http::openapi::ErrorBody))
)]
pub async fn verify(State(st): State<AppState>, mp: Multipart) -> Result<Json<Report>, ApiError> {
    let (mut files, _) = read_multipart(mp).await?;
    if files.len() != 1 {
        return Err(ApiError::bad_request(
            "file_required",
            "send exactly one `file` part",
        ));
    }
    Ok(Json(run_verify(&st, files.remove(0), "upload.pdf").await?))
}

#[utoipa::path(
    get, path = "/api/v1/public/{code}", tag = "public", params(("code" = String, Path, description = "Verification code from the QR")),
    responses((status = 200, description = "The public record behind the QR code", body = serde_json::Value), (status = 404, description = "No such record", body = crate::http::openapi::ErrorBody), (status = 429, description = "Rate limited", body = crate::http::openapi::ErrorBody))
)]
pub async fn record_json(
    State(st): State<AppState>,
    Path(code): Path<String>,
) -> Result<Json<PublicRecord>, ApiError> {
    Ok(Json(st.wf.public_record(&code).await?))
}

#[derive(Template)]
#[template(path = "record.html")]
struct RecordPage<'a> {
    r: &'a PublicRecord,
    times: Vec<String>,
    check: Option<CheckResult>,
    /// When the letter was revoked, as displayed (empty unless revoked).
    revoked_time: String,
}

struct CheckResult {
    hash_matches: bool,
    uploaded_sha256: String,
    verdicts: Vec<(String, String, String)>,
}

#[derive(Template)]
#[template(path = "not_found.html")]
struct NotFoundPage;

fn fmt_time(st: &AppState, ms: Option<i64>) -> String {
    ms.and_then(|m| time::OffsetDateTime::from_unix_timestamp(m / 1000).ok())
        .map(|t| st.wf.zone.format(t))
        .unwrap_or_else(|| "-".into())
}

async fn page(st: &AppState, code: &str, check: Option<CheckResult>) -> Response {
    match st.wf.public_record(code).await {
        Ok(r) => {
            let times = r
                .signers
                .iter()
                .map(|s| fmt_time(st, s.signed_at))
                .collect();
            let revoked_time = r
                .revoked_at
                .map(|t| fmt_time(st, Some(t)))
                .unwrap_or_default();
            match (RecordPage {
                r: &r,
                times,
                check,
                revoked_time,
            })
            .render()
            {
                Ok(html) => Html(html).into_response(),
                Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        }
        Err(_) => not_found_page(),
    }
}

/// The 404 page for an unknown verification code.
fn not_found_page() -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(NotFoundPage.render().unwrap_or_default()),
    )
        .into_response()
}

#[utoipa::path(
    get, path = "/v/{code}", tag = "public", params(("code" = String, Path, description = "Verification code from the QR")),
    responses((status = 200, description = "The record as an HTML page", content_type = "text/html", body = String), (status = 404, description = "No such record (HTML)", content_type = "text/html", body = String))
)]
pub async fn record_page(State(st): State<AppState>, Path(code): Path<String>) -> Response {
    page(&st, &code, None).await
}

/// The upload form of the record page: does this file match the record, and is it valid?
#[utoipa::path(
    post, path = "/v/{code}/check", tag = "public", params(("code" = String, Path, description = "Verification code from the QR")),
    request_body(content = crate::http::openapi::UploadForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "The record page with the result of the upload check", content_type = "text/html", body = String), (status = 404, description = "No such record (HTML)", content_type = "text/html", body = String), (status = 400, description = "Malformed request", body = crate::http::openapi::ErrorBody), (status = 429, description = "Rate limited", body = crate::http::openapi::ErrorBody))
)]
pub async fn record_check(
    State(st): State<AppState>,
    Path(code): Path<String>,
    mp: Multipart,
) -> Result<Response, ApiError> {
    // The upload is read first, also for an unknown code: answering before the body is
    // consumed would break the client's keep-alive connection.
    let (mut files, _) = read_multipart(mp).await?;
    let record = match st.wf.public_record(&code).await {
        Ok(r) => r,
        Err(crate::workflow::WorkflowError::NotFound(_)) => return Ok(not_found_page()),
        Err(e) => return Err(e.into()),
    };
    if files.len() != 1 {
        return Err(ApiError::bad_request(
            "file_required",
            "send exactly one `file` part",
        ));
    }
    let bytes = files.remove(0);
    let sha = crate::workflow::sha256_hex(&bytes);
    let hash_matches = record.signed_sha256.as_deref() == Some(sha.as_str());
    let report = run_verify(&st, bytes, "upload.pdf").await?;
    let verdicts = report
        .signatures
        .iter()
        .map(|s| {
            (
                s.signer
                    .as_ref()
                    .and_then(|x| x.name.clone())
                    .unwrap_or_default(),
                format!("{:?}", s.verdict).to_lowercase(),
                s.summary_id.clone(),
            )
        })
        .collect();
    Ok(page(
        &st,
        &code,
        Some(CheckResult {
            hash_matches,
            uploaded_sha256: sha,
            verdicts,
        }),
    )
    .await)
}

#[utoipa::path(
    get, path = "/crl/{name}", tag = "operations", params(("name" = String, Path, description = "`issuing-ca.crl`")),
    responses((status = 200, description = "The CRL (DER)", content_type = "application/pkix-crl", body = [u8]), (status = 404, description = "No such CRL", body = crate::http::openapi::ErrorBody))
)]
pub async fn crl(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if name != "issuing-ca.crl" {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such CRL",
        ));
    }
    let path = st.wf.cfg.keys_dir.join("crl").join(&name);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no CRL published"))?;
    Ok(([(header::CONTENT_TYPE, "application/pkix-crl")], bytes).into_response())
}

#[utoipa::path(
    post, path = "/tsa", tag = "operations",
    request_body(content = [u8], content_type = "application/timestamp-query", description = "RFC 3161 TimeStampReq"),
    responses((status = 200, description = "RFC 3161 TimeStampResp", content_type = "application/timestamp-reply", body = [u8]))
)]
pub async fn tsa(State(st): State<AppState>, body: Bytes) -> Response {
    let tsa = st.wf.tsa.clone();
    match tokio::task::spawn_blocking(move || tsa.respond(&body)).await {
        Ok(r) => ([(header::CONTENT_TYPE, "application/timestamp-reply")], r).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

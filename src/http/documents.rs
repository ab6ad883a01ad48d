//! Back-office and official endpoints for documents.

use super::AppState;
use super::auth::{AppAuth, OfficialAuth, SESSION_COOKIE};
use super::error::ApiError;
use crate::keys::keystore::Passphrase;
use crate::workflow::documents::{SubmitMeta, Version};
use axum::Json;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

/// Read a multipart body: the `file` parts and the text parts.
pub async fn read_multipart(
    mut mp: Multipart,
) -> Result<(Vec<Vec<u8>>, std::collections::HashMap<String, String>), ApiError> {
    let mut files = Vec::new();
    let mut fields = std::collections::HashMap::new();
    while let Some(field) = mp.next_field().await? {
        let name = field.name().unwrap_or("").to_string();
        if name == "file" || name == "files" || name == "file[]" {
            files.push(field.bytes().await?.to_vec());
        } else {
            fields.insert(name, field.text().await?);
        }
    }
    Ok((files, fields))
}

#[utoipa::path(
    post, path = "/api/v1/documents", tag = "documents", security(("app_key" = [])),
    request_body(content = crate::http::openapi::SubmitForm, content_type = "multipart/form-data"),
    responses((status = 201, description = "The document and its steps", body = serde_json::Value), (status = 400, description = "Malformed request", body = crate::http::openapi::ErrorBody), (status = 401, description = "Missing or unknown credentials", body = crate::http::openapi::ErrorBody), (status = 403, description = "Credentials lack the needed scope or role", body = crate::http::openapi::ErrorBody), (status = 422, description = "The PDF or metadata was rejected", body = crate::http::openapi::ErrorBody))
)]
pub async fn submit(
    State(st): State<AppState>,
    auth: AppAuth,
    mp: Multipart,
) -> Result<Response, ApiError> {
    let app = auth.require("submit")?;
    let (mut files, fields) = read_multipart(mp).await?;
    if files.len() != 1 {
        return Err(ApiError::bad_request(
            "file_required",
            "send exactly one `file` part (the PDF)",
        ));
    }
    let meta = fields.get("metadata").ok_or_else(|| {
        ApiError::bad_request("metadata_required", "send a `metadata` part (JSON)")
    })?;
    let meta: SubmitMeta = serde_json::from_str(meta)
        .map_err(|e| ApiError::bad_request("invalid_metadata", format!("metadata: {e}")))?;
    let doc = st.wf.submit(app, files.remove(0), meta).await?;
    Ok((StatusCode::CREATED, Json(doc)).into_response())
}

#[utoipa::path(
    get, path = "/api/v1/documents/{id}", tag = "documents", security(("app_key" = [])), params(("id" = String, Path, description = "Document id")),
    responses((status = 200, description = "Status, steps, history (audit entries) and webhook attempts", body = serde_json::Value), (status = 401, description = "Missing or unknown credentials", body = crate::http::openapi::ErrorBody), (status = 403, description = "Credentials lack the needed scope or role", body = crate::http::openapi::ErrorBody), (status = 404, description = "No such document", body = crate::http::openapi::ErrorBody))
)]
pub async fn get(
    State(st): State<AppState>,
    auth: AppAuth,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let app = auth.require("read").or_else(|_| auth.require("submit"))?;
    let doc = st.wf.app_document(app, &id).await?;
    let history = crate::audit::list(
        &st.wf.db,
        &crate::audit::Filter {
            document_id: Some(id.clone()),
            ..Default::default()
        },
    )
    .await
    .map_err(crate::workflow::WorkflowError::from)?;
    let webhooks = st.wf.webhook_attempts(&id).await?;
    let mut v = serde_json::to_value(&doc).unwrap_or_default();
    v["history"] = serde_json::to_value(history).unwrap_or_default();
    v["webhook_attempts"] = json!(webhooks);
    Ok(Json(v))
}

#[derive(Deserialize)]
pub struct FileQuery {
    version: Option<Version>,
}

#[utoipa::path(
    get, path = "/api/v1/documents/{id}/file", tag = "documents", security(("app_key" = [])),
    params(("id" = String, Path, description = "Document id"), ("version" = Option<String>, Query, description = "`original`, `current` (default) or `signed`")),
    responses((status = 200, description = "The PDF", content_type = "application/pdf", body = [u8]), (status = 401, description = "Missing or unknown credentials", body = crate::http::openapi::ErrorBody), (status = 403, description = "Credentials lack the needed scope or role", body = crate::http::openapi::ErrorBody), (status = 404, description = "No such document", body = crate::http::openapi::ErrorBody))
)]
pub async fn file(
    State(st): State<AppState>,
    auth: AppAuth,
    Path(id): Path<String>,
    Query(q): Query<FileQuery>,
) -> Result<Response, ApiError> {
    let app = auth.require("read").or_else(|_| auth.require("submit"))?;
    let doc = st.wf.app_document(app, &id).await?;
    let bytes = st
        .wf
        .file(&doc, q.version.unwrap_or(Version::Current))
        .await?;
    Ok(([(header::CONTENT_TYPE, "application/pdf")], bytes).into_response())
}

#[utoipa::path(
    post, path = "/api/v1/documents/{id}/cancel", tag = "documents", security(("app_key" = [])), params(("id" = String, Path, description = "Document id")),
    responses((status = 200, description = "The cancelled document", body = serde_json::Value), (status = 401, description = "Missing or unknown credentials", body = crate::http::openapi::ErrorBody), (status = 403, description = "Credentials lack the needed scope or role", body = crate::http::openapi::ErrorBody), (status = 404, description = "No such document", body = crate::http::openapi::ErrorBody), (status = 409, description = "The workflow has already ended", body = crate::http::openapi::ErrorBody))
)]
pub async fn cancel(
    State(st): State<AppState>,
    auth: AppAuth,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let app = auth.require("submit")?;
    Ok(Json(
        serde_json::to_value(st.wf.cancel(app, &id).await?).unwrap_or_default(),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct Revoke {
    /// Why the letter is revoked; shown on the public record page.
    reason: String,
}

#[utoipa::path(
    post, path = "/api/v1/documents/{id}/revoke", tag = "documents", security(("app_key" = [])), params(("id" = String, Path, description = "Document id")),
    request_body = Revoke,
    responses((status = 200, description = "The revoked document (status `revoked`, `revoked_at`, `revocation_reason`); the public record shows it as revoked", body = serde_json::Value), (status = 400, description = "Malformed request", body = crate::http::openapi::ErrorBody), (status = 401, description = "Missing or unknown credentials", body = crate::http::openapi::ErrorBody), (status = 403, description = "Credentials lack the needed scope or role", body = crate::http::openapi::ErrorBody), (status = 404, description = "No such document", body = crate::http::openapi::ErrorBody), (status = 409, description = "Only a completed document can be revoked", body = crate::http::openapi::ErrorBody), (status = 422, description = "The reason is missing or too long", body = crate::http::openapi::ErrorBody))
)]
pub async fn revoke(
    State(st): State<AppState>,
    auth: AppAuth,
    Path(id): Path<String>,
    Json(body): Json<Revoke>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let app = auth.require("submit")?;
    Ok(Json(
        serde_json::to_value(st.wf.revoke(app, &id, &body.reason).await?).unwrap_or_default(),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct Login {
    username: String,
    password: String,
}

#[utoipa::path(
    post, path = "/api/v1/login", tag = "officials", request_body = Login,
    responses((status = 200, description = "`{token, official}`, and the session cookie `segel_session`", body = serde_json::Value), (status = 401, description = "Missing or unknown credentials", body = crate::http::openapi::ErrorBody))
)]
pub async fn login(
    State(st): State<AppState>,
    Json(body): Json<Login>,
) -> Result<Response, ApiError> {
    let (official, token) = st.wf.login(&body.username, &body.password).await?;
    let secure = if st.wf.cfg.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200{secure}"
    );
    Ok((
        [(header::SET_COOKIE, cookie)],
        Json(json!({"token": token, "official": official})),
    )
        .into_response())
}

#[utoipa::path(
    get, path = "/api/v1/inbox", tag = "officials", security(("official_token" = []), ("official_cookie" = [])),
    responses((status = 200, description = "`{documents: [...]}` waiting for this official's step", body = serde_json::Value), (status = 401, description = "Missing or unknown credentials", body = crate::http::openapi::ErrorBody))
)]
pub async fn inbox(
    State(st): State<AppState>,
    OfficialAuth(o): OfficialAuth,
) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(json!({"documents": st.wf.inbox(&o).await?})))
}

/// Officials may also read documents they have a step on.
#[utoipa::path(
    get, path = "/api/v1/inbox/{id}/file", tag = "officials", security(("official_token" = []), ("official_cookie" = [])), params(("id" = String, Path, description = "Document id")),
    responses((status = 200, description = "The current PDF of a document the official has a step on", content_type = "application/pdf", body = [u8]), (status = 401, description = "Missing or unknown credentials", body = crate::http::openapi::ErrorBody), (status = 404, description = "No such document", body = crate::http::openapi::ErrorBody))
)]
pub async fn official_file(
    State(st): State<AppState>,
    OfficialAuth(o): OfficialAuth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let doc = st.wf.document(&id).await?;
    if !doc.steps.iter().any(|s| s.official_id == o.id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no document {id:?}"),
        ));
    }
    let bytes = st.wf.file(&doc, Version::Current).await?;
    Ok(([(header::CONTENT_TYPE, "application/pdf")], bytes).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct Approve {
    passphrase: String,
}

#[utoipa::path(
    post, path = "/api/v1/documents/{id}/steps/{n}/approve", tag = "officials", security(("official_token" = []), ("official_cookie" = [])), params(("id" = String, Path, description = "Document id"), ("n" = i64, Path, description = "Step number")),
    request_body = Approve,
    responses((status = 200, description = "The document after the paraf or signature", body = serde_json::Value), (status = 401, description = "Wrong passphrase (with `attempts_left`)", body = crate::http::openapi::ErrorBody), (status = 403, description = "Credentials lack the needed scope or role", body = crate::http::openapi::ErrorBody), (status = 404, description = "No such document", body = crate::http::openapi::ErrorBody), (status = 409, description = "The step was already decided, earlier steps are not done, or the step is assigned to another official (`not_assigned`)", body = crate::http::openapi::ErrorBody), (status = 422, description = "The PDF or metadata was rejected", body = crate::http::openapi::ErrorBody), (status = 423, description = "Signing locked after repeated wrong passphrases", body = crate::http::openapi::ErrorBody), (status = 503, description = "The signing key is unavailable", body = crate::http::openapi::ErrorBody))
)]
pub async fn approve(
    State(st): State<AppState>,
    OfficialAuth(o): OfficialAuth,
    Path((id, n)): Path<(String, i64)>,
    Json(body): Json<Approve>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let doc = st
        .wf
        .approve(&o, &id, n, Passphrase::new(body.passphrase))
        .await?;
    Ok(Json(serde_json::to_value(doc).unwrap_or_default()))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct Reject {
    reason: String,
}

#[utoipa::path(
    post, path = "/api/v1/documents/{id}/steps/{n}/reject", tag = "officials", security(("official_token" = []), ("official_cookie" = [])), params(("id" = String, Path, description = "Document id"), ("n" = i64, Path, description = "Step number")),
    request_body = Reject,
    responses((status = 200, description = "The rejected document", body = serde_json::Value), (status = 401, description = "Missing or unknown credentials", body = crate::http::openapi::ErrorBody), (status = 403, description = "Credentials lack the needed scope or role", body = crate::http::openapi::ErrorBody), (status = 404, description = "No such document", body = crate::http::openapi::ErrorBody), (status = 409, description = "The step was already decided, earlier steps are not done, or the step is assigned to another official (`not_assigned`)", body = crate::http::openapi::ErrorBody))
)]
pub async fn reject(
    State(st): State<AppState>,
    OfficialAuth(o): OfficialAuth,
    Path((id, n)): Path<(String, i64)>,
    Json(body): Json<Reject>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let doc = st.wf.reject(&o, &id, n, &body.reason).await?;
    Ok(Json(serde_json::to_value(doc).unwrap_or_default()))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct BatchApprove {
    documents: Vec<String>,
    passphrase: String,
}

#[utoipa::path(
    post, path = "/api/v1/approvals/batch", tag = "officials", security(("official_token" = []), ("official_cookie" = [])), request_body = BatchApprove,
    responses((status = 200, description = "`{results: [...]}`, one per document", body = serde_json::Value), (status = 400, description = "Malformed request", body = crate::http::openapi::ErrorBody), (status = 401, description = "Wrong passphrase (with `attempts_left`)", body = crate::http::openapi::ErrorBody), (status = 423, description = "Signing locked after repeated wrong passphrases", body = crate::http::openapi::ErrorBody))
)]
pub async fn approve_batch(
    State(st): State<AppState>,
    OfficialAuth(o): OfficialAuth,
    Json(body): Json<BatchApprove>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if body.documents.is_empty() || body.documents.len() > 500 {
        return Err(ApiError::bad_request(
            "invalid_batch",
            "give 1 to 500 document ids",
        ));
    }
    let results = st
        .wf
        .approve_batch(&o, &body.documents, Passphrase::new(body.passphrase))
        .await?;
    Ok(Json(json!({"results": results})))
}

#[utoipa::path(
    post, path = "/api/v1/seal", tag = "seal", security(("app_key" = [])),
    request_body(content = crate::http::openapi::SealForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "The sealed PDF; headers `X-Segel-Document-Id` and `X-Segel-Verification-Url`", content_type = "application/pdf", body = [u8]), (status = 400, description = "Malformed request", body = crate::http::openapi::ErrorBody), (status = 401, description = "Missing or unknown credentials", body = crate::http::openapi::ErrorBody), (status = 403, description = "Credentials lack the needed scope or role", body = crate::http::openapi::ErrorBody), (status = 422, description = "The PDF or metadata was rejected", body = crate::http::openapi::ErrorBody))
)]
pub async fn seal(
    State(st): State<AppState>,
    auth: AppAuth,
    mp: Multipart,
) -> Result<Response, ApiError> {
    let app = auth.require("seal")?;
    let (mut files, fields) = read_multipart(mp).await?;
    if files.len() != 1 {
        return Err(ApiError::bad_request(
            "file_required",
            "send exactly one `file` part",
        ));
    }
    let meta: serde_json::Value = match fields.get("metadata") {
        Some(m) => serde_json::from_str(m)
            .map_err(|e| ApiError::bad_request("invalid_metadata", format!("metadata: {e}")))?,
        None => json!({}),
    };
    let placement =
        match meta.get("placement") {
            Some(p) => Some(serde_json::from_value(p.clone()).map_err(|e| {
                ApiError::bad_request("invalid_metadata", format!("placement: {e}"))
            })?),
            None => None,
        };
    let title = meta
        .get("title")
        .and_then(|t| t.as_str())
        .unwrap_or("(sealed letter)");
    let number = meta
        .get("letter_number")
        .and_then(|t| t.as_str())
        .unwrap_or("-");
    let (doc, bytes) = st
        .wf
        .seal(app, files.remove(0), title, number, placement)
        .await?;
    let mut resp = ([(header::CONTENT_TYPE, "application/pdf")], bytes).into_response();
    if let Ok(v) = header::HeaderValue::from_str(&doc.id) {
        resp.headers_mut().insert("X-Segel-Document-Id", v);
    }
    if let Ok(v) = header::HeaderValue::from_str(&doc.verification_url) {
        resp.headers_mut().insert("X-Segel-Verification-Url", v);
    }
    Ok(resp)
}

#[utoipa::path(
    post, path = "/api/v1/seal/batch", tag = "seal", security(("app_key" = [])),
    request_body(content = crate::http::openapi::SealBatchForm, content_type = "multipart/form-data"),
    responses((status = 202, description = "The batch job", body = serde_json::Value), (status = 400, description = "Malformed request", body = crate::http::openapi::ErrorBody), (status = 401, description = "Missing or unknown credentials", body = crate::http::openapi::ErrorBody), (status = 403, description = "Credentials lack the needed scope or role", body = crate::http::openapi::ErrorBody), (status = 422, description = "The PDF or metadata was rejected", body = crate::http::openapi::ErrorBody))
)]
pub async fn seal_batch(
    State(st): State<AppState>,
    auth: AppAuth,
    mp: Multipart,
) -> Result<Response, ApiError> {
    let app = auth.require("seal")?.clone();
    let (files, fields) = read_multipart(mp).await?;
    let meta: serde_json::Value = fields
        .get("metadata")
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or(json!({}));
    let title = meta
        .get("title")
        .and_then(|t| t.as_str())
        .unwrap_or("(sealed letter)")
        .to_string();
    let number = meta
        .get("letter_number")
        .and_then(|t| t.as_str())
        .unwrap_or("")
        .to_string();
    let job = st.wf.start_seal_batch(&app, files, title, number).await?;
    Ok((StatusCode::ACCEPTED, Json(job)).into_response())
}

#[utoipa::path(
    get, path = "/api/v1/seal/batch/{id}", tag = "seal", security(("app_key" = [])), params(("id" = String, Path, description = "Batch job id")),
    responses((status = 200, description = "The batch job's progress and results", body = serde_json::Value), (status = 401, description = "Missing or unknown credentials", body = crate::http::openapi::ErrorBody), (status = 403, description = "Credentials lack the needed scope or role", body = crate::http::openapi::ErrorBody), (status = 404, description = "No such job", body = crate::http::openapi::ErrorBody))
)]
pub async fn seal_batch_status(
    State(st): State<AppState>,
    auth: AppAuth,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let app = auth.require("seal")?;
    Ok(Json(st.wf.seal_batch(app, &id).await?))
}

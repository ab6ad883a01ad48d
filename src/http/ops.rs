//! Operations: liveness, readiness (database, keys, certificates), Prometheus metrics, and
//! the auditor's view of the audit log.

use super::AppState;
use super::auth::OfficialAuth;
use super::error::ApiError;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

#[utoipa::path(
    get, path = "/healthz", tag = "operations", responses((status = 200, description = "`{status: \"ok\"}`", body = serde_json::Value))
)]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Days to expiry of the certificates the service signs with (seal, TSA, auditor, officials).
pub fn certificate_days(st: &AppState) -> Vec<(String, i64)> {
    let now = st.wf.clock.now();
    let mut out = Vec::new();
    let days = |der: &[u8]| {
        x509_parser::parse_x509_certificate(der).ok().map(|(_, c)| {
            (c.validity().not_after.timestamp() - now.unix_timestamp()).div_euclid(86_400)
        })
    };
    for (name, chain) in [
        ("seal", st.wf.seal.certificate_chain()),
        ("tsa", st.wf.tsa.certificate_chain()),
        ("auditor", st.wf.auditor.certificate_chain()),
    ] {
        if let Some(d) = chain.first().and_then(|c| days(c)) {
            out.push((name.to_string(), d));
        }
    }
    if let Ok(records) = st.wf.keys.list() {
        for r in records {
            if let Some(d) = r
                .chain_pem
                .as_deref()
                .and_then(|p| crate::keys::keystore::days_to_expiry(p, now))
            {
                out.push((format!("official:{}", r.id), d));
            }
        }
    }
    out
}

#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready: database reachable, certificates valid", body = serde_json::Value), (status = 503, description = "Not ready, with `problems`", body = serde_json::Value))
)]
pub async fn readyz(State(st): State<AppState>) -> Response {
    let mut problems = Vec::new();
    if let Err(e) = sqlx::query("SELECT 1").execute(&st.wf.db.pool).await {
        problems.push(format!("database: {e}"));
    }
    // Keys in an HSM: the token must be reachable and logged in — the seal's, and officials'.
    let seal = st.wf.seal.clone();
    match tokio::task::spawn_blocking(move || seal.health()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(format!("seal key: {e}")),
        Err(e) => problems.push(format!("seal key: {e}")),
    }
    if let Ok(records) = st.wf.keys.list() {
        for r in records.into_iter().filter(|r| !r.disabled) {
            if let Some(cfg) = crate::keys::keystore::hsm_config(&r.location) {
                let health = tokio::task::spawn_blocking(move || {
                    cfg.and_then(crate::keys::pkcs11::Pkcs11Key::open)
                        .and_then(|k| k.health())
                })
                .await;
                match health {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => problems.push(format!("HSM key {}: {e}", r.id)),
                    Err(e) => problems.push(format!("HSM key {}: {e}", r.id)),
                }
            }
        }
    }
    let certs = certificate_days(&st);
    for (name, d) in &certs {
        if *d < 0 && !name.starts_with("official:") {
            problems.push(format!("certificate {name} expired"));
        }
    }
    let body = json!({
        "status": if problems.is_empty() { "ready" } else { "not_ready" },
        "problems": problems,
        "certificates": certs.iter().map(|(n, d)| json!({"key": n, "days_to_expiry": d})).collect::<Vec<_>>(),
    });
    let status = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[utoipa::path(
    get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String))
)]
pub async fn metrics(State(st): State<AppState>) -> Response {
    for (name, d) in certificate_days(&st) {
        metrics::gauge!("segel_certificate_days_to_expiry", "key" => name).set(d as f64);
    }
    st.metrics.render().into_response()
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    document_id: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    after_seq: Option<i64>,
    limit: Option<i64>,
}

#[utoipa::path(
    get, path = "/api/v1/audit", tag = "operations", security(("official_token" = []), ("official_cookie" = [])), params(AuditQuery),
    responses((status = 200, description = "`{entries: [...]}`", body = serde_json::Value), (status = 401, description = "Missing or unknown credentials", body = crate::http::openapi::ErrorBody), (status = 403, description = "Only for officials with the auditor role", body = crate::http::openapi::ErrorBody))
)]
pub async fn audit(
    State(st): State<AppState>,
    OfficialAuth(o): OfficialAuth,
    Query(q): Query<AuditQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !o.has_role("auditor") {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the audit log is for officials with the auditor role",
        ));
    }
    let filter = crate::audit::Filter {
        document_id: q.document_id,
        actor_id: q.actor,
        action: q.action,
        since_millis: q.since,
        until_millis: q.until,
        after_seq: q.after_seq,
        limit: Some(q.limit.unwrap_or(100).clamp(1, 1000) as u32),
    };
    let entries = crate::audit::list(&st.wf.db, &filter)
        .await
        .map_err(crate::workflow::WorkflowError::from)?;
    Ok(Json(json!({"entries": entries})))
}

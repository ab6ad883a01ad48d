//! Request authentication: application API keys (Bearer, with scopes) and officials
//! (Bearer session token or the session cookie).

use super::AppState;
use super::error::ApiError;
use crate::workflow::accounts::{App, Official};
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;

fn bearer(parts: &Parts) -> Option<String> {
    let h = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    h.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

fn cookie(parts: &Parts, name: &str) -> Option<String> {
    let h = parts
        .headers
        .get(axum::http::header::COOKIE)?
        .to_str()
        .ok()?;
    h.split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// An authenticated back-office application.
pub struct AppAuth(pub App);

impl AppAuth {
    pub fn require(&self, scope: &str) -> Result<&App, ApiError> {
        if self.0.has(scope) {
            Ok(&self.0)
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "missing_scope",
                format!("this API key lacks the {scope:?} scope"),
            ))
        }
    }
}

impl FromRequestParts<AppState> for AppAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = bearer(parts).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send Authorization: Bearer <API key>",
            )
        })?;
        Ok(AppAuth(state.wf.authenticate_app(&key).await?))
    }
}

/// A logged-in official.
pub struct OfficialAuth(pub Official);

pub const SESSION_COOKIE: &str = "segel_session";

impl FromRequestParts<AppState> for OfficialAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)
            .or_else(|| cookie(parts, SESSION_COOKIE))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "log in first (POST /api/v1/login)",
                )
            })?;
        Ok(OfficialAuth(state.wf.session(&token).await?))
    }
}

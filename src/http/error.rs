//! One error type for the HTTP layer: a status, a stable code and a message, rendered as
//! `{"error": {"code", "message"}}`. 5xx bodies stay generic; the cause is logged.

use crate::workflow::WorkflowError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub extra: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: None,
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let (Some(extra), Some(obj)) = (self.extra, error.as_object_mut())
            && let Some(e) = extra.as_object()
        {
            obj.extend(e.clone());
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

impl From<WorkflowError> for ApiError {
    fn from(e: WorkflowError) -> Self {
        use StatusCode as S;
        match e {
            WorkflowError::NotFound(m) => ApiError::new(S::NOT_FOUND, "not_found", m),
            WorkflowError::Unauthorized(m) => ApiError::new(S::UNAUTHORIZED, "unauthorized", m),
            WorkflowError::Forbidden(m) => ApiError::new(S::FORBIDDEN, "forbidden", m),
            WorkflowError::Conflict(m) => ApiError::new(S::CONFLICT, "conflict", m),
            WorkflowError::NotAssigned(m) => ApiError::new(S::CONFLICT, "not_assigned", m),
            WorkflowError::Invalid { code, message } => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, code, message)
            }
            e @ WorkflowError::WrongPassphrase { attempts_left } => ApiError {
                extra: Some(json!({"attempts_left": attempts_left})),
                ..ApiError::new(S::UNAUTHORIZED, "wrong_passphrase", e.to_string())
            },
            e @ WorkflowError::Locked { .. } => {
                ApiError::new(S::LOCKED, "signing_locked", e.to_string())
            }
            WorkflowError::KeyUnavailable(m) => {
                tracing::error!(cause = %m, "signing key unavailable");
                ApiError::new(
                    S::SERVICE_UNAVAILABLE,
                    "key_unavailable",
                    "the signing key is unavailable; try again later",
                )
            }
            WorkflowError::Internal(m) => {
                tracing::error!(cause = %m, "internal error");
                ApiError::new(S::INTERNAL_SERVER_ERROR, "internal", "internal error")
            }
        }
    }
}

impl From<axum::extract::multipart::MultipartError> for ApiError {
    fn from(e: axum::extract::multipart::MultipartError) -> Self {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                "payload_too_large",
                "the request body exceeds the limit",
            )
        } else {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_multipart", e.body_text())
        }
    }
}

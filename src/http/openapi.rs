//! The OpenAPI 3 description of the HTTP API (`GET /api/openapi.json`) and Swagger UI over it
//! (`GET /api/docs/`). The UI's assets are compiled in (`utoipa-swagger-ui` feature `vendored`),
//! so neither the build nor the page reaches the network.
//!
//! Paths come from the `#[utoipa::path]` attribute above each handler; bodies whose shape is
//! owned by the workflow or the verifier are described as free-form JSON objects.

use super::{bsre, documents, ops, public};
use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_swagger_ui::SwaggerUi;

/// Where the description is served.
pub const SPEC_PATH: &str = "/api/openapi.json";
/// Where Swagger UI is served (`/api/docs` redirects to `/api/docs/`).
pub const UI_PATH: &str = "/api/docs";

/// Every error body: `{"error": {"code", "message"}}` (see `error::ApiError`).
#[derive(ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// A stable machine-readable code and a human-readable message.
#[derive(ToSchema)]
pub struct ErrorDetail {
    /// Stable error code, e.g. `not_found`, `wrong_passphrase`, `rate_limited`.
    pub code: String,
    pub message: String,
    /// Present on `wrong_passphrase` (401): how many attempts remain before signing locks.
    pub attempts_left: Option<i64>,
}

/// `multipart/form-data` of `POST /api/v1/documents`.
#[derive(ToSchema)]
pub struct SubmitForm {
    /// The PDF.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    /// JSON: `{title, letter_number, external_ref?, steps: [{official, action: "paraf"|"sign",
    /// placement?: {page, rect} | {anchor} | {invisible: true}}], callback_url?}`.
    pub metadata: String,
}

/// `multipart/form-data` of `POST /api/v1/seal`.
#[derive(ToSchema)]
pub struct SealForm {
    /// The PDF.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    /// JSON: `{title?, letter_number?, placement?}`.
    pub metadata: Option<String>,
}

/// `multipart/form-data` of `POST /api/v1/seal/batch`: one or more `file` parts.
#[derive(ToSchema)]
pub struct SealBatchForm {
    /// The PDFs (repeat the `file` part).
    #[schema(value_type = Vec<String>, format = Binary)]
    pub file: Vec<Vec<u8>>,
    /// JSON: `{title?, letter_number?}`.
    pub metadata: Option<String>,
}

/// `multipart/form-data` of the public verification endpoints.
#[derive(ToSchema)]
pub struct UploadForm {
    /// The PDF.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// Security scheme names used in the `security(...)` of each path.
pub const APP_KEY: &str = "app_key";
pub const OFFICIAL_TOKEN: &str = "official_token";
pub const OFFICIAL_COOKIE: &str = "official_cookie";

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(description))
                    .build(),
            )
        };
        components.add_security_scheme(APP_KEY, bearer("An application's API key: `Authorization: Bearer <API key>`; each key carries scopes (submit, read, seal)."));
        components.add_security_scheme(
            OFFICIAL_TOKEN,
            bearer("An official's session token from `POST /api/v1/login`."),
        );
        let mut cookie = ApiKeyValue::new(super::auth::SESSION_COOKIE);
        cookie.description =
            Some("The HttpOnly session cookie set by `POST /api/v1/login`.".into());
        components.add_security_scheme(
            OFFICIAL_COOKIE,
            SecurityScheme::ApiKey(ApiKey::Cookie(cookie)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Segel", description = "Signs and verifies administrative documents (PAdES) for government single-window services."),
    paths(
        documents::submit,
        documents::get,
        documents::file,
        documents::cancel,
        documents::revoke,
        documents::approve,
        documents::reject,
        documents::inbox,
        documents::official_file,
        documents::approve_batch,
        documents::login,
        documents::seal,
        documents::seal_batch,
        documents::seal_batch_status,
        ops::audit,
        bsre::sign,
        bsre::verify,
        public::verify,
        public::record_json,
        public::record_page,
        public::record_check,
        public::crl,
        public::tsa,
        ops::healthz,
        ops::readyz,
        ops::metrics,
    ),
    components(schemas(ErrorBody, ErrorDetail, SubmitForm, SealForm, SealBatchForm, UploadForm)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "documents", description = "Applications submit documents and read them back"),
        (name = "officials", description = "Officials log in, see their inbox, approve or reject steps"),
        (name = "seal", description = "Immediate signing with the organisation seal"),
        (name = "bsre", description = "BSrE e-sign API v2 compatibility"),
        (name = "public", description = "Verification and the record behind a QR code (rate-limited)"),
        (name = "operations", description = "Health, readiness, metrics, CRL, time stamps, audit"),
    ),
)]
pub struct ApiDoc;

/// `GET /api/openapi.json` and Swagger UI at `/api/docs/`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    SwaggerUi::new(UI_PATH)
        .url(SPEC_PATH, ApiDoc::openapi())
        .into()
}

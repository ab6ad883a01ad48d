//! Compatibility with BSrE's e-sign API v2, so agencies' existing clients need only a new base
//! URL and credentials: `POST /api/v2/sign/pdf` and `POST /api/v2/verify/pdf`.

use super::AppState;
use super::auth::AppAuth;
use super::error::ApiError;
use crate::keys::keystore::Passphrase;
use crate::pdf::{Placement, StampImage, StampText, Visibility};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignatureProperties {
    #[serde(default)]
    tampilan: Option<String>,
    #[serde(default)]
    image_base64: Option<String>,
    #[serde(default)]
    page: Option<u32>,
    #[serde(default)]
    origin_x: Option<f32>,
    #[serde(default)]
    origin_y: Option<f32>,
    #[serde(default)]
    width: Option<f32>,
    #[serde(default)]
    height: Option<f32>,
    /// BSrE spells this one in snake case.
    #[serde(default, rename = "tag_koordinat")]
    tag_koordinat: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    location: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignBody {
    #[serde(default)]
    nik: Option<String>,
    #[serde(default)]
    email: Option<String>,
    passphrase: String,
    file: Vec<String>,
    #[serde(default)]
    signature_properties: Vec<SignatureProperties>,
}

#[utoipa::path(
    post, path = "/api/v2/sign/pdf", tag = "bsre", security(("app_key" = [])), request_body = SignBody,
    responses((status = 200, description = "`{file: [base64 signed PDFs], time}`; a VISIBLE signature with `imageBase64` (PNG or JPEG) shows that image, otherwise Segel's stamp", body = serde_json::Value), (status = 400, description = "Malformed request; `invalid_image` when imageBase64 is not a readable PNG or JPEG", body = crate::http::openapi::ErrorBody), (status = 401, description = "Wrong passphrase (with `attempts_left`)", body = crate::http::openapi::ErrorBody), (status = 403, description = "Credentials lack the needed scope or role", body = crate::http::openapi::ErrorBody), (status = 404, description = "The user is not registered (BSrE 2011)", body = crate::http::openapi::ErrorBody), (status = 422, description = "The PDF or metadata was rejected", body = crate::http::openapi::ErrorBody), (status = 423, description = "Signing locked after repeated wrong passphrases", body = crate::http::openapi::ErrorBody))
)]
pub async fn sign(
    State(st): State<AppState>,
    auth: AppAuth,
    Json(body): Json<SignBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let app = auth.require("submit")?;
    let official = match (&body.nik, &body.email) {
        (Some(nik), _) => st.wf.official_by("nip", nik).await,
        (None, Some(email)) => st.wf.official_by("email", email).await,
        _ => {
            return Err(ApiError::bad_request(
                "identity_required",
                "give nik or email",
            ));
        }
    }
    .map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "user_not_registered",
            "the user is not registered (BSrE 2011)",
        )
    })?;
    if body.file.is_empty() || body.file.len() > 100 {
        return Err(ApiError::bad_request(
            "file_required",
            "give 1 to 100 base64 files",
        ));
    }
    // Every file and its properties are checked before the key is unlocked, so a bad request
    // signs nothing (not even the files before the bad one).
    let mut jobs = Vec::with_capacity(body.file.len());
    let mut images: std::collections::HashMap<usize, std::sync::Arc<StampImage>> =
        std::collections::HashMap::new();
    for (i, f) in body.file.iter().enumerate() {
        let pdf = B64.decode(f.trim()).map_err(|_| {
            ApiError::bad_request("invalid_base64", format!("file[{i}] is not base64"))
        })?;
        // One properties entry per file, or the first for all.
        let props_index = if i < body.signature_properties.len() {
            i
        } else {
            0
        };
        let props = body.signature_properties.get(props_index);
        let visible = props
            .and_then(|p| p.tampilan.as_deref())
            .is_some_and(|t| t.eq_ignore_ascii_case("visible"));
        let placement = match props {
            Some(p) if p.tag_koordinat.as_deref().is_some_and(|t| !t.is_empty()) => {
                Some(Placement::Anchor {
                    text: p.tag_koordinat.clone().unwrap_or_default(),
                    size: p.width.zip(p.height),
                })
            }
            Some(SignatureProperties {
                page: Some(page),
                origin_x: Some(x),
                origin_y: Some(y),
                width,
                height,
                ..
            }) => Some(Placement::Rect {
                page: *page,
                rect: [*x, *y, width.unwrap_or(240.0), height.unwrap_or(100.0)],
            }),
            _ => None,
        };
        let image = match props.and_then(|p| p.image_base64.as_deref()) {
            Some(b) if visible && !b.trim().is_empty() => Some(match images.get(&props_index) {
                Some(image) => image.clone(),
                None => {
                    let image = decode_image(props_index, b).await?;
                    images.insert(props_index, image.clone());
                    image
                }
            }),
            _ => None,
        };
        let visibility = match (visible, placement, image) {
            (true, Some(placement), Some(image)) => Visibility::Image { placement, image },
            (true, Some(p), None) => Visibility::Stamp {
                placement: p,
                text: StampText {
                    name: official.name.clone(),
                    title: Some(official.title.clone()),
                    signer_id: Some(official.nip.clone()),
                    time_text: String::new(),
                    qr_url: None,
                    issuer_org: None,
                },
            },
            (true, None, _) => {
                return Err(ApiError::bad_request(
                    "placement_required",
                    "tampilan VISIBLE needs page/originX/originY or tag_koordinat",
                ));
            }
            (false, _, _) => Visibility::Invisible,
        };
        let placement = match &visibility {
            Visibility::Stamp { placement, .. } | Visibility::Image { placement, .. } => {
                Some(placement)
            }
            _ => None,
        };
        st.wf
            .check_signable(&pdf, placement, &format!("file[{i}]"))?;
        let reason = props.and_then(|p| p.reason.clone());
        let location = props.and_then(|p| p.location.clone());
        jobs.push((pdf, visibility, reason, location));
    }
    let signer = st
        .wf
        .unlock_key(&official, Passphrase::new(body.passphrase.clone()), false)
        .await?;
    let mut out = Vec::with_capacity(jobs.len());
    for (pdf, visibility, reason, location) in jobs {
        let (_, signed) = st
            .wf
            .sign_direct(
                app,
                &official,
                signer.clone(),
                pdf,
                visibility,
                reason,
                location,
            )
            .await?;
        out.push(B64.encode(signed));
    }
    Ok(Json(json!({"file": out, "time": st.wf.now_ms()})))
}

/// Decode `signatureProperties[i].imageBase64` (plain base64, or a `data:image/…;base64,` URL)
/// into a PNG or JPEG ready for the appearance.
async fn decode_image(i: usize, b64: &str) -> Result<std::sync::Arc<StampImage>, ApiError> {
    let b64 = match b64.trim().split_once(";base64,") {
        Some((prefix, data)) if prefix.starts_with("data:") => data,
        _ => b64.trim(),
    };
    let bytes = B64.decode(b64).map_err(|_| {
        ApiError::bad_request(
            "invalid_image",
            format!("signatureProperties[{i}].imageBase64 is not base64"),
        )
    })?;
    tokio::task::spawn_blocking(move || StampImage::decode(&bytes))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map(std::sync::Arc::new)
        .map_err(|e| {
            ApiError::bad_request(
                "invalid_image",
                format!("signatureProperties[{i}].imageBase64: {e}"),
            )
        })
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct VerifyBody {
    file: String,
}

#[utoipa::path(
    post, path = "/api/v2/verify/pdf", tag = "bsre", request_body = VerifyBody,
    responses((status = 200, description = "`{conclusion, description, signatureInformations}` in BSrE's shape; each signature's time-stamp is given as `timestamp` and as BSrE's `timestampInfomation`", body = serde_json::Value), (status = 400, description = "Malformed request", body = crate::http::openapi::ErrorBody), (status = 422, description = "The PDF could not be read", body = crate::http::openapi::ErrorBody), (status = 429, description = "Rate limited", body = crate::http::openapi::ErrorBody))
)]
pub async fn verify(
    State(st): State<AppState>,
    Json(body): Json<VerifyBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let pdf = B64
        .decode(body.file.trim())
        .map_err(|_| ApiError::bad_request("invalid_base64", "file is not base64"))?;
    let report = super::public::run_verify(&st, pdf, "file.pdf").await?;
    let infos: Vec<serde_json::Value> = report
        .signatures
        .iter()
        .map(|s| {
            let timestamp = s.timestamp.as_ref().map(|t| {
                let date = t.time.and_then(|d| {
                    d.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                });
                json!({"signerName": t.tsa, "timestampDate": date})
            });
            json!({
                "id": s.field,
                "signerName": s.signer.as_ref().and_then(|x| x.name.clone()),
                "fieldName": s.field,
                "signatureFormat": format!("PAdES ({})", s.subfilter),
                // `timestamp` as the issue names it; `timestampInfomation` (sic) as BSrE spells it.
                "timestamp": timestamp,
                "timestampInfomation": timestamp,
                "modified": s.verdict == crate::trust::Verdict::Modified,
                "certificateTrusted": s.trusted,
                "integrityValid": s.integrity && s.crypto_valid,
                "signatureDate": s.claimed_time,
                "certLevelCode": 0,
                "summary": s.summary_id,
            })
        })
        .collect();
    let (conclusion, description) = if report.signatures.is_empty() {
        (
            "NO_SIGNATURE",
            "Dokumen tidak memiliki tanda tangan elektronik",
        )
    } else if report.all_valid() {
        (
            "VALID",
            "Dokumen valid, Sertifikat yang digunakan terpercaya",
        )
    } else {
        (
            "NOT_VALID",
            "Dokumen tidak valid atau sertifikat tidak terpercaya",
        )
    };
    Ok(Json(
        json!({"conclusion": conclusion, "description": description, "signatureInformations": infos}),
    ))
}

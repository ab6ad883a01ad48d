//! The API description at `/api/openapi.json` and Swagger UI at `/api/docs`.

use crate::common::*;
use crate::db;
use crate::service::{config, spawn};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_and_swagger_ui() {
    let dir = tempdir();
    let app = spawn(config(&db::sqlite_url(dir.path()), dir.path())).await;
    let b = &app.base;
    let r = app
        .client
        .get(format!("{b}/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let spec: Value = r.json().await.expect("the description is JSON");
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "openapi: {}",
        spec["openapi"]
    );
    for path in [
        "/api/v1/documents",
        "/api/v1/documents/{id}/steps/{n}/approve",
        "/api/v1/verify",
        "/api/v2/sign/pdf",
    ] {
        assert!(spec["paths"].get(path).is_some(), "missing path {path}");
    }
    assert!(spec["components"]["securitySchemes"]["app_key"].is_object());
    assert!(spec["components"]["schemas"]["ErrorBody"].is_object());
    for url in [format!("{b}/api/docs"), format!("{b}/api/docs/")] {
        let r = app.client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(ct.starts_with("text/html"), "{url}: content-type {ct}");
        assert!(r.text().await.unwrap().contains("swagger-ui"), "{url}");
    }
}

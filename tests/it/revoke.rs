//! Revoking a completed letter (`POST /api/v1/documents/{id}/revoke`), on SQLite and on
//! PostgreSQL: only the submitting application, only completed letters; the public record and
//! page show it as revoked (and a rejected letter as rejected, not revoked); the upload check
//! says the file matches but the letter was revoked; audit and webhook.

use crate::common::*;
use crate::db;
use crate::service::{TestApp, config, hook, letter_meta, spawn};
use serde_json::{Value, json};

async fn revoke(app: &TestApp, key: &str, id: &str, body: Value) -> reqwest::Response {
    app.client
        .post(format!("{}/api/v1/documents/{id}/revoke", app.base))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn public(app: &TestApp, code: &str) -> (Value, String) {
    let record: Value = app
        .client
        .get(format!("{}/api/v1/public/{code}", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let page = app
        .client
        .get(format!("{}/v/{code}", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    (record, page)
}

async fn submitted(app: &TestApp, callback: Option<&str>) -> (String, String) {
    let r = app
        .submit(read("fixtures/pdf/letter.pdf"), letter_meta(callback))
        .await;
    assert_eq!(r.status(), 201);
    let doc: Value = r.json().await.unwrap();
    (
        doc["id"].as_str().unwrap().to_string(),
        doc["verification_code"].as_str().unwrap().to_string(),
    )
}

async fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if f() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

async fn revocation(db_url: String) {
    let dir = tempdir();
    let app = spawn(config(&db_url, dir.path())).await;
    let hook = hook(0).await;
    let key = app.app_key();
    // A second application with the submit scope, on the same database.
    let other_wf = segel::service::workflow(
        config(&db_url, dir.path()),
        std::sync::Arc::new(segel::clock::SystemClock),
    )
    .await
    .unwrap();
    let actor = segel::workflow::Actor {
        kind: segel::audit::ActorKind::System,
        id: "test".into(),
    };
    let (_, other_key) = other_wf
        .create_app("other", &["submit".into()], &actor)
        .await
        .unwrap();
    let (id, code) = submitted(&app, Some(&hook.url)).await;

    // In review: not revocable yet.
    let r = revoke(&app, &key, &id, json!({"reason": "salah alamat"})).await;
    assert_eq!(r.status(), 409);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "conflict"
    );

    let reviewer = app.login("reviewer").await;
    let signer = app.login("signer").await;
    let r = app
        .approve(&reviewer, &id, 1, &app.passphrase("reviewer"))
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = app
        .approve(&signer, &id, 2, &app.passphrase("signer"))
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let signed = app.download(&id, "signed").await.1;
    let (record, page) = public(&app, &code).await;
    assert_eq!(record["status"], "valid");
    assert!(record.get("revoked_at").is_none(), "{record}");
    assert!(
        page.contains("SAH / VALID") && !page.contains("DICABUT"),
        "{page}"
    );

    // Only the submitting application, with a reason.
    let r = revoke(&app, &other_key, &id, json!({"reason": "bukan milik saya"})).await;
    assert_eq!(r.status(), 404);
    let r = revoke(&app, &key, &id, json!({"reason": "   "})).await;
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "reason_required"
    );
    let r = revoke(&app, &key, &id, json!({})).await;
    assert!(r.status().is_client_error(), "{}", r.status());
    let r = app
        .client
        .post(format!("{}/api/v1/documents/{id}/revoke", app.base))
        .json(&json!({"reason": "tanpa kunci"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (record, _) = public(&app, &code).await;
    assert_eq!(record["status"], "valid", "failed attempts changed nothing");

    let r = revoke(
        &app,
        &key,
        &id,
        json!({"reason": "Surat diganti dengan B-124/DJPP/2026"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["status"], "revoked");
    assert_eq!(
        doc["revocation_reason"],
        "Surat diganti dengan B-124/DJPP/2026"
    );
    let revoked_at = doc["revoked_at"].as_i64().unwrap();
    assert!(
        revoked_at > 1_700_000_000_000,
        "epoch milliseconds: {revoked_at}"
    );

    // Twice is a conflict.
    let r = revoke(&app, &key, &id, json!({"reason": "lagi"})).await;
    assert_eq!(r.status(), 409);

    // The public record and page.
    let (record, page) = public(&app, &code).await;
    assert_eq!(record["status"], "revoked");
    assert_eq!(
        record["revocation_reason"],
        "Surat diganti dengan B-124/DJPP/2026"
    );
    assert_eq!(record["revoked_at"], revoked_at);
    assert!(
        page.contains("DICABUT / REVOKED")
            && page.contains("Surat diganti dengan B-124/DJPP/2026")
            && !page.contains("SAH / VALID")
            && !page.contains("DITOLAK"),
        "{page}"
    );
    // The upload check: the file is the registered one, but the letter was revoked.
    let checked = app.check_upload(&code, signed).await;
    assert!(
        checked
            .contains("sama dengan dokumen yang terdaftar, tetapi dokumen tersebut telah DICABUT")
            && checked.contains("but the letter was revoked"),
        "{checked}"
    );

    // History and audit; the webhook.
    let full: Value = app
        .client
        .get(format!("{}/api/v1/documents/{id}", app.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let history = full["history"].as_array().unwrap();
    let last = history.last().unwrap();
    assert_eq!(last["action"], "document.revoked", "{full}");
    assert_eq!(
        last["details"]["reason"], "Surat diganti dengan B-124/DJPP/2026",
        "{last}"
    );
    assert!(
        wait_for(|| hook
            .received
            .lock()
            .unwrap()
            .iter()
            .any(|(_, b)| b.contains("document.revoked")))
        .await,
        "no document.revoked webhook"
    );
    let received = hook.received.lock().unwrap().clone();
    let (sig, body) = received
        .iter()
        .find(|(_, b)| b.contains("document.revoked"))
        .unwrap();
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        (body["event"].as_str(), body["document"]["status"].as_str()),
        (Some("document.revoked"), Some("revoked"))
    );
    assert_eq!(body["document"]["id"], id.as_str());
    assert!(sig.starts_with("sha256="), "{sig}");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_segel"))
        .args(["audit", "verify", "--database-url", &db_url])
        .current_dir(root())
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // A sealed letter (completed at once) can be revoked too.
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(read("fixtures/pdf/letter.pdf")).file_name("l.pdf"),
        )
        .text(
            "metadata",
            json!({"title": "Izin", "letter_number": "IZ-9"}).to_string(),
        );
    let r = app
        .client
        .post(format!("{}/api/v1/seal", app.base))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let url = r.headers()["x-segel-verification-url"]
        .to_str()
        .unwrap()
        .to_string();
    let sealed_code = url.rsplit('/').next().unwrap().to_string();
    let sealed_id = r.headers()["x-segel-document-id"]
        .to_str()
        .unwrap()
        .to_string();
    let r = revoke(&app, &key, &sealed_id, json!({"reason": "izin dicabut"})).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (record, page) = public(&app, &sealed_code).await;
    assert_eq!(
        (
            record["status"].as_str(),
            record["revocation_reason"].as_str()
        ),
        (Some("revoked"), Some("izin dicabut"))
    );
    assert!(page.contains("DICABUT / REVOKED"), "{page}");

    // A rejected letter shows as rejected, not revoked, and cannot be revoked.
    let (id2, code2) = submitted(&app, None).await;
    let r = app
        .client
        .post(format!(
            "{}/api/v1/documents/{id2}/steps/1/reject",
            app.base
        ))
        .bearer_auth(&reviewer)
        .json(&json!({"reason": "lampiran kurang"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (record, page) = public(&app, &code2).await;
    assert_eq!(record["status"], "rejected");
    assert!(
        page.contains("DITOLAK / REJECTED")
            && !page.contains("DICABUT")
            && !page.contains("REVOKED"),
        "{page}"
    );
    let r = revoke(&app, &key, &id2, json!({"reason": "x"})).await;
    assert_eq!(r.status(), 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_on_sqlite() {
    let dir = tempdir();
    revocation(db::sqlite_url(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_on_postgres() {
    db::on_postgres(revocation).await;
}

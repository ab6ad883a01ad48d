//! The HTTP service end to end, on SQLite and on PostgreSQL: the whole flow, error paths,
//! the approval race, webhooks across a restart, two instances on one database.

use crate::common::*;
use crate::db;
use segel::config::Config;
use segel::service::Application;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::{Arc, Mutex};

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub creds: Value,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

pub fn config(db_url: &str, data: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".into(),
        public_url: "http://segel.test".into(),
        database_url: db_url.into(),
        data_dir: data.to_path_buf(),
        keys_dir: root().join("keys-example"),
        insecure_fast_kdf: true,
        max_body_bytes: 2 << 20,
        ..Config::default()
    }
}

pub async fn spawn(cfg: Config) -> TestApp {
    let data = cfg.data_dir.clone();
    let app = Application::build(cfg).await.expect("service starts");
    let base = format!("http://127.0.0.1:{}", app.port);
    let task = tokio::spawn(async move {
        let _ = app.run().await;
    });
    let creds: Value =
        serde_json::from_slice(&std::fs::read(data.join("demo-credentials.json")).unwrap())
            .unwrap();
    TestApp {
        base,
        client: reqwest::Client::new(),
        creds,
        task: Some(task),
    }
}

impl TestApp {
    /// Stop the instance: abort the task running `Application::run` and wait until its future
    /// (and with it the background tasks it owns) has been dropped.
    pub async fn stop(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    pub fn app_key(&self) -> String {
        self.creds["app_key"].as_str().unwrap().to_string()
    }

    pub async fn login(&self, who: &str) -> String {
        let c = &self.creds[who];
        let r: Value = self
            .client
            .post(format!("{}/api/v1/login", self.base))
            .json(&json!({"username": c["username"], "password": c["password"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["token"].as_str().expect("token").to_string()
    }

    pub fn passphrase(&self, who: &str) -> String {
        self.creds[who]["passphrase"].as_str().unwrap().to_string()
    }

    pub async fn submit(&self, pdf: Vec<u8>, meta: Value) -> reqwest::Response {
        let form = reqwest::multipart::Form::new()
            .part(
                "file",
                reqwest::multipart::Part::bytes(pdf).file_name("letter.pdf"),
            )
            .text("metadata", meta.to_string());
        self.client
            .post(format!("{}/api/v1/documents", self.base))
            .bearer_auth(self.app_key())
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    pub async fn approve(
        &self,
        token: &str,
        id: &str,
        n: i64,
        passphrase: &str,
    ) -> reqwest::Response {
        self.client
            .post(format!(
                "{}/api/v1/documents/{id}/steps/{n}/approve",
                self.base
            ))
            .bearer_auth(token)
            .json(&json!({"passphrase": passphrase}))
            .send()
            .await
            .unwrap()
    }
}

pub fn letter_meta(callback: Option<&str>) -> Value {
    json!({
        "title": "Pemberitahuan Hasil Verifikasi", "letter_number": "B-123/DJPP/2026", "external_ref": "REQ-77",
        "steps": [
            {"official": "siti", "action": "paraf", "placement": {"page": 1, "rect": [60, 60, 60, 30]}},
            {"official": "197001012000031001", "action": "sign", "placement": {"anchor": "${ttd}"}}
        ],
        "callback_url": callback,
    })
}

/// A webhook receiver on a free port: records (signature header, body) of the requests it
/// accepts; the first `fail_first` requests get HTTP 500. `calls` counts every request.
pub struct Hook {
    pub url: String,
    pub received: Arc<Mutex<Vec<(String, String)>>>,
    pub calls: Arc<std::sync::atomic::AtomicUsize>,
}

impl Hook {
    /// The bodies received so far, each checked against its `X-Segel-Signature`: HMAC-SHA256
    /// of the body with `secret`, recomputed here.
    pub fn verified_bodies(&self, secret: &str) -> Vec<Value> {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(sig, body)| {
                let hex = sig
                    .strip_prefix("sha256=")
                    .unwrap_or_else(|| panic!("signature header {sig:?}"));
                let tag: Vec<u8> = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex signature"))
                    .collect();
                ring::hmac::verify(&key, body.as_bytes(), &tag)
                    .unwrap_or_else(|_| panic!("X-Segel-Signature does not match the body: {sig}"));
                serde_json::from_str(body).unwrap()
            })
            .collect()
    }
}

pub async fn hook(fail_first: usize) -> Hook {
    use axum::routing::post;
    let received: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let r = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let r = r.clone();
            let calls = calls.clone();
            async move {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n < fail_first {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                let sig = headers
                    .get("x-segel-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                r.lock().unwrap().push((sig, body));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Hook {
        url,
        received,
        calls: counter,
    }
}

pub async fn wait_for(mut f: impl FnMut() -> bool, secs: u64) -> bool {
    for _ in 0..secs * 10 {
        if f() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

pub async fn audit_verify(db_url: &str) -> std::process::Output {
    let url = db_url.to_string();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_segel"))
            .args(["audit", "verify", "--database-url", &url])
            .current_dir(root())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

async fn whole_flow(db_url: String) {
    let dir = tempdir();
    let app = spawn(config(&db_url, dir.path())).await;
    let hook = hook(0).await;
    let r = app
        .submit(
            read("fixtures/pdf/letter.pdf"),
            letter_meta(Some(&hook.url)),
        )
        .await;
    assert_eq!(r.status(), 201);
    let doc: Value = r.json().await.unwrap();
    let id = doc["id"].as_str().unwrap().to_string();
    let code = doc["verification_code"].as_str().unwrap().to_string();
    assert!(
        code.len() >= 22,
        "verification codes carry at least 128 bits"
    );

    let reviewer = app.login("reviewer").await;
    let signer = app.login("signer").await;
    // The signer's step waits for the paraf; the inbox shows it only to the reviewer.
    assert_eq!(
        app.approve(&signer, &id, 2, &app.passphrase("signer"))
            .await
            .status(),
        409
    );
    let inbox: Value = app
        .client
        .get(format!("{}/api/v1/inbox", app.base))
        .bearer_auth(&reviewer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(inbox["documents"][0]["id"], id.as_str());
    let r = app
        .approve(&reviewer, &id, 1, &app.passphrase("reviewer"))
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = app
        .approve(&signer, &id, 2, &app.passphrase("signer"))
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let done: Value = r.json().await.unwrap();
    assert_eq!(done["status"], "completed");

    // The webhook arrives, signed with the application's secret.
    assert!(
        wait_for(|| !hook.received.lock().unwrap().is_empty(), 20).await,
        "webhook not received"
    );
    let secret = app.creds["webhook_secret"]
        .as_str()
        .expect("webhook_secret");
    let bodies = hook.verified_bodies(secret);
    assert_eq!(bodies[0]["event"], "document.completed");
    assert_eq!(bodies[0]["document"]["id"], id.as_str());

    // Download, check with validators and the public endpoints.
    let signed = app.download(&id, "signed").await.1;
    let path = write(dir.path(), "signed.pdf", &signed);
    crate::sign_interop::assert_validators_accept(&path, 2, false);
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(signed.clone()).file_name("x.pdf"),
    );
    let report: Value = app
        .client
        .post(format!("{}/api/v1/verify", app.base))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["valid_signatures"], 2, "{report}");
    let record: Value = app
        .client
        .get(format!("{}/api/v1/public/{code}", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(record["status"], "valid");
    assert_eq!(
        record["signed_sha256"],
        segel::workflow::sha256_hex(&signed)
    );
    let page = app
        .client
        .get(format!("{}/v/{code}", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Indonesian with English: letter number, title, the SHA-256 of the signed file, both
    // signers with their positions and times, and the status.
    for needle in [
        "B-123/DJPP/2026",
        "Pemberitahuan Hasil Verifikasi",
        &segel::workflow::sha256_hex(&signed),
        "Budi Santoso",
        "Sekretaris Jenderal",
        "Siti",
        "SAH / VALID",
        "/ Letter number",
        "/ Signers",
        " WIB",
    ] {
        assert!(page.contains(needle), "{needle:?} not on the page: {page}");
    }
    let checked = app.check_upload(&code, signed).await;
    assert!(
        checked.contains("sama dengan dokumen yang terdaftar"),
        "{checked}"
    );
    let unknown = app
        .client
        .get(format!("{}/v/AAAAAAAAAAAAAAAAAAAAAA", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    // History and audit.
    let full: Value = app
        .client
        .get(format!("{}/api/v1/documents/{id}", app.base))
        .bearer_auth(app.app_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = full["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["document.submitted", "document.paraf", "document.signed"]
    );
    let o = audit_verify(&db_url).await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_flow_on_sqlite() {
    let dir = tempdir();
    whole_flow(db::sqlite_url(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_flow_on_postgres() {
    db::on_postgres(whole_flow).await;
}

async fn error_paths(db_url: String) {
    let dir = tempdir();
    let app = spawn(config(&db_url, dir.path())).await;
    let c = &app.client;
    let b = &app.base;
    let err = |v: &Value| v["error"]["code"].as_str().unwrap_or("").to_string();
    // Authentication and scopes.
    let r = c
        .post(format!("{b}/api/v1/documents"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(err(&r.json().await.unwrap()), "unauthorized");
    let r = c
        .get(format!("{b}/api/v1/inbox"))
        .bearer_auth("nonsense")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Bad inputs: not a PDF, an encrypted one, bad metadata, unknown official, anchor missing.
    for (pdf, meta, status, code) in [
        (
            read("fixtures/bad/not-a-pdf.pdf"),
            letter_meta(None),
            422,
            "invalid_pdf",
        ),
        (
            read("fixtures/pdf/encrypted.pdf"),
            letter_meta(None),
            422,
            "encrypted_pdf",
        ),
        (
            read("fixtures/pdf/letter.pdf"),
            json!({"title": "x"}),
            400,
            "invalid_metadata",
        ),
        (
            read("fixtures/pdf/letter.pdf"),
            json!({"title": "x", "letter_number": "1", "steps": [{"official": "nobody", "action": "sign"}]}),
            422,
            "unknown_official",
        ),
        (
            read("fixtures/pdf/letter.pdf"),
            json!({"title": "x", "letter_number": "1", "steps": [{"official": "budi", "action": "paraf"}]}),
            422,
            "invalid_steps",
        ),
        (
            read("fixtures/pdf/letter.pdf"),
            json!({"title": "x", "letter_number": "1", "steps": [{"official": "budi", "action": "sign", "placement": {"anchor": "${nope}"}}]}),
            422,
            "invalid_placement",
        ),
    ] {
        let r = app.submit(pdf, meta).await;
        assert_eq!(r.status(), status);
        assert_eq!(err(&r.json().await.unwrap()), code);
    }
    // Too large: 413 JSON.
    let r = app.submit(vec![b'%'; 3 << 20], letter_meta(None)).await;
    assert_eq!(r.status(), 413);
    // The rest of the upload was never read: the connection is not offered for reuse.
    assert_eq!(r.headers()["connection"], "close");
    assert_eq!(err(&r.json().await.unwrap()), "payload_too_large");
    // Unknown route: JSON 404.
    let r = c.get(format!("{b}/api/v1/nothing")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(err(&r.json().await.unwrap()), "not_found");

    let doc: Value = app
        .submit(read("fixtures/pdf/letter.pdf"), letter_meta(None))
        .await
        .json()
        .await
        .unwrap();
    let id = doc["id"].as_str().unwrap();
    let reviewer = app.login("reviewer").await;
    let signer = app.login("signer").await;
    // Only the assigned official: 409 `not_assigned`.
    let r = app.approve(&signer, id, 1, &app.passphrase("signer")).await;
    assert_eq!(r.status(), 409);
    assert_eq!(err(&r.json().await.unwrap()), "not_assigned");
    // Wrong passphrase: 401 with attempts left; the fifth locks signing (423), audited.
    for left in (1..=4).rev() {
        let r = app.approve(&reviewer, id, 1, "salah-salah").await;
        assert_eq!(r.status(), 401);
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            (err(&v).as_str(), v["error"]["attempts_left"].as_i64()),
            ("wrong_passphrase", Some(left))
        );
    }
    let r = app.approve(&reviewer, id, 1, "salah-salah").await;
    assert_eq!(r.status(), 423);
    let r = app
        .approve(&reviewer, id, 1, &app.passphrase("reviewer"))
        .await;
    assert_eq!(r.status(), 423, "locked even with the right passphrase");
    // Reject needs a reason; cancel ends the workflow; a cancelled document cannot be approved.
    let doc2: Value = app
        .submit(read("fixtures/pdf/letter.pdf"), letter_meta(None))
        .await
        .json()
        .await
        .unwrap();
    let id2 = doc2["id"].as_str().unwrap();
    let r = c
        .post(format!("{b}/api/v1/documents/{id2}/cancel"))
        .bearer_auth(app.app_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        app.approve(&signer, id2, 2, &app.passphrase("signer"))
            .await
            .status(),
        409
    );
    let r = c
        .post(format!("{b}/api/v1/documents/{id2}/cancel"))
        .bearer_auth(app.app_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let o = audit_verify(&db_url).await;
    assert_eq!(o.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_paths_on_sqlite() {
    let dir = tempdir();
    error_paths(db::sqlite_url(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_paths_on_postgres() {
    db::on_postgres(error_paths).await;
}

async fn approval_race(db_url: String) {
    let dir = tempdir();
    let app = spawn(config(&db_url, dir.path())).await;
    let meta = json!({"title": "t", "letter_number": "n", "steps": [{"official": "budi", "action": "sign", "placement": {"anchor": "${ttd}"}}]});
    let doc: Value = app
        .submit(read("fixtures/pdf/letter.pdf"), meta)
        .await
        .json()
        .await
        .unwrap();
    let id = doc["id"].as_str().unwrap().to_string();
    let signer = app.login("signer").await;
    let pass = app.passphrase("signer");
    let (a, b) = tokio::join!(
        app.approve(&signer, &id, 1, &pass),
        app.approve(&signer, &id, 1, &pass)
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 409]);
    let signed = app.download(&id, "signed").await.1;
    let report = crate::verify::verify(&signed, &crate::verify::default_store());
    assert_eq!(report.signatures.len(), 1, "exactly one signature applied");
    assert!(report.all_valid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_race_on_sqlite() {
    let dir = tempdir();
    approval_race(db::sqlite_url(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_race_on_postgres() {
    db::on_postgres(approval_race).await;
}

/// Milliseconds since the epoch, as the service's system clock reads it.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl TestApp {
    /// `GET /api/v1/documents/{id}/file?version=…` with the demo application's key.
    pub async fn download(&self, id: &str, version: &str) -> (u16, Vec<u8>) {
        let r = self
            .client
            .get(format!(
                "{}/api/v1/documents/{id}/file?version={version}",
                self.base
            ))
            .bearer_auth(self.app_key())
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    }

    /// The public page's upload check (`POST /v/{code}/check`) of `pdf`, as HTML.
    pub async fn check_upload(&self, code: &str, pdf: Vec<u8>) -> String {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(pdf).file_name("x.pdf"),
        );
        self.client
            .post(format!("{}/v/{code}/check", self.base))
            .multipart(form)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The webhook attempts recorded for a document (`GET /api/v1/documents/{id}`).
    pub async fn webhook_attempts(&self, id: &str) -> Vec<Value> {
        let full: Value = self
            .client
            .get(format!("{}/api/v1/documents/{id}", self.base))
            .bearer_auth(self.app_key())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        full["webhook_attempts"].as_array().unwrap().clone()
    }
}

async fn webhook_restart(db_url: String) {
    let dir = tempdir();
    // The first attempt gets HTTP 500; any later one succeeds.
    let hook = hook(1).await;
    let app = spawn(config(&db_url, dir.path())).await;
    let meta = json!({"title": "t", "letter_number": "n", "steps": [{"official": "budi", "action": "sign", "placement": {"anchor": "${ttd}"}}], "callback_url": hook.url});
    let doc: Value = app
        .submit(read("fixtures/pdf/letter.pdf"), meta)
        .await
        .json()
        .await
        .unwrap();
    let id = doc["id"].as_str().unwrap().to_string();
    let signer = app.login("signer").await;
    assert_eq!(
        app.approve(&signer, &id, 1, &app.passphrase("signer"))
            .await
            .status(),
        200
    );
    let secret = app.creds["webhook_secret"].as_str().unwrap().to_string();
    // Wait until the first attempt has failed and is recorded with its retry time.
    let mut first = Vec::new();
    for _ in 0..200 {
        first = app.webhook_attempts(&id).await;
        if first.iter().any(|a| a["attempt"] == 1) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["status_code"], 500);
    assert_eq!(first[0]["status"], "pending");
    // Stop the instance mid-retries, then let the retry fall due and several worker ticks
    // pass: a webhook worker that outlived its instance would deliver now.
    app.stop().await;
    let due = first[0]["at"].as_i64().unwrap() + segel::workflow::webhooks::backoff_ms(1) + 1_500;
    while now_ms() < due {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        hook.received.lock().unwrap().is_empty(),
        "the stopped instance kept delivering webhooks"
    );
    assert_eq!(hook.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A new instance finds the pending retry in the database and delivers it.
    let restarted_at = now_ms();
    let again = spawn(config(&db_url, dir.path())).await;
    assert!(
        wait_for(|| !hook.received.lock().unwrap().is_empty(), 30).await,
        "delivered after the restart"
    );
    let bodies = hook.verified_bodies(&secret);
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["event"], "document.completed");
    assert_eq!(bodies[0]["document"]["id"], id.as_str());
    // Both attempts are recorded: the failure before the restart, the delivery after it.
    let mut attempts = Vec::new();
    for _ in 0..50 {
        attempts = again.webhook_attempts(&id).await;
        if attempts.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(attempts.len(), 2, "every attempt is recorded: {attempts:?}");
    assert_eq!(
        (
            attempts[0]["attempt"].as_i64(),
            attempts[0]["status_code"].as_i64()
        ),
        (Some(1), Some(500))
    );
    assert!(attempts[0]["at"].as_i64().unwrap() < restarted_at);
    assert_eq!(
        (
            attempts[1]["attempt"].as_i64(),
            attempts[1]["status_code"].as_i64()
        ),
        (Some(2), Some(200))
    );
    assert!(attempts[1]["at"].as_i64().unwrap() >= restarted_at);
    assert_eq!(attempts[1]["status"], "delivered");
    assert_eq!(hook.calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_retries_survive_a_restart_on_sqlite() {
    let dir = tempdir();
    webhook_restart(db::sqlite_url(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_retries_survive_a_restart_on_postgres() {
    db::on_postgres(webhook_restart).await;
}

/// Two instances on one PostgreSQL approve concurrently; the audit chain stays one chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres() {
    db::on_postgres(|url| async move {
        let dir = tempdir();
        let one = spawn(config(&url, dir.path())).await;
        let two = spawn(config(&url, dir.path())).await;
        let meta = json!({"title": "t", "letter_number": "n", "steps": [{"official": "budi", "action": "sign", "placement": {"anchor": "${ttd}"}}]});
        let mut ids = Vec::new();
        for _ in 0..6 {
            let d: Value = one.submit(read("fixtures/pdf/letter.pdf"), meta.clone()).await.json().await.unwrap();
            ids.push(d["id"].as_str().unwrap().to_string());
        }
        let (t1, t2) = (one.login("signer").await, two.login("signer").await);
        let pass = one.passphrase("signer");
        let mut tasks = tokio::task::JoinSet::new();
        for (i, id) in ids.iter().enumerate() {
            let (inst, tok) = if i % 2 == 0 { (&one, &t1) } else { (&two, &t2) };
            let (client, url, tok, pass) = (inst.client.clone(), format!("{}/api/v1/documents/{id}/steps/1/approve", inst.base), tok.clone(), pass.clone());
            tasks.spawn(async move { client.post(url).bearer_auth(tok).json(&json!({"passphrase": pass})).send().await.unwrap().status() });
        }
        while let Some(status) = tasks.join_next().await {
            assert_eq!(status.unwrap(), 200);
        }
        let o = audit_verify(&url).await;
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stdout));
    })
    .await;
}

async fn seal_batch_and_bsre(db_url: String) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let dir = tempdir();
    let app = spawn(config(&db_url, dir.path())).await;
    let (c, b, key) = (&app.client, &app.base, app.app_key());
    // Seal at once: the organisation seal, visible at the anchor, registered for the QR.
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(read("fixtures/pdf/letter.pdf")).file_name("l.pdf"),
        )
        .text(
            "metadata",
            json!({"title": "Izin", "letter_number": "IZ-1", "placement": {"anchor": "${ttd}"}})
                .to_string(),
        );
    let r = c
        .post(format!("{b}/api/v1/seal"))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    if r.status() != 200 {
        panic!("seal: {} {}", r.status(), r.text().await.unwrap());
    }
    let url = r.headers()["x-segel-verification-url"]
        .to_str()
        .unwrap()
        .to_string();
    let sealed = r.bytes().await.unwrap().to_vec();
    assert!(crate::verify::verify(&sealed, &crate::verify::default_store()).all_valid());
    let code = url.rsplit('/').next().unwrap();
    let record: Value = c
        .get(format!("{b}/api/v1/public/{code}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(record["status"], "valid");
    // Batch: a job with progress.
    let mut form = reqwest::multipart::Form::new();
    for i in 0..3 {
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(read("fixtures/pdf/letter.pdf"))
                .file_name(format!("{i}.pdf")),
        );
    }
    let r = c
        .post(format!("{b}/api/v1/seal/batch"))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let job: Value = r.json().await.unwrap();
    let job_id = job["job_id"].as_str().unwrap().to_string();
    let mut status = Value::Null;
    for _ in 0..100 {
        status = c
            .get(format!("{b}/api/v1/seal/batch/{job_id}"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["status"] == "finished" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        (status["done"].as_i64(), status["failed"].as_i64()),
        (Some(3), Some(0)),
        "{status}"
    );
    // BSrE e-sign API v2 shapes.
    let body = json!({"nik": "197001012000031001", "passphrase": app.passphrase("signer"), "file": [b64.encode(read("fixtures/pdf/letter.pdf"))],
        "signatureProperties": [{"tampilan": "VISIBLE", "tag_koordinat": "${ttd}", "reason": "Disetujui", "location": "Jakarta"}]});
    let r = c
        .post(format!("{b}/api/v2/sign/pdf"))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["time"].is_number());
    let signed = b64.decode(v["file"][0].as_str().unwrap()).unwrap();
    let path = write(dir.path(), "bsre.pdf", &signed);
    crate::sign_interop::assert_validators_accept(&path, 1, false);
    let mut wrong = body.clone();
    wrong["passphrase"] = json!("bukan-ini");
    assert_eq!(
        c.post(format!("{b}/api/v2/sign/pdf"))
            .bearer_auth(&key)
            .json(&wrong)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let mut unknown = body.clone();
    unknown["nik"] = json!("1111111111111111");
    let r = c
        .post(format!("{b}/api/v2/sign/pdf"))
        .bearer_auth(&key)
        .json(&unknown)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "user_not_registered");
    let v: Value = c
        .post(format!("{b}/api/v2/verify/pdf"))
        .json(&json!({"file": b64.encode(&signed)}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["conclusion"], "VALID", "{v}");
    assert_eq!(v["signatureInformations"][0]["integrityValid"], true);
    assert_eq!(
        v["signatureInformations"][0]["signerName"],
        "Dr. Budi Santoso, M.Si."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seal_batch_and_bsre_on_sqlite() {
    let dir = tempdir();
    seal_batch_and_bsre(db::sqlite_url(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seal_batch_and_bsre_on_postgres() {
    db::on_postgres(seal_batch_and_bsre).await;
}

/// Operations endpoints, and the organisation seal key kept sealed in the keystore and
/// unlocked once at start from the configured passphrase.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_endpoints_and_a_sealed_seal_key() {
    use segel::keys::keystore::{FileKeyStore, KdfParams, LogEvents, Passphrase};
    let dir = tempdir();
    let store = FileKeyStore::open(dir.path().join("keys")).unwrap();
    let key = pem::parse(read("keys-example/seal.key.pem"))
        .unwrap()
        .into_contents();
    let chain = segel::keys::load_certificates_pem(&read("keys-example/seal.chain.pem")).unwrap();
    store
        .import_pkcs8(
            "seal",
            &key,
            &chain,
            (None, None, None),
            &Passphrase::new("segel rahasia"),
            &KdfParams::insecure_fast(),
            time::OffsetDateTime::now_utc(),
            &LogEvents,
        )
        .unwrap();
    let url = db::sqlite_url(dir.path());
    // Without the passphrase the service refuses to start, saying what is missing.
    let err = Application::build(config(&url, dir.path()))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("SEGEL_SEAL_PASSPHRASE"), "{err}");
    let mut cfg = config(&url, dir.path());
    cfg.seal_passphrase = Some(segel::config::Secret::new("segel rahasia"));
    let app = spawn(cfg).await;
    let (c, b) = (&app.client, &app.base);
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(read("fixtures/pdf/letter.pdf")).file_name("l.pdf"),
    );
    let r = c
        .post(format!("{b}/api/v1/seal"))
        .bearer_auth(app.app_key())
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sealed = r.bytes().await.unwrap();
    let report = crate::verify::verify(&sealed, &crate::verify::default_store());
    assert!(report.all_valid());
    assert!(
        report.signatures[0]
            .signer
            .as_ref()
            .unwrap()
            .subject
            .contains("Segel seal")
    );
    // Metrics: requests and their latencies, signatures, verifications, days to expiry per key.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(read("fixtures/pdf/letter.pdf")).file_name("l.pdf"),
    );
    let r = c
        .post(format!("{b}/api/v1/verify"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let metrics = c
        .get(format!("{b}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "segel_http_requests_total",
        "segel_http_request_seconds",
        "segel_verifications_total",
        "segel_signatures_total",
        "segel_certificate_days_to_expiry{key=\"official:budi\"}",
        "segel_certificate_days_to_expiry{key=\"seal\"}",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from /metrics");
    }
    let ready: Value = c
        .get(format!("{b}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    assert!(
        ready["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["key"] == "official:siti" && k["days_to_expiry"].as_i64() > Some(30))
    );
    // The CRL named in the development certificates' distribution points.
    let crl = c
        .get(format!("{b}/crl/issuing-ca.crl"))
        .send()
        .await
        .unwrap();
    assert_eq!(crl.status(), 200);
    assert!(x509_parser::parse_x509_crl(&crl.bytes().await.unwrap()).is_ok());
    assert_eq!(
        c.get(format!("{b}/crl/other.crl"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

//! The service's remaining paths, on SQLite and on PostgreSQL: rejection and cancellation
//! webhooks, batch approvals, scopes, `segel apps create/revoke`, the audit API, file versions,
//! step rules, lockout expiry, a crash in the middle of an approval, concurrent first starts,
//! rate limiting, cookies, the credentials file, readiness, orphaned seal jobs, and
//! `segel audit verify` finding the database `segel serve` uses.

use crate::common::*;
use crate::db;
use crate::service::{TestApp, audit_verify, config, hook, letter_meta, now_ms, spawn, wait_for};
use segel::config::Config;
use segel::service::Application;
use serde_json::{Value, json};
use sqlx::Connection;
use std::path::Path;

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// Run `statements` on the database directly, one by one.
async fn sql(url: &str, statements: &[&str]) {
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(url).await.unwrap();
    for s in statements {
        sqlx::query(s)
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    c.close().await.ok();
}

async fn scalar(url: &str, query: &str) -> i64 {
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(url).await.unwrap();
    let v: i64 = sqlx::query_scalar(query)
        .fetch_one(&mut c)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    c.close().await.ok();
    v
}

/// `GET /api/v1/documents/{id}` with the demo application's key.
async fn document(app: &TestApp, id: &str) -> Value {
    app.get_json(&format!("/api/v1/documents/{id}"), Some(&app.app_key()))
        .await
        .1
}

fn one_sign_step(official: &str, callback: Option<&str>) -> Value {
    json!({"title": "Surat", "letter_number": "S-1", "callback_url": callback,
        "steps": [{"official": official, "action": "sign", "placement": {"anchor": "${ttd}"}}]})
}

/// `segel apps …` against the database and data directory of `cfg`.
async fn apps_cli(cfg: &Config, dir: &Path, args: &[&str]) -> std::process::Output {
    let toml = format!(
        "database_url = {:?}\ndata_dir = {:?}\nkeys_dir = {:?}\n",
        cfg.database_url,
        cfg.data_dir.display().to_string(),
        cfg.keys_dir.display().to_string()
    );
    let conf = write(dir, "apps.toml", toml.as_bytes());
    let mut all = vec![
        "apps".to_string(),
        "--config".into(),
        conf.display().to_string(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_segel"))
            .args(&all)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

impl TestApp {
    async fn get_json(&self, path: &str, bearer: Option<&str>) -> (u16, Value) {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post_json(&self, path: &str, bearer: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(bearer)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn submitted(&self, meta: Value) -> String {
        let r = self.submit(read("fixtures/pdf/letter.pdf"), meta).await;
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        v["id"].as_str().unwrap().to_string()
    }
}

async fn paths(db_url: String) {
    let dir = tempdir();
    let mut cfg = config(&db_url, dir.path());
    cfg.max_passphrase_attempts = 2;
    cfg.lockout_seconds = 1;
    let app = spawn(cfg.clone()).await;
    let hook = hook(0).await;
    let secret = app.creds["webhook_secret"].as_str().unwrap().to_string();
    let key = app.app_key();
    let letter = read("fixtures/pdf/letter.pdf");

    // Liveness.
    let (status, v) = app.get_json("/healthz", None).await;
    assert_eq!((status, v), (200, json!({"status": "ok"})));

    // The session cookie: HttpOnly and SameSite; not Secure on a plain-HTTP public URL.
    let r = app
        .client
        .post(format!("{}/api/v1/login", app.base))
        .json(&json!({"username": "siti", "password": app.creds["reviewer"]["password"]}))
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("segel_session="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "{cookie}");

    // Step rules: two `sign` steps, or a `sign` step that is not last, are refused.
    for steps in [
        json!([{"official": "siti", "action": "sign"}, {"official": "budi", "action": "sign"}]),
        json!([{"official": "budi", "action": "sign"}, {"official": "siti", "action": "paraf"}]),
    ] {
        let r = app
            .submit(
                letter.clone(),
                json!({"title": "t", "letter_number": "n", "steps": steps}),
            )
            .await;
        assert_eq!(r.status(), 422);
        assert_eq!(code(&r.json().await.unwrap()), "invalid_steps");
    }

    // File versions: original and current are the upload until a step is done; signed only
    // once the document is completed.
    let id = app.submitted(letter_meta(None)).await;
    assert_eq!(app.download(&id, "original").await, (200, letter.clone()));
    assert_eq!(app.download(&id, "current").await, (200, letter.clone()));
    let (status, _) = app.download(&id, "signed").await;
    assert_eq!(status, 409);
    let (status, _) = app.download(&id, "newest").await;
    assert_eq!(status, 400, "an unknown version is refused");
    let reviewer = app.login("reviewer").await;
    let signer = app.login("signer").await;
    let r = app
        .approve(&reviewer, &id, 1, &app.passphrase("reviewer"))
        .await;
    assert_eq!(r.status(), 200);
    let after_paraf: Value = r.json().await.unwrap();
    let (_, current) = app.download(&id, "current").await;
    assert_ne!(current, letter);
    assert!(current.starts_with(&letter), "an incremental update");
    assert_eq!(
        after_paraf["current_sha256"],
        segel::workflow::sha256_hex(&current)
    );
    assert_eq!(app.download(&id, "original").await, (200, letter.clone()));
    assert_eq!(app.download(&id, "signed").await.0, 409);
    assert_eq!(
        app.approve(&signer, &id, 2, &app.passphrase("signer"))
            .await
            .status(),
        200
    );
    let (_, signed) = app.download(&id, "signed").await;
    assert_eq!(app.download(&id, "current").await, (200, signed.clone()));
    assert!(signed.starts_with(&current));

    // Reject needs a reason (422), a malformed body is a 4xx too; with a reason the workflow
    // ends, the reason is kept, and the application's webhook says so, signed.
    let rid = app.submitted(letter_meta(Some(&hook.url))).await;
    let path = format!("/api/v1/documents/{rid}/steps/1/reject");
    let (status, v) = app
        .post_json(&path, &signer, json!({"reason": "bukan tugas saya"}))
        .await;
    assert_eq!((status, code(&v)), (409, "not_assigned"));
    let (status, v) = app
        .post_json(&path, &reviewer, json!({"reason": "  "}))
        .await;
    assert_eq!((status, code(&v)), (422, "reason_required"));
    let (status, v) = app.post_json(&path, &reviewer, json!({})).await;
    assert!((400..500).contains(&status), "{status} {v}");
    assert!(!code(&v).is_empty(), "{v}");
    let (status, v) = app
        .post_json(&path, &reviewer, json!({"reason": "Nomor surat salah"}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "rejected");
    assert_eq!(v["steps"][0]["status"], "rejected");
    assert_eq!(v["steps"][0]["reason"], "Nomor surat salah");
    let (status, _) = app
        .post_json(&path, &reviewer, json!({"reason": "lagi"}))
        .await;
    assert_eq!(status, 409, "a rejected document cannot be rejected again");

    // Cancel: webhook `document.cancelled`.
    let cid = app.submitted(letter_meta(Some(&hook.url))).await;
    let r = app
        .client
        .post(format!("{}/api/v1/documents/{cid}/cancel", app.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        wait_for(|| hook.received.lock().unwrap().len() >= 2, 20).await,
        "rejection and cancellation webhooks"
    );
    let mut events: Vec<(String, String, String)> = hook
        .verified_bodies(&secret)
        .iter()
        .map(|b| {
            (
                b["event"].as_str().unwrap().to_string(),
                b["document"]["id"].as_str().unwrap().to_string(),
                b["document"]["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    events.sort();
    let mut expected = vec![
        (
            "document.cancelled".to_string(),
            cid.clone(),
            "cancelled".to_string(),
        ),
        (
            "document.rejected".to_string(),
            rid.clone(),
            "rejected".to_string(),
        ),
    ];
    expected.sort();
    assert_eq!(events, expected);

    // Batch approval: one passphrase entry, one result per document.
    let b1 = app.submitted(one_sign_step("budi", None)).await;
    let b2 = app.submitted(one_sign_step("budi", None)).await;
    let not_mine = app.submitted(one_sign_step("siti", None)).await;
    let (status, v) = app
        .post_json(
            "/api/v1/approvals/batch",
            &signer,
            json!({"documents": [], "passphrase": app.passphrase("signer")}),
        )
        .await;
    assert_eq!((status, code(&v)), (400, "invalid_batch"));
    let (status, v) = app
        .post_json(
            "/api/v1/approvals/batch",
            &signer,
            json!({"documents": [b1, b2], "passphrase": "bukan-ini"}),
        )
        .await;
    assert_eq!((status, code(&v)), (401, "wrong_passphrase"));
    let (status, v) = app
        .post_json(
            "/api/v1/approvals/batch",
            &signer,
            json!({"documents": [b1, b2, not_mine, "tidak-ada"], "passphrase": app.passphrase("signer")}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let results = v["results"].as_array().unwrap();
    let ok: Vec<(bool, Option<&str>)> = results
        .iter()
        .map(|r| (r["ok"].as_bool().unwrap(), r["status"].as_str()))
        .collect();
    assert_eq!(
        ok,
        [
            (true, Some("completed")),
            (true, Some("completed")),
            (false, None),
            (false, None)
        ],
        "{v}"
    );
    for b in [&b1, &b2] {
        let (status, pdf) = app.download(b, "signed").await;
        assert_eq!(status, 200);
        assert!(crate::verify::verify(&pdf, &crate::verify::default_store()).all_valid());
    }

    // `segel apps create` prints the key and the webhook secret once; scopes are enforced;
    // `segel apps revoke` makes the key useless.
    let out = apps_cli(&cfg, dir.path(), &["create", "arsip", "--scopes", "read"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["app"], "arsip");
    let reader = created["api_key"].as_str().unwrap().to_string();
    assert!(reader.starts_with("sgl_"));
    assert!(created["webhook_secret"].as_str().unwrap().len() >= 32);
    let r = app
        .client
        .post(format!("{}/api/v1/documents", app.base))
        .bearer_auth(&reader)
        .multipart(
            reqwest::multipart::Form::new()
                .part("file", reqwest::multipart::Part::bytes(letter.clone()))
                .text("metadata", letter_meta(None).to_string()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(code(&r.json().await.unwrap()), "missing_scope");
    let r = app
        .client
        .post(format!("{}/api/v1/seal", app.base))
        .bearer_auth(&reader)
        .multipart(
            reqwest::multipart::Form::new()
                .part("file", reqwest::multipart::Part::bytes(letter.clone())),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(code(&r.json().await.unwrap()), "missing_scope");
    // Reading is allowed, but only the application's own documents (others' are 404).
    let (status, v) = app
        .get_json(&format!("/api/v1/documents/{id}"), Some(&reader))
        .await;
    assert_eq!((status, code(&v)), (404, "not_found"));
    let out = apps_cli(&cfg, dir.path(), &["revoke", "arsip"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, v) = app
        .get_json(&format!("/api/v1/documents/{id}"), Some(&reader))
        .await;
    assert_eq!((status, code(&v)), (401, "unauthorized"));
    let out = apps_cli(&cfg, dir.path(), &["revoke", "tidak-ada"]).await;
    assert!(!out.status.success());

    // Unknown verification code on the upload check: the same 404 page as GET /v/{code}.
    let r = app
        .client
        .post(format!("{}/v/AAAAAAAAAAAAAAAAAAAAAA/check", app.base))
        .multipart(
            reqwest::multipart::Form::new()
                .part("file", reqwest::multipart::Part::bytes(signed.clone())),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = r.text().await.unwrap();
    let get_page = app
        .client
        .get(format!("{}/v/AAAAAAAAAAAAAAAAAAAAAA", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(page, get_page);

    // Lockout (2 attempts, 1 s here): audited, and it expires.
    let lid = app.submitted(one_sign_step("budi", None)).await;
    let (status, v) = app
        .post_json(
            &format!("/api/v1/documents/{lid}/steps/1/approve"),
            &signer,
            json!({"passphrase": "salah"}),
        )
        .await;
    assert_eq!(
        (status, v["error"]["attempts_left"].as_i64()),
        (401, Some(1))
    );
    let r = app.approve(&signer, &lid, 1, "salah").await;
    assert_eq!(r.status(), 423);
    assert_eq!(code(&r.json().await.unwrap()), "signing_locked");
    assert_eq!(
        app.approve(&signer, &lid, 1, &app.passphrase("signer"))
            .await
            .status(),
        423,
        "locked even with the right passphrase"
    );

    // The audit API: auditors only, with filters.
    let auditor = app.login("auditor").await;
    let (status, v) = app
        .get_json("/api/v1/audit?action=key.unlock_failed", Some(&auditor))
        .await;
    assert_eq!(status, 200, "{v}");
    let failures: Vec<(&str, bool)> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["action"], "key.unlock_failed");
            (
                e["actor_id"].as_str().unwrap(),
                e["details"]["locked"].as_bool().unwrap(),
            )
        })
        .collect();
    // One wrong passphrase in the batch call (reset by the right one after it), two on the
    // approval: the second of those locked signing.
    assert_eq!(
        failures,
        [("budi", false), ("budi", false), ("budi", true)],
        "{v}"
    );
    let (status, v) = app
        .get_json(
            &format!("/api/v1/audit?document_id={rid}&limit=1"),
            Some(&auditor),
        )
        .await;
    assert_eq!(status, 200);
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["action"], "document.submitted");
    assert_eq!(entries[0]["document_id"], rid.as_str());
    let (status, v) = app
        .get_json(
            &format!("/api/v1/audit?document_id={rid}&action=document.rejected"),
            Some(&auditor),
        )
        .await;
    assert_eq!(status, 200);
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{v}");
    assert_eq!(entries[0]["details"]["reason"], "Nomor surat salah");
    assert_eq!(entries[0]["actor_id"], "siti");
    let (status, v) = app.get_json("/api/v1/audit", Some(&reviewer)).await;
    assert_eq!((status, code(&v)), (403, "forbidden"));
    let (status, v) = app.get_json("/api/v1/audit", Some(&key)).await;
    assert_eq!((status, code(&v)), (401, "unauthorized"));
    let (status, v) = app.get_json("/api/v1/audit", None).await;
    assert_eq!((status, code(&v)), (401, "unauthorized"));

    // The lock ends after the configured second.
    let mut last = 0;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        last = app
            .approve(&signer, &lid, 1, &app.passphrase("signer"))
            .await
            .status()
            .as_u16();
        if last != 423 {
            break;
        }
    }
    assert_eq!(last, 200, "signing unlocked after the lockout");

    let o = audit_verify(&db_url).await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_on_sqlite() {
    let dir = tempdir();
    paths(db::sqlite_url(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_on_postgres() {
    db::on_postgres(paths).await;
}

/// The approval's transaction fails after the signature was made (the audit insert is made
/// to fail by a trigger): the document stays exactly as it was; without the trigger the same
/// approval then succeeds, once.
async fn crash_mid_approval(db_url: String) {
    let dir = tempdir();
    let app = spawn(config(&db_url, dir.path())).await;
    let id = app.submitted(letter_meta(None)).await;
    let reviewer = app.login("reviewer").await;
    let version = format!("SELECT version FROM documents WHERE id = '{id}'");
    let before = document(&app, &id).await;
    let version_before = scalar(&db_url, &version).await;
    let audit_rows = "SELECT COUNT(*) FROM audit_log";
    let rows_before = scalar(&db_url, audit_rows).await;
    let postgres = db_url.starts_with("postgres");
    if postgres {
        sql(&db_url, &[
            "CREATE FUNCTION segel_test_fail() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER segel_test_fail BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION segel_test_fail()",
        ]).await;
    } else {
        sql(&db_url, &[
            "CREATE TRIGGER segel_test_fail BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        ]).await;
    }
    let r = app
        .approve(&reviewer, &id, 1, &app.passphrase("reviewer"))
        .await;
    assert_eq!(r.status(), 500);
    let v: Value = r.json().await.unwrap();
    assert_eq!(code(&v), "internal");
    assert!(
        !v.to_string().contains("injected"),
        "no internals leak: {v}"
    );
    // Nothing changed: status, current version and hash, steps, history, optimistic version.
    assert_eq!(document(&app, &id).await, before);
    assert_eq!(before["steps"][0]["status"], "pending");
    assert_eq!(scalar(&db_url, &version).await, version_before);
    assert_eq!(scalar(&db_url, audit_rows).await, rows_before);
    assert_eq!(
        app.download(&id, "current").await,
        (200, read("fixtures/pdf/letter.pdf"))
    );
    if postgres {
        sql(
            &db_url,
            &[
                "DROP TRIGGER segel_test_fail ON audit_log",
                "DROP FUNCTION segel_test_fail()",
            ],
        )
        .await;
    } else {
        sql(&db_url, &["DROP TRIGGER segel_test_fail"]).await;
    }
    let r = app
        .approve(&reviewer, &id, 1, &app.passphrase("reviewer"))
        .await;
    assert_eq!(r.status(), 200);
    let after = document(&app, &id).await;
    assert_eq!(after["steps"][0]["status"], "done");
    assert_ne!(after["current_sha256"], before["current_sha256"]);
    assert_eq!(scalar(&db_url, &version).await, version_before + 1);
    let parafs = after["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "document.paraf")
        .count();
    assert_eq!(parafs, 1);
    let (_, current) = app.download(&id, "current").await;
    let report = crate::verify::verify(&current, &crate::verify::default_store());
    assert_eq!(report.signatures.len(), 1, "exactly one paraf applied");
    assert!(report.all_valid());
    let r = app
        .approve(&reviewer, &id, 1, &app.passphrase("reviewer"))
        .await;
    assert_eq!(r.status(), 409, "applied once");
    let o = audit_verify(&db_url).await;
    assert_eq!(o.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_approval_on_sqlite() {
    let dir = tempdir();
    crash_mid_approval(db::sqlite_url(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_mid_approval_on_postgres() {
    db::on_postgres(crash_mid_approval).await;
}

/// Two instances starting at once on one fresh database: one set of demo accounts.
async fn concurrent_first_start(db_url: String) {
    // Migrations first, so both instances race on the bootstrap itself.
    let db = segel::storage::Db::connect(&db_url).await.unwrap();
    db.pool.close().await;
    let (d1, d2) = (tempdir(), tempdir());
    let (a, b) = tokio::join!(
        Application::build(config(&db_url, d1.path())),
        Application::build(config(&db_url, d2.path()))
    );
    let (a, b) = (a.expect("first instance starts"), b.expect("second starts"));
    let written: Vec<bool> = [&d1, &d2]
        .iter()
        .map(|d| d.path().join("demo-credentials.json").exists())
        .collect();
    assert_eq!(
        written.iter().filter(|w| **w).count(),
        1,
        "exactly one instance created the demo accounts: {written:?}"
    );
    assert_eq!(scalar(&db_url, "SELECT COUNT(*) FROM apps").await, 1);
    assert_eq!(scalar(&db_url, "SELECT COUNT(*) FROM officials").await, 3);
    drop((a, b));
    let o = audit_verify(&db_url).await;
    assert_eq!(o.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_start_on_sqlite() {
    let dir = tempdir();
    concurrent_first_start(db::sqlite_url(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_start_on_postgres() {
    db::on_postgres(concurrent_first_start).await;
}

/// Public rate limit, the Secure cookie under an https public URL, and the credentials file:
/// mode 0600 even when a wider file was there before, with exactly the documented shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_cookie_and_credentials_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let creds_path = dir.path().join("demo-credentials.json");
    std::fs::write(&creds_path, b"{}").unwrap();
    std::fs::set_permissions(&creds_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cfg = config(&db::sqlite_url(dir.path()), dir.path());
    cfg.public_url = "https://segel.test".into();
    cfg.public_rate_per_minute = 3;
    let app = spawn(cfg).await;

    let mode = std::fs::metadata(&creds_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let creds: Value = serde_json::from_slice(&std::fs::read(&creds_path).unwrap()).unwrap();
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&creds),
        ["app_key", "auditor", "reviewer", "signer", "webhook_secret"]
    );
    for who in ["reviewer", "signer"] {
        assert_eq!(keys(&creds[who]), ["passphrase", "password", "username"]);
    }
    assert_eq!(keys(&creds["auditor"]), ["password", "username"]);
    assert_eq!(
        (&creds["reviewer"]["username"], &creds["signer"]["username"]),
        (&json!("siti"), &json!("budi"))
    );
    for v in [
        &creds["app_key"],
        &creds["webhook_secret"],
        &creds["reviewer"]["passphrase"],
    ] {
        assert!(v.as_str().is_some_and(|s| s.len() >= 16), "{creds}");
    }

    let r = app
        .client
        .post(format!("{}/api/v1/login", app.base))
        .json(&json!({"username": "budi", "password": creds["signer"]["password"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Secure"] {
        assert!(cookie.split("; ").any(|a| a == attr), "{attr} in {cookie}");
    }

    // Three public requests a minute per address: the fourth is refused.
    for _ in 0..3 {
        let r = app
            .client
            .get(format!("{}/api/v1/public/AAAAAAAAAAAAAAAAAAAAAA", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }
    let r = app
        .client
        .get(format!("{}/v/AAAAAAAAAAAAAAAAAAAAAA", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(code(&r.json().await.unwrap()), "rate_limited");
    // Back-office routes are not limited.
    let (status, _) = app.get_json("/healthz", None).await;
    assert_eq!(status, 200);
}

/// Behind a reverse proxy, each client has its own allowance; a client talking to Segel
/// directly cannot escape its allowance by writing X-Forwarded-For itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_per_client_behind_a_trusted_proxy() {
    let public = |app: &TestApp, forwarded: &str| {
        app.client
            .get(format!("{}/api/v1/public/AAAAAAAAAAAAAAAAAAAAAA", app.base))
            .header("x-forwarded-for", forwarded)
            .send()
    };
    // Not a trusted proxy: the header is ignored, every request counts against 127.0.0.1.
    let dir = tempdir();
    let mut cfg = config(&db::sqlite_url(dir.path()), dir.path());
    cfg.public_rate_per_minute = 2;
    let app = spawn(cfg).await;
    for (n, client) in ["203.0.113.7", "203.0.113.8", "203.0.113.9"]
        .iter()
        .enumerate()
    {
        let r = public(&app, client).await.unwrap();
        assert_eq!(r.status(), if n < 2 { 404 } else { 429 }, "request {n}");
    }
    drop(app);

    // 127.0.0.1 is the trusted proxy: clients are told apart by the address it forwards.
    let dir = tempdir();
    let mut cfg = config(&db::sqlite_url(dir.path()), dir.path());
    cfg.public_rate_per_minute = 2;
    cfg.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    let app = spawn(cfg).await;
    for _ in 0..2 {
        assert_eq!(public(&app, "203.0.113.7").await.unwrap().status(), 404);
    }
    let r = public(&app, "203.0.113.7").await.unwrap();
    assert_eq!(r.status(), 429);
    // A spoofed first hop, or junk, does not help the same client…
    for spoofed in ["198.51.100.1, 203.0.113.7", "junk, 203.0.113.7"] {
        let r = public(&app, spoofed).await.unwrap();
        assert_eq!(r.status(), 429, "{spoofed}");
    }
    // …and another client still has its allowance.
    assert_eq!(public(&app, "203.0.113.8").await.unwrap().status(), 404);
}

/// `/readyz` answers 503 naming the database once it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_without_the_database_on_postgres() {
    db::on_postgres(|url| async move {
        let dir = tempdir();
        let app = spawn(config(&url, dir.path())).await;
        let (status, v) = app.get_json("/readyz", None).await;
        assert_eq!((status, &v["status"]), (200, &json!("ready")), "{v}");
        db::drop_database(&url).await;
        let (status, v) = app.get_json("/readyz", None).await;
        assert_eq!(status, 503, "{v}");
        assert_eq!(v["status"], "not_ready");
        assert!(
            v["problems"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p.as_str().unwrap().starts_with("database")),
            "{v}"
        );
    })
    .await;
}

/// Seal batch jobs left `running` by a process that is gone are marked `interrupted` at
/// start (audited). On PostgreSQL, where another instance may be running a job, only jobs
/// without progress for a while are.
async fn orphaned_seal_jobs(db_url: String) {
    let dir = tempdir();
    let app = spawn(config(&db_url, dir.path())).await;
    let app_id: String = {
        sqlx::any::install_default_drivers();
        let mut c = sqlx::AnyConnection::connect(&db_url).await.unwrap();
        let id = sqlx::query_scalar("SELECT id FROM apps WHERE name = 'demo'")
            .fetch_one(&mut c)
            .await
            .unwrap();
        c.close().await.ok();
        id
    };
    let now = now_ms();
    let stale = now - segel::service::STALE_JOB_MS - 60_000;
    sql(&db_url, &[
        &format!("INSERT INTO jobs (id, app_id, total, done, failed, status, results, created_at, updated_at) VALUES ('stale-job', '{app_id}', 3, 1, 0, 'running', '[]', {stale}, {stale})"),
        &format!("INSERT INTO jobs (id, app_id, total, done, failed, status, results, created_at, updated_at) VALUES ('fresh-job', '{app_id}', 3, 1, 0, 'running', '[]', {now}, {now})"),
    ])
    .await;
    app.stop().await;
    let again = spawn(config(&db_url, dir.path())).await;
    let status = |job: &'static str| {
        let again = &again;
        async move {
            let (s, v) = again
                .get_json(&format!("/api/v1/seal/batch/{job}"), Some(&again.app_key()))
                .await;
            assert_eq!(s, 200, "{v}");
            assert_eq!(
                (v["done"].as_i64(), v["total"].as_i64()),
                (Some(1), Some(3))
            );
            v["status"].as_str().unwrap().to_string()
        }
    };
    assert_eq!(status("stale-job").await, "interrupted");
    let fresh_expected = if db_url.starts_with("postgres") {
        "running"
    } else {
        "interrupted"
    };
    assert_eq!(status("fresh-job").await, fresh_expected);
    let auditor = again.login("auditor").await;
    let (_, v) = again
        .get_json(
            "/api/v1/audit?action=seal.batch_interrupted",
            Some(&auditor),
        )
        .await;
    let jobs: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["details"]["job"].as_str().unwrap())
        .collect();
    let expected: &[&str] = if fresh_expected == "running" {
        &["stale-job"]
    } else {
        &["stale-job", "fresh-job"]
    };
    let mut sorted = jobs.clone();
    sorted.sort();
    let mut exp = expected.to_vec();
    exp.sort();
    assert_eq!(sorted, exp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_seal_jobs_on_sqlite() {
    let dir = tempdir();
    orphaned_seal_jobs(db::sqlite_url(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_seal_jobs_on_postgres() {
    db::on_postgres(orphaned_seal_jobs).await;
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// `segel serve` and `segel audit verify`, both without a database option, run from the same
/// directory use the same database: the log the service wrote verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_finds_the_database_of_serve() {
    use std::io::BufRead;
    let dir = tempdir();
    let cwd = dir.path().to_path_buf();
    copy_dir(&root().join("keys-example"), &cwd.join("keys-example"));
    write(
        &cwd,
        "segel.toml",
        b"listen = \"127.0.0.1:0\"\ninsecure_fast_kdf = true\n",
    );
    let run_dir = cwd.clone();
    let started = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_segel"))
            .arg("serve")
            .current_dir(&run_dir)
            .env_remove("SEGEL_DATABASE_URL")
            .env_remove("SEGEL_DATA_DIR")
            .env_remove("SEGEL_KEYS_DIR")
            .env_remove("SEGEL_LISTEN")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut seen = Vec::new();
        let mut listening = false;
        for line in stderr.lines() {
            let line = line.unwrap();
            listening = line.contains("segel listening on");
            seen.push(line);
            if listening {
                break;
            }
        }
        let _ = child.kill();
        child.wait().unwrap();
        (listening, seen)
    })
    .await
    .unwrap();
    assert!(started.0, "segel serve did not start: {:?}", started.1);
    assert!(cwd.join("data/segel.db").exists());
    let run_dir = cwd.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_segel"))
            .args(["audit", "verify"])
            .current_dir(&run_dir)
            .env_remove("SEGEL_DATABASE_URL")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The demo bootstrap's entries: the application and three officials.
    let entries: i64 = stdout
        .split("intact: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(entries >= 4, "{stdout}");
}

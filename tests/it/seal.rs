//! Many letters sealed at once, on SQLite and PostgreSQL: the group commit records every one
//! (document row, audit entry, blob) exactly once, and what it stored is what was answered;
//! the audit log refuses changes.

use crate::common::*;
use crate::db;
use crate::service::{audit_verify, config, spawn};
use serde_json::{Value, json};

const LETTERS: usize = 48;
const CLIENTS: usize = 16;

async fn concurrent_seals(db_url: String) {
    let dir = tempdir();
    let app = spawn(config(&db_url, dir.path())).await;
    let letter = read("fixtures/pdf/letter.pdf");
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let (c, b, key, letter) = (
            app.client.clone(),
            app.base.clone(),
            app.app_key(),
            letter.clone(),
        );
        tasks.spawn(async move {
            let mut sealed = Vec::new();
            for n in (client..LETTERS).step_by(CLIENTS) {
                let form = reqwest::multipart::Form::new()
                    .part(
                        "file",
                        reqwest::multipart::Part::bytes(letter.clone()).file_name("l.pdf"),
                    )
                    .text(
                        "metadata",
                        json!({"title": "Surat Edaran", "letter_number": format!("SE-{n}")})
                            .to_string(),
                    );
                let r = c
                    .post(format!("{b}/api/v1/seal"))
                    .bearer_auth(&key)
                    .multipart(form)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let id = r.headers()["x-segel-document-id"]
                    .to_str()
                    .unwrap()
                    .to_string();
                sealed.push((n, id, r.bytes().await.unwrap().to_vec()));
            }
            sealed
        });
    }
    let mut sealed = Vec::new();
    while let Some(done) = tasks.join_next().await {
        sealed.extend(done.unwrap());
    }
    assert_eq!(sealed.len(), LETTERS);
    let mut ids: Vec<&str> = sealed.iter().map(|(_, id, _)| id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), LETTERS, "every letter has its own document");

    let store = crate::verify::default_store();
    for (n, id, bytes) in &sealed {
        let doc: Value = app
            .client
            .get(format!("{}/api/v1/documents/{id}", app.base))
            .bearer_auth(app.app_key())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc["status"], "completed");
        assert_eq!(doc["letter_number"], format!("SE-{n}"));
        assert_eq!(doc["signed_sha256"], hex_sha256(bytes));
        let stored = app.download(id, "signed").await.1;
        assert_eq!(
            &stored[..],
            &bytes[..],
            "the stored blob is the answered PDF"
        );
        let report = crate::verify::verify(bytes, &store);
        assert!(report.all_valid(), "letter {n}: {report:?}");
    }

    // One audit entry per letter, and the chain is intact.
    let url = segel::storage::Db::connect(&db_url).await.unwrap();
    let entries = segel::audit::list(
        &url,
        &segel::audit::Filter {
            action: Some("document.sealed".into()),
            limit: Some(1000),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut audited: Vec<&str> = entries
        .iter()
        .filter_map(|e| e.document_id.as_deref())
        .collect();
    audited.sort();
    assert_eq!(audited, ids);
    // The service made the log append-only: rows cannot be changed or removed through SQL.
    let mut refused = vec![
        r#"UPDATE audit_log SET details = '{"forged":true}' WHERE seq = 1"#,
        "DELETE FROM audit_log WHERE seq = 1",
    ];
    if db_url.starts_with("postgres") {
        refused.push("TRUNCATE audit_log");
    }
    for statement in refused {
        let e = sqlx::query(statement)
            .execute(&url.pool)
            .await
            .expect_err(statement);
        assert!(e.to_string().contains("append-only"), "{statement}: {e}");
    }
    let o = audit_verify(&db_url).await;
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

fn hex_sha256(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_seals_on_sqlite() {
    let dir = tempdir();
    concurrent_seals(db::sqlite_url(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_seals_on_postgres() {
    db::on_postgres(concurrent_seals).await;
}

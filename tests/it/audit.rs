//! The audit log on SQLite and PostgreSQL: a chain of 250 entries with checkpoints every 100
//! verifies; each kind of tampering (edit, delete, insert, reorder, re-hash, truncate, forged
//! checkpoint) is caught with the right first bad seq, by `audit::verify` and by
//! `segel audit verify`; two instances appending concurrently do not fork the chain.
//!
//! Limits pinned here (see src/audit/mod.rs): removing entries after the last checkpoint, or
//! appending forged ones, while moving the head along, leaves a consistent chain that nothing
//! in the database can contradict. Only a checkpoint covering the seq catches it.

use crate::common;
use crate::db::{on_postgres, sqlite_url};
use segel::audit::{
    self, ActorKind, ChainReport, Filter, HashInput, NewEntry, canonical, entry_hash,
};
use segel::keys::{SoftwareSigner, load_certificates_pem};
use segel::storage::Db;
use serde_json::json;
use sqlx::Row;
use std::process::Command;

const N: i64 = 250;
const EVERY: u64 = 100;
const T0: i64 = 1_760_000_000_000;

fn auditor() -> SoftwareSigner {
    common::signer(
        "keys-example/auditor.key.pem",
        &["keys-example/auditor.chain.pem"],
        false,
    )
}

fn cert_der(rel: &str) -> Vec<u8> {
    load_certificates_pem(&common::read(rel)).unwrap().remove(0)
}

/// Entry `i`: all actor kinds, with and without a document, details that need sorting and
/// escaping.
fn entry(i: i64) -> NewEntry {
    let kinds = [
        ActorKind::App,
        ActorKind::Official,
        ActorKind::Public,
        ActorKind::System,
    ];
    let actions = [
        "document.create",
        "step.sign",
        "document.verify",
        "webhook.deliver",
    ];
    NewEntry {
        actor_kind: kinds[(i % 4) as usize],
        actor_id: format!("actor-{}", i % 7),
        action: actions[(i % 4) as usize].to_string(),
        document_id: (i % 5 != 0).then(|| format!("doc-{}", i % 10)),
        details: json!({ "n": i, "zeta": "last", "alpha": { "nested": [i, "ü\"\n\u{1}"], "b": null }, "ratio": 0.5 }),
    }
}

/// Append entries `seqs` one write transaction each (as the service does), checkpointing every
/// [`EVERY`]; returns the checkpoints made.
async fn append_entries(
    db: &Db,
    signer: &SoftwareSigner,
    seqs: std::ops::RangeInclusive<i64>,
) -> Vec<i64> {
    let mut made = Vec::new();
    for i in seqs {
        let at = T0 + i * 1000;
        let mut tx = db.begin_write().await.unwrap();
        let seq = audit::append(&mut tx, db.backend, at, &entry(i))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(seq, i);
        made.extend(
            audit::maybe_checkpoint(db, signer, EVERY, at)
                .await
                .unwrap(),
        );
    }
    made
}

async fn sql(db: &Db, statement: &str) {
    sqlx::query(statement)
        .execute(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

async fn stored_hash(db: &Db, seq: i64) -> String {
    sqlx::query("SELECT hash FROM audit_log WHERE seq = $1")
        .bind(seq)
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .try_get("hash")
        .unwrap()
}

/// Copy the three audit tables aside, to put them back after each tampering.
async fn snapshot(db: &Db) {
    for (table, copy) in TABLES {
        sql(db, &format!("CREATE TABLE {copy} AS SELECT * FROM {table}")).await;
    }
}

const TABLES: [(&str, &str); 3] = [
    ("audit_log", "saved_log"),
    ("audit_head", "saved_head"),
    ("audit_checkpoints", "saved_checkpoints"),
];

async fn restore(db: &Db) {
    for (table, copy) in TABLES {
        sql(db, &format!("DELETE FROM {table}")).await;
        sql(db, &format!("INSERT INTO {table} SELECT * FROM {copy}")).await;
    }
}

/// `segel audit verify` with `args`: (exit status, stdout, stderr).
async fn cli(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let dir = common::tempdir();
        let out = Command::new(env!("CARGO_BIN_EXE_segel"))
            .args(&args)
            .current_dir(dir.path())
            .env("SEGEL_KEYS_DIR", common::root().join("keys-example"))
            .env_remove("SEGEL_DATABASE_URL")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn verify_args(url: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["audit", "verify", "--database-url", url]
        .map(String::from)
        .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

async fn assert_intact(db: &Db, url: &str, entries: i64, checkpoints: i64) {
    let report = audit::verify(db, None).await.unwrap();
    assert_eq!(
        report,
        ChainReport {
            ok: true,
            entries,
            checkpoints,
            first_bad_seq: None,
            problem: None
        }
    );
    let (code, out, err) = cli(verify_args(url, &[])).await;
    assert_eq!(code, 0, "stdout: {out} stderr: {err}");
    assert!(out.contains(&format!("intact: {entries} entries")), "{out}");
}

/// `verify` and the CLI both report a broken log whose first bad seq is `seq`.
async fn assert_broken(db: &Db, url: &str, case: &str, seq: i64) {
    let report = audit::verify(db, None).await.unwrap();
    assert!(!report.ok, "{case}: not detected: {report:?}");
    assert_eq!(report.first_bad_seq, Some(seq), "{case}: {report:?}");
    let problem = report.problem.unwrap();
    assert!(!problem.is_empty() && !problem.contains('\n'));
    let (code, out, err) = cli(verify_args(url, &[])).await;
    assert_eq!(code, 1, "{case}: stdout: {out} stderr: {err}");
    assert_eq!(out.lines().count(), 1, "{case}: {out}");
    assert!(
        out.contains(&format!("BROKEN at seq {seq}: ")),
        "{case}: {out}"
    );
}

/// Rewrite entry `seq` with other details, its hash recomputed so that it is consistent in
/// itself and links to its predecessor (what a careful forger does).
async fn forge_consistent(db: &Db, seq: i64, details: serde_json::Value) -> String {
    let prev = stored_hash(db, seq - 1).await;
    let e = entry(seq);
    let details = canonical::to_string(&details);
    let hash = entry_hash(
        &prev,
        &HashInput {
            seq,
            at: T0 + seq * 1000,
            actor_kind: e.actor_kind.as_str(),
            actor_id: &e.actor_id,
            action: &e.action,
            document_id: e.document_id.as_deref(),
            details: &details,
        },
    );
    sqlx::query("UPDATE audit_log SET details = $1, prev_hash = $2, hash = $3 WHERE seq = $4")
        .bind(details)
        .bind(prev)
        .bind(hash.clone())
        .bind(seq)
        .execute(&db.pool)
        .await
        .unwrap();
    hash
}

/// Insert a row at `seq` that chains to `prev_hash` with a correct hash.
async fn insert_forged(db: &Db, seq: i64, prev_hash: &str) -> String {
    let details = r#"{"forged":true}"#;
    let hash = entry_hash(
        prev_hash,
        &HashInput {
            seq,
            at: T0,
            actor_kind: "official",
            actor_id: "mallory",
            action: "step.sign",
            document_id: Some("doc-1"),
            details,
        },
    );
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor_kind, actor_id, action, document_id, details, prev_hash, hash) \
         VALUES ($1, $2, 'official', 'mallory', 'step.sign', 'doc-1', $3, $4, $5)",
    )
    .bind(seq)
    .bind(T0)
    .bind(details.to_string())
    .bind(prev_hash.to_string())
    .bind(hash.clone())
    .execute(&db.pool)
    .await
    .unwrap();
    hash
}

async fn set_head(db: &Db, seq: i64, hash: &str) {
    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(hash.to_string())
        .execute(&db.pool)
        .await
        .unwrap();
}

async fn tampering(url: String) {
    let db = Db::connect(&url).await.unwrap();
    let signer = auditor();
    assert_intact(&db, &url, 0, 0).await;
    assert_eq!(append_entries(&db, &signer, 1..=N).await, vec![100, 200]);
    assert_eq!(
        audit::maybe_checkpoint(&db, &signer, EVERY, T0)
            .await
            .unwrap(),
        None
    );
    assert_intact(&db, &url, N, 2).await;
    snapshot(&db).await;

    // Edit one row's details.
    sql(
        &db,
        r#"UPDATE audit_log SET details = '{"forged":true}' WHERE seq = 137"#,
    )
    .await;
    assert_broken(&db, &url, "edit", 137).await;
    restore(&db).await;

    // Replace a row with one consistent in itself: the next row's link names it.
    forge_consistent(&db, 137, json!({ "forged": true })).await;
    assert_broken(&db, &url, "replace", 137).await;
    restore(&db).await;

    // Replace a row and re-hash everything after it, head included: the chain is consistent
    // again; the checkpoint at 200 shows that something after the checkpoint at 100 changed.
    let mut last = forge_consistent(&db, 137, json!({ "forged": true })).await;
    for seq in 138..=N {
        last = forge_consistent(&db, seq, entry(seq).details).await;
    }
    set_head(&db, N, &last).await;
    assert_broken(&db, &url, "re-hash", 101).await;
    restore(&db).await;

    // Delete a middle row.
    sql(&db, "DELETE FROM audit_log WHERE seq = 137").await;
    assert_broken(&db, &url, "delete middle", 137).await;
    restore(&db).await;

    // Delete the last row, head left as is.
    sql(&db, "DELETE FROM audit_log WHERE seq = 250").await;
    assert_broken(&db, &url, "delete last", 250).await;
    restore(&db).await;

    // Delete the last row and roll the head back: undetectable without a checkpoint at 250
    // (the documented limit) ...
    let h249 = stored_hash(&db, 249).await;
    sql(&db, "DELETE FROM audit_log WHERE seq = 250").await;
    set_head(&db, 249, &h249).await;
    let report = audit::verify(&db, None).await.unwrap();
    assert!(
        report.ok && report.entries == 249,
        "truncation after the last checkpoint is expected to go unnoticed: {report:?}"
    );
    restore(&db).await;
    // ... and caught once the head has been checkpointed.
    assert_eq!(
        audit::checkpoint(&db, &signer, T0).await.unwrap(),
        Some(250)
    );
    assert_eq!(audit::checkpoint(&db, &signer, T0).await.unwrap(), None);
    sql(&db, "DELETE FROM audit_log WHERE seq = 250").await;
    set_head(&db, 249, &h249).await;
    assert_broken(&db, &url, "delete checkpointed last", 250).await;
    restore(&db).await;

    // Truncate back to 199 with the head rolled back: the checkpoint at 200 catches it.
    let h199 = stored_hash(&db, 199).await;
    sql(&db, "DELETE FROM audit_log WHERE seq >= 200").await;
    set_head(&db, 199, &h199).await;
    assert_broken(&db, &url, "truncate", 200).await;
    restore(&db).await;

    // A forged row after the end, chained correctly, head left as is.
    let h250 = stored_hash(&db, 250).await;
    let forged = insert_forged(&db, 251, &h250).await;
    assert_broken(&db, &url, "insert after end", 251).await;
    // With the head moved too it is indistinguishable from a real append (the documented limit).
    set_head(&db, 251, &forged).await;
    assert!(audit::verify(&db, None).await.unwrap().ok);
    restore(&db).await;

    // A forged row before the first.
    insert_forged(&db, 0, audit::GENESIS_HASH).await;
    assert_broken(&db, &url, "insert before start", 0).await;
    restore(&db).await;

    // Reorder: swap the seq numbers of two rows.
    sql(&db, "UPDATE audit_log SET seq = -60 WHERE seq = 60").await;
    sql(&db, "UPDATE audit_log SET seq = 60 WHERE seq = 61").await;
    sql(&db, "UPDATE audit_log SET seq = 61 WHERE seq = -60").await;
    assert_broken(&db, &url, "swap", 60).await;
    restore(&db).await;

    // Edit the head.
    set_head(&db, N, &h199).await;
    assert_broken(&db, &url, "head", 250).await;
    restore(&db).await;

    // A checkpoint moved to another hash no longer verifies.
    sqlx::query("UPDATE audit_checkpoints SET head_hash = $1 WHERE seq = 100")
        .bind(stored_hash(&db, 99).await)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_broken(&db, &url, "checkpoint hash", 100).await;
    restore(&db).await;

    // A damaged checkpoint signature.
    let sig: String = sqlx::query("SELECT signature FROM audit_checkpoints WHERE seq = 200")
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .try_get("signature")
        .unwrap();
    let i = sig.len() / 2;
    let flipped = if &sig[i..=i] == "A" { "B" } else { "A" };
    sqlx::query("UPDATE audit_checkpoints SET signature = $1 WHERE seq = 200")
        .bind(format!("{}{flipped}{}", &sig[..i], &sig[i + 1..]))
        .execute(&db.pool)
        .await
        .unwrap();
    assert_broken(&db, &url, "checkpoint signature", 200).await;
    restore(&db).await;

    // Pinning the auditor: its certificate passes, another (the seal's) does not.
    let pinned = audit::verify(&db, Some(cert_der("keys-example/auditor.pem").as_slice()))
        .await
        .unwrap();
    assert!(pinned.ok && pinned.checkpoints == 2, "{pinned:?}");
    let other = audit::verify(&db, Some(cert_der("keys-example/seal.pem").as_slice()))
        .await
        .unwrap();
    assert_eq!(
        (other.ok, other.first_bad_seq),
        (false, Some(100)),
        "{other:?}"
    );
    let pem = |rel: &str| common::root().join(rel).display().to_string();
    let (code, out, _) = cli(verify_args(
        &url,
        &["--auditor-cert", &pem("keys-example/auditor.pem")],
    ))
    .await;
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = cli(verify_args(
        &url,
        &["--auditor-cert", &pem("keys-example/seal.pem")],
    ))
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BROKEN at seq 100: "), "{out}");

    assert_intact(&db, &url, N, 2).await;
    db.pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_detected_sqlite() {
    let dir = common::tempdir();
    tampering(sqlite_url(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_detected_postgres() {
    on_postgres(tampering).await;
}

/// Two "instances" (separate pools) appending from several tasks each.
async fn concurrent_instances(url: String) {
    const TASKS: usize = 4;
    const PER_INSTANCE: i64 = 200;
    let instances = [
        Db::connect(&url).await.unwrap(),
        Db::connect(&url).await.unwrap(),
    ];
    let signer = std::sync::Arc::new(auditor());
    let mut handles = Vec::new();
    for (n, db) in instances.iter().enumerate() {
        for t in 0..TASKS {
            let db = db.clone();
            let signer = signer.clone();
            handles.push(tokio::spawn(async move {
                for k in 0..PER_INSTANCE / TASKS as i64 {
                    let mut tx = db.begin_write().await.unwrap();
                    let e = NewEntry {
                        actor_kind: ActorKind::App,
                        actor_id: format!("instance-{n}"),
                        action: "document.create".into(),
                        document_id: Some(format!("doc-{n}-{t}-{k}")),
                        details: json!({ "task": t, "k": k }),
                    };
                    audit::append(&mut tx, db.backend, T0 + k, &e)
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                    audit::maybe_checkpoint(&db, &*signer, 50, T0 + k)
                        .await
                        .unwrap();
                }
            }));
        }
    }
    for h in handles {
        h.await.unwrap();
    }
    let report = audit::verify(&instances[0], None).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.entries, 2 * PER_INSTANCE);
    assert!(report.checkpoints >= 1, "{report:?}");
    for (n, db) in instances.iter().enumerate() {
        let mine = audit::list(
            db,
            &Filter {
                actor_id: Some(format!("instance-{n}")),
                ..Filter::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(mine.len() as i64, PER_INSTANCE);
    }
    for db in instances {
        db.pool.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_instances_do_not_fork_postgres() {
    on_postgres(concurrent_instances).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_instances_do_not_fork_sqlite() {
    let dir = common::tempdir();
    concurrent_instances(sqlite_url(dir.path())).await;
}

async fn listing(url: String) {
    let db = Db::connect(&url).await.unwrap();
    append_entries(&db, &auditor(), 1..=30).await;

    let all = audit::list(&db, &Filter::default()).await.unwrap();
    assert_eq!(all.len(), 30);
    for (e, i) in all.iter().zip(1..) {
        let want = entry(i);
        assert_eq!(
            (
                e.seq,
                e.at,
                e.actor_kind,
                &e.actor_id,
                &e.action,
                &e.document_id,
                &e.details
            ),
            (
                i,
                T0 + i * 1000,
                want.actor_kind,
                &want.actor_id,
                &want.action,
                &want.document_id,
                &want.details
            )
        );
    }
    assert!(all.windows(2).all(|w| w[1].prev_hash == w[0].hash));
    let json = serde_json::to_value(&all[0]).unwrap();
    assert_eq!(json["actor_kind"], "official");
    assert_eq!(json["details"]["n"], 1);

    let doc3 = audit::list(
        &db,
        &Filter {
            document_id: Some("doc-3".into()),
            ..Filter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        doc3.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![3, 13, 23]
    );

    let page = audit::list(
        &db,
        &Filter {
            document_id: None,
            action: Some("step.sign".into()),
            actor_id: Some("actor-2".into()),
            since_millis: Some(T0 + 2000),
            until_millis: Some(T0 + 30_000),
            after_seq: Some(1),
            limit: Some(1),
        },
    )
    .await
    .unwrap();
    // step.sign: seq ≡ 1 (mod 4); actor-2: seq ≡ 2 (mod 7); first such seq above 1 is 9.
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![9]);

    // `segel audit checkpoint` with the auditor key from keys_dir, then a pinned verify.
    let args = ["audit", "checkpoint", "--database-url", &url].map(String::from);
    let (code, out, err) = cli(args.to_vec()).await;
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("checkpoint signed at entry 30"), "{out}");
    let (code, out, _) = cli(args.to_vec()).await;
    assert_eq!(code, 0);
    assert!(out.contains("already has a checkpoint"), "{out}");
    let auditor_pem = common::root().join("keys-example/auditor.pem");
    let (code, out, _) = cli(verify_args(
        &url,
        &["--auditor-cert", &auditor_pem.display().to_string()],
    ))
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("30 entries, 1 signed checkpoints"), "{out}");
    db.pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_and_cli_checkpoint_sqlite() {
    let dir = common::tempdir();
    listing(sqlite_url(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_and_cli_checkpoint_postgres() {
    on_postgres(listing).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_reports_errors_with_status_2() {
    let dir = common::tempdir();
    let missing = sqlite_url(&dir.path().join("nowhere"));
    let (code, _, err) = cli(verify_args(&missing, &[])).await;
    assert_eq!(code, 2);
    assert!(
        err.starts_with("segel: error: no database at") && err.lines().count() == 1,
        "{err}"
    );
    assert!(!dir.path().join("nowhere").exists());
    // An unusable URL (no server needed: the port does not parse).
    let (code, _, err) = cli(verify_args("postgres://postgres@127.0.0.1:port/none", &[])).await;
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

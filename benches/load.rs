//! Load test of the HTTP service (not a criterion benchmark): `cargo bench --bench load`.
//! Starts Segel in-process on SQLite (or on `SEGEL_BENCH_DATABASE_URL`, e.g. PostgreSQL),
//! then drives `POST /api/v1/seal` with small letters and `POST /api/v1/verify` from
//! concurrent clients over loopback for a fixed time, and prints throughput and latency
//! percentiles. Targets (issue #4): ≥ 1,500 sealed letters/s and ≥ 3,000 verifications/s.

#[path = "../tests/it/common.rs"]
mod common;

use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn drive(
    name: &str,
    clients: usize,
    secs: u64,
    make: impl Fn() -> reqwest::RequestBuilder + Send + Sync + Clone + 'static,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let make = make.clone();
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < deadline {
                let t = Instant::now();
                match make().send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        });
    }
    let mut all = Vec::new();
    let mut errors = 0;
    while let Some(Ok((lat, e))) = tasks.join_next().await {
        all.extend(lat);
        errors += e;
    }
    all.sort();
    println!(
        "{name:<8} {clients:>3} clients {secs:>3} s: {:>7.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} ok, {errors} errors)",
        all.len() as f64 / secs as f64,
        percentile(&all, 0.50).as_secs_f64() * 1000.0,
        percentile(&all, 0.99).as_secs_f64() * 1000.0,
        all.len()
    );
}

fn main() {
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = common::tempdir();
        let db = std::env::var("SEGEL_BENCH_DATABASE_URL")
            .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("segel.db").display()));
        let secs: u64 = std::env::var("SEGEL_BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10);
        let clients: usize = std::env::var("SEGEL_BENCH_CLIENTS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(32);
        let cfg = segel::config::Config {
            listen: "127.0.0.1:0".into(),
            database_url: db.clone(),
            data_dir: dir.path().to_path_buf(),
            keys_dir: common::root().join("keys-example"),
            insecure_fast_kdf: true,
            public_rate_per_minute: 10_000_000,
            ..Default::default()
        };
        let app = segel::service::Application::build(cfg).await.unwrap();
        let base = format!("http://127.0.0.1:{}", app.port);
        tokio::spawn(async move { app.run().await });
        let creds: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("demo-credentials.json")).unwrap(),
        )
        .unwrap();
        let key = creds["app_key"].as_str().unwrap().to_string();
        let letter = common::read("fixtures/pdf/letter.pdf");
        let client = reqwest::Client::new();
        println!(
            "database: {}",
            if db.starts_with("postgres") {
                "PostgreSQL"
            } else {
                "SQLite (WAL, synchronous=FULL)"
            }
        );
        let (c, b, k, l) = (client.clone(), base.clone(), key.clone(), letter.clone());
        drive("seal", clients, secs, move || {
            let form = reqwest::multipart::Form::new()
                .part(
                    "file",
                    reqwest::multipart::Part::bytes(l.clone()).file_name("l.pdf"),
                )
                .text("metadata", r#"{"title":"Surat","letter_number":"1"}"#);
            c.post(format!("{b}/api/v1/seal"))
                .bearer_auth(&k)
                .multipart(form)
        })
        .await;
        let signed = segel::pdf::sign_pdf(
            letter,
            &common::dev_rsa(),
            &Default::default(),
            &common::now(),
        )
        .unwrap()
        .bytes;
        let (c, b) = (client.clone(), base.clone());
        drive("verify", clients, secs, move || {
            let form = reqwest::multipart::Form::new().part(
                "file",
                reqwest::multipart::Part::bytes(signed.clone()).file_name("s.pdf"),
            );
            c.post(format!("{b}/api/v1/verify")).multipart(form)
        })
        .await;
    });
}

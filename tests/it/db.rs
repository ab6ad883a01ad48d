//! A fresh database per test: an SQLite file in the test's temporary directory, or a new
//! PostgreSQL database on the local server (`postgres://postgres@127.0.0.1:5432/test`, trust
//! authentication) that the test drops when done.
#![allow(dead_code)]

use sqlx::AnyConnection;
use sqlx::Connection;
use sqlx::any::install_default_drivers;
use std::future::Future;
use std::path::Path;
use std::time::Duration;

/// The server tests create their databases on; `SEGEL_TEST_POSTGRES` overrides it.
const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn admin_url() -> String {
    std::env::var("SEGEL_TEST_POSTGRES").unwrap_or_else(|_| ADMIN_URL.to_string())
}

/// An SQLite database file inside `dir` (created on first connect).
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("segel.db").display())
}

async fn admin() -> Result<AnyConnection, String> {
    install_default_drivers();
    let url = admin_url();
    match tokio::time::timeout(Duration::from_secs(10), AnyConnection::connect(&url)).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("{url}: {e}")),
        Err(_) => Err(format!("{url}: no answer within 10 s")),
    }
}

/// A new, empty PostgreSQL database `segel_<random hex>`, or `None` (after a loud notice) when
/// the server cannot be reached. Under `CI=true` an unreachable server fails the test instead.
pub async fn postgres_url() -> Option<String> {
    let mut conn = match admin().await {
        Ok(c) => c,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("PostgreSQL unreachable under CI=true: {e}");
            }
            eprintln!("\n*** SKIPPED: PostgreSQL unreachable ({e}) ***\n");
            return None;
        }
    };
    let mut random = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random).unwrap();
    let name = format!(
        "segel_{}",
        random
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    conn.close().await.ok();
    let base = admin_url();
    let server = base.rsplit_once('/').map_or(base.as_str(), |(s, _)| s);
    Some(format!("{server}/{name}"))
}

/// Drop a database made by [`postgres_url`] (open connections are terminated).
pub async fn drop_database(url: &str) {
    let name = url.rsplit('/').next().unwrap_or_default();
    assert!(name.starts_with("segel_"), "refusing to drop {url}");
    let mut conn = admin().await.expect("PostgreSQL");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("DROP DATABASE {name}: {e}"));
    conn.close().await.ok();
}

/// Run `test` on a fresh PostgreSQL database and drop it afterwards, also when the test
/// panics (the panic is then resumed). Does nothing when PostgreSQL is skipped.
pub async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(url) = postgres_url().await else {
        return;
    };
    let outcome = tokio::spawn(test(url.clone())).await;
    drop_database(&url).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

//! Assembling the service from its configuration: database, blob store, keystore, trust
//! store, seal/TSA/auditor keys; first-start demo credentials; the listening application.

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::keys::keystore::{FileKeyStore, KdfParams, LogEvents, Passphrase};
use crate::keys::{Signer, SoftwareSigner, load_certificates_pem};
use crate::pdf::sign::DisplayZone;
use crate::storage::packs::PackBlobStore;
use crate::storage::{Backend, Db};
use crate::trust::TrustStore;
use crate::workflow::{Actor, Workflow, random_token};
use std::path::Path;
use std::sync::Arc;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> StartError + '_ {
    move |e| StartError(format!("{what}: {e}"))
}

fn pem_signer(dir: &Path, stem: &str) -> Result<SoftwareSigner, StartError> {
    let key = std::fs::read(dir.join(format!("{stem}.key.pem")))
        .map_err(err(&format!("{}/{stem}.key.pem", dir.display())))?;
    let chain = load_certificates_pem(
        &std::fs::read(dir.join(format!("{stem}.chain.pem")))
            .map_err(err(&format!("{}/{stem}.chain.pem", dir.display())))?,
    )
    .map_err(err(stem))?;
    SoftwareSigner::from_pem(&key, chain, false).map_err(err(stem))
}

/// The organisation seal in a PKCS#11 token, as `[seal_hsm]` describes it.
fn hsm_signer(h: &crate::config::HsmKey) -> Result<Arc<dyn Signer>, StartError> {
    use crate::keys::pkcs11::{Pin, Pkcs11Config, Pkcs11Signer};
    let source =
        crate::keys::keystore::pin_source(&h.pin_env, &h.pin_file).map_err(err("seal_hsm"))?;
    let key_id = match &h.key_id {
        Some(hex) => Some(
            crate::keys::devpki::hex_decode(hex)
                .ok_or_else(|| StartError(format!("seal_hsm: key_id {hex:?} is not hex")))?,
        ),
        None => None,
    };
    let chain = load_certificates_pem(
        &std::fs::read(&h.chain).map_err(err(&format!("seal_hsm chain {}", h.chain.display())))?,
    )
    .map_err(err("seal_hsm chain"))?;
    let cfg = Pkcs11Config {
        module: h.module.clone(),
        token_label: h.token_label.clone(),
        key_label: h.key_label.clone(),
        key_id,
        pin: Pin::from_source(&source).map_err(err("seal_hsm"))?,
    };
    Ok(Arc::new(
        Pkcs11Signer::open(cfg, chain, false).map_err(err("seal key in the HSM"))?,
    ))
}

/// Build the workflow (everything but HTTP).
pub async fn workflow(mut cfg: Config, clock: Arc<dyn Clock>) -> Result<Arc<Workflow>, StartError> {
    // Used once, below, to unlock the seal key; not kept in the configuration every request
    // can see for the life of the process.
    let seal_passphrase = cfg.seal_passphrase.take();
    let cfg = Arc::new(cfg);
    let db = Db::connect(&cfg.database_url)
        .await
        .map_err(err("database"))?;
    db.guard_audit_log().await.map_err(err("audit log"))?;
    let blobs =
        Arc::new(PackBlobStore::open(cfg.data_dir.join("blobs")).map_err(err("blob store"))?);
    let keys = Arc::new(
        FileKeyStore::open(cfg.data_dir.join("keys"))
            .map_err(err("keystore"))?
            .watch_crls(crate::keys::keystore::lifecycle_crl_paths(
                &cfg.crls,
                &cfg.keys_dir,
            )),
    );
    let mut trust = TrustStore::default();
    for t in cfg.trust_paths() {
        trust.add_certificates(&t).map_err(err("trust anchors"))?;
    }
    for c in &cfg.crls {
        trust.add_crl(c).map_err(err("CRL"))?;
    }
    let dev_crl = cfg.keys_dir.join("crl/issuing-ca.crl");
    if cfg.crls.is_empty() && dev_crl.exists() {
        trust.add_crl(&dev_crl).map_err(err("CRL"))?;
    }
    // The seal key: in the HSM named by `[seal_hsm]`; else an official-style keystore record
    // "seal" unlocked once with the configured passphrase; else the PEM key of the configured
    // PKI directory. Whichever it is must be fit to sign: valid now, not revoked.
    let seal: Arc<dyn Signer> = match (&cfg.seal_hsm, keys.get("seal")) {
        (Some(h), _) => hsm_signer(h)?,
        (None, Ok(_)) => {
            let pass = match (&seal_passphrase, &cfg.seal_passphrase_file) {
                (Some(p), _) => p.expose().to_string(),
                (None, Some(f)) => std::fs::read_to_string(f).map_err(err("seal_passphrase_file"))?.trim_end().to_string(),
                (None, None) => return Err(StartError("the seal key is in the keystore: set SEGEL_SEAL_PASSPHRASE or seal_passphrase_file".into())),
            };
            keys.unlock_signer(
                "seal",
                &Passphrase::new(pass),
                false,
                clock.now(),
                &trust.crls,
                &LogEvents,
            )
            .map_err(err("seal key"))?
        }
        (None, Err(_)) => Arc::new(pem_signer(&cfg.keys_dir, "seal")?),
    };
    keys.check_signing_chain(seal.certificate_chain(), clock.now(), &trust.crls)
        .map_err(err("seal key"))?;
    let tsa_signer = Arc::new(pem_signer(&cfg.keys_dir, "tsa")?);
    let tsa = Arc::new(
        crate::cms::BuiltinTsa::new(tsa_signer, crate::cms::tsp::DEV_TSA_POLICY, clock.clone())
            .map_err(err("TSA"))?,
    );
    let auditor: Arc<dyn Signer> = Arc::new(pem_signer(&cfg.keys_dir, "auditor")?);
    let zone =
        DisplayZone::parse(&cfg.time_zone).map_err(|e| StartError(format!("time_zone: {e}")))?;
    let seals = crate::workflow::batcher::SealBatcher::start(
        db.clone(),
        auditor.clone(),
        cfg.audit_checkpoint_every,
    );
    Ok(Arc::new(Workflow {
        cfg,
        db,
        blobs,
        keys,
        trust: Arc::new(trust),
        seal,
        tsa,
        auditor,
        clock,
        zone,
        seals,
    }))
}

/// Key of the PostgreSQL advisory lock that serialises the first-start bootstrap of instances
/// sharing one database (SQLite serialises it with `BEGIN IMMEDIATE`).
const BOOTSTRAP_LOCK: i64 = 0x5345_4745_4c00_0001;

/// On a database without applications: create the demo application, a reviewer, a signer and
/// an auditor, with the development officials' keys sealed under fresh passphrases. Returns
/// the credentials (written to data/demo-credentials.json, mode 0600).
///
/// The check for an empty database and the creation run in one write transaction that holds
/// the bootstrap lock, so of several instances starting at once on one fresh database exactly
/// one creates the demo accounts; the others wait for it and find them.
pub async fn bootstrap_demo(wf: &Workflow) -> Result<Option<serde_json::Value>, StartError> {
    let mut tx = wf.db.begin_write().await.map_err(err("database"))?;
    if wf.db.backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(BOOTSTRAP_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(err("bootstrap lock"))?;
    }
    let apps: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM apps")
        .fetch_one(&mut *tx)
        .await
        .map_err(err("database"))?;
    if apps > 0 {
        tx.rollback().await.map_err(err("database"))?;
        return Ok(None);
    }
    let system = Actor {
        kind: crate::audit::ActorKind::System,
        id: "bootstrap".into(),
    };
    let (app, app_key) = wf
        .create_app_in(
            &mut tx,
            "demo",
            &["submit".into(), "seal".into(), "read".into()],
            &system,
        )
        .await
        .map_err(err("demo application"))?;
    let kdf = if wf.cfg.insecure_fast_kdf {
        KdfParams::insecure_fast()
    } else {
        KdfParams::recommended()
    };
    let mut creds = serde_json::json!({ "app_key": app_key, "webhook_secret": app.webhook_secret });
    let people = [
        ("reviewer", "siti", vec!["reviewer".to_string()]),
        ("signer", "budi", vec!["signer".to_string()]),
    ];
    for (role, id, roles) in people {
        let key_pem = std::fs::read(wf.cfg.keys_dir.join(format!("officials/{id}.key.pem")))
            .map_err(err("demo key"))?;
        let chain = load_certificates_pem(
            &std::fs::read(wf.cfg.keys_dir.join(format!("officials/{id}.chain.pem")))
                .map_err(err("demo chain"))?,
        )
        .map_err(err("demo chain"))?;
        let pkcs8 = pem::parse(&key_pem)
            .map_err(err("demo key"))?
            .into_contents();
        let (cn, title, nip, _) = crate::keys::certificate_identity(&chain[0]);
        let password = random_token(12);
        let passphrase = random_token(12);
        let keys = wf.keys.clone();
        let (pk, ch, pp, kd, now) = (
            pkcs8.clone(),
            chain.clone(),
            Passphrase::new(passphrase.clone()),
            kdf.clone(),
            wf.clock.now(),
        );
        let ident = (cn.clone(), title.clone(), nip.clone());
        let key_id = id.to_string();
        tokio::task::spawn_blocking(move || {
            keys.import_pkcs8(&key_id, &pk, &ch, ident, &pp, &kd, now, &LogEvents)
        })
        .await
        .map_err(err("demo key"))?
        .map_err(err("demo key"))?;
        let hash = wf.password_hash(&password).map_err(err("demo official"))?;
        wf.add_official_in(
            &mut tx,
            id,
            &hash,
            &cn.unwrap_or_default(),
            &title.unwrap_or_default(),
            &nip.unwrap_or_default(),
            Some(&format!("{id}@example.go.id")),
            &roles,
            Some(id),
            &system,
        )
        .await
        .map_err(err("demo official"))?;
        creds[role] =
            serde_json::json!({"username": id, "password": password, "passphrase": passphrase});
    }
    let auditor_password = random_token(12);
    let hash = wf
        .password_hash(&auditor_password)
        .map_err(err("demo auditor"))?;
    wf.add_official_in(
        &mut tx,
        "auditor",
        &hash,
        "Auditor Internal",
        "Inspektorat",
        "000000000000000000",
        None,
        &["auditor".into()],
        None,
        &system,
    )
    .await
    .map_err(err("demo auditor"))?;
    tx.commit().await.map_err(err("database"))?;
    wf.after_commit().await;
    creds["auditor"] = serde_json::json!({"username": "auditor", "password": auditor_password});
    write_private(
        &wf.cfg.data_dir.join("demo-credentials.json"),
        serde_json::to_string_pretty(&creds)
            .unwrap_or_default()
            .as_bytes(),
    )
    .map_err(err("demo credentials"))?;
    Ok(Some(creds))
}

/// Write `data` to `path` readable by the owner only (0600), also when the file existed
/// before with wider permissions.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    // `mode` applies only to a file created now: narrow an existing one before writing.
    #[cfg(unix)]
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    f.write_all(data)?;
    f.sync_all()
}

/// Seal batch jobs whose task is gone are marked `interrupted`, audited. On SQLite (one
/// service per database file) every job still `running` at start is an orphan of an earlier
/// process; on PostgreSQL, where other instances may be running their jobs, only jobs without
/// progress for [`STALE_JOB_MS`] are. Returns the ids marked.
pub async fn interrupt_orphaned_jobs(
    wf: &Workflow,
    at_start: bool,
) -> Result<Vec<String>, crate::workflow::WorkflowError> {
    use sqlx::Row;
    let now = wf.now_ms();
    let cutoff = if at_start && wf.db.backend == Backend::Sqlite {
        i64::MAX
    } else {
        now - STALE_JOB_MS
    };
    let rows =
        sqlx::query("SELECT id, updated_at FROM jobs WHERE status = 'running' AND updated_at < $1")
            .bind(cutoff)
            .fetch_all(&wf.db.pool)
            .await?;
    if rows.is_empty() {
        return Ok(vec![]);
    }
    let system = Actor {
        kind: crate::audit::ActorKind::System,
        id: "jobs".into(),
    };
    let mut marked = Vec::new();
    let mut tx = wf.db.begin_write().await?;
    for row in rows {
        let id: String = row.try_get("id")?;
        let updated: i64 = row.try_get("updated_at")?;
        // Only if nobody recorded progress since it was read.
        let n = sqlx::query("UPDATE jobs SET status = 'interrupted', updated_at = $1 WHERE id = $2 AND status = 'running' AND updated_at = $3")
            .bind(now)
            .bind(&id)
            .bind(updated)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 1 {
            wf.audit(
                &mut tx,
                &system,
                "seal.batch_interrupted",
                None,
                serde_json::json!({"job": id}),
            )
            .await?;
            marked.push(id);
        }
    }
    tx.commit().await?;
    wf.after_commit().await;
    Ok(marked)
}

/// A running job records progress after every file; one silent this long has lost its task.
pub const STALE_JOB_MS: i64 = 5 * 60 * 1000;

/// Background tasks of a running service: aborted when dropped, so stopping (or dropping) the
/// future of [`Application::run`] stops them too.
struct BackgroundTasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

fn spawn_job_sweeper(wf: Arc<Workflow>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            if let Err(e) = interrupt_orphaned_jobs(&wf, false).await {
                tracing::warn!(error = %e, "marking interrupted seal jobs");
            }
        }
    })
}

/// A bound, ready-to-run service.
pub struct Application {
    pub port: u16,
    pub state: crate::http::AppState,
    listener: tokio::net::TcpListener,
}

impl Application {
    /// Build everything and bind `cfg.listen` (port 0 picks a free port).
    pub async fn build(cfg: Config) -> Result<Self, StartError> {
        Self::build_with_clock(cfg, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(cfg: Config, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        let listen = cfg.listen.clone();
        let per_minute = cfg.public_rate_per_minute;
        let wf = workflow(cfg, clock).await?;
        for job in interrupt_orphaned_jobs(&wf, true)
            .await
            .map_err(err("seal jobs"))?
        {
            tracing::warn!(job, "seal batch job interrupted by a restart");
        }
        if let Some(creds) = bootstrap_demo(&wf).await? {
            println!(
                "First start: demo credentials (also in {}/demo-credentials.json, shown only now):",
                wf.cfg.data_dir.display()
            );
            println!(
                "{}",
                serde_json::to_string_pretty(&creds).unwrap_or_default()
            );
        }
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(err(&listen))?;
        let port = listener.local_addr().map_err(err("listener"))?.port();
        let limiter = Arc::new(crate::http::RateLimiter::new(
            per_minute,
            wf.cfg.trusted_proxies.clone(),
        ));
        let state = crate::http::AppState {
            wf,
            metrics: crate::http::prometheus(),
            limiter,
        };
        Ok(Application {
            port,
            state,
            listener,
        })
    }

    /// Serve until the future is dropped. Webhooks are delivered and orphaned seal jobs marked
    /// by background tasks that this future owns: they end with it.
    pub async fn run(self) -> Result<(), StartError> {
        let wf = self.state.wf.clone();
        let _background = BackgroundTasks(vec![
            crate::http::spawn_webhook_worker(wf.clone()),
            spawn_job_sweeper(wf),
        ]);
        let app = crate::http::router(self.state)
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(self.listener, app).await.map_err(err("server"))
    }
}

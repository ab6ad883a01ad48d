//! Back-office applications (API keys with scopes) and officials (password login, signing
//! passphrase with lockout).

use super::{Actor, Workflow, WorkflowError, random_token, sha256_hex};
use crate::audit::ActorKind;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;
use sqlx::Row;

/// Scopes an application key may hold.
pub const SCOPES: [&str; 3] = ["submit", "seal", "read"];

#[derive(Debug, Clone, Serialize)]
pub struct App {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    #[serde(skip)]
    pub webhook_secret: String,
}

impl App {
    pub fn has(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
    pub fn actor(&self) -> Actor {
        Actor {
            kind: ActorKind::App,
            id: self.name.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Official {
    pub id: String,
    pub username: String,
    pub name: String,
    pub title: String,
    pub nip: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
    pub key_id: Option<String>,
    #[serde(skip)]
    pub failed_attempts: i64,
    #[serde(skip)]
    pub locked_until: i64,
}

impl Official {
    pub fn actor(&self) -> Actor {
        Actor {
            kind: ActorKind::Official,
            id: self.username.clone(),
        }
    }
    pub fn has_role(&self, r: &str) -> bool {
        self.roles.iter().any(|x| x == r)
    }
}

/// Argon2id password hash as `argon2id$m$t$p$salt$hash` (base64).
pub fn hash_password(password: &str, fast: bool) -> Result<String, WorkflowError> {
    let (m, t) = if fast { (64, 1) } else { (19 * 1024, 2) };
    let mut salt = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt);
    let out = argon(password, &salt, m, t)?;
    Ok(format!(
        "argon2id${m}${t}$1${}${}",
        B64.encode(salt),
        B64.encode(out)
    ))
}

fn argon(password: &str, salt: &[u8], m: u32, t: u32) -> Result<[u8; 32], WorkflowError> {
    let params = argon2::Params::new(m, t, 1, Some(32))
        .map_err(|e| WorkflowError::Internal(e.to_string()))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    a.hash_password_into(password.as_bytes(), salt, &mut out)
        .map_err(|e| WorkflowError::Internal(e.to_string()))?;
    Ok(out)
}

pub fn verify_password(password: &str, stored: &str) -> bool {
    let parts: Vec<&str> = stored.split('$').collect();
    let [_, m, t, _, salt, hash] = parts.as_slice() else {
        return false;
    };
    let (Ok(m), Ok(t), Ok(salt), Ok(hash)) =
        (m.parse(), t.parse(), B64.decode(salt), B64.decode(hash))
    else {
        return false;
    };
    argon(password, &salt, m, t).is_ok_and(|h| constant_time_eq(&h, &hash))
}

/// Equality without early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn app_from_row(r: &sqlx::any::AnyRow) -> Result<App, sqlx::Error> {
    Ok(App {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        scopes: r
            .try_get::<String, _>("scopes")?
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        webhook_secret: r.try_get("webhook_secret")?,
    })
}

fn official_from_row(r: &sqlx::any::AnyRow) -> Result<Official, sqlx::Error> {
    Ok(Official {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        name: r.try_get("name")?,
        title: r.try_get("title")?,
        nip: r.try_get("nip")?,
        email: r.try_get("email")?,
        roles: r
            .try_get::<String, _>("roles")?
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        key_id: r.try_get("key_id")?,
        failed_attempts: r.try_get("failed_attempts")?,
        locked_until: r.try_get("locked_until")?,
    })
}

const OFFICIAL_COLUMNS: &str =
    "id, username, name, title, nip, email, roles, key_id, failed_attempts, locked_until";

impl Workflow {
    /// Create an application; returns it and its API key (shown once; only a hash is kept).
    /// The application's webhook secret is in the returned `App`.
    pub async fn create_app(
        &self,
        name: &str,
        scopes: &[String],
        actor: &Actor,
    ) -> Result<(App, String), WorkflowError> {
        let mut tx = self.db.begin_write().await?;
        let created = self.create_app_in(&mut tx, name, scopes, actor).await?;
        tx.commit().await?;
        self.after_commit().await;
        Ok(created)
    }

    /// [`Workflow::create_app`] inside the caller's transaction.
    pub async fn create_app_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        name: &str,
        scopes: &[String],
        actor: &Actor,
    ) -> Result<(App, String), WorkflowError> {
        for s in scopes {
            if !SCOPES.contains(&s.as_str()) {
                return Err(WorkflowError::invalid(
                    "invalid_scope",
                    format!("unknown scope {s:?} (submit, seal, read)"),
                ));
            }
        }
        // Hex, so the `_` separating prefix and secret never occurs inside the prefix.
        let prefix = sha256_hex(random_token(16).as_bytes())[..12].to_string();
        let secret = random_token(24);
        let key = format!("sgl_{prefix}_{secret}");
        let app = App {
            id: random_token(12),
            name: name.into(),
            scopes: scopes.to_vec(),
            webhook_secret: random_token(24),
        };
        let exists: Option<String> = sqlx::query_scalar("SELECT id FROM apps WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut **tx)
            .await?;
        if exists.is_some() {
            return Err(WorkflowError::Conflict(format!(
                "an application named {name:?} exists"
            )));
        }
        sqlx::query("INSERT INTO apps (id, name, key_prefix, key_hash, scopes, webhook_secret, revoked, created_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $7)")
            .bind(&app.id).bind(name).bind(&prefix).bind(sha256_hex(secret.as_bytes())).bind(scopes.join(",")).bind(&app.webhook_secret).bind(self.now_ms())
            .execute(&mut **tx).await?;
        self.audit(
            tx,
            actor,
            "app.created",
            None,
            serde_json::json!({"app": name, "scopes": scopes}),
        )
        .await?;
        Ok((app, key))
    }

    pub async fn revoke_app(&self, name: &str, actor: &Actor) -> Result<(), WorkflowError> {
        let mut tx = self.db.begin_write().await?;
        let n = sqlx::query("UPDATE apps SET revoked = 1 WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(WorkflowError::NotFound(format!(
                "no application named {name:?}"
            )));
        }
        self.audit(
            &mut tx,
            actor,
            "app.revoked",
            None,
            serde_json::json!({"app": name}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The application owning an API key `sgl_<prefix>_<secret>`.
    pub async fn authenticate_app(&self, key: &str) -> Result<App, WorkflowError> {
        let bad = || WorkflowError::Unauthorized("invalid or revoked API key".into());
        let rest = key.strip_prefix("sgl_").ok_or_else(bad)?;
        let (prefix, secret) = rest.split_once('_').ok_or_else(bad)?;
        let row = sqlx::query("SELECT id, name, scopes, webhook_secret, key_hash, revoked FROM apps WHERE key_prefix = $1")
            .bind(prefix).fetch_optional(&self.db.pool).await?.ok_or_else(bad)?;
        let hash: String = row.try_get("key_hash")?;
        let revoked: i64 = row.try_get("revoked")?;
        if revoked != 0
            || !constant_time_eq(hash.as_bytes(), sha256_hex(secret.as_bytes()).as_bytes())
        {
            return Err(bad());
        }
        Ok(app_from_row(&row)?)
    }

    pub async fn app_by_id(&self, id: &str) -> Result<App, WorkflowError> {
        let row = sqlx::query("SELECT id, name, scopes, webhook_secret FROM apps WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or_else(|| WorkflowError::NotFound("application not found".into()))?;
        Ok(app_from_row(&row)?)
    }

    /// Enrol an official linked to a key in the keystore.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_official(
        &self,
        username: &str,
        password: &str,
        name: &str,
        title: &str,
        nip: &str,
        email: Option<&str>,
        roles: &[String],
        key_id: Option<&str>,
        actor: &Actor,
    ) -> Result<Official, WorkflowError> {
        // Argon2 before the write transaction, so no write lock waits on it.
        let hash = self.password_hash(password)?;
        let mut tx = self.db.begin_write().await?;
        self.add_official_in(
            &mut tx, username, &hash, name, title, nip, email, roles, key_id, actor,
        )
        .await?;
        tx.commit().await?;
        self.official_by("username", username).await
    }

    /// Check a new official's password and hash it (Argon2id).
    pub fn password_hash(&self, password: &str) -> Result<String, WorkflowError> {
        if password.chars().count() < 8 {
            return Err(WorkflowError::invalid(
                "weak_password",
                "passwords need at least 8 characters",
            ));
        }
        hash_password(password, self.cfg.insecure_fast_kdf)
    }

    /// [`Workflow::add_official`] inside the caller's transaction, with the password already
    /// hashed by [`Workflow::password_hash`]; returns the new id.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_official_in(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        username: &str,
        password_hash: &str,
        name: &str,
        title: &str,
        nip: &str,
        email: Option<&str>,
        roles: &[String],
        key_id: Option<&str>,
        actor: &Actor,
    ) -> Result<String, WorkflowError> {
        let id = random_token(12);
        let clash: Option<String> =
            sqlx::query_scalar("SELECT id FROM officials WHERE username = $1 OR nip = $2")
                .bind(username)
                .bind(nip)
                .fetch_optional(&mut **tx)
                .await?;
        if clash.is_some() {
            return Err(WorkflowError::Conflict(format!(
                "an official with username {username:?} or NIP {nip:?} exists"
            )));
        }
        sqlx::query("INSERT INTO officials (id, username, password_hash, name, title, nip, email, roles, key_id, failed_attempts, locked_until, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 0, $10)")
            .bind(&id).bind(username).bind(password_hash).bind(name).bind(title).bind(nip).bind(email.map(str::to_string)).bind(roles.join(",")).bind(key_id.map(str::to_string)).bind(self.now_ms())
            .execute(&mut **tx).await?;
        self.audit(
            tx,
            actor,
            "official.enrolled",
            None,
            serde_json::json!({"username": username, "nip": nip, "roles": roles, "key": key_id}),
        )
        .await?;
        Ok(id)
    }

    pub async fn official_by(&self, column: &str, value: &str) -> Result<Official, WorkflowError> {
        let column = match column {
            "username" | "id" | "nip" | "email" => column,
            _ => return Err(WorkflowError::Internal("bad column".into())),
        };
        let row = sqlx::query(&format!(
            "SELECT {OFFICIAL_COLUMNS} FROM officials WHERE {column} = $1"
        ))
        .bind(value)
        .fetch_optional(&self.db.pool)
        .await?
        .ok_or_else(|| WorkflowError::NotFound(format!("no official with {column} {value:?}")))?;
        Ok(official_from_row(&row)?)
    }

    /// Password login; returns a session token (12 hours).
    pub async fn login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<(Official, String), WorkflowError> {
        let bad = || WorkflowError::Unauthorized("wrong username or password".into());
        let row = sqlx::query("SELECT password_hash FROM officials WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.db.pool)
            .await?;
        let Some(row) = row else {
            // Spend the same effort for unknown users.
            let _ = verify_password(
                password,
                "argon2id$64$1$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            );
            return Err(bad());
        };
        let stored: String = row.try_get("password_hash")?;
        if !verify_password(password, &stored) {
            return Err(bad());
        }
        let official = self.official_by("username", username).await?;
        let token = random_token(32);
        let mut tx = self.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO sessions (token_hash, official_id, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(sha256_hex(token.as_bytes()))
        .bind(&official.id)
        .bind(self.now_ms() + 12 * 3600 * 1000)
        .execute(&mut *tx)
        .await?;
        self.audit(
            &mut tx,
            &official.actor(),
            "official.login",
            None,
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok((official, token))
    }

    pub async fn session(&self, token: &str) -> Result<Official, WorkflowError> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT official_id FROM sessions WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(sha256_hex(token.as_bytes()))
        .bind(self.now_ms())
        .fetch_optional(&self.db.pool)
        .await?;
        let id = id.ok_or_else(|| {
            WorkflowError::Unauthorized("not logged in or session expired".into())
        })?;
        self.official_by("id", &id).await
    }

    /// Unlock an official's signing key with the passphrase, counting failures and locking
    /// signing after too many (audited). Runs the Argon2 derivation off the async threads.
    pub async fn unlock_key(
        &self,
        official: &Official,
        passphrase: crate::keys::keystore::Passphrase,
        pss: bool,
    ) -> Result<std::sync::Arc<dyn crate::keys::Signer>, WorkflowError> {
        let now = self.now_ms();
        if official.locked_until > now {
            let until = time::OffsetDateTime::from_unix_timestamp(official.locked_until / 1000)
                .map(|t| t.to_string())
                .unwrap_or_default();
            return Err(WorkflowError::Locked { until });
        }
        let key_id = official.key_id.clone().ok_or_else(|| {
            WorkflowError::KeyUnavailable("no signing key is linked to this official".into())
        })?;
        let keys = self.keys.clone();
        let crls = self.trust.crls.clone();
        let at = self.clock.now();
        let result = tokio::task::spawn_blocking(move || {
            keys.unlock_signer(
                &key_id,
                &passphrase,
                pss,
                at,
                &crls,
                &crate::keys::keystore::LogEvents,
            )
        })
        .await
        .map_err(|e| WorkflowError::Internal(e.to_string()))?;
        match result {
            Ok(signer) => {
                if official.failed_attempts != 0 {
                    sqlx::query("UPDATE officials SET failed_attempts = 0 WHERE id = $1")
                        .bind(&official.id)
                        .execute(&self.db.pool)
                        .await?;
                }
                Ok(signer)
            }
            Err(crate::keys::KeyError::WrongPassphrase) => {
                let max = i64::from(self.cfg.max_passphrase_attempts.max(1));
                let mut tx = self.db.begin_write().await?;
                let failed: i64 =
                    sqlx::query_scalar("SELECT failed_attempts FROM officials WHERE id = $1")
                        .bind(&official.id)
                        .fetch_one(&mut *tx)
                        .await?;
                let failed = failed + 1;
                let locked_until = if failed >= max {
                    now + self.cfg.lockout_seconds as i64 * 1000
                } else {
                    0
                };
                sqlx::query(
                    "UPDATE officials SET failed_attempts = $1, locked_until = $2 WHERE id = $3",
                )
                .bind(if locked_until > 0 { 0 } else { failed })
                .bind(locked_until)
                .bind(&official.id)
                .execute(&mut *tx)
                .await?;
                self.audit(
                    &mut tx,
                    &official.actor(),
                    "key.unlock_failed",
                    None,
                    serde_json::json!({"failed_attempts": failed, "locked": locked_until > 0}),
                )
                .await?;
                tx.commit().await?;
                if locked_until > 0 {
                    let until = time::OffsetDateTime::from_unix_timestamp(locked_until / 1000)
                        .map(|t| t.to_string())
                        .unwrap_or_default();
                    return Err(WorkflowError::Locked { until });
                }
                Err(WorkflowError::WrongPassphrase {
                    attempts_left: (max - failed) as u32,
                })
            }
            Err(crate::keys::KeyError::Unavailable(e)) => Err(WorkflowError::KeyUnavailable(e)),
            Err(crate::keys::KeyError::Disabled) => Err(WorkflowError::Forbidden(
                "the signing key is disabled".into(),
            )),
            Err(crate::keys::KeyError::CertificateState(e)) => Err(WorkflowError::Forbidden(
                format!("the signing certificate cannot be used: {e}"),
            )),
            Err(e) => Err(WorkflowError::KeyUnavailable(e.to_string())),
        }
    }
}

//! Typed configuration: embedded defaults, then `segel.toml` (or `--config FILE`), then
//! `SEGEL_*` environment variables. Secrets are wrapped so they never print.

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// A secret string: Debug and Display print nothing.
#[derive(Clone, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Service configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Public base URL, used in QR codes and CRL distribution points.
    pub public_url: String,
    /// `sqlite://data/segel.db` (default) or `postgres://…`.
    pub database_url: String,
    /// Directory for runtime data: blobs, keystore, demo credentials.
    pub data_dir: PathBuf,
    /// Directory of the PKI used on embedded defaults (trust anchors, TSA, seal, auditor keys).
    pub keys_dir: PathBuf,
    /// Trust anchors (files or directories) for verification; default: keys_dir/root-ca.pem.
    pub trust: Vec<PathBuf>,
    /// CRLs consulted by the verifier and before signing.
    pub crls: Vec<PathBuf>,
    /// Request body limit in bytes.
    pub max_body_bytes: usize,
    /// Time zone of stamps: Asia/Jakarta (WIB), Asia/Makassar, Asia/Jayapura, UTC, ±HH:MM.
    pub time_zone: String,
    /// Passphrase attempts before signing is locked, and for how long (seconds).
    pub max_passphrase_attempts: u32,
    pub lockout_seconds: u64,
    /// Passphrase of the organisation seal key (or `seal_passphrase_file`); the development
    /// seal key in keys-example is not encrypted and needs none.
    pub seal_passphrase: Option<Secret>,
    pub seal_passphrase_file: Option<PathBuf>,
    /// Public requests per client address per minute.
    pub public_rate_per_minute: u32,
    /// Audit checkpoint every N entries.
    pub audit_checkpoint_every: u64,
    /// Use cheap Argon2 parameters for demo keys (tests only).
    pub insecure_fast_kdf: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            public_url: "http://127.0.0.1:8080".into(),
            database_url: "sqlite://data/segel.db".into(),
            data_dir: PathBuf::from("data"),
            keys_dir: PathBuf::from("keys-example"),
            trust: vec![],
            crls: vec![],
            max_body_bytes: 50 * 1024 * 1024,
            time_zone: "Asia/Jakarta".into(),
            max_passphrase_attempts: 5,
            lockout_seconds: 15 * 60,
            seal_passphrase: None,
            seal_passphrase_file: None,
            public_rate_per_minute: 600,
            audit_checkpoint_every: 100,
            insecure_fast_kdf: false,
        }
    }
}

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Load `path`, or `./segel.toml` when it exists, else the defaults; then apply
    /// `SEGEL_LISTEN`, `SEGEL_PUBLIC_URL`, `SEGEL_DATABASE_URL`, `SEGEL_DATA_DIR`,
    /// `SEGEL_KEYS_DIR`, `SEGEL_SEAL_PASSPHRASE`, `SEGEL_MAX_BODY_BYTES`, `SEGEL_TIME_ZONE`.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let default_path = Path::new("segel.toml");
        let file = match path {
            Some(p) => Some(p.to_path_buf()),
            None if default_path.exists() => Some(default_path.to_path_buf()),
            None => None,
        };
        let mut cfg = match &file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError(format!("{}: {e}", p.display())))?;
                toml::from_str(&text).map_err(|e| ConfigError(format!("{}: {e}", p.display())))?
            }
            None => Config::default(),
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        Ok(cfg)
    }

    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("SEGEL_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = get("SEGEL_PUBLIC_URL") {
            self.public_url = v;
        }
        if let Some(v) = get("SEGEL_DATABASE_URL") {
            self.database_url = v;
        }
        if let Some(v) = get("SEGEL_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = get("SEGEL_KEYS_DIR") {
            self.keys_dir = v.into();
        }
        if let Some(v) = get("SEGEL_SEAL_PASSPHRASE") {
            self.seal_passphrase = Some(Secret::new(v));
        }
        if let Some(v) = get("SEGEL_TIME_ZONE") {
            self.time_zone = v;
        }
        if let Some(v) = get("SEGEL_MAX_BODY_BYTES") {
            self.max_body_bytes = v
                .parse()
                .map_err(|_| ConfigError(format!("SEGEL_MAX_BODY_BYTES={v:?} is not a number")))?;
        }
        Ok(())
    }

    /// Trust anchors: the configured ones, or the development root.
    pub fn trust_paths(&self) -> Vec<PathBuf> {
        if self.trust.is_empty() {
            vec![self.keys_dir.join("root-ca.pem")]
        } else {
            self.trust.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_file_and_secrets_do_not_print() {
        let mut c: Config =
            toml::from_str("listen = \"0.0.0.0:9\"\nseal_passphrase = \"hush\"").unwrap();
        assert_eq!(c.listen, "0.0.0.0:9");
        c.apply_env(|k| (k == "SEGEL_LISTEN").then(|| "127.0.0.1:1".to_string()))
            .unwrap();
        assert_eq!(c.listen, "127.0.0.1:1");
        assert!(!format!("{c:?}").contains("hush"));
        assert!(toml::from_str::<Config>("nonsense = 1").is_err());
    }
}

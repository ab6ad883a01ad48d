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
    /// Reverse proxies in front of Segel (their addresses): for requests from them, the client
    /// address is taken from `X-Forwarded-For`. Empty: the header is never read.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Audit checkpoint every N entries.
    pub audit_checkpoint_every: u64,
    /// Use cheap Argon2 parameters for demo keys (tests only).
    pub insecure_fast_kdf: bool,
    /// The organisation seal key in a PKCS#11 token (`[seal_hsm]`), instead of a keystore
    /// record `seal` or `keys_dir/seal.key.pem`.
    pub seal_hsm: Option<HsmKey>,
}

/// A key in a PKCS#11 token (an HSM), with the certificate chain that goes with it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmKey {
    /// The PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// `CK_TOKEN_INFO.label` of the token.
    pub token_label: String,
    /// `CKA_LABEL` of the private key; `key_label`, `key_id` or both.
    pub key_label: Option<String>,
    /// `CKA_ID` of the private key, in hex.
    pub key_id: Option<String>,
    /// The user PIN: the environment variable that holds it, or a file whose first line it is.
    pub pin_env: Option<String>,
    pub pin_file: Option<PathBuf>,
    /// PEM: the key's certificate first, then its CA certificates.
    pub chain: PathBuf,
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
            trusted_proxies: vec![],
            audit_checkpoint_every: 100,
            insecure_fast_kdf: false,
            seal_hsm: None,
        }
    }
}

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// How a `SEGEL_*` value is read.
#[derive(Clone, Copy)]
enum EnvKind {
    Text,
    Number,
    /// Comma-separated.
    List,
}

/// Every setting of the file, overridable as `SEGEL_` + its name in capitals — except
/// `insecure_fast_kdf`, which only tests may set, and only in code, and the `[seal_hsm]` table,
/// which is set in the file (its PIN comes from the variable or file the table names).
const ENV_SETTINGS: &[(&str, EnvKind)] = &[
    ("listen", EnvKind::Text),
    ("public_url", EnvKind::Text),
    ("database_url", EnvKind::Text),
    ("data_dir", EnvKind::Text),
    ("keys_dir", EnvKind::Text),
    ("trust", EnvKind::List),
    ("crls", EnvKind::List),
    ("max_body_bytes", EnvKind::Number),
    ("time_zone", EnvKind::Text),
    ("max_passphrase_attempts", EnvKind::Number),
    ("lockout_seconds", EnvKind::Number),
    ("seal_passphrase", EnvKind::Text),
    ("seal_passphrase_file", EnvKind::Text),
    ("public_rate_per_minute", EnvKind::Number),
    ("trusted_proxies", EnvKind::List),
    ("audit_checkpoint_every", EnvKind::Number),
];

impl Config {
    /// Load `path`, or `./segel.toml` when it exists, else the defaults; then apply the
    /// `SEGEL_*` variables: `SEGEL_LISTEN`, `SEGEL_DATABASE_URL`, `SEGEL_LOCKOUT_SECONDS`, … one
    /// for every setting (lists comma-separated, e.g. `SEGEL_TRUST=/etc/segel/bsre-root.pem,…`).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let default_path = Path::new("segel.toml");
        let file = match path {
            Some(p) => Some(p.to_path_buf()),
            None if default_path.exists() => Some(default_path.to_path_buf()),
            None => None,
        };
        let (text, origin) = match &file {
            Some(p) => (
                std::fs::read_to_string(p)
                    .map_err(|e| ConfigError(format!("{}: {e}", p.display())))?,
                p.display().to_string(),
            ),
            None => (String::new(), "defaults".to_string()),
        };
        Self::from_toml_and_env(&text, &origin, |k| std::env::var(k).ok())
    }

    /// The file's settings with the environment's on top, checked as one: an unknown setting,
    /// a number that is not one, or a wrong type is an error naming where it came from.
    fn from_toml_and_env(
        text: &str,
        origin: &str,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError(format!("{origin}: {e}")))?;
        let mut from_env = Vec::new();
        for (name, kind) in ENV_SETTINGS {
            let var = format!("SEGEL_{}", name.to_ascii_uppercase());
            let Some(v) = get(&var) else { continue };
            let value = match kind {
                EnvKind::Text => toml::Value::String(v),
                EnvKind::Number => toml::Value::Integer(
                    v.trim()
                        .parse()
                        .map_err(|_| ConfigError(format!("{var}={v:?} is not a whole number")))?,
                ),
                EnvKind::List => toml::Value::Array(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.into()))
                        .collect(),
                ),
            };
            table.insert((*name).into(), value);
            from_env.push(var);
        }
        let origin = if from_env.is_empty() {
            origin.to_string()
        } else {
            format!("{origin} with {}", from_env.join(", "))
        };
        Config::deserialize(table).map_err(|e| ConfigError(format!("{origin}: {e}")))
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
        let env = |k: &str| match k {
            "SEGEL_LISTEN" => Some("127.0.0.1:1".to_string()),
            "SEGEL_LOCKOUT_SECONDS" => Some("90".to_string()),
            "SEGEL_TRUST" => Some("/etc/segel/a.pem, /etc/segel/b.pem".to_string()),
            "SEGEL_SEAL_PASSPHRASE" => Some("also hushed".to_string()),
            _ => None,
        };
        let c = Config::from_toml_and_env(
            "listen = \"0.0.0.0:9\"\nseal_passphrase = \"hush\"\npublic_rate_per_minute = 5",
            "segel.toml",
            env,
        )
        .unwrap();
        assert_eq!(c.listen, "127.0.0.1:1");
        assert_eq!(c.lockout_seconds, 90);
        assert_eq!(c.public_rate_per_minute, 5, "file settings stay");
        assert_eq!(
            c.trust,
            vec![
                PathBuf::from("/etc/segel/a.pem"),
                PathBuf::from("/etc/segel/b.pem")
            ]
        );
        assert_eq!(c.seal_passphrase.as_ref().unwrap().expose(), "also hushed");
        assert!(!format!("{c:?}").contains("hush"));
        let err = Config::from_toml_and_env("nonsense = 1", "segel.toml", |_| None).unwrap_err();
        assert!(err.to_string().contains("nonsense"), "{err}");
        let err = Config::from_toml_and_env("", "defaults", |k| {
            (k == "SEGEL_MAX_BODY_BYTES").then(|| "50MB".to_string())
        })
        .unwrap_err();
        assert!(err.to_string().contains("SEGEL_MAX_BODY_BYTES"), "{err}");
    }

    /// Every setting of the file has its `SEGEL_*` variable, and each one takes effect. The
    /// settings are read off the struct itself: serde names every accepted field when it
    /// refuses an unknown one, so a setting added later cannot be forgotten here.
    #[test]
    fn every_setting_has_an_environment_variable() {
        let probe = toml::Table::from_iter([("no such setting".to_string(), 1.into())]);
        let refusal = Config::deserialize(probe).unwrap_err().to_string();
        let mut fields: Vec<&str> = refusal.split('`').skip(3).step_by(2).collect();
        assert!(fields.contains(&"listen"), "{refusal}");
        fields.retain(|f| !["insecure_fast_kdf", "seal_hsm"].contains(f));
        fields.sort();
        let mut listed: Vec<&str> = ENV_SETTINGS.iter().map(|(n, _)| *n).collect();
        listed.sort();
        assert_eq!(fields, listed);
        let defaults = format!("{:?}", Config::default());
        for (name, kind) in ENV_SETTINGS {
            let var = format!("SEGEL_{}", name.to_ascii_uppercase());
            let value = match (name, kind) {
                (_, EnvKind::Number) => "7",
                (&"trusted_proxies", _) => "192.0.2.1",
                _ => "from-env",
            };
            let c = Config::from_toml_and_env("", "defaults", |k| {
                (k == var).then(|| value.to_string())
            })
            .unwrap_or_else(|e| panic!("{var}: {e}"));
            assert_ne!(format!("{c:?}"), defaults, "{var} not applied");
        }
    }
}

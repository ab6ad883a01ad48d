//! The encrypted software keystore: each official's PKCS#8 private key sealed with AES-256-GCM
//! under a key derived from the official's signing passphrase with Argon2id (RFC 9106). The
//! key id is the AEAD's associated data, so a sealed key copied to another official's record
//! does not open. Decrypted keys exist only in zeroizing buffers while a signer is alive.

use super::devpki::{KeyAlgorithm, generate_pkcs8, official_dn, rcgen_key};
use super::{KeyError, Signer, SoftwareSigner, certificate_public_key};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// A signing passphrase. It never prints, and is wiped when dropped.
#[derive(Clone)]
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    pub fn new(s: impl Into<String>) -> Self {
        Passphrase(Zeroizing::new(s.into()))
    }
    fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

/// Argon2id parameters, stored with each sealed key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    /// Base64 salt (16 random bytes per sealing).
    #[serde(default)]
    pub salt: String,
}

impl KdfParams {
    /// Sized for about half a second and 64 MiB on the service's 2-core machine: 64 MiB and
    /// 14 passes took 0.49 s there (best of 5, release build), 4 passes only 0.18 s. Stored
    /// keys keep the parameters they were sealed with; `segel keys passphrase` re-seals a key
    /// with these.
    pub fn recommended() -> Self {
        KdfParams {
            m_cost_kib: 64 * 1024,
            t_cost: 14,
            p_cost: 1,
            salt: String::new(),
        }
    }

    /// Cheap parameters for tests only.
    pub fn insecure_fast() -> Self {
        KdfParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
            salt: String::new(),
        }
    }

    fn derive(&self, passphrase: &Passphrase) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        let salt = B64
            .decode(&self.salt)
            .map_err(|_| KeyError::Format("keystore: bad salt".into()))?;
        let params = argon2::Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| KeyError::Format(format!("keystore: Argon2 parameters: {e}")))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(passphrase.bytes(), &salt, out.as_mut())
            .map_err(|e| KeyError::Format(format!("keystore: Argon2: {e}")))?;
        Ok(out)
    }
}

/// A PKCS#8 private key sealed under a passphrase.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SealedKey {
    pub version: u32,
    pub key_id: String,
    pub kdf: KdfParams,
    /// Base64 96-bit nonce.
    pub nonce: String,
    /// Base64 AES-256-GCM ciphertext with its tag.
    pub ciphertext: String,
}

fn aad(key_id: &str) -> Vec<u8> {
    format!("segel/keystore/v1/{key_id}").into_bytes()
}

fn aead_key(k: &[u8; 32]) -> Result<LessSafeKey, KeyError> {
    UnboundKey::new(&AES_256_GCM, k)
        .map(LessSafeKey::new)
        .map_err(|_| KeyError::Format("keystore: AEAD key".into()))
}

/// Seal `pkcs8` for `key_id` under `passphrase`, with fresh salt and nonce.
#[tracing::instrument(skip_all, fields(key_id))]
pub fn seal(
    key_id: &str,
    pkcs8: &[u8],
    passphrase: &Passphrase,
    kdf: &KdfParams,
) -> Result<SealedKey, KeyError> {
    let rng = SystemRandom::new();
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    rng.fill(&mut salt)
        .map_err(|_| KeyError::Format("no randomness".into()))?;
    rng.fill(&mut nonce)
        .map_err(|_| KeyError::Format("no randomness".into()))?;
    let kdf = KdfParams {
        salt: B64.encode(salt),
        ..kdf.clone()
    };
    let k = kdf.derive(passphrase)?;
    let mut buf = pkcs8.to_vec();
    aead_key(&k)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(key_id)),
            &mut buf,
        )
        .map_err(|_| KeyError::Format("keystore: sealing failed".into()))?;
    Ok(SealedKey {
        version: 1,
        key_id: key_id.into(),
        kdf,
        nonce: B64.encode(nonce),
        ciphertext: B64.encode(buf),
    })
}

/// Open a sealed key for `key_id`. A wrong passphrase, a tampered ciphertext and a key sealed
/// for another id all fail the same way (AES-GCM cannot tell them apart).
#[tracing::instrument(skip_all, fields(key_id))]
pub fn unseal(
    sealed: &SealedKey,
    key_id: &str,
    passphrase: &Passphrase,
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    if sealed.version != 1 {
        return Err(KeyError::Format(format!(
            "keystore: unknown version {}",
            sealed.version
        )));
    }
    let nonce: [u8; 12] = B64
        .decode(&sealed.nonce)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or_else(|| KeyError::Format("keystore: bad nonce".into()))?;
    let mut buf = Zeroizing::new(
        B64.decode(&sealed.ciphertext)
            .map_err(|_| KeyError::Format("keystore: bad ciphertext".into()))?,
    );
    let k = sealed.kdf.derive(passphrase)?;
    let plain_len = aead_key(&k)?
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(key_id)),
            &mut buf,
        )
        .map_err(|_| KeyError::WrongPassphrase)?
        .len();
    buf.truncate(plain_len);
    Ok(buf)
}

/// Where a key lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum KeyLocation {
    Keystore {
        sealed: SealedKey,
    },
    Hsm {
        module: PathBuf,
        token_label: String,
        key_label: String,
        /// `CKA_ID` of the key pair (hex); the key is found by it, by the label when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key_id: Option<String>,
        pin_env: Option<String>,
        pin_file: Option<PathBuf>,
    },
}

/// One official's key record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: Option<String>,
    pub title: Option<String>,
    pub nip: Option<String>,
    pub algorithm: KeyAlgorithm,
    pub location: KeyLocation,
    /// Base64 DER SubjectPublicKeyInfo.
    pub public_key: String,
    /// The issued certificate and its CAs (PEM), once imported.
    pub chain_pem: Option<String>,
    pub disabled: bool,
    pub created: i64,
    /// For keys in an HSM: an Argon2id verifier of the official's signing passphrase
    /// (`m$t$p$salt$hash`, base64), so approving still needs the passphrase.
    #[serde(default)]
    pub passphrase_verifier: Option<String>,
}

/// Where a new HSM key goes.
#[derive(Debug, Clone)]
pub struct HsmSpec {
    pub module: PathBuf,
    pub token_label: String,
    pub pin_env: Option<String>,
    pub pin_file: Option<PathBuf>,
}

pub(crate) fn pin_source(
    pin_env: &Option<String>,
    pin_file: &Option<PathBuf>,
) -> Result<super::pkcs11::PinSource, KeyError> {
    match (pin_env, pin_file) {
        (Some(v), _) => Ok(super::pkcs11::PinSource::Env(v.clone())),
        (None, Some(f)) => Ok(super::pkcs11::PinSource::File(f.clone())),
        (None, None) => Err(KeyError::Format(
            "an HSM key needs a PIN source (environment variable or file)".into(),
        )),
    }
}

/// PKCS#11 configuration of an HSM key record.
pub fn hsm_config(location: &KeyLocation) -> Option<Result<super::pkcs11::Pkcs11Config, KeyError>> {
    let KeyLocation::Hsm {
        module,
        token_label,
        key_label,
        key_id,
        pin_env,
        pin_file,
    } = location
    else {
        return None;
    };
    Some((|| {
        let key_id = match key_id {
            Some(h) => Some(super::devpki::hex_decode(h).ok_or_else(|| {
                KeyError::Format(format!("HSM key record: key id {h:?} is not hexadecimal"))
            })?),
            None => None,
        };
        Ok(super::pkcs11::Pkcs11Config {
            module: module.clone(),
            token_label: token_label.clone(),
            // The id names the key; the label only for records written before ids were kept.
            key_label: key_id.is_none().then(|| key_label.clone()),
            key_id,
            pin: super::pkcs11::Pin::from_source(&pin_source(pin_env, pin_file)?)?,
        })
    })())
}

fn make_verifier(passphrase: &Passphrase, kdf: &KdfParams) -> Result<String, KeyError> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| KeyError::Format("no randomness".into()))?;
    let params = KdfParams {
        salt: B64.encode(salt),
        ..kdf.clone()
    };
    let hash = params.derive(passphrase)?;
    Ok(format!(
        "{}${}${}${}${}",
        params.m_cost_kib,
        params.t_cost,
        params.p_cost,
        params.salt,
        B64.encode(hash.as_ref())
    ))
}

fn check_verifier(verifier: &str, passphrase: &Passphrase) -> Result<(), KeyError> {
    let parts: Vec<&str> = verifier.split('$').collect();
    let [m, t, p, salt, hash] = parts.as_slice() else {
        return Err(KeyError::Format("bad passphrase verifier".into()));
    };
    let params = KdfParams {
        m_cost_kib: m
            .parse()
            .map_err(|_| KeyError::Format("bad verifier".into()))?,
        t_cost: t
            .parse()
            .map_err(|_| KeyError::Format("bad verifier".into()))?,
        p_cost: p
            .parse()
            .map_err(|_| KeyError::Format("bad verifier".into()))?,
        salt: salt.to_string(),
    };
    let derived = params.derive(passphrase)?;
    let expected = B64
        .decode(hash)
        .map_err(|_| KeyError::Format("bad verifier".into()))?;
    let same = derived.len() == expected.len()
        && derived
            .iter()
            .zip(&expected)
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            == 0;
    if same {
        Ok(())
    } else {
        Err(KeyError::WrongPassphrase)
    }
}

/// Something to record key events in (the service writes them to the audit log).
pub trait KeyEvents {
    fn record(&self, official: &str, event: &str, detail: &str);
}

/// Key events written to the log only (the CLI before the service's audit log exists).
pub struct LogEvents;

impl KeyEvents for LogEvents {
    fn record(&self, official: &str, event: &str, detail: &str) {
        tracing::info!(official, event, detail, "key event");
    }
}

fn spki_key_bits(spki_der: &[u8]) -> Option<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der).ok()?;
    Some(spki.subject_public_key.data.to_vec())
}

/// The CSR subject needs the official's name, title and NIP (and the organisation).
fn check_identity(identity: (&str, &str, &str, &str)) -> Result<(), KeyError> {
    let (name, title, nip, org) = identity;
    for (value, what) in [
        (name, "name"),
        (title, "title"),
        (nip, "NIP"),
        (org, "organisation"),
    ] {
        if value.trim().is_empty() {
            return Err(KeyError::Format(format!(
                "the certificate request needs the official's {what}"
            )));
        }
    }
    Ok(())
}

/// A PKCS#10 CSR (PEM) for `key` whose subject carries the official's name, title and NIP.
fn official_csr(
    key: &impl rcgen::SigningKey,
    identity: (&str, &str, &str, &str),
) -> Result<String, KeyError> {
    let (name, title, nip, org) = identity;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = official_dn(name, title, nip, org);
    let csr = params
        .serialize_request(key)
        .map_err(|e| KeyError::Format(format!("CSR: {e}")))?;
    csr.pem().map_err(|e| KeyError::Format(format!("CSR: {e}")))
}

/// Why a PKCS#12 file did not open, in words an operator can act on.
fn pkcs12_error(e: p12_keystore::error::Error) -> KeyError {
    use p12_keystore::error::Error as E;
    KeyError::Pkcs12(match e {
        E::MacError(_) => "wrong password (the file's integrity check fails)".into(),
        E::UnsupportedEncryptionScheme | E::UnsupportedMacAlgorithm => format!(
            "{e}: the file is protected with an algorithm Segel does not accept; export it \
             again with PBES2/AES-256-CBC and an HMAC-SHA-256 MAC (or 3DES for legacy tools)"
        ),
        E::InvalidParameters => {
            "the file's encryption parameters are missing or out of bounds (for instance an \
             excessive iteration count)"
                .into()
        }
        E::Pkcs5Error(m) => format!("cannot decrypt (wrong password or damaged file): {m}"),
        other => format!("not a readable PKCS#12 file: {other}"),
    })
}

/// A directory of key records (`<id>.json`), written atomically.
pub struct FileKeyStore {
    pub dir: PathBuf,
    /// CRL files consulted, re-read when they change, by every lifecycle check (besides the
    /// CRLs a caller passes).
    crl_files: Option<crate::trust::revocation::CrlFiles>,
}

/// Why a certificate cannot sign now.
enum CertState {
    Unreadable(String),
    NotYetValid(String),
    Expired(String),
    Revoked(String),
    NoIssuer(String),
}

/// What an official's certificate says about itself, for lifecycle checks.
fn certificate_state(
    leaf: &[u8],
    at: OffsetDateTime,
    chain: &[Vec<u8>],
    crls: &[Vec<u8>],
) -> Result<(), CertState> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| CertState::Unreadable(e.to_string()))?;
    let t = at.unix_timestamp();
    if t < cert.validity().not_before.timestamp() {
        return Err(CertState::NotYetValid(format!(
            "the certificate is not valid before {}",
            cert.validity().not_before
        )));
    }
    if t > cert.validity().not_after.timestamp() {
        return Err(CertState::Expired(format!(
            "the certificate expired on {}",
            cert.validity().not_after
        )));
    }
    // A CRL is signed by the certificate's issuer: without the issuer's certificate no CRL can
    // be checked (and validators could not build the signer's path either), so such a chain
    // is refused rather than waved through unchecked.
    let issued_by = |der: &Vec<u8>| {
        x509_parser::parse_x509_certificate(der).is_ok_and(|(_, ca)| {
            ca.subject().as_raw() == cert.issuer().as_raw()
                && cert.verify_signature(Some(ca.public_key())).is_ok()
        })
    };
    let Some(issuer) = chain.iter().skip(1).find(|c| issued_by(c)) else {
        return Err(CertState::NoIssuer(format!(
            "the key's chain lacks the certificate of its issuer ({}), so its revocation \
             cannot be checked; import the full chain",
            cert.issuer()
        )));
    };
    let data = crate::trust::revocation::RevocationData {
        crls: crls
            .iter()
            .map(|c| (c.clone(), crate::trust::RevocationSource::Crl))
            .collect(),
        ..Default::default()
    };
    if let crate::trust::RevocationStatus::Revoked { time, .. } =
        crate::trust::revocation::status(leaf, issuer, &data)
    {
        return Err(CertState::Revoked(format!(
            "the certificate was revoked on {time}"
        )));
    }
    Ok(())
}

/// [`certificate_state`] as the error signing is refused with.
fn check_certificate_state(
    leaf: &[u8],
    at: OffsetDateTime,
    chain: &[Vec<u8>],
    crls: &[Vec<u8>],
) -> Result<(), KeyError> {
    certificate_state(leaf, at, chain, crls).map_err(|s| match s {
        CertState::Unreadable(m) => KeyError::Certificate(m),
        CertState::NotYetValid(m)
        | CertState::Expired(m)
        | CertState::Revoked(m)
        | CertState::NoIssuer(m) => KeyError::CertificateState(m),
    })
}

impl FileKeyStore {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, KeyError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .map_err(|e| KeyError::Format(format!("{}: {e}", dir.display())))?;
        Ok(FileKeyStore {
            dir,
            crl_files: None,
        })
    }

    /// Check every unlock against these CRL files too, re-reading a file when it changes, so
    /// that a revocation published while the service runs stops the next signature.
    pub fn watch_crls(mut self, paths: Vec<PathBuf>) -> Self {
        self.crl_files = Some(crate::trust::revocation::CrlFiles::new(paths));
        self
    }

    /// The lifecycle check of officials' keys, for a key kept elsewhere (the organisation seal
    /// in an HSM or a PEM file): `chain[0]` must be valid at `now`, come with its issuer's
    /// certificate, and not be revoked by `crls` or the CRL files this store watches.
    pub fn check_signing_chain(
        &self,
        chain: &[Vec<u8>],
        now: OffsetDateTime,
        crls: &[Vec<u8>],
    ) -> Result<(), KeyError> {
        let leaf = chain
            .first()
            .ok_or_else(|| KeyError::Certificate("no certificate for the key".into()))?;
        check_certificate_state(leaf, now, chain, &self.effective_crls(crls))
    }

    /// The caller's CRLs plus the current contents of the watched CRL files.
    fn effective_crls(&self, given: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut all = given.to_vec();
        if let Some(files) = &self.crl_files {
            for c in files.current() {
                if !all.contains(&c) {
                    all.push(c);
                }
            }
        }
        all
    }

    fn path(&self, id: &str) -> Result<PathBuf, KeyError> {
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            || id.starts_with('.')
        {
            return Err(KeyError::Format(format!(
                "official id {id:?} may use letters, digits, '-', '_' and '.'"
            )));
        }
        Ok(self.dir.join(format!("{id}.json")))
    }

    pub fn get(&self, id: &str) -> Result<KeyRecord, KeyError> {
        let p = self.path(id)?;
        let data = std::fs::read(&p)
            .map_err(|_| KeyError::Format(format!("no key for official {id:?}")))?;
        serde_json::from_slice(&data).map_err(|e| KeyError::Format(format!("{}: {e}", p.display())))
    }

    pub fn put(&self, record: &KeyRecord) -> Result<(), KeyError> {
        use std::io::Write;
        let p = self.path(&record.id)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)
            .map_err(|e| KeyError::Format(e.to_string()))?;
        let json =
            serde_json::to_vec_pretty(record).map_err(|e| KeyError::Format(e.to_string()))?;
        tmp.write_all(&json)
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|e| KeyError::Format(e.to_string()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o600));
        }
        tmp.persist(&p)
            .map_err(|e| KeyError::Format(format!("{}: {}", p.display(), e.error)))?;
        Ok(())
    }

    pub fn list(&self) -> Result<Vec<KeyRecord>, KeyError> {
        let mut out = Vec::new();
        let mut entries: Vec<_> = std::fs::read_dir(&self.dir)
            .map_err(|e| KeyError::Format(e.to_string()))?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                if let Some(id) = p.file_stem().and_then(|s| s.to_str()) {
                    out.push(self.get(id)?);
                }
            }
        }
        Ok(out)
    }

    /// Generate a software key for an official, seal it, store it, and return the PKCS#10 CSR
    /// (PEM) whose subject carries the name, title and NIP.
    #[allow(clippy::too_many_arguments)]
    pub fn generate(
        &self,
        id: &str,
        alg: KeyAlgorithm,
        identity: (&str, &str, &str, &str),
        passphrase: &Passphrase,
        kdf: &KdfParams,
        now: OffsetDateTime,
        events: &dyn KeyEvents,
    ) -> Result<String, KeyError> {
        if self.path(id)?.exists() {
            return Err(KeyError::Format(format!(
                "official {id:?} already has a key"
            )));
        }
        check_identity(identity)?;
        let (name, title, nip, _) = identity;
        let pkcs8 = generate_pkcs8(alg)?;
        let key = rcgen_key(&pkcs8, alg)?;
        let csr_pem = official_csr(&key, identity)?;
        let record = KeyRecord {
            id: id.into(),
            name: Some(name.into()),
            title: Some(title.into()),
            nip: Some(nip.into()),
            algorithm: alg,
            location: KeyLocation::Keystore {
                sealed: seal(id, &pkcs8, passphrase, kdf)?,
            },
            public_key: B64.encode(rcgen::PublicKeyData::subject_public_key_info(&key)),
            chain_pem: None,
            disabled: false,
            created: now.unix_timestamp(),
            passphrase_verifier: None,
        };
        self.put(&record)?;
        events.record(id, "key.created", &format!("{alg:?} in the keystore"));
        Ok(csr_pem)
    }

    /// Attach the issued certificate and chain after checking it carries this key and chains
    /// to one of `anchors` at `now`.
    pub fn import_certificate(
        &self,
        id: &str,
        chain: Vec<Vec<u8>>,
        anchors: &[Vec<u8>],
        now: OffsetDateTime,
        events: &dyn KeyEvents,
    ) -> Result<(), KeyError> {
        let mut record = self.get(id)?;
        let leaf = chain
            .first()
            .ok_or_else(|| KeyError::Certificate("the file holds no certificate".into()))?;
        let spki = B64
            .decode(&record.public_key)
            .map_err(|_| KeyError::Format("bad stored public key".into()))?;
        if spki_key_bits(&spki) != Some(certificate_public_key(leaf)?) {
            return Err(KeyError::CertificateMismatch);
        }
        let outcome = crate::trust::validate_chain(
            leaf,
            &chain[1..],
            anchors,
            now,
            crate::trust::EkuPolicy::DocumentSigning,
        );
        if !outcome.trusted {
            return Err(KeyError::Certificate(format!(
                "the certificate does not chain to a configured anchor: {:?}",
                outcome.problem
            )));
        }
        let pem: String = outcome
            .chain
            .iter()
            .map(|c| super::devpki::cert_pem(c))
            .collect();
        record.chain_pem = Some(pem);
        self.put(&record)?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| KeyError::Certificate(e.to_string()))?;
        events.record(
            id,
            "key.certificate_imported",
            &format!("{} serial {}", cert.subject(), cert.raw_serial_as_string()),
        );
        Ok(())
    }

    /// Import a key and chain delivered as PKCS#12, re-sealed under the official's passphrase.
    /// An official who already has a key keeps it unless `replace` is given.
    #[allow(clippy::too_many_arguments)]
    pub fn import_p12(
        &self,
        id: &str,
        data: &[u8],
        password: &str,
        replace: bool,
        passphrase: &Passphrase,
        kdf: &KdfParams,
        now: OffsetDateTime,
        events: &dyn KeyEvents,
    ) -> Result<(), KeyError> {
        if !replace && self.path(id)?.exists() {
            return Err(KeyError::Format(format!(
                "official {id:?} already has a key (give --replace to overwrite it)"
            )));
        }
        let archive =
            p12_keystore::Pkcs12Archive::from_pkcs12(data, password).map_err(pkcs12_error)?;
        let [bag] = archive.keys.as_slice() else {
            return Err(KeyError::Pkcs12(
                "the file must hold exactly one private key".into(),
            ));
        };
        let pkcs8 = Zeroizing::new(bag.key.as_der().to_vec());
        // The chain in path order, leaf first, checked against the key.
        let chain = SoftwareSigner::from_pkcs12(data, password, false)?.chain_ders();
        let (name, title, nip, _) = super::certificate_identity(&chain[0]);
        let replaced = self.path(id)?.exists();
        self.import_pkcs8(
            id,
            &pkcs8,
            &chain,
            (name, title, nip),
            passphrase,
            kdf,
            now,
            events,
        )?;
        if replaced {
            events.record(
                id,
                "key.replaced",
                "the previous key was overwritten by a PKCS#12",
            );
        }
        Ok(())
    }

    /// Store an existing PKCS#8 key with its certificate chain, sealed under `passphrase`.
    #[allow(clippy::too_many_arguments)]
    pub fn import_pkcs8(
        &self,
        id: &str,
        pkcs8: &[u8],
        chain: &[Vec<u8>],
        identity: (Option<String>, Option<String>, Option<String>),
        passphrase: &Passphrase,
        kdf: &KdfParams,
        now: OffsetDateTime,
        events: &dyn KeyEvents,
    ) -> Result<(), KeyError> {
        let signer = SoftwareSigner::from_pkcs8(pkcs8, chain.to_vec(), false)?;
        let alg = match signer.algorithm() {
            super::SignatureAlgorithm::EcdsaP256Sha256 => KeyAlgorithm::P256,
            super::SignatureAlgorithm::EcdsaP384Sha384 => KeyAlgorithm::P384,
            _ if signer.max_signature_len() > 256 => KeyAlgorithm::Rsa3072,
            _ => KeyAlgorithm::Rsa2048,
        };
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0])
            .map_err(|e| KeyError::Certificate(e.to_string()))?;
        let record = KeyRecord {
            id: id.into(),
            name: identity.0,
            title: identity.1,
            nip: identity.2,
            algorithm: alg,
            location: KeyLocation::Keystore {
                sealed: seal(id, pkcs8, passphrase, kdf)?,
            },
            public_key: B64.encode(leaf.public_key().raw),
            chain_pem: Some(chain.iter().map(|c| super::devpki::cert_pem(c)).collect()),
            disabled: false,
            created: now.unix_timestamp(),
            passphrase_verifier: None,
        };
        self.put(&record)?;
        events.record(id, "key.imported", &leaf.subject().to_string());
        Ok(())
    }

    /// Re-seal under a new passphrase; the key and its certificate do not change.
    pub fn change_passphrase(
        &self,
        id: &str,
        old: &Passphrase,
        new: &Passphrase,
        kdf: &KdfParams,
        events: &dyn KeyEvents,
    ) -> Result<(), KeyError> {
        let mut record = self.get(id)?;
        let KeyLocation::Keystore { sealed } = &record.location else {
            // An HSM key: the token PIN is the operator's; the official's signing passphrase
            // is an Argon2id verifier, which is derived afresh.
            let verifier = record
                .passphrase_verifier
                .as_deref()
                .ok_or_else(|| KeyError::Format("the HSM key has no passphrase verifier".into()))?;
            if let Err(e) = check_verifier(verifier, old) {
                events.record(id, "key.unlock_failed", "passphrase change");
                return Err(e);
            }
            record.passphrase_verifier = Some(make_verifier(new, kdf)?);
            self.put(&record)?;
            events.record(
                id,
                "key.passphrase_changed",
                "HSM key: signing passphrase only",
            );
            return Ok(());
        };
        let pkcs8 = match unseal(sealed, id, old) {
            Ok(k) => k,
            Err(e) => {
                events.record(id, "key.unlock_failed", "passphrase change");
                return Err(e);
            }
        };
        record.location = KeyLocation::Keystore {
            sealed: seal(id, &pkcs8, new, kdf)?,
        };
        self.put(&record)?;
        events.record(id, "key.passphrase_changed", "");
        Ok(())
    }

    pub fn set_disabled(
        &self,
        id: &str,
        disabled: bool,
        events: &dyn KeyEvents,
    ) -> Result<(), KeyError> {
        let mut record = self.get(id)?;
        record.disabled = disabled;
        self.put(&record)?;
        events.record(
            id,
            if disabled {
                "key.disabled"
            } else {
                "key.enabled"
            },
            "",
        );
        Ok(())
    }

    /// Generate an official's key inside a PKCS#11 token (it never exists outside it) and
    /// return the CSR; the signing passphrase is kept as an Argon2id verifier.
    #[allow(clippy::too_many_arguments)]
    pub fn generate_in_hsm(
        &self,
        id: &str,
        alg: KeyAlgorithm,
        identity: (&str, &str, &str, &str),
        hsm: &HsmSpec,
        passphrase: &Passphrase,
        kdf: &KdfParams,
        now: OffsetDateTime,
        events: &dyn KeyEvents,
    ) -> Result<String, KeyError> {
        if self.path(id)?.exists() {
            return Err(KeyError::Format(format!(
                "official {id:?} already has a key"
            )));
        }
        check_identity(identity)?;
        let mut key_id = [0u8; 8];
        SystemRandom::new()
            .fill(&mut key_id)
            .map_err(|_| KeyError::Format("no randomness".into()))?;
        let label = format!("segel-{id}");
        let location = KeyLocation::Hsm {
            module: hsm.module.clone(),
            token_label: hsm.token_label.clone(),
            key_label: label.clone(),
            key_id: Some(key_id.iter().map(|b| format!("{b:02x}")).collect()),
            pin_env: hsm.pin_env.clone(),
            pin_file: hsm.pin_file.clone(),
        };
        let cfg = hsm_config(&location)
            .ok_or_else(|| KeyError::Format("not an HSM location".into()))??;
        let spki = super::pkcs11::generate_key(&cfg, &label, &key_id, alg)?;
        let enrol = || {
            let rkey = super::pkcs11::Pkcs11RcgenKey::open(cfg.clone())?;
            let (name, title, nip, _) = identity;
            let csr_pem = official_csr(&rkey, identity)?;
            let record = KeyRecord {
                id: id.into(),
                name: Some(name.into()),
                title: Some(title.into()),
                nip: Some(nip.into()),
                algorithm: alg,
                location: location.clone(),
                public_key: B64.encode(&spki),
                chain_pem: None,
                disabled: false,
                created: now.unix_timestamp(),
                passphrase_verifier: Some(make_verifier(passphrase, kdf)?),
            };
            self.put(&record)?;
            Ok::<_, KeyError>(csr_pem)
        };
        let csr_pem = match enrol() {
            Ok(csr) => csr,
            Err(e) => {
                // Leave the token as it was, so that the enrolment can simply be retried.
                if let Err(d) = super::pkcs11::destroy_key(&cfg, &label, &key_id) {
                    tracing::error!(error = %d, label, "could not remove the half-enrolled key");
                }
                return Err(e);
            }
        };
        events.record(
            id,
            "key.created",
            &format!("{alg:?} in HSM token {}", hsm.token_label),
        );
        Ok(csr_pem)
    }

    /// Unlock an official's key wherever it lives (keystore or HSM), with the same refusals
    /// as [`FileKeyStore::unlock`].
    pub fn unlock_signer(
        &self,
        id: &str,
        passphrase: &Passphrase,
        pss: bool,
        now: OffsetDateTime,
        crls: &[Vec<u8>],
        events: &dyn KeyEvents,
    ) -> Result<std::sync::Arc<dyn super::Signer>, KeyError> {
        let record = self.get(id)?;
        let Some(cfg) = hsm_config(&record.location) else {
            return Ok(std::sync::Arc::new(
                self.unlock(id, passphrase, pss, now, crls, events)?,
            ));
        };
        if record.disabled {
            return Err(KeyError::Disabled);
        }
        let chain_pem = record
            .chain_pem
            .as_deref()
            .ok_or_else(|| KeyError::Certificate("no certificate imported yet".into()))?;
        let chain = super::load_certificates_pem(chain_pem.as_bytes())?;
        check_certificate_state(&chain[0], now, &chain, &self.effective_crls(crls))?;
        let verifier = record
            .passphrase_verifier
            .as_deref()
            .ok_or_else(|| KeyError::Format("the HSM key has no passphrase verifier".into()))?;
        check_verifier(verifier, passphrase)
            .inspect_err(|_| events.record(id, "key.unlock_failed", "signing"))?;
        Ok(std::sync::Arc::new(super::pkcs11::Pkcs11Signer::open(
            cfg?, chain, pss,
        )?))
    }

    /// Unlock an official's software key for signing, refusing disabled keys and certificates
    /// that are expired, not yet valid, or revoked according to `crls`.
    #[tracing::instrument(skip_all, fields(id))]
    pub fn unlock(
        &self,
        id: &str,
        passphrase: &Passphrase,
        pss: bool,
        now: OffsetDateTime,
        crls: &[Vec<u8>],
        events: &dyn KeyEvents,
    ) -> Result<SoftwareSigner, KeyError> {
        let record = self.get(id)?;
        if record.disabled {
            return Err(KeyError::Disabled);
        }
        let chain_pem = record
            .chain_pem
            .as_deref()
            .ok_or_else(|| KeyError::Certificate("no certificate imported yet".into()))?;
        let chain = super::load_certificates_pem(chain_pem.as_bytes())?;
        check_certificate_state(&chain[0], now, &chain, &self.effective_crls(crls))?;
        let KeyLocation::Keystore { sealed } = &record.location else {
            return Err(KeyError::Unsupported("the key lives in an HSM".into()));
        };
        let pkcs8 = unseal(sealed, id, passphrase)
            .inspect_err(|_| events.record(id, "key.unlock_failed", "signing"))?;
        SoftwareSigner::from_pkcs8(&pkcs8, chain, pss)
    }

    /// Path of a record, for messages.
    pub fn record_path(&self, id: &str) -> Option<PathBuf> {
        self.path(id).ok()
    }
}

/// A key's state for `segel keys list`: `disabled`, `pending` (no certificate yet),
/// `not-yet-valid`, `expired`, `revoked` (by `crls`), `no-issuer` (the chain lacks the
/// issuer's certificate), `unreadable`, or `active`.
pub fn key_status(record: &KeyRecord, now: OffsetDateTime, crls: &[Vec<u8>]) -> &'static str {
    if record.disabled {
        return "disabled";
    }
    let Some(pem) = &record.chain_pem else {
        return "pending";
    };
    let Ok(chain) = super::load_certificates_pem(pem.as_bytes()) else {
        return "unreadable";
    };
    match certificate_state(&chain[0], now, &chain, crls) {
        Ok(()) => "active",
        Err(CertState::NotYetValid(_)) => "not-yet-valid",
        Err(CertState::Expired(_)) => "expired",
        Err(CertState::Revoked(_)) => "revoked",
        Err(CertState::NoIssuer(_)) => "no-issuer",
        Err(CertState::Unreadable(_)) => "unreadable",
    }
}

/// The CRL files a service checks officials' certificates against: the configured ones, or
/// else the development CA's CRL in the keys directory.
pub fn lifecycle_crl_paths(configured: &[PathBuf], keys_dir: &std::path::Path) -> Vec<PathBuf> {
    if configured.is_empty() {
        vec![keys_dir.join("crl/issuing-ca.crl")]
    } else {
        configured.to_vec()
    }
}

/// Days until the certificate in `chain_pem` expires (negative when expired).
pub fn days_to_expiry(chain_pem: &str, now: OffsetDateTime) -> Option<i64> {
    let der = super::load_certificates_pem(chain_pem.as_bytes())
        .ok()?
        .into_iter()
        .next()?;
    let (_, c) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some((c.validity().not_after.timestamp() - now.unix_timestamp()).div_euclid(86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_unseal_round_trip() {
        let pp = Passphrase::new("rahasia negara");
        let s = seal("budi", b"pkcs8 bytes", &pp, &KdfParams::insecure_fast()).unwrap();
        assert_eq!(&unseal(&s, "budi", &pp).unwrap()[..], b"pkcs8 bytes");
        assert!(!s.ciphertext.contains("pkcs8"));
    }

    #[test]
    fn wrong_passphrase_tampering_and_swapped_ids_fail() {
        let pp = Passphrase::new("rahasia negara");
        let s = seal("budi", b"pkcs8 bytes", &pp, &KdfParams::insecure_fast()).unwrap();
        assert!(matches!(
            unseal(&s, "budi", &Passphrase::new("salah")),
            Err(KeyError::WrongPassphrase)
        ));
        assert!(
            matches!(unseal(&s, "siti", &pp), Err(KeyError::WrongPassphrase)),
            "a key sealed for budi must not open as siti's"
        );
        let mut t = s.clone();
        let mut ct = B64.decode(&t.ciphertext).unwrap();
        ct[0] ^= 1;
        t.ciphertext = B64.encode(ct);
        assert!(matches!(
            unseal(&t, "budi", &pp),
            Err(KeyError::WrongPassphrase)
        ));
        let mut k = s.clone();
        k.kdf.t_cost += 1;
        assert!(
            unseal(&k, "budi", &pp).is_err(),
            "parameters are bound through the derived key"
        );
    }

    fn example(rel: &str) -> Vec<u8> {
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
    }

    /// siti's development key and chain as PKCS#12, protected with `key_alg` (None: OpenSSL's
    /// default, PBES2/AES-256-CBC).
    fn siti_p12(key_alg: Option<openssl::nid::Nid>) -> Vec<u8> {
        let key = openssl::pkey::PKey::private_key_from_pem(&example(
            "keys-example/officials/siti.key.pem",
        ))
        .unwrap();
        let cert =
            openssl::x509::X509::from_pem(&example("keys-example/officials/siti.pem")).unwrap();
        let mut b = openssl::pkcs12::Pkcs12::builder();
        b.name("siti").pkey(&key).cert(&cert);
        if let Some(nid) = key_alg {
            b.key_algorithm(nid).cert_algorithm(nid);
        }
        b.build2("sandi-p12").unwrap().to_der().unwrap()
    }

    fn import(store: &FileKeyStore, id: &str, p12: &[u8], password: &str) -> Result<(), KeyError> {
        store.import_p12(
            id,
            p12,
            password,
            false,
            &Passphrase::new("kata sandi rahasia"),
            &KdfParams::insecure_fast(),
            OffsetDateTime::now_utc(),
            &LogEvents,
        )
    }

    #[test]
    fn pkcs12_wrong_password_and_unsupported_encryption_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileKeyStore::open(dir.path()).unwrap();
        let good = siti_p12(None);
        let e = import(&store, "siti", &good, "salah").unwrap_err();
        assert!(
            matches!(&e, KeyError::Pkcs12(m) if m.contains("wrong password")),
            "{e}"
        );
        // Two-key triple DES: OpenSSL still writes it, Segel does not accept it.
        let weak = siti_p12(Some(openssl::nid::Nid::PBE_WITHSHA1AND2_KEY_TRIPLEDES_CBC));
        let e = import(&store, "siti", &weak, "sandi-p12").unwrap_err();
        assert!(
            matches!(&e, KeyError::Pkcs12(m) if m.contains("does not accept") && !m.contains("wrong password")),
            "{e}"
        );
        assert!(store.list().unwrap().is_empty(), "nothing stored");
        import(&store, "siti", &good, "sandi-p12").unwrap();
        let r = store.get("siti").unwrap();
        assert_eq!(r.title.as_deref(), Some("Kepala Biro Umum"));
        assert_eq!(r.nip.as_deref(), Some("198203152006042002"));
    }

    #[test]
    fn a_certificate_for_another_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileKeyStore::open(dir.path()).unwrap();
        let pp = Passphrase::new("kata sandi rahasia");
        let fast = KdfParams::insecure_fast();
        let now = OffsetDateTime::now_utc();
        store
            .generate(
                "andi",
                KeyAlgorithm::P256,
                ("Andi", "Kepala", "1", "Uji"),
                &pp,
                &fast,
                now,
                &LogEvents,
            )
            .unwrap();
        let chain =
            crate::keys::load_certificates_pem(&example("keys-example/officials/siti.chain.pem"))
                .unwrap();
        let root =
            crate::keys::load_certificates_pem(&example("keys-example/root-ca.pem")).unwrap();
        let e = store
            .import_certificate("andi", chain.clone(), &root, now, &LogEvents)
            .unwrap_err();
        assert!(matches!(e, KeyError::CertificateMismatch), "{e}");
        assert!(store.get("andi").unwrap().chain_pem.is_none());
        // A PKCS#8 key stored with somebody else's certificate is refused as well.
        let budi_key = pem::parse(example("keys-example/officials/budi.key.pem"))
            .unwrap()
            .into_contents();
        let e = store
            .import_pkcs8(
                "budi",
                &budi_key,
                &chain,
                (None, None, None),
                &pp,
                &fast,
                now,
                &LogEvents,
            )
            .unwrap_err();
        assert!(matches!(e, KeyError::CertificateMismatch), "{e}");
        assert!(store.get("budi").is_err());
    }

    #[test]
    fn a_chain_without_the_issuer_is_refused_not_waved_through() {
        let now = OffsetDateTime::now_utc();
        let full =
            crate::keys::load_certificates_pem(&example("keys-example/officials/siti.chain.pem"))
                .unwrap();
        check_certificate_state(&full[0], now, &full, &[]).unwrap();
        // Leaf only, and leaf with the root but not the issuing CA.
        for chain in [
            vec![full[0].clone()],
            vec![full[0].clone(), full[2].clone()],
        ] {
            let e = check_certificate_state(&full[0], now, &chain, &[]).unwrap_err();
            assert!(
                matches!(&e, KeyError::CertificateState(m) if m.contains("lacks the certificate of its issuer")
                    && m.contains("Segel Development Issuing CA")),
                "{e}"
            );
        }
    }

    #[test]
    fn passphrase_never_prints() {
        let pp = Passphrase::new("rahasia negara");
        assert!(!format!("{pp:?}").contains("rahasia"));
    }
}

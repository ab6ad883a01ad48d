//! Keys inside a PKCS#11 token (an HSM, a smart card, SoftHSM2), used through `cryptoki`.
//!
//! The private key never leaves the token: Segel hashes, builds whatever encoding the mechanism
//! needs (a DigestInfo for `CKM_RSA_PKCS`, nothing for `CKM_RSA_PKCS_PSS` and `CKM_ECDSA`) and
//! asks the token for the raw signature, so only the three most widely implemented signing
//! mechanisms are required (PKCS#11 v2.40 Current Mechanisms §2.1.6, §2.1.10, §2.3.6) and tokens
//! without `CKM_SHA256_RSA_PKCS` or `CKM_ECDSA_SHA256` (SoftHSM2 has no hashing ECDSA) work too.
//!
//! One `Pkcs11` context is kept per module path for the whole process: `C_Initialize` may be
//! called once per process (v2.40 base §5.4, C_Initialize), and the login state is shared by all
//! sessions an application has with a token (v2.40 base §5.6, C_Login), so several signers on one
//! token share it. The context is never finalized.

use super::devpki::KeyAlgorithm;
use super::{KeyError, SignatureAlgorithm, Signer, certificate_public_key};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use der::asn1::{BitString, Null, ObjectIdentifier, OctetStringRef, UintRef};
use der::{Any, Decode, Encode};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use zeroize::Zeroizing;

/// Logged-in sessions each key keeps open; signing calls beyond this wait for a free session.
pub const SESSIONS_PER_KEY: usize = 4;

const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// DER prefix of `DigestInfo { AlgorithmIdentifier { id-sha256, NULL }, OCTET STRING (32) }`
/// (RFC 8017 §9.2, note 1); the 32-byte hash follows.
const SHA256_DIGEST_INFO_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// Where the user PIN is read from. The PIN itself never appears in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// The named environment variable.
    Env(String),
    /// The first line of this file (a trailing newline is dropped).
    File(PathBuf),
}

/// A token's user PIN. Zeroed on drop; `Debug` shows nothing of it.
#[derive(Clone)]
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// A PIN given directly (tests, or a caller that prompted for it).
    pub fn new(pin: impl Into<String>) -> Pin {
        Pin(Zeroizing::new(pin.into()))
    }

    /// Read the PIN from its source. Errors name the source, never the content.
    #[tracing::instrument(skip_all)]
    pub fn from_source(source: &PinSource) -> Result<Pin, KeyError> {
        let pin = match source {
            PinSource::Env(var) => Zeroizing::new(std::env::var(var).map_err(|_| {
                KeyError::Unavailable(format!(
                    "PKCS#11 PIN: environment variable {var} is not set"
                ))
            })?),
            PinSource::File(path) => {
                let raw = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                    KeyError::Unavailable(format!("PKCS#11 PIN file {}: {e}", path.display()))
                })?);
                Zeroizing::new(raw.lines().next().unwrap_or_default().to_string())
            }
        };
        if pin.is_empty() {
            return Err(KeyError::Unavailable(
                "PKCS#11 PIN: the PIN source is empty".into(),
            ));
        }
        Ok(Pin(pin))
    }

    fn auth(&self) -> AuthPin {
        AuthPin::from(self.0.as_str())
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(..)")
    }
}

/// Which token and key to use.
#[derive(Debug, Clone)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (shared library), e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// `CK_TOKEN_INFO.label` of the token.
    pub token_label: String,
    /// `CKA_LABEL` of the private key; at least one of `key_label` and `key_id` is required.
    pub key_label: Option<String>,
    /// `CKA_ID` of the private key.
    pub key_id: Option<Vec<u8>>,
    pub pin: Pin,
}

// ---------------------------------------------------------------------------------------------
// Module contexts and error classification
// ---------------------------------------------------------------------------------------------

/// The process-wide context of `module`, loaded and initialized on first use.
///
/// `CKR_CRYPTOKI_ALREADY_INITIALIZED` is accepted: another component of the process (or another
/// copy of the library handle) initialized the module first, and it is usable as it is.
fn context(module: &Path) -> Result<Pkcs11, KeyError> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let key = module
        .canonicalize()
        .unwrap_or_else(|_| module.to_path_buf());
    let mut map = lock(CONTEXTS.get_or_init(Default::default));
    if let Some(ctx) = map.get(&key) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(&key).map_err(|e| {
        KeyError::Unavailable(format!(
            "cannot load PKCS#11 module {}: {e}",
            module.display()
        ))
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(KeyError::Unavailable(format!(
                "PKCS#11 module {}: C_Initialize failed: {}",
                module.display(),
                describe(&e)
            )));
        }
    }
    map.insert(key, ctx.clone());
    Ok(ctx)
}

/// Lock a mutex whose data stays consistent even if a holder panicked (every critical section
/// below leaves the data valid between statements), so poisoning is not an error.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `CKR_PIN_INCORRECT` for `RvError::PinIncorrect`, and so on: the names operators search for.
fn ckr_name(rv: RvError) -> String {
    let camel = format!("{rv:?}");
    let mut out = String::from("CKR");
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// A cryptoki error in one line: `C_Login: CKR_PIN_INCORRECT`.
fn describe(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, func) => {
            let func = format!("{func:?}");
            format!("C_{func}: {}", ckr_name(*rv))
        }
        other => other.to_string(),
    }
}

/// Why an operation on the token failed, as far as what to do next is concerned.
enum Fault {
    /// The session, the login or the token went away: reconnecting may help.
    Lost(String),
    /// The token refused the PIN: never retried, so the PIN is not locked by repeated attempts.
    Pin(String),
    /// Anything else; returned as it is.
    Other(KeyError),
}

impl Fault {
    fn ck(e: CkError) -> Fault {
        let text = describe(&e);
        match e {
            CkError::Pkcs11(rv, _) => match rv {
                RvError::UserNotLoggedIn
                | RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::SlotIdInvalid
                // A logged-out session cannot see private objects: SoftHSM2 answers C_SignInit
                // with CKR_OBJECT_HANDLE_INVALID then, not CKR_USER_NOT_LOGGED_IN. Handles also
                // change when a token is re-inserted.
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
                | RvError::CryptokiNotInitialized
                | RvError::GeneralError => Fault::Lost(text),
                RvError::PinIncorrect
                | RvError::PinInvalid
                | RvError::PinLenRange
                | RvError::PinExpired
                | RvError::PinLocked => Fault::Pin(text),
                RvError::MechanismInvalid
                | RvError::MechanismParamInvalid
                | RvError::KeyTypeInconsistent => Fault::Other(KeyError::Unsupported(format!(
                    "the token refused the mechanism: {text}"
                ))),
                _ => Fault::Other(KeyError::Signing(text)),
            },
            _ => Fault::Other(KeyError::Signing(text)),
        }
    }

    fn into_key_error(self, token: &str) -> KeyError {
        match self {
            Fault::Lost(why) => KeyError::Unavailable(format!("PKCS#11 token {token:?}: {why}")),
            Fault::Pin(why) => KeyError::Unavailable(format!(
                "PKCS#11 token {token:?} refused the user PIN ({why})"
            )),
            Fault::Other(e) => e,
        }
    }

    /// The cause alone, for a message that already names the token.
    fn message(&self) -> String {
        match self {
            Fault::Lost(why) => why.clone(),
            Fault::Pin(why) => format!("the user PIN was refused ({why})"),
            Fault::Other(e) => e.to_string(),
        }
    }
}

impl From<CkError> for Fault {
    fn from(e: CkError) -> Fault {
        Fault::ck(e)
    }
}

impl From<KeyError> for Fault {
    fn from(e: KeyError) -> Fault {
        Fault::Other(e)
    }
}

/// The slot holding the token labelled `label`.
fn find_slot(ctx: &Pkcs11, label: &str) -> Result<Slot, Fault> {
    let mut found = Vec::new();
    for slot in ctx.get_slots_with_token()? {
        // A slot whose token vanished between the two calls is simply not a match.
        if let Ok(info) = ctx.get_token_info(slot)
            && info.label() == label
        {
            found.push(slot);
        }
    }
    match found.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(Fault::Lost("no slot holds a token with this label".into())),
        _ => Err(Fault::Other(KeyError::Unsupported(format!(
            "{} tokens are labelled {label:?}; labels must be unique",
            found.len()
        )))),
    }
}

/// Log the user in unless the application already is (the state is per application and token).
#[tracing::instrument(skip_all)]
fn ensure_login(session: &Session, pin: &Pin) -> Result<(), Fault> {
    let state = session.get_session_info()?.session_state();
    if matches!(state, SessionState::RoUser | SessionState::RwUser) {
        return Ok(());
    }
    match session.login(UserType::User, Some(&pin.auth())) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(Fault::ck(e)),
    }
}

fn open_session(ctx: &Pkcs11, slot: Slot, pin: &Pin, rw: bool) -> Result<Session, Fault> {
    let session = if rw {
        ctx.open_rw_session(slot)?
    } else {
        ctx.open_ro_session(slot)?
    };
    ensure_login(&session, pin)?;
    Ok(session)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Public key encoding
// ---------------------------------------------------------------------------------------------

/// RSAPublicKey (RFC 8017 Appendix A.1.1).
#[derive(der::Sequence)]
struct RsaPublicKey<'a> {
    modulus: UintRef<'a>,
    public_exponent: UintRef<'a>,
}

/// ECDSA-Sig-Value (RFC 5480 §2.2 / RFC 5753 §7.2).
#[derive(der::Sequence)]
struct EcdsaSigValue<'a> {
    r: UintRef<'a>,
    s: UintRef<'a>,
}

/// The curves Segel signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

impl Curve {
    fn from_ec_params(params: &[u8]) -> Result<Curve, KeyError> {
        // CKA_EC_PARAMS: DER of ECParameters, here the namedCurve choice (v2.40 Mechanisms §2.3.3).
        let oid = ObjectIdentifier::from_der(params).map_err(|_| {
            KeyError::Unsupported("EC key without a named curve in CKA_EC_PARAMS".into())
        })?;
        match oid {
            OID_P256 => Ok(Curve::P256),
            OID_P384 => Ok(Curve::P384),
            other => Err(KeyError::Unsupported(format!(
                "EC curve {other} (P-256 and P-384 are accepted)"
            ))),
        }
    }

    fn oid(self) -> ObjectIdentifier {
        match self {
            Curve::P256 => OID_P256,
            Curve::P384 => OID_P384,
        }
    }

    /// Octets of the base point order n (and of each of r and s).
    fn n_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa { modulus_len: usize },
    Ec(Curve),
}

fn rsa_public_key_der(modulus: &[u8], exponent: &[u8]) -> Result<Vec<u8>, KeyError> {
    let bad = |e: der::Error| KeyError::Format(format!("RSA public key from the token: {e}"));
    RsaPublicKey {
        modulus: UintRef::new(modulus).map_err(bad)?,
        public_exponent: UintRef::new(exponent).map_err(bad)?,
    }
    .to_der()
    .map_err(bad)
}

/// The uncompressed point from `CKA_EC_POINT`, which v2.40 (§2.3.3) defines as the DER OCTET
/// STRING of the ECPoint; some tokens return the bare point, which is accepted as well.
fn ec_point(value: &[u8], curve: Curve) -> Result<Vec<u8>, KeyError> {
    let len = 2 * curve.n_len() + 1;
    if value.len() == len && value[0] == 0x04 {
        return Ok(value.to_vec());
    }
    match OctetStringRef::from_der(value) {
        Ok(inner) if inner.as_bytes().len() == len && inner.as_bytes()[0] == 0x04 => {
            Ok(inner.as_bytes().to_vec())
        }
        _ => Err(KeyError::Unsupported(
            "CKA_EC_POINT is not an uncompressed point on the key's curve".into(),
        )),
    }
}

/// DER SubjectPublicKeyInfo (RFC 5280 §4.1.2.7) for the subjectPublicKey bits `public`:
/// rsaEncryption with NULL parameters (RFC 3279 §2.3.1), or id-ecPublicKey with the named curve
/// (RFC 5480 §2.1.1).
fn spki_der(kind: KeyKind, public: &[u8]) -> Result<Vec<u8>, KeyError> {
    let bad = |e: der::Error| KeyError::Format(format!("SubjectPublicKeyInfo: {e}"));
    let (oid, parameters) = match kind {
        KeyKind::Rsa { .. } => (OID_RSA_ENCRYPTION, Any::encode_from(&Null).map_err(bad)?),
        KeyKind::Ec(curve) => (
            OID_EC_PUBLIC_KEY,
            Any::encode_from(&curve.oid()).map_err(bad)?,
        ),
    };
    SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned {
            oid,
            parameters: Some(parameters),
        },
        subject_public_key: BitString::from_bytes(public).map_err(bad)?,
    }
    .to_der()
    .map_err(bad)
}

/// DER ECDSA-Sig-Value from the `r ‖ s` octets that `CKM_ECDSA` returns (v2.40 Mechanisms
/// §2.3.1: two halves of equal length, most significant byte first).
fn ecdsa_der(raw: &[u8], curve: Curve) -> Result<Vec<u8>, KeyError> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) || raw.len() > 2 * curve.n_len() {
        return Err(KeyError::Signing(format!(
            "the token returned a {}-byte ECDSA signature",
            raw.len()
        )));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let bad = |e: der::Error| KeyError::Signing(format!("ECDSA signature encoding: {e}"));
    EcdsaSigValue {
        r: UintRef::new(r).map_err(bad)?,
        s: UintRef::new(s).map_err(bad)?,
    }
    .to_der()
    .map_err(bad)
}

fn attr_bytes(attrs: &[Attribute], ty: AttributeType) -> Option<&[u8]> {
    attrs.iter().find_map(|a| match (a, ty) {
        (Attribute::Modulus(v), AttributeType::Modulus)
        | (Attribute::PublicExponent(v), AttributeType::PublicExponent)
        | (Attribute::EcParams(v), AttributeType::EcParams)
        | (Attribute::EcPoint(v), AttributeType::EcPoint)
        | (Attribute::PublicKeyInfo(v), AttributeType::PublicKeyInfo)
        | (Attribute::Value(v), AttributeType::Value) => Some(v.as_slice()),
        _ => None,
    })
}

/// Key type and, where the private key object carries it, the public key.
fn private_key_facts(
    session: &Session,
    key: ObjectHandle,
) -> Result<(KeyKind, Option<Vec<u8>>), Fault> {
    let attrs = session.get_attributes(key, &[AttributeType::KeyType])?;
    let key_type = attrs.iter().find_map(|a| {
        if let Attribute::KeyType(t) = a {
            Some(*t)
        } else {
            None
        }
    });
    match key_type {
        Some(KeyType::RSA) => {
            // CKA_MODULUS and CKA_PUBLIC_EXPONENT are not sensitive on RSA private keys (§2.1.3).
            let attrs = session.get_attributes(
                key,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )?;
            let modulus = attr_bytes(&attrs, AttributeType::Modulus).ok_or_else(|| {
                KeyError::Unsupported("RSA private key without CKA_MODULUS".into())
            })?;
            let significant = modulus
                .iter()
                .position(|b| *b != 0)
                .map_or(0, |i| modulus.len() - i);
            let bits = significant * 8;
            if !(2048..=4096).contains(&bits) {
                return Err(KeyError::Unsupported(format!(
                    "RSA-{bits}: keys of 2048 to 4096 bits are accepted"
                ))
                .into());
            }
            let public = match attr_bytes(&attrs, AttributeType::PublicExponent) {
                Some(e) => Some(rsa_public_key_der(modulus, e)?),
                None => None,
            };
            Ok((
                KeyKind::Rsa {
                    modulus_len: significant,
                },
                public,
            ))
        }
        Some(KeyType::EC) => {
            let attrs = session.get_attributes(
                key,
                &[AttributeType::EcParams, AttributeType::PublicKeyInfo],
            )?;
            let params = attr_bytes(&attrs, AttributeType::EcParams).ok_or_else(|| {
                KeyError::Unsupported("EC private key without CKA_EC_PARAMS".into())
            })?;
            let curve = Curve::from_ec_params(params)?;
            // CKA_PUBLIC_KEY_INFO (v3.0) on the private key, when the token fills it in.
            let public = attr_bytes(&attrs, AttributeType::PublicKeyInfo)
                .filter(|v| !v.is_empty())
                .and_then(|v| SubjectPublicKeyInfoOwned::from_der(v).ok())
                .map(|spki| spki.subject_public_key.raw_bytes().to_vec());
            Ok((KeyKind::Ec(curve), public))
        }
        Some(other) => {
            Err(KeyError::Unsupported(format!("key type {other} (RSA and EC are accepted)")).into())
        }
        None => Err(KeyError::Unsupported("private key without CKA_KEY_TYPE".into()).into()),
    }
}

/// The subjectPublicKey bits from the public key object (`CKA_MODULUS`/`CKA_PUBLIC_EXPONENT`, or
/// `CKA_EC_POINT`).
fn public_object_key(
    session: &Session,
    handle: ObjectHandle,
    kind: KeyKind,
) -> Result<Option<Vec<u8>>, Fault> {
    match kind {
        KeyKind::Rsa { .. } => {
            let attrs = session.get_attributes(
                handle,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )?;
            match (
                attr_bytes(&attrs, AttributeType::Modulus),
                attr_bytes(&attrs, AttributeType::PublicExponent),
            ) {
                (Some(n), Some(e)) => Ok(Some(rsa_public_key_der(n, e)?)),
                _ => Ok(None),
            }
        }
        KeyKind::Ec(curve) => {
            let attrs = session.get_attributes(handle, &[AttributeType::EcPoint])?;
            match attr_bytes(&attrs, AttributeType::EcPoint) {
                Some(p) => Ok(Some(ec_point(p, curve)?)),
                None => Ok(None),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Session pool
// ---------------------------------------------------------------------------------------------

/// Up to [`SESSIONS_PER_KEY`] sessions; `Session` is `Send` but not `Sync`, so each signing call
/// borrows one exclusively. A reconnect bumps `generation`, and sessions of an older generation
/// are closed when returned instead of being reused.
struct SessionPool {
    state: Mutex<PoolState>,
    freed: Condvar,
}

struct PoolState {
    idle: Vec<Session>,
    leased: usize,
    generation: u64,
}

struct Lease<'a> {
    pool: &'a SessionPool,
    session: Option<Session>,
    generation: u64,
}

impl SessionPool {
    fn new(first: Session) -> SessionPool {
        SessionPool {
            state: Mutex::new(PoolState {
                idle: vec![first],
                leased: 0,
                generation: 0,
            }),
            freed: Condvar::new(),
        }
    }

    /// An idle session, or the right to open a new one (`session: None`) while under the limit.
    fn lease(&self) -> Lease<'_> {
        let mut st = lock(&self.state);
        loop {
            if let Some(s) = st.idle.pop() {
                st.leased += 1;
                return Lease {
                    pool: self,
                    session: Some(s),
                    generation: st.generation,
                };
            }
            if st.leased < SESSIONS_PER_KEY {
                st.leased += 1;
                return Lease {
                    pool: self,
                    session: None,
                    generation: st.generation,
                };
            }
            st = self.freed.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn generation(&self) -> u64 {
        lock(&self.state).generation
    }

    /// Start a new generation with `fresh` as its only idle session; the old idle ones are closed.
    fn replace_all(&self, fresh: Session) {
        let stale = {
            let mut st = lock(&self.state);
            st.generation += 1;
            std::mem::replace(&mut st.idle, vec![fresh])
        };
        self.freed.notify_all();
        // Closing may fail on a dead token; cryptoki only logs that.
        drop(stale);
    }
}

impl Lease<'_> {
    /// Forget the session (it is closed on drop) instead of returning it to the pool.
    fn discard(&mut self) {
        self.session = None;
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let session = self.session.take();
        let stale = {
            let mut st = lock(&self.pool.state);
            st.leased -= 1;
            match session {
                Some(s) if self.generation == st.generation => {
                    st.idle.push(s);
                    None
                }
                other => other,
            }
        };
        self.pool.freed.notify_one();
        drop(stale);
    }
}

// ---------------------------------------------------------------------------------------------
// The key
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Target {
    slot: Slot,
    key: ObjectHandle,
}

/// A private key in a PKCS#11 token, without a certificate: what [`Pkcs11Signer`] signs with,
/// and what [`Pkcs11RcgenKey`] hands to rcgen for CSRs.
pub struct Pkcs11Key {
    ctx: Pkcs11,
    cfg: Pkcs11Config,
    kind: KeyKind,
    /// subjectPublicKey bits: RSAPublicKey DER or the uncompressed EC point.
    public: Vec<u8>,
    target: RwLock<Target>,
    pool: SessionPool,
    /// Held while reconnecting, so one thread reconnects and the others wait for it.
    reconnecting: Mutex<()>,
    /// Set once the token refused the PIN; later calls fail without trying it again (a token
    /// locks the PIN after a few wrong tries). A corrected PIN needs a new `Pkcs11Key`.
    pin_refused: AtomicBool,
}

impl fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Key")
            .field("module", &self.cfg.module)
            .field("token", &self.cfg.token_label)
            .field("key_label", &self.cfg.key_label)
            .field("key_id", &self.cfg.key_id.as_deref().map(hex))
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Which key, and with which PIN: a corrected PIN opens the key afresh.
#[derive(PartialEq, Eq, Hash)]
struct KeyAddress {
    module: PathBuf,
    token: String,
    label: Option<String>,
    id: Option<Vec<u8>>,
    pin: [u8; 32],
}

/// A token and a PIN it refused. Tokens count wrong PINs per token, not per key, so one refusal
/// stops that PIN for every key of the token.
type RefusedPin = (PathBuf, String, [u8; 32]);

fn refused_pins() -> &'static Mutex<std::collections::HashSet<RefusedPin>> {
    static REFUSED: OnceLock<Mutex<std::collections::HashSet<RefusedPin>>> = OnceLock::new();
    REFUSED.get_or_init(Default::default)
}

/// The PIN as a tag that tells PINs apart without keeping a guessable digest of it: an HMAC
/// under a key drawn once per process.
fn pin_tag(pin: &Pin) -> [u8; 32] {
    static KEY: OnceLock<ring::hmac::Key> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            // The system's random source failing is not something a signing service can go
            // on without; ring's own key generation panics the same way elsewhere.
            .expect("system randomness for the PIN tag key")
    });
    ring::hmac::sign(key, pin.0.as_bytes())
        .as_ref()
        .try_into()
        .expect("HMAC-SHA256 is 32 bytes")
}

fn canonical_module(cfg: &Pkcs11Config) -> PathBuf {
    cfg.module
        .canonicalize()
        .unwrap_or_else(|_| cfg.module.clone())
}

/// Remember that the token of `cfg` refused its PIN.
fn refuse_pin(cfg: &Pkcs11Config) {
    lock(refused_pins()).insert((
        canonical_module(cfg),
        cfg.token_label.clone(),
        pin_tag(&cfg.pin),
    ));
}

/// The process-wide key for `cfg`, opened (and logged in) on first use.
///
/// The service opens an official's key for every approval and every readiness probe. Were each
/// opening a key of its own, each would log in, keep a session pool of its own, and forget that
/// the token refused the PIN: a wrong PIN would be tried again on every probe and for every key
/// of the token, and a real token locks its PIN after a few wrong tries. So a key is opened once
/// per module, token, label, id and PIN, and a PIN a token refused is not presented to that
/// token again until it changes.
fn shared_key(cfg: Pkcs11Config, leaf_public: Option<&[u8]>) -> Result<Arc<Pkcs11Key>, KeyError> {
    type Slot = Arc<Mutex<Option<Arc<Pkcs11Key>>>>;
    static OPENED: OnceLock<Mutex<HashMap<KeyAddress, Slot>>> = OnceLock::new();
    let module = canonical_module(&cfg);
    let pin = pin_tag(&cfg.pin);
    if lock(refused_pins()).contains(&(module.clone(), cfg.token_label.clone(), pin)) {
        return Err(KeyError::Unavailable(format!(
            "PKCS#11 token {:?} refused this PIN earlier; not presenting the same PIN again \
             (correct the PIN source)",
            cfg.token_label
        )));
    }
    let address = KeyAddress {
        module,
        token: cfg.token_label.clone(),
        label: cfg.key_label.clone(),
        id: cfg.key_id.clone(),
        pin,
    };
    // One slot per key, locked while that key is opened: two first uses of one key must not
    // both log in (or both present a wrong PIN), and a token that hangs holds up only its own
    // key, not the first opening of every other.
    let slot = lock(OPENED.get_or_init(Default::default))
        .entry(address)
        .or_default()
        .clone();
    let mut slot = lock(&slot);
    if let Some(key) = slot.as_ref() {
        // Still there? One round trip, which also re-finds a key whose handle went stale and
        // reconnects a lost login — so opening fails, as a first opening would, when the token
        // or the key is gone.
        let key = key.clone();
        drop(slot);
        key.health()?;
        return Ok(key);
    }
    let refused_cfg = cfg.clone();
    match Pkcs11Key::open_fresh(cfg, leaf_public) {
        Ok(key) => {
            let key = Arc::new(key);
            *slot = Some(key.clone());
            Ok(key)
        }
        Err((e, pin_refused)) => {
            if pin_refused {
                refuse_pin(&refused_cfg);
            }
            Err(e)
        }
    }
}

impl Pkcs11Key {
    /// Find the key described by `cfg`, logging in to its token.
    ///
    /// The public key comes from the public key object with the same `CKA_ID` (or label), from
    /// the private key itself (RSA modulus, v3.0 `CKA_PUBLIC_KEY_INFO`), or from a certificate
    /// object with the same `CKA_ID`.
    #[tracing::instrument(skip_all, fields(token = %cfg.token_label))]
    pub fn open(cfg: Pkcs11Config) -> Result<Arc<Pkcs11Key>, KeyError> {
        Self::open_inner(cfg, None)
    }

    /// As [`Pkcs11Key::open`]; an EC key whose public key the token does not expose is accepted
    /// with `leaf_public` once a test signature verifies under it.
    ///
    /// Keys are shared within the process (see [`shared_key`]): the first opening logs in, later
    /// ones get the same key, its session pool and its memory of a refused PIN.
    fn open_inner(
        cfg: Pkcs11Config,
        leaf_public: Option<&[u8]>,
    ) -> Result<Arc<Pkcs11Key>, KeyError> {
        shared_key(cfg, leaf_public)
    }

    /// Log in and find the key, without the process-wide sharing. The error says whether the
    /// token refused the PIN.
    fn open_fresh(
        cfg: Pkcs11Config,
        leaf_public: Option<&[u8]>,
    ) -> Result<Pkcs11Key, (KeyError, bool)> {
        if cfg.key_label.is_none() && cfg.key_id.is_none() {
            return Err((
                KeyError::Unsupported("PKCS#11: set the key label or the key id".into()),
                false,
            ));
        }
        let token = cfg.token_label.clone();
        let ctx = context(&cfg.module).map_err(|e| (e, false))?;
        let opened = (|| {
            let slot = find_slot(&ctx, &cfg.token_label)?;
            let session = open_session(&ctx, slot, &cfg.pin, false)?;
            let key = find_private_key(&session, &cfg)?;
            let (kind, public) = private_key_facts(&session, key)?;
            let public = match public {
                Some(p) => p,
                None => match find_public_elsewhere(&session, &cfg, kind)? {
                    Some(p) => p,
                    None => match (kind, leaf_public) {
                        (KeyKind::Ec(curve), Some(leaf)) => {
                            prove_possession(&session, key, curve, leaf)?;
                            leaf.to_vec()
                        }
                        _ => {
                            return Err(Fault::Other(KeyError::Unsupported(
                                "the token exposes no public key for this private key (no public key object, \
                                 CKA_PUBLIC_KEY_INFO or certificate with its CKA_ID)"
                                    .into(),
                            )));
                        }
                    },
                },
            };
            check_mechanisms(&ctx, slot, kind)?;
            Ok((slot, session, key, kind, public))
        })();
        let (slot, session, key, kind, public) = opened.map_err(|f| {
            let pin_refused = matches!(f, Fault::Pin(_));
            (f.into_key_error(&token), pin_refused)
        })?;
        Ok(Pkcs11Key {
            ctx,
            kind,
            public,
            target: RwLock::new(Target { slot, key }),
            pool: SessionPool::new(session),
            reconnecting: Mutex::new(()),
            pin_refused: AtomicBool::new(false),
            cfg,
        })
    }

    /// The public key as DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> Result<Vec<u8>, KeyError> {
        spki_der(self.kind, &self.public)
    }

    /// The subjectPublicKey bits (RSAPublicKey DER, or the uncompressed EC point), as
    /// [`certificate_public_key`] returns them for a certificate.
    pub fn public_key_bits(&self) -> &[u8] {
        &self.public
    }

    /// Whether this is an RSA key (else EC).
    pub fn is_rsa(&self) -> bool {
        matches!(self.kind, KeyKind::Rsa { .. })
    }

    /// The algorithm this key signs with: RSA keys with PKCS#1 v1.5 or PSS as asked, EC keys
    /// with the curve's ECDSA suite.
    pub fn signature_algorithm(&self, pss: bool) -> SignatureAlgorithm {
        match self.kind {
            KeyKind::Rsa { .. } if pss => SignatureAlgorithm::RsaPssSha256,
            KeyKind::Rsa { .. } => SignatureAlgorithm::RsaPkcs1Sha256,
            KeyKind::Ec(Curve::P256) => SignatureAlgorithm::EcdsaP256Sha256,
            KeyKind::Ec(Curve::P384) => SignatureAlgorithm::EcdsaP384Sha384,
        }
    }

    /// Sign `message` with `alg`, which must be one of [`Pkcs11Key::signature_algorithm`]'s.
    ///
    /// Hashing happens here; the token gets:
    /// - RSA PKCS#1 v1.5: `CKM_RSA_PKCS` over DER `DigestInfo(SHA-256, hash)` (v2.40 Mechanisms
    ///   §2.1.6; RFC 8017 §9.2 EMSA-PKCS1-v1_5 steps 2–3 done by Segel);
    /// - RSA-PSS: `CKM_RSA_PKCS_PSS` over the SHA-256 hash with `CK_RSA_PKCS_PSS_PARAMS`
    ///   { `CKM_SHA256`, `CKG_MGF1_SHA256`, sLen 32 } (§2.1.9, §2.1.10), matching RFC 4055's
    ///   parameters that CMS announces;
    /// - ECDSA: `CKM_ECDSA` over the SHA-256 (P-256) or SHA-384 (P-384) hash (§2.3.6); the
    ///   `r ‖ s` it returns is re-encoded as a DER ECDSA-Sig-Value.
    ///
    /// A lost session or login, or a missing token, is retried once after reconnecting; if that
    /// fails the error is [`KeyError::Unavailable`].
    pub fn sign_with(&self, alg: SignatureAlgorithm, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        if alg != self.signature_algorithm(alg == SignatureAlgorithm::RsaPssSha256) {
            return Err(KeyError::Unsupported(format!(
                "{alg} with a {:?} key",
                self.kind
            )));
        }
        let hash = alg.digest().digest(message);
        let (mechanism, data) = match alg {
            SignatureAlgorithm::RsaPkcs1Sha256 => {
                let mut info = SHA256_DIGEST_INFO_PREFIX.to_vec();
                info.extend_from_slice(&hash);
                (Mechanism::RsaPkcs, info)
            }
            SignatureAlgorithm::RsaPssSha256 => (
                Mechanism::RsaPkcsPss(PkcsPssParams {
                    hash_alg: MechanismType::SHA256,
                    mgf: PkcsMgfType::MGF1_SHA256,
                    s_len: 32u64.into(),
                }),
                hash,
            ),
            SignatureAlgorithm::EcdsaP256Sha256 | SignatureAlgorithm::EcdsaP384Sha384 => {
                (Mechanism::Ecdsa, hash)
            }
        };
        let raw = self.with_session(|session, key| Ok(session.sign(&mechanism, key, &data)?))?;
        match self.kind {
            KeyKind::Ec(curve) => ecdsa_der(&raw, curve),
            KeyKind::Rsa { modulus_len } if raw.len() == modulus_len => Ok(raw),
            KeyKind::Rsa { modulus_len } => Err(KeyError::Signing(format!(
                "the token returned a {}-byte RSA signature for a {modulus_len}-byte modulus",
                raw.len()
            ))),
        }
    }

    /// Ready to sign: the token is present under its label, a session is logged in, and the key
    /// is still there. A lost login or session is re-established once (as for signing); when
    /// that fails the error is [`KeyError::Unavailable`]. For readiness probes.
    pub fn health(&self) -> Result<(), KeyError> {
        self.with_session(|session, key| {
            let info = self
                .ctx
                .get_token_info(session.get_session_info()?.slot_id())?;
            if info.label() != self.cfg.token_label {
                return Err(Fault::Lost(format!(
                    "the slot now holds token {:?}",
                    info.label()
                )));
            }
            if !matches!(
                session.get_session_info()?.session_state(),
                SessionState::RoUser | SessionState::RwUser
            ) {
                return Err(Fault::Lost("the session is not logged in".into()));
            }
            session.get_attributes(key, &[AttributeType::KeyType])?;
            Ok(())
        })
    }

    /// Run `op` with a logged-in session and the key handle; on a lost session, login or token,
    /// reconnect once and run it again.
    fn with_session<T>(
        &self,
        op: impl Fn(&Session, ObjectHandle) -> Result<T, Fault>,
    ) -> Result<T, KeyError> {
        let token = &self.cfg.token_label;
        if self.pin_refused.load(Ordering::Relaxed) {
            return Err(KeyError::Unavailable(format!(
                "PKCS#11 token {token:?} refused the user PIN earlier; not trying it again"
            )));
        }
        let generation = self.pool.generation();
        let cause = match self.attempt(&op) {
            Ok(v) => return Ok(v),
            Err(Fault::Lost(why)) => why,
            Err(Fault::Pin(why)) => {
                self.pin_refused.store(true, Ordering::Relaxed);
                refuse_pin(&self.cfg);
                return Err(Fault::Pin(why).into_key_error(token));
            }
            Err(other) => return Err(other.into_key_error(token)),
        };
        tracing::warn!(token = %token, cause = %cause, "PKCS#11 session lost; reconnecting");
        if let Err(f) = self.reconnect(generation) {
            if let Fault::Pin(_) = f {
                self.pin_refused.store(true, Ordering::Relaxed);
                refuse_pin(&self.cfg);
            }
            return Err(KeyError::Unavailable(format!(
                "PKCS#11 token {token:?} unreachable ({cause}); reconnecting failed: {}",
                f.message()
            )));
        }
        self.attempt(&op).map_err(|f| match f {
            Fault::Lost(why) => KeyError::Unavailable(format!(
                "PKCS#11 token {token:?} unreachable ({cause}); after reconnecting: {why}"
            )),
            other => other.into_key_error(token),
        })
    }

    fn attempt<T>(
        &self,
        op: &impl Fn(&Session, ObjectHandle) -> Result<T, Fault>,
    ) -> Result<T, Fault> {
        let target = *self.target.read().unwrap_or_else(PoisonError::into_inner);
        let mut lease = self.pool.lease();
        let session = match lease.session.take() {
            Some(s) => s,
            None => open_session(&self.ctx, target.slot, &self.cfg.pin, false)?,
        };
        let result = op(&session, target.key);
        lease.session = Some(session);
        if matches!(result, Err(Fault::Lost(_))) {
            lease.discard();
        }
        result
    }

    /// Find the token and the key again (the slot and handles may have changed), log in, check
    /// that the key is still the one whose public key we hold, and renew the pool. Skipped when
    /// another thread already reconnected after `seen_generation`.
    #[tracing::instrument(skip_all, fields(token = %self.cfg.token_label))]
    fn reconnect(&self, seen_generation: u64) -> Result<(), Fault> {
        let _one_at_a_time = lock(&self.reconnecting);
        if self.pool.generation() != seen_generation {
            return Ok(());
        }
        let slot = find_slot(&self.ctx, &self.cfg.token_label)?;
        let session = open_session(&self.ctx, slot, &self.cfg.pin, false)?;
        let key = find_private_key(&session, &self.cfg)?;
        let (kind, public) = private_key_facts(&session, key)?;
        let public = match public {
            Some(p) => Some(p),
            None => find_public_elsewhere(&session, &self.cfg, kind)?,
        };
        match (kind, public) {
            (k, Some(p)) if k == self.kind && p == self.public => {}
            (KeyKind::Ec(curve), None) if kind == self.kind => {
                prove_possession(&session, key, curve, &self.public)?
            }
            _ => {
                return Err(Fault::Lost(
                    "the token now holds a different key under this label/id".into(),
                ));
            }
        }
        *self.target.write().unwrap_or_else(PoisonError::into_inner) = Target { slot, key };
        self.pool.replace_all(session);
        tracing::info!(token = %self.cfg.token_label, "PKCS#11 session re-established");
        Ok(())
    }
}

fn key_template(class: ObjectClass, cfg_label: Option<&str>, id: Option<&[u8]>) -> Vec<Attribute> {
    let mut t = vec![Attribute::Class(class)];
    if let Some(label) = cfg_label {
        t.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = id {
        t.push(Attribute::Id(id.to_vec()));
    }
    t
}

fn find_private_key(session: &Session, cfg: &Pkcs11Config) -> Result<ObjectHandle, Fault> {
    let template = key_template(
        ObjectClass::PRIVATE_KEY,
        cfg.key_label.as_deref(),
        cfg.key_id.as_deref(),
    );
    let found = session.find_objects(&template)?;
    let what = || {
        let mut w = Vec::new();
        if let Some(l) = &cfg.key_label {
            w.push(format!("label {l:?}"));
        }
        if let Some(id) = &cfg.key_id {
            w.push(format!("id {}", hex(id)));
        }
        w.join(" and ")
    };
    match found.as_slice() {
        [key] => Ok(*key),
        [] => Err(Fault::Lost(format!(
            "no private key with {} on the token",
            what()
        ))),
        more => Err(Fault::Other(KeyError::Unsupported(format!(
            "{} private keys have {}; give the key id as well",
            more.len(),
            what()
        )))),
    }
}

/// The public key from a public key object, or a certificate object, sharing the private key's
/// `CKA_ID` (or its label when no id is configured).
fn find_public_elsewhere(
    session: &Session,
    cfg: &Pkcs11Config,
    kind: KeyKind,
) -> Result<Option<Vec<u8>>, Fault> {
    let (label, id) = match &cfg.key_id {
        Some(id) => (None, Some(id.as_slice())),
        None => (cfg.key_label.as_deref(), None),
    };
    if let [handle] = session
        .find_objects(&key_template(ObjectClass::PUBLIC_KEY, label, id))?
        .as_slice()
        && let Some(p) = public_object_key(session, *handle, kind)?
    {
        return Ok(Some(p));
    }
    for cert in session.find_objects(&key_template(ObjectClass::CERTIFICATE, label, id))? {
        let attrs = session.get_attributes(cert, &[AttributeType::Value])?;
        if let Some(p) = attr_bytes(&attrs, AttributeType::Value)
            .and_then(|der| certificate_public_key(der).ok())
        {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// Sign a random challenge with `CKM_ECDSA` and verify it under `public` (an uncompressed point).
fn prove_possession(
    session: &Session,
    key: ObjectHandle,
    curve: Curve,
    public: &[u8],
) -> Result<(), Fault> {
    use ring::rand::SecureRandom;
    let mut challenge = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut challenge)
        .map_err(|_| KeyError::Signing("no randomness for the key check".into()))?;
    let (digest, verify_alg): (_, &dyn ring::signature::VerificationAlgorithm) = match curve {
        Curve::P256 => (
            super::DigestAlgorithm::Sha256,
            &ring::signature::ECDSA_P256_SHA256_ASN1,
        ),
        Curve::P384 => (
            super::DigestAlgorithm::Sha384,
            &ring::signature::ECDSA_P384_SHA384_ASN1,
        ),
    };
    let raw = session.sign(&Mechanism::Ecdsa, key, &digest.digest(&challenge))?;
    let sig = ecdsa_der(&raw, curve)?;
    ring::signature::UnparsedPublicKey::new(verify_alg, public)
        .verify(&challenge, &sig)
        .map_err(|_| Fault::Other(KeyError::CertificateMismatch))
}

/// Refuse early when the token lacks the mechanism this key will need (`CKM_RSA_PKCS_PSS` is
/// checked by [`Pkcs11Signer::open`] when PSS is asked for).
fn check_mechanisms(ctx: &Pkcs11, slot: Slot, kind: KeyKind) -> Result<(), Fault> {
    let needed = match kind {
        KeyKind::Rsa { .. } => MechanismType::RSA_PKCS,
        KeyKind::Ec(_) => MechanismType::ECDSA,
    };
    require_mechanism(ctx, slot, needed)
}

fn require_mechanism(ctx: &Pkcs11, slot: Slot, needed: MechanismType) -> Result<(), Fault> {
    if ctx.get_mechanism_list(slot)?.contains(&needed) {
        Ok(())
    } else {
        Err(KeyError::Unsupported(format!("the token does not offer {needed}")).into())
    }
}

// ---------------------------------------------------------------------------------------------
// Signer
// ---------------------------------------------------------------------------------------------

/// A [`Signer`] whose key lives in a PKCS#11 token.
///
/// `Send + Sync`: signing calls from several threads each borrow their own session.
pub struct Pkcs11Signer {
    key: Arc<Pkcs11Key>,
    algorithm: SignatureAlgorithm,
    chain: Vec<Vec<u8>>,
}

impl fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Signer")
            .field("key", &self.key)
            .field("algorithm", &self.algorithm)
            .field("certificates", &self.chain.len())
            .finish()
    }
}

impl Pkcs11Signer {
    /// Open the key described by `cfg` and pair it with `chain` (signer's certificate first).
    ///
    /// RSA keys sign with PKCS#1 v1.5, or RSA-PSS when `pss`; EC keys with ECDSA on their curve.
    /// The first certificate must carry the token key's public key, or the key is refused with
    /// [`KeyError::CertificateMismatch`] before anything is signed.
    #[tracing::instrument(skip_all, fields(token = %cfg.token_label))]
    pub fn open(cfg: Pkcs11Config, chain: Vec<Vec<u8>>, pss: bool) -> Result<Self, KeyError> {
        let leaf = chain
            .first()
            .ok_or_else(|| KeyError::Certificate("no certificate given for the key".into()))?;
        let leaf_public = certificate_public_key(leaf)?;
        let key = Pkcs11Key::open_inner(cfg, Some(&leaf_public))?;
        if key.public != leaf_public {
            return Err(KeyError::CertificateMismatch);
        }
        if pss && key.is_rsa() {
            let slot = key
                .target
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .slot;
            require_mechanism(&key.ctx, slot, MechanismType::RSA_PKCS_PSS)
                .map_err(|f| f.into_key_error(&key.cfg.token_label))?;
        }
        Ok(Pkcs11Signer {
            algorithm: key.signature_algorithm(pss),
            key,
            chain,
        })
    }

    /// The token key, e.g. for [`Pkcs11RcgenKey::new`].
    pub fn key(&self) -> &Arc<Pkcs11Key> {
        &self.key
    }

    /// See [`Pkcs11Key::health`].
    pub fn health(&self) -> Result<(), KeyError> {
        self.key.health()
    }
}

impl Signer for Pkcs11Signer {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    fn certificate_chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.key.sign_with(self.algorithm, message)
    }

    fn max_signature_len(&self) -> usize {
        match self.key.kind {
            KeyKind::Rsa { modulus_len } => modulus_len,
            // DER ECDSA-Sig-Value: SEQUENCE { INTEGER r, INTEGER s }, each up to n+1 bytes.
            KeyKind::Ec(Curve::P256) => 72,
            KeyKind::Ec(Curve::P384) => 104,
        }
    }

    fn health(&self) -> Result<(), KeyError> {
        self.key.health()
    }
}

// ---------------------------------------------------------------------------------------------
// Key generation
// ---------------------------------------------------------------------------------------------

/// Generate a key pair inside the token of `cfg` and return its public key as DER
/// SubjectPublicKeyInfo.
///
/// `C_GenerateKeyPair` (v2.40 base §5.14) with `CKM_EC_KEY_PAIR_GEN` (Mechanisms §2.3.5) or
/// `CKM_RSA_PKCS_KEY_PAIR_GEN` (§2.1.4, e = 65537). Both halves are token objects carrying
/// `label` and `id`; the private key is `CKA_PRIVATE`, `CKA_SENSITIVE`, not `CKA_EXTRACTABLE`,
/// and may only `CKA_SIGN`. `cfg.key_label`/`key_id` are not used; a key that already has this
/// label or id is an error.
#[tracing::instrument(skip_all, fields(token = %cfg.token_label, label = %label))]
pub fn generate_key(
    cfg: &Pkcs11Config,
    label: &str,
    id: &[u8],
    alg: KeyAlgorithm,
) -> Result<Vec<u8>, KeyError> {
    let ctx = context(&cfg.module)?;
    let token = &cfg.token_label;
    let generated = (|| {
        let slot = find_slot(&ctx, token)?;
        let session = open_session(&ctx, slot, &cfg.pin, true)?;
        for template in [
            key_template(ObjectClass::PRIVATE_KEY, Some(label), None),
            key_template(ObjectClass::PRIVATE_KEY, None, Some(id)),
        ] {
            if !session.find_objects(&template)?.is_empty() {
                return Err(Fault::Other(KeyError::Unsupported(format!(
                    "the token already holds a private key labelled {label:?} or with id {}",
                    hex(id)
                ))));
            }
        }
        let common = |private: bool| {
            vec![
                Attribute::Token(true),
                Attribute::Private(private),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.to_vec()),
            ]
        };
        let mut public_t = common(false);
        public_t.push(Attribute::Verify(true));
        let mut private_t = common(true);
        private_t.extend([
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Derive(false),
            Attribute::Unwrap(false),
        ]);
        let (mechanism, kind) = match alg {
            KeyAlgorithm::P256 | KeyAlgorithm::P384 => {
                let curve = if alg == KeyAlgorithm::P256 {
                    Curve::P256
                } else {
                    Curve::P384
                };
                let params = curve
                    .oid()
                    .to_der()
                    .map_err(|e| KeyError::Format(format!("curve OID: {e}")))?;
                public_t.push(Attribute::EcParams(params));
                (Mechanism::EccKeyPairGen, KeyKind::Ec(curve))
            }
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 => {
                let bits: u64 = if alg == KeyAlgorithm::Rsa2048 {
                    2048
                } else {
                    3072
                };
                public_t.push(Attribute::ModulusBits(bits.into()));
                public_t.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                (
                    Mechanism::RsaPkcsKeyPairGen,
                    KeyKind::Rsa {
                        modulus_len: (bits / 8) as usize,
                    },
                )
            }
        };
        let (public, _private) = session.generate_key_pair(&mechanism, &public_t, &private_t)?;
        let bits = public_object_key(&session, public, kind)?.ok_or_else(|| {
            KeyError::Unsupported("the generated public key has no readable key value".into())
        })?;
        Ok(spki_der(kind, &bits)?)
    })();
    generated.map_err(|f| f.into_key_error(token))
}

/// Destroy the key pair labelled `label` with `CKA_ID` `id` (both halves), as after an
/// enrolment that failed once the key was generated, so that a retry can generate it again.
/// Returns how many objects were destroyed.
#[tracing::instrument(skip_all, fields(token = %cfg.token_label, label = %label))]
pub fn destroy_key(cfg: &Pkcs11Config, label: &str, id: &[u8]) -> Result<usize, KeyError> {
    let ctx = context(&cfg.module)?;
    let token = &cfg.token_label;
    let destroyed = (|| {
        let slot = find_slot(&ctx, token)?;
        let session = open_session(&ctx, slot, &cfg.pin, true)?;
        let mut n = 0;
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            for object in session.find_objects(&key_template(class, Some(label), Some(id)))? {
                session.destroy_object(object)?;
                n += 1;
            }
        }
        Ok::<_, Fault>(n)
    })();
    destroyed.map_err(|f| f.into_key_error(token))
}

// ---------------------------------------------------------------------------------------------
// rcgen
// ---------------------------------------------------------------------------------------------

/// A token key as an rcgen remote key, for CSRs (`CertificateParams::serialize_request`) and
/// certificates (`signed_by` with it as issuer, or `self_signed`).
///
/// RSA keys sign with PKCS#1 v1.5 SHA-256 (rcgen's `PKCS_RSA_SHA256`), EC keys with ECDSA on
/// their curve (`PKCS_ECDSA_P256_SHA256`, `PKCS_ECDSA_P384_SHA384`).
#[derive(Debug, Clone)]
pub struct Pkcs11RcgenKey {
    key: Arc<Pkcs11Key>,
}

impl Pkcs11RcgenKey {
    /// Open the key described by `cfg` (no certificate needed).
    pub fn open(cfg: Pkcs11Config) -> Result<Self, KeyError> {
        Ok(Self::new(Pkcs11Key::open(cfg)?))
    }

    /// Wrap an open key, e.g. [`Pkcs11Signer::key`].
    pub fn new(key: Arc<Pkcs11Key>) -> Self {
        Pkcs11RcgenKey { key }
    }

    /// The key's signature algorithm as Segel names it.
    pub fn signature_algorithm(&self) -> SignatureAlgorithm {
        self.key.signature_algorithm(false)
    }
}

impl rcgen::PublicKeyData for Pkcs11RcgenKey {
    fn der_bytes(&self) -> &[u8] {
        &self.key.public
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self.key.kind {
            KeyKind::Rsa { .. } => &rcgen::PKCS_RSA_SHA256,
            KeyKind::Ec(Curve::P256) => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyKind::Ec(Curve::P384) => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }
}

impl rcgen::SigningKey for Pkcs11RcgenKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.key
            .sign_with(self.signature_algorithm(), msg)
            .map_err(|e| {
                tracing::error!(error = %e, "PKCS#11 signing for rcgen failed");
                rcgen::Error::RemoteKeyError
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ckr_names() {
        assert_eq!(ckr_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(ckr_name(RvError::UserNotLoggedIn), "CKR_USER_NOT_LOGGED_IN");
    }

    #[test]
    fn ec_point_accepts_wrapped_and_bare() {
        let mut bare = vec![0x04];
        bare.extend([7u8; 64]);
        let mut wrapped = vec![0x04, 65];
        wrapped.extend(&bare);
        assert_eq!(ec_point(&bare, Curve::P256).unwrap(), bare);
        assert_eq!(ec_point(&wrapped, Curve::P256).unwrap(), bare);
        assert!(ec_point(&wrapped, Curve::P384).is_err());
    }

    #[test]
    fn ecdsa_raw_to_der() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r needs a leading zero in DER
        raw[63] = 1;
        let der = ecdsa_der(&raw, Curve::P256).unwrap();
        assert_eq!(&der[..5], &[0x30, 0x26, 0x02, 0x21, 0x00]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 0x01, 0x01]);
        assert!(ecdsa_der(&raw[..63], Curve::P256).is_err());
    }

    #[test]
    fn digest_info_prefix_is_sha256() {
        // DigestInfo = SEQUENCE { SEQUENCE { OID 2.16.840.1.101.3.4.2.1, NULL }, OCTET STRING }
        let mut info = SHA256_DIGEST_INFO_PREFIX.to_vec();
        info.extend([0u8; 32]);
        let parsed = x509_parser::der_parser::parse_der(&info).unwrap().1;
        let seq = parsed.as_sequence().unwrap();
        let alg = seq[0].as_sequence().unwrap();
        assert_eq!(
            alg[0].as_oid().unwrap().to_id_string(),
            "2.16.840.1.101.3.4.2.1"
        );
        assert_eq!(seq[1].as_slice().unwrap().len(), 32);
    }

    #[test]
    fn pin_debug_is_opaque() {
        let cfg = Pkcs11Config {
            module: "/nonexistent.so".into(),
            token_label: "t".into(),
            key_label: Some("k".into()),
            key_id: None,
            pin: Pin::new("31415926"),
        };
        assert!(!format!("{cfg:?}").contains("31415926"));
    }
}

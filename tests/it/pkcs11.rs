//! PKCS#11 through SoftHSM2: keys generated inside a private token, certificates for them from
//! the development issuing CA, PAdES signatures (RSA PKCS#1 v1.5, RSA-PSS, ECDSA P-256/P-384)
//! judged by the validators, concurrent signing, certificate mismatch, PIN errors, a lost login,
//! a vanished token, and CSRs that openssl verifies.
//!
//! Everything runs in ONE test function: SoftHSM2 reads SOFTHSM2_CONF (which names the token
//! directory) once, in the process's first C_Initialize, and the environment and the PKCS#11
//! login state are shared by every thread of the test binary.

use crate::common::*;
use crate::sign_interop::assert_validators_accept;
use crate::validators;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::{Session, SessionState};
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, CrlDistributionPoint, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PublicKeyData,
};
use segel::keys::devpki::KeyAlgorithm;
use segel::keys::pkcs11::{
    Pin, PinSource, Pkcs11Config, Pkcs11Key, Pkcs11RcgenKey, Pkcs11Signer, generate_key,
};
use segel::keys::{
    KeyError, SignatureAlgorithm, Signer, certificate_public_key, load_certificates_pem,
};
use segel::pdf::{SignRequest, sign_pdf};
use std::path::{Path, PathBuf};
use std::process::Command;

const TOKEN: &str = "segel-test";
const SO_PIN: &str = "1234";
const USER_PIN: &str = "5678";
const PIN_VAR: &str = "SEGEL_TEST_PKCS11_PIN";

/// Where Debian/Ubuntu (and a source build) put the SoftHSM2 module.
pub(crate) fn softhsm_module() -> PathBuf {
    let candidates = [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("softhsm2-util is installed but libsofthsm2.so is in none of {candidates:?}")
        })
}

pub(crate) fn softhsm_util(conf: &Path, args: &[&str]) -> String {
    let out = Command::new("softhsm2-util")
        .args(args)
        .env("SOFTHSM2_CONF", conf)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "softhsm2-util {args:?}: {text}");
    text
}

fn unavailable(r: Result<impl std::fmt::Debug, KeyError>, what: &str) -> String {
    match r {
        Err(KeyError::Unavailable(m)) => m,
        other => panic!("{what}: expected KeyError::Unavailable, got {other:?}"),
    }
}

/// The development PKI's issuing CA, with its software key.
fn issuing_ca() -> Issuer<'static, KeyPair> {
    let key =
        KeyPair::from_pem(&String::from_utf8(read("keys-example/issuing-ca.key.pem")).unwrap())
            .unwrap();
    Issuer::from_ca_cert_pem(
        &String::from_utf8(read("keys-example/issuing-ca.pem")).unwrap(),
        key,
    )
    .unwrap()
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "ID");
    dn.push(
        DnType::OrganizationName,
        "Kementerian Contoh Republik Indonesia",
    );
    dn.push(DnType::CommonName, cn);
    dn
}

/// A signing certificate for the token key `spki`, like `segel dev-pki`'s officials.
fn issue(spki: &[u8], cn: &str, issuer: &Issuer<'_, KeyPair>) -> Vec<u8> {
    let public = rcgen::SubjectPublicKeyInfo::from_der(spki).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(cn);
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(365);
    p.key_identifier_method = KeyIdMethod::Sha256;
    p.use_authority_key_identifier_extension = true;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::ContentCommitment,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 36]),
        ExtendedKeyUsagePurpose::EmailProtection,
    ];
    p.crl_distribution_points = vec![CrlDistributionPoint {
        uris: vec!["http://127.0.0.1:8080/crl/issuing-ca.crl".into()],
    }];
    p.signed_by(&public, issuer).unwrap().der().to_vec()
}

/// [leaf, issuing CA, root CA].
fn chain(leaf: Vec<u8>) -> Vec<Vec<u8>> {
    let mut c = vec![leaf];
    c.extend(load_certificates_pem(&read("keys-example/issuing-ca.pem")).unwrap());
    c.extend(load_certificates_pem(&read("keys-example/root-ca.pem")).unwrap());
    c
}

/// Check `sig` over `msg` with the public key of `cert` (ring, not the token).
fn verify_with_cert(alg: SignatureAlgorithm, cert: &[u8], msg: &[u8], sig: &[u8]) {
    use ring::signature::{
        ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1, RSA_PKCS1_2048_8192_SHA256,
        RSA_PSS_2048_8192_SHA256, UnparsedPublicKey, VerificationAlgorithm,
    };
    let v: &dyn VerificationAlgorithm = match alg {
        SignatureAlgorithm::RsaPkcs1Sha256 => &RSA_PKCS1_2048_8192_SHA256,
        SignatureAlgorithm::RsaPssSha256 => &RSA_PSS_2048_8192_SHA256,
        SignatureAlgorithm::EcdsaP256Sha256 => &ECDSA_P256_SHA256_ASN1,
        SignatureAlgorithm::EcdsaP384Sha384 => &ECDSA_P384_SHA384_ASN1,
    };
    UnparsedPublicKey::new(v, certificate_public_key(cert).unwrap())
        .verify(msg, sig)
        .unwrap_or_else(|_| panic!("{alg} signature does not verify under the certificate"));
}

/// `openssl pkey` reads the DER SubjectPublicKeyInfo and describes it.
fn openssl_describes_spki(dir: &Path, name: &str, spki: &[u8], expect: &str) {
    if !validators::require("openssl") {
        return;
    }
    let path = write(dir, name, spki);
    let out = Command::new("openssl")
        .args(["pkey", "-pubin", "-inform", "DER", "-noout", "-text", "-in"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(expect),
        "{name}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A read-write session on the test token through a second `cryptoki` context: the same module
/// in the same process, so it shares the token's login state with the signers.
fn second_session(module: &Path) -> Session {
    let other = Pkcs11::new(module).unwrap();
    match other.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        r => panic!("the module is already initialized in this process: {r:?}"),
    }
    let slot = other
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| {
            other
                .get_token_info(*s)
                .map(|i| i.label() == TOKEN)
                .unwrap_or(false)
        })
        .unwrap();
    other.open_rw_session(slot).unwrap()
}

#[test]
fn softhsm2_token_keys_sign_pades() {
    if !validators::require("softhsm2-util") {
        return;
    }
    let module = softhsm_module();
    let dir = tempdir();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = write(
        dir.path(),
        "softhsm2.conf",
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokens.display()
        )
        .as_bytes(),
    );
    // SAFETY: set_var races only with concurrent environment reads outside std's lock (C code
    // calling getenv). No other test of this binary loads a PKCS#11 module, and these variables
    // are set before this process's first C_Initialize, the only place SoftHSM2 reads its own.
    unsafe {
        std::env::set_var("SOFTHSM2_CONF", &conf);
        std::env::set_var(PIN_VAR, USER_PIN);
    }
    softhsm_util(
        &conf,
        &[
            "--init-token",
            "--free",
            "--label",
            TOKEN,
            "--so-pin",
            SO_PIN,
            "--pin",
            USER_PIN,
        ],
    );

    let pin_file = write(dir.path(), "user.pin", format!("{USER_PIN}\n").as_bytes());
    let cfg = |key_label: &str| Pkcs11Config {
        module: module.clone(),
        token_label: TOKEN.into(),
        key_label: Some(key_label.into()),
        key_id: None,
        pin: Pin::from_source(&PinSource::File(pin_file.clone())).unwrap(),
    };

    // --- PIN handling, first: the login state is per process and token, so once logged in the
    // token would never be asked about a wrong PIN again.
    let wrong = Pkcs11Config {
        pin: Pin::new("0000"),
        ..cfg("ec")
    };
    assert!(
        !format!("{wrong:?}").contains("0000"),
        "the PIN must not appear in Debug output"
    );
    let m = unavailable(
        generate_key(&wrong, "ec", &[1], KeyAlgorithm::P256),
        "generate_key with a wrong PIN",
    );
    assert!(m.contains("CKR_PIN_INCORRECT"), "{m}");
    let m = unavailable(Pkcs11Key::open(wrong.clone()), "open with a wrong PIN");
    assert!(m.contains("PIN") && m.contains("CKR_PIN_INCORRECT"), "{m}");
    // The refused PIN is remembered: presenting it again (every readiness probe would) could
    // lock a real token's PIN, so the token is not asked again.
    let m = unavailable(Pkcs11Key::open(wrong), "the same wrong PIN again");
    assert!(m.contains("not presenting the same PIN again"), "{m}");
    let env_pin = Pin::from_source(&PinSource::Env(PIN_VAR.into())).unwrap();
    assert!(!format!("{env_pin:?}").contains(USER_PIN));
    let m = unavailable(
        Pin::from_source(&PinSource::Env("SEGEL_TEST_PIN_NOT_SET".into())),
        "unset PIN variable",
    );
    assert!(m.contains("SEGEL_TEST_PIN_NOT_SET"), "{m}");
    unavailable(
        Pin::from_source(&PinSource::File(dir.path().join("missing.pin"))),
        "missing PIN file",
    );
    let m = unavailable(
        Pkcs11Key::open(Pkcs11Config {
            token_label: "no-such-token".into(),
            ..cfg("ec")
        }),
        "no token",
    );
    assert!(m.contains("no slot holds a token"), "{m}");

    // --- Key generation inside the token; the SPKIs are read back by openssl.
    let ec_spki = generate_key(&cfg("x"), "ec", &[1], KeyAlgorithm::P256).unwrap();
    let rsa_spki = generate_key(&cfg("x"), "rsa", &[2], KeyAlgorithm::Rsa2048).unwrap();
    let p384_spki = generate_key(&cfg("x"), "p384", &[3], KeyAlgorithm::P384).unwrap();
    let rsa3072_spki = generate_key(&cfg("x"), "rsa3072", &[4], KeyAlgorithm::Rsa3072).unwrap();
    openssl_describes_spki(dir.path(), "ec.spki.der", &ec_spki, "prime256v1");
    openssl_describes_spki(dir.path(), "p384.spki.der", &p384_spki, "secp384r1");
    openssl_describes_spki(
        dir.path(),
        "rsa.spki.der",
        &rsa_spki,
        "Public-Key: (2048 bit)",
    );
    openssl_describes_spki(
        dir.path(),
        "rsa3072.spki.der",
        &rsa3072_spki,
        "Public-Key: (3072 bit)",
    );
    assert!(
        matches!(
            generate_key(&cfg("x"), "ec", &[9], KeyAlgorithm::P256),
            Err(KeyError::Unsupported(_))
        ),
        "a second key with the same label must be refused"
    );
    let key = Pkcs11Key::open(Pkcs11Config {
        key_label: None,
        key_id: Some(vec![3]),
        ..cfg("x")
    })
    .unwrap();
    assert_eq!(
        key.public_key_der().unwrap(),
        p384_spki,
        "found by CKA_ID, same public key"
    );
    drop(key);

    // --- Certificates from the development issuing CA; PAdES signatures checked by validators.
    let issuer = issuing_ca();
    let ec_chain = chain(issue(&ec_spki, "HSM Official P-256", &issuer));
    let rsa_chain = chain(issue(&rsa_spki, "HSM Official RSA-2048", &issuer));
    let p384_chain = chain(issue(&p384_spki, "HSM Official P-384", &issuer));
    let rsa3072_chain = chain(issue(&rsa3072_spki, "HSM Official RSA-3072", &issuer));
    let cases = [
        (
            "p256",
            "ec",
            &ec_chain,
            false,
            SignatureAlgorithm::EcdsaP256Sha256,
        ),
        (
            "rsa",
            "rsa",
            &rsa_chain,
            false,
            SignatureAlgorithm::RsaPkcs1Sha256,
        ),
        (
            "pss",
            "rsa",
            &rsa_chain,
            true,
            SignatureAlgorithm::RsaPssSha256,
        ),
        (
            "p384",
            "p384",
            &p384_chain,
            false,
            SignatureAlgorithm::EcdsaP384Sha384,
        ),
        (
            "rsa3072-pss",
            "rsa3072",
            &rsa3072_chain,
            true,
            SignatureAlgorithm::RsaPssSha256,
        ),
    ];
    for (name, label, chain, pss, alg) in cases {
        let signer = Pkcs11Signer::open(cfg(label), chain.clone(), pss).unwrap();
        assert_eq!(signer.algorithm(), alg, "{name}");
        assert!(!format!("{signer:?}").contains(USER_PIN));
        let req = SignRequest {
            reason: Some("Disetujui".into()),
            location: Some("Jakarta".into()),
            ..Default::default()
        };
        let signed = sign_pdf(read("fixtures/pdf/letter.pdf"), &signer, &req, &now()).unwrap();
        let out = write(dir.path(), &format!("hsm-{name}.pdf"), &signed.bytes);
        assert_validators_accept(&out, 1, false);
    }

    // --- Concurrent signing: 4 threads × 5 signatures with each of two keys.
    let ec = Pkcs11Signer::open(cfg("ec"), ec_chain.clone(), false).unwrap();
    let pss = Pkcs11Signer::open(cfg("rsa"), rsa_chain.clone(), true).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (ec, pss) = (&ec, &pss);
            s.spawn(move || {
                for i in 0..5 {
                    for signer in [ec as &dyn Signer, pss] {
                        let msg = format!("thread {t} signature {i}").into_bytes();
                        let sig = signer.sign(&msg).unwrap();
                        assert!(sig.len() <= signer.max_signature_len());
                        verify_with_cert(
                            signer.algorithm(),
                            &signer.certificate_chain()[0],
                            &msg,
                            &sig,
                        );
                    }
                }
            });
        }
    });
    ec.health().unwrap();

    // --- A certificate for another key is refused before anything is signed.
    for (label, chain) in [("ec", &rsa_chain), ("rsa", &ec_chain), ("ec", &p384_chain)] {
        let r = Pkcs11Signer::open(cfg(label), chain.clone(), false);
        assert!(
            matches!(r, Err(KeyError::CertificateMismatch)),
            "{label}: {r:?}"
        );
    }
    let siti = load_certificates_pem(&read("keys-example/officials/siti.chain.pem")).unwrap();
    let r = Pkcs11Signer::open(cfg("ec"), siti, false);
    assert!(
        matches!(r, Err(KeyError::CertificateMismatch)),
        "another P-256 key: {r:?}"
    );
    let m = unavailable(Pkcs11Key::open(cfg("no-such-key")), "missing key");
    assert!(m.contains("no private key"), "{m}");

    // --- CSRs signed by the token key (rcgen remote key), verified by openssl, then certified.
    for (label, spki) in [("ec", &ec_spki), ("rsa", &rsa_spki), ("p384", &p384_spki)] {
        let key = Pkcs11RcgenKey::open(cfg(label)).unwrap();
        assert_eq!(key.subject_public_key_info(), *spki);
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = dn(&format!("CSR {label}"));
        let csr = params.serialize_request(&key).unwrap();
        let path = write(
            dir.path(),
            &format!("{label}.csr.pem"),
            csr.pem().unwrap().as_bytes(),
        );
        if validators::require("openssl") {
            let out = Command::new("openssl")
                .args(["req", "-verify", "-noout", "-in"])
                .arg(&path)
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success() && text.contains("verify OK"),
                "openssl req -verify {label}: {text}"
            );
        }
        let cert = CertificateSigningRequestParams::from_der(csr.der())
            .unwrap()
            .signed_by(&issuer)
            .unwrap();
        assert_eq!(certificate_public_key(cert.der()).unwrap(), key.der_bytes());
    }

    // --- An EC key whose public key object is gone: the signer proves possession with a test
    // signature that must verify under the certificate's key.
    {
        let session = second_session(&module);
        let template = [
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(b"p384".to_vec()),
        ];
        let public = session.find_objects(&template).unwrap();
        assert_eq!(public.len(), 1);
        session.destroy_object(public[0]).unwrap();
    }
    // Without a certificate nothing tells the key's public half. (Label and id together: an
    // address this process has not opened yet — keys it has opened are shared, see below.)
    let by_label_and_id = || Pkcs11Config {
        key_id: Some(vec![3]),
        ..cfg("p384")
    };
    let r = Pkcs11Key::open(by_label_and_id());
    assert!(
        matches!(r, Err(KeyError::Unsupported(_))),
        "no public key anywhere: {r:?}"
    );
    let p384 = Pkcs11Signer::open(by_label_and_id(), p384_chain.clone(), false).unwrap();
    let sig = p384.sign(b"no public key object").unwrap();
    verify_with_cert(
        p384.algorithm(),
        &p384_chain[0],
        b"no public key object",
        &sig,
    );
    let mut foreign = load_certificates_pem(&read("fixtures/pki/signer-p384.cert.pem")).unwrap();
    foreign.extend(load_certificates_pem(&read("fixtures/pki/chain.pem")).unwrap());
    let r = Pkcs11Signer::open(cfg("p384"), foreign, false);
    assert!(
        matches!(r, Err(KeyError::CertificateMismatch)),
        "another P-384 key: {r:?}"
    );
    // Once the certificate proved it, the process shares that one key: later openings (the next
    // approval, a readiness probe) get the same key, its sessions and its login.
    let again = Pkcs11Key::open(by_label_and_id()).unwrap();
    assert!(std::sync::Arc::ptr_eq(&again, p384.key()));

    // --- Logged out behind the signers' backs: C_Logout through a second context on the same
    // module logs out every session of this process. The next call logs in again by itself.
    {
        let session = second_session(&module);
        session.logout().unwrap();
        assert_eq!(
            session.get_session_info().unwrap().session_state(),
            SessionState::RwPublic
        );
    }
    let msg = b"after a logout";
    let sig = ec.sign(msg).unwrap();
    verify_with_cert(ec.algorithm(), &ec_chain[0], msg, &sig);
    ec.health().unwrap();
    pss.sign(msg).unwrap();

    // --- An official's key generated in the token through the keystore: the CSR, the imported
    // certificate, the passphrase still required, signing through the HSM.
    {
        use segel::keys::keystore::{FileKeyStore, HsmSpec, KdfParams, LogEvents, Passphrase};
        let store = FileKeyStore::open(dir.path().join("keystore")).unwrap();
        let spec = HsmSpec {
            module: module.clone(),
            token_label: TOKEN.into(),
            pin_env: Some(PIN_VAR.into()),
            pin_file: None,
        };
        let pp = Passphrase::new("kata sandi token");
        let now = time::OffsetDateTime::now_utc();
        let csr = store
            .generate_in_hsm(
                "hani",
                KeyAlgorithm::P256,
                ("Hani Putri", "Direktur", "198801012012012001", "Uji"),
                &spec,
                &pp,
                &KdfParams::insecure_fast(),
                now,
                &LogEvents,
            )
            .unwrap();
        let csr_path = write(dir.path(), "hani.csr.pem", csr.as_bytes());
        let o = Command::new("openssl")
            .args(["req", "-verify", "-noout", "-in"])
            .arg(&csr_path)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let record = store.get("hani").unwrap();
        let spki = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            &record.public_key,
        )
        .unwrap();
        let leaf = issue(&spki, "Hani Putri", &issuing_ca());
        let anchors = vec![
            load_certificates_pem(&read("keys-example/root-ca.pem"))
                .unwrap()
                .remove(0),
        ];
        store
            .import_certificate("hani", chain(leaf), &anchors, now, &LogEvents)
            .unwrap();
        assert!(matches!(
            store.unlock_signer(
                "hani",
                &Passphrase::new("salah"),
                false,
                now,
                &[],
                &LogEvents
            ),
            Err(KeyError::WrongPassphrase)
        ));
        let signer = store
            .unlock_signer("hani", &pp, false, now, &[], &LogEvents)
            .unwrap();
        let signed = sign_pdf(
            read("fixtures/pdf/letter.pdf"),
            signer.as_ref(),
            &SignRequest::default(),
            &crate::common::now(),
        )
        .unwrap();
        let out = write(dir.path(), "hani.pdf", &signed.bytes);
        crate::sign_interop::assert_validators_accept(&out, 1, false);
        let key_id = match store.get("hani").unwrap().location {
            segel::keys::keystore::KeyLocation::Hsm { key_id, .. } => key_id,
            other => panic!("{other:?}"),
        };
        assert!(
            key_id
                .as_ref()
                .is_some_and(|h| h.len() == 16 && h.chars().all(|c| c.is_ascii_hexdigit())),
            "the record keeps the CKA_ID: {key_id:?}"
        );
    }

    // --- A failed enrolment leaves the token as it was: the generated pair can be destroyed
    // and generated again.
    generate_key(&cfg("x"), "half", &[0x42], KeyAlgorithm::P256).unwrap();
    assert_eq!(
        segel::keys::pkcs11::destroy_key(&cfg("x"), "half", &[0x42]).unwrap(),
        2
    );
    unavailable(Pkcs11Key::open(cfg("half")), "a destroyed key");
    generate_key(&cfg("x"), "half", &[0x42], KeyAlgorithm::P256).unwrap();
    {
        // An enrolment whose record cannot be stored (the keystore directory became a file)
        // after the key was generated removes that key, so the retry can generate it again.
        use segel::keys::keystore::{FileKeyStore, HsmSpec, KdfParams, LogEvents, Passphrase};
        let ks = dir.path().join("flaky-keys");
        let store = FileKeyStore::open(&ks).unwrap();
        std::fs::remove_dir(&ks).unwrap();
        std::fs::write(&ks, b"not a directory").unwrap();
        let spec = HsmSpec {
            module: module.clone(),
            token_label: TOKEN.into(),
            pin_env: Some(PIN_VAR.into()),
            pin_file: None,
        };
        let enrol = || {
            store.generate_in_hsm(
                "tono",
                KeyAlgorithm::P256,
                ("Tono", "Kepala Seksi", "198001012005011002", "Uji"),
                &spec,
                &Passphrase::new("kata sandi tono"),
                &KdfParams::insecure_fast(),
                time::OffsetDateTime::now_utc(),
                &LogEvents,
            )
        };
        enrol().unwrap_err();
        unavailable(
            Pkcs11Key::open(cfg("segel-tono")),
            "the key of a failed enrolment",
        );
        std::fs::remove_file(&ks).unwrap();
        std::fs::create_dir(&ks).unwrap();
        enrol().unwrap();
        Pkcs11Key::open(cfg("segel-tono")).unwrap();
    }

    // --- The CLI: `segel keys new --hsm-*` generates the key in the token and writes a CSR;
    // the certificate is imported, the key signs, the signing passphrase changes (the token
    // PIN does not), and the record finds the key by its CKA_ID (by label for old records).
    {
        let ks = dir.path().join("cli-keys");
        let db = format!("sqlite://{}", dir.path().join("cli-audit.db").display());
        let cli = |env: &[(&str, &str)], args: &[&str]| {
            let o = Command::new(env!("CARGO_BIN_EXE_segel"))
                .args(args)
                .env("SEGEL_KEYSTORE", &ks)
                .env("SEGEL_DATABASE_URL", &db)
                .env("SEGEL_INSECURE_FAST_KDF", "1")
                .env("SOFTHSM2_CONF", &conf)
                .env(PIN_VAR, USER_PIN)
                .env_remove("SEGEL_PASSPHRASE")
                .envs(env.iter().copied())
                .current_dir(root())
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            (
                o.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ),
            )
        };
        let ok = |r: (bool, String)| {
            assert!(r.0, "{}", r.1);
            r.1
        };
        let fail = |r: (bool, String)| {
            assert!(!r.0, "{}", r.1);
            r.1
        };
        let module_arg = module.to_str().unwrap();
        let new_args = |id: &str, csr: &str| -> Vec<String> {
            [
                "keys",
                "new",
                "--official",
                id,
                "--algorithm",
                "rsa2048",
                "--name",
                "Rudi Hartono",
                "--title",
                "Kepala Pusat",
                "--nip",
                "197501012000011001",
                "--csr",
                csr,
                "--hsm-module",
                module_arg,
                "--hsm-token",
                TOKEN,
                "--hsm-pin-env",
                PIN_VAR,
            ]
            .map(String::from)
            .to_vec()
        };
        let old_pp = [("SEGEL_PASSPHRASE", "sandi rudi lama")];
        // A CSR that could not be written refuses before any key is generated.
        let missing = dir.path().join("no-such-dir/sari.csr.pem");
        let args = new_args("sari", missing.to_str().unwrap());
        let m = fail(cli(
            &old_pp,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        ));
        assert!(m.contains("no such directory"), "{m}");
        unavailable(Pkcs11Key::open(cfg("segel-sari")), "no key for sari");

        let csr = dir.path().join("rudi.csr.pem");
        let args = new_args("rudi", csr.to_str().unwrap());
        ok(cli(
            &old_pp,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        ));
        let o = Command::new("openssl")
            .args(["req", "-verify", "-noout", "-subject", "-in"])
            .arg(&csr)
            .output()
            .unwrap();
        let text =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{text}");
        assert!(
            text.contains("197501012000011001") && text.contains("Kepala Pusat"),
            "{text}"
        );
        let record_path = ks.join("rudi.json");
        let record = || -> serde_json::Value {
            serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap()
        };
        let r = record();
        assert_eq!(r["location"]["kind"], "hsm");
        assert_eq!(r["location"]["key_label"], "segel-rudi");
        assert!(
            r["location"]["key_id"]
                .as_str()
                .is_some_and(|h| h.len() == 16)
        );
        assert!(!r.to_string().contains("ciphertext"));
        // The CSR names the token key: certify that key, import through the CLI.
        let spki = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            r["public_key"].as_str().unwrap(),
        )
        .unwrap();
        let leaf = issue(&spki, "Rudi Hartono", &issuing_ca());
        let pem: String = chain(leaf)
            .iter()
            .map(|c| segel::keys::devpki::cert_pem(c))
            .collect();
        let chain_path = write(dir.path(), "rudi.chain.pem", pem.as_bytes());
        ok(cli(
            &[],
            &[
                "keys",
                "import-cert",
                "rudi",
                chain_path.to_str().unwrap(),
                "--trust",
                "keys-example/root-ca.pem",
            ],
        ));
        let list = ok(cli(&[], &["keys", "list"]));
        assert!(
            list.lines()
                .any(|l| l.starts_with("rudi") && l.contains("hsm") && l.contains("active")),
            "{list}"
        );
        let sign = |pp: &str, name: &str| {
            let out = dir.path().join(name);
            let r = cli(
                &[("SEGEL_PASSPHRASE", pp)],
                &[
                    "sign",
                    "fixtures/pdf/letter.pdf",
                    "-o",
                    out.to_str().unwrap(),
                    "--official",
                    "rudi",
                ],
            );
            (r, out)
        };
        let (r, out) = sign("sandi rudi lama", "rudi.pdf");
        ok(r);
        assert_validators_accept(&out, 1, false);

        // The signing passphrase of an HSM key changes; nothing else in the record does.
        let before = record();
        let m = fail(cli(
            &[
                ("SEGEL_PASSPHRASE", "bukan sandinya"),
                ("SEGEL_NEW_PASSPHRASE", "sandi rudi baru"),
            ],
            &["keys", "passphrase", "rudi"],
        ));
        assert!(m.contains("wrong passphrase"), "{m}");
        assert_eq!(record(), before);
        ok(cli(
            &[
                ("SEGEL_PASSPHRASE", "sandi rudi lama"),
                ("SEGEL_NEW_PASSPHRASE", "sandi rudi baru"),
            ],
            &["keys", "passphrase", "rudi"],
        ));
        let after = record();
        assert_ne!(before["passphrase_verifier"], after["passphrase_verifier"]);
        for k in ["location", "public_key", "chain_pem"] {
            assert_eq!(before[k], after[k], "{k}");
        }
        let m = fail(sign("sandi rudi lama", "old.pdf").0);
        assert!(m.contains("wrong passphrase"), "{m}");
        ok(sign("sandi rudi baru", "new.pdf").0);

        // Found by CKA_ID, whatever the label says ...
        let mut r = record();
        r["location"]["key_label"] = "segel-renamed".into();
        std::fs::write(&record_path, r.to_string()).unwrap();
        ok(sign("sandi rudi baru", "by-id.pdf").0);
        // ... and by label in a record without an id; a record with neither finds nothing.
        r["location"]
            .as_object_mut()
            .unwrap()
            .remove("key_id")
            .unwrap();
        std::fs::write(&record_path, r.to_string()).unwrap();
        fail(sign("sandi rudi baru", "no-key.pdf").0);
        r["location"]["key_label"] = "segel-rudi".into();
        std::fs::write(&record_path, r.to_string()).unwrap();
        ok(sign("sandi rudi baru", "by-label.pdf").0);
    }

    // --- The service with an official whose key is in the token: approving works while the
    // token is there; once it is gone, /readyz fails and approving answers 503, changing nothing.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let svc_dir = dir.path().join("svc");
    std::fs::create_dir_all(svc_dir.join("keys")).unwrap();
    std::fs::copy(
        dir.path().join("keystore/hani.json"),
        svc_dir.join("keys/hani.json"),
    )
    .unwrap();
    let svc_cfg = crate::service::config(&crate::db::sqlite_url(&svc_dir), &svc_dir);
    let (base, app_key, token, doc2) = rt.block_on(async {
        let app = segel::service::Application::build(svc_cfg).await.unwrap();
        let system = segel::workflow::Actor { kind: segel::audit::ActorKind::System, id: "test".into() };
        app.state.wf.add_official("hani", "sandi-masuk-hani", "Hani Putri", "Direktur", "198801012012012001", None, &["signer".into()], Some("hani"), &system).await.unwrap();
        let base = format!("http://127.0.0.1:{}", app.port);
        tokio::spawn(async move { app.run().await });
        let creds: serde_json::Value = serde_json::from_slice(&std::fs::read(svc_dir.join("demo-credentials.json")).unwrap()).unwrap();
        let key = creds["app_key"].as_str().unwrap().to_string();
        let c = reqwest::Client::new();
        let meta = serde_json::json!({"title": "t", "letter_number": "n", "steps": [{"official": "hani", "action": "sign", "placement": {"anchor": "${ttd}"}}]});
        let submit = || {
            let form = reqwest::multipart::Form::new()
                .part("file", reqwest::multipart::Part::bytes(read("fixtures/pdf/letter.pdf")).file_name("l.pdf"))
                .text("metadata", meta.to_string());
            c.post(format!("{base}/api/v1/documents")).bearer_auth(&key).multipart(form).send()
        };
        let d1: serde_json::Value = submit().await.unwrap().json().await.unwrap();
        let d2: serde_json::Value = submit().await.unwrap().json().await.unwrap();
        let login: serde_json::Value = c.post(format!("{base}/api/v1/login")).json(&serde_json::json!({"username": "hani", "password": "sandi-masuk-hani"})).send().await.unwrap().json().await.unwrap();
        let token = login["token"].as_str().unwrap().to_string();
        let r = c.post(format!("{base}/api/v1/documents/{}/steps/1/approve", d1["id"].as_str().unwrap())).bearer_auth(&token).json(&serde_json::json!({"passphrase": "kata sandi token"})).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        assert_eq!(c.get(format!("{base}/readyz")).send().await.unwrap().status(), 200);
        (base, key, token, d2["id"].as_str().unwrap().to_string())
    });

    // --- The token disappears: signing and the health check report Unavailable (→ 503).
    softhsm_util(&conf, &["--delete-token", "--token", TOKEN]);
    let m = unavailable(ec.sign(b"token gone"), "sign without the token");
    assert!(m.contains(TOKEN), "{m}");
    unavailable(ec.health(), "health without the token");
    unavailable(pss.sign(b"token gone"), "RSA sign without the token");
    unavailable(
        Pkcs11Signer::open(cfg("ec"), ec_chain.clone(), false),
        "open without the token",
    );
    rt.block_on(async {
        let c = reqwest::Client::new();
        let r = c.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 503);
        let body = r.text().await.unwrap();
        assert!(body.contains("HSM key hani"), "{body}");
        let r = c
            .post(format!("{base}/api/v1/documents/{doc2}/steps/1/approve"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"passphrase": "kata sandi token"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "key_unavailable");
        let d: serde_json::Value = c
            .get(format!("{base}/api/v1/documents/{doc2}"))
            .bearer_auth(&app_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(d["status"], "in_review", "nothing half-written");
        assert_eq!(d["current_sha256"], d["original_sha256"]);
    });
}

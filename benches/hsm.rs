//! Signatures per second through SoftHSM2 (`Pkcs11Signer`) against the software keystore
//! (`FileKeyStore::unlock` → `SoftwareSigner`), for ECDSA P-256 and RSA-2048:
//! `cargo bench --bench hsm`.
//!
//! Two groups, each reporting elements/s (one element = one signature):
//! - `raw_sign`: `Signer::sign` over a 32-byte message (hash + the raw signature operation);
//! - `sign_pdf_letter`: one full `sign_pdf` of fixtures/pdf/letter.pdf.
//!
//! The token keys are generated in a private SoftHSM2 token (own softhsm2.conf and token
//! directory in a temporary directory) and certified by keys-example's issuing CA; the keystore
//! keys are generated and sealed with `KdfParams::insecure_fast()`, certified the same way, and
//! unlocked once before measuring. Without softhsm2-util the benchmark prints why and returns.

#[path = "../tests/it/common.rs"]
mod common;

use criterion::{BatchSize, Criterion, Throughput};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose,
};
use segel::keys::devpki::{KeyAlgorithm, cert_pem};
use segel::keys::keystore::{FileKeyStore, KdfParams, LogEvents, Passphrase};
use segel::keys::pkcs11::{Pin, Pkcs11Config, Pkcs11Signer, generate_key};
use segel::keys::{Signer, certificate_public_key, load_certificates_pem};
use segel::pdf::{SignRequest, sign_pdf};
use std::path::{Path, PathBuf};
use std::process::Command;

const TOKEN: &str = "segel-bench";
const SO_PIN: &str = "1234";
const USER_PIN: &str = "5678";

/// Where Debian/Ubuntu (and a source build) put the SoftHSM2 module.
fn softhsm_module() -> Option<PathBuf> {
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

fn softhsm_util(conf: &Path, args: &[&str]) {
    let out = Command::new("softhsm2-util")
        .args(args)
        .env("SOFTHSM2_CONF", conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "softhsm2-util {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The development PKI's issuing CA, with its software key.
fn issuing_ca() -> Issuer<'static, KeyPair> {
    let key = KeyPair::from_pem(
        &String::from_utf8(common::read("keys-example/issuing-ca.key.pem")).unwrap(),
    )
    .unwrap();
    Issuer::from_ca_cert_pem(
        &String::from_utf8(common::read("keys-example/issuing-ca.pem")).unwrap(),
        key,
    )
    .unwrap()
}

/// A document-signing certificate for `spki` (DER SubjectPublicKeyInfo), followed by the
/// issuing and root CAs.
fn chain_for(spki: &[u8], cn: &str, issuer: &Issuer<'_, KeyPair>) -> Vec<Vec<u8>> {
    let public = rcgen::SubjectPublicKeyInfo::from_der(spki).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "ID");
    dn.push(
        DnType::OrganizationName,
        "Kementerian Contoh Republik Indonesia",
    );
    dn.push(DnType::CommonName, cn);
    let mut p = CertificateParams::default();
    p.distinguished_name = dn;
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
    let mut chain = vec![p.signed_by(&public, issuer).unwrap().der().to_vec()];
    chain.extend(load_certificates_pem(&common::read("keys-example/issuing-ca.pem")).unwrap());
    chain.extend(load_certificates_pem(&common::read("keys-example/root-ca.pem")).unwrap());
    chain
}

/// Check one signature with ring under the leaf certificate's key, so a broken signer cannot
/// produce fast garbage.
fn check(signer: &dyn Signer, msg: &[u8]) {
    use ring::signature::{
        ECDSA_P256_SHA256_ASN1, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
        VerificationAlgorithm,
    };
    use segel::keys::SignatureAlgorithm;
    let v: &dyn VerificationAlgorithm = match signer.algorithm() {
        SignatureAlgorithm::EcdsaP256Sha256 => &ECDSA_P256_SHA256_ASN1,
        SignatureAlgorithm::RsaPkcs1Sha256 => &RSA_PKCS1_2048_8192_SHA256,
        other => panic!("unexpected algorithm {other}"),
    };
    let sig = signer.sign(msg).unwrap();
    UnparsedPublicKey::new(
        v,
        certificate_public_key(&signer.certificate_chain()[0]).unwrap(),
    )
    .verify(msg, &sig)
    .expect("the signature does not verify under the certificate");
}

/// P-256 and RSA-2048 keys generated in a fresh private SoftHSM2 token.
fn softhsm_signers(
    dir: &Path,
    module: PathBuf,
    issuer: &Issuer<'_, KeyPair>,
) -> (Pkcs11Signer, Pkcs11Signer) {
    let tokens = dir.join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = common::write(
        dir,
        "softhsm2.conf",
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokens.display()
        )
        .as_bytes(),
    );
    // SAFETY: the benchmark is still single-threaded here, and the module is first loaded
    // (C_Initialize, where SoftHSM2 reads SOFTHSM2_CONF) only after this.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
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
    let cfg = |key_label: &str| Pkcs11Config {
        module: module.clone(),
        token_label: TOKEN.into(),
        key_label: Some(key_label.into()),
        key_id: None,
        pin: Pin::new(USER_PIN),
    };
    let ec_spki = generate_key(&cfg("x"), "ec", &[1], KeyAlgorithm::P256).unwrap();
    let rsa_spki = generate_key(&cfg("x"), "rsa", &[2], KeyAlgorithm::Rsa2048).unwrap();
    let ec = Pkcs11Signer::open(
        cfg("ec"),
        chain_for(&ec_spki, "HSM Official P-256", issuer),
        false,
    )
    .unwrap();
    let rsa = Pkcs11Signer::open(
        cfg("rsa"),
        chain_for(&rsa_spki, "HSM Official RSA-2048", issuer),
        false,
    )
    .unwrap();
    (ec, rsa)
}

/// A keystore key generated, sealed (fast KDF), certified, and unlocked once.
fn keystore_signer(
    store: &FileKeyStore,
    id: &str,
    alg: KeyAlgorithm,
    issuer: &Issuer<'_, KeyPair>,
) -> segel::keys::SoftwareSigner {
    use base64::Engine as _;
    let pp = Passphrase::new("kata sandi rahasia");
    let now = time::OffsetDateTime::now_utc();
    store
        .generate(
            id,
            alg,
            ("Bench Official", "Kepala Bagian", "1", "Uji"),
            &pp,
            &KdfParams::insecure_fast(),
            now,
            &LogEvents,
        )
        .unwrap();
    let mut record = store.get(id).unwrap();
    let spki = base64::engine::general_purpose::STANDARD
        .decode(&record.public_key)
        .unwrap();
    let chain = chain_for(&spki, &format!("Keystore Official {id}"), issuer);
    record.chain_pem = Some(chain.iter().map(|c| cert_pem(c)).collect());
    store.put(&record).unwrap();
    store.unlock(id, &pp, false, now, &[], &LogEvents).unwrap()
}

fn main() {
    if Command::new("softhsm2-util")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("hsm bench: softhsm2-util not found (install softhsm2); skipping");
        return;
    }
    let Some(module) = softhsm_module() else {
        println!(
            "hsm bench: softhsm2-util is installed but libsofthsm2.so was not found; skipping"
        );
        return;
    };
    let dir = common::tempdir();
    let issuer = issuing_ca();
    let (hsm_p256, hsm_rsa) = softhsm_signers(dir.path(), module, &issuer);
    let store = FileKeyStore::open(dir.path().join("keys")).unwrap();
    let ks_p256 = keystore_signer(&store, "p256", KeyAlgorithm::P256, &issuer);
    let ks_rsa = keystore_signer(&store, "rsa2048", KeyAlgorithm::Rsa2048, &issuer);
    let cases: [(&str, &dyn Signer); 4] = [
        ("softhsm_p256", &hsm_p256),
        ("softhsm_rsa2048", &hsm_rsa),
        ("keystore_p256", &ks_p256),
        ("keystore_rsa2048", &ks_rsa),
    ];

    let msg = *b"segel bench: 32-byte message...!";
    for (_, s) in &cases {
        check(*s, &msg);
    }
    let input = common::read("fixtures/pdf/letter.pdf");
    let clock = common::now();
    let req = SignRequest::default();

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("raw_sign");
    g.throughput(Throughput::Elements(1));
    for (name, s) in &cases {
        g.bench_function(*name, |b| b.iter(|| s.sign(&msg).unwrap()));
    }
    g.finish();
    let mut g = c.benchmark_group("sign_pdf_letter");
    g.throughput(Throughput::Elements(1));
    for (name, s) in &cases {
        g.bench_function(*name, |b| {
            b.iter_batched(
                || input.clone(),
                |i| sign_pdf(i, *s, &req, &clock).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
    c.final_summary();
}

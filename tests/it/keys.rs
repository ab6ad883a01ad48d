//! Key custody: the encrypted keystore through `segel keys` and `segel sign --official`, CSRs
//! checked by OpenSSL, certificate import checks, lifecycle refusals, PKCS#12 import.

use crate::common::*;
use crate::sign_interop::assert_validators_accept;
use crate::validators;
use segel::keys::KeyError;
use segel::keys::devpki::{DevPki, InitOptions, KeyAlgorithm};
use segel::keys::keystore::{FileKeyStore, KdfParams, LogEvents, Passphrase};
use std::path::Path;
use std::process::{Command, Output};

fn segel(keystore: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_segel"))
        .args(args)
        .env("SEGEL_KEYSTORE", keystore)
        .env(
            "SEGEL_DATABASE_URL",
            format!("sqlite://{}", keystore.with_extension("audit.db").display()),
        )
        .env("SEGEL_INSECURE_FAST_KDF", "1")
        .env_remove("SEGEL_PASSPHRASE")
        .envs(env.iter().copied())
        .current_dir(root())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// The actions of the audit log at `url`, with the official each names, in order.
fn audit_actions(url: &str) -> Vec<(String, String)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = segel::storage::Db::connect(url).await.unwrap();
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT action, details FROM audit_log ORDER BY seq")
                .fetch_all(&db.pool)
                .await
                .unwrap();
        rows.into_iter()
            .map(|(action, details)| {
                let d: serde_json::Value = serde_json::from_str(&details).unwrap();
                (
                    action,
                    d["official"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    })
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn err(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Lines other than the error: only the test-only fast-KDF warning this file turns on.
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    let lines: Vec<&str> = e
        .lines()
        .filter(|l| !l.contains("SEGEL_INSECURE_FAST_KDF"))
        .collect();
    assert_eq!(lines.len(), 1, "{e}");
    lines[0].to_string()
}

/// Issue a certificate for a CSR from keys-example's issuing CA (or another PKI directory).
fn issue_for_csr(csr_pem: &str, pki: &Path, not_after: time::OffsetDateTime) -> String {
    issue_for_csr_between(
        csr_pem,
        pki,
        time::OffsetDateTime::now_utc() - time::Duration::days(30),
        not_after,
    )
}

fn issue_for_csr_between(
    csr_pem: &str,
    pki: &Path,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> String {
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(pki.join("issuing-ca.key.pem")).unwrap())
            .unwrap();
    let ca_pem = std::fs::read_to_string(pki.join("issuing-ca.pem")).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
    csr.params.not_before = not_before;
    csr.params.not_after = not_after;
    csr.params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::ContentCommitment,
    ];
    csr.params.use_authority_key_identifier_extension = true;
    let cert = csr.signed_by(&issuer).unwrap();
    format!(
        "{}{}{}",
        cert.pem(),
        ca_pem,
        std::fs::read_to_string(pki.join("root-ca.pem")).unwrap()
    )
}

#[test]
fn keystore_lifecycle_through_the_cli() {
    let dir = tempdir();
    let ks = dir.path().join("keys");
    let pp = [("SEGEL_PASSPHRASE", "kata sandi rahasia")];
    let csr_path = dir.path().join("andi.csr.pem");
    ok(&segel(
        &ks,
        &pp,
        &[
            "keys",
            "new",
            "--official",
            "andi",
            "--algorithm",
            "p256",
            "--name",
            "Andi Wijaya",
            "--title",
            "Kepala Bagian Umum",
            "--nip",
            "199001012015031001",
            "--csr",
            csr_path.to_str().unwrap(),
        ],
    ));
    // The key on disk is sealed: no PKCS#8 in the clear.
    let record = std::fs::read_to_string(ks.join("andi.json")).unwrap();
    assert!(record.contains("\"ciphertext\"") && !record.contains("PRIVATE KEY"));
    // OpenSSL accepts the CSR and sees the official's identity in it.
    if validators::require("openssl") {
        let o = Command::new("openssl")
            .args(["req", "-verify", "-noout", "-subject", "-in"])
            .arg(&csr_path)
            .output()
            .unwrap();
        let text =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{text}");
        assert!(
            text.contains("199001012015031001")
                && text.contains("Kepala Bagian Umum")
                && text.contains("Andi Wijaya"),
            "{text}"
        );
    }
    // A second `keys new` for the same official is refused.
    err(&segel(
        &ks,
        &pp,
        &[
            "keys",
            "new",
            "--official",
            "andi",
            "--name",
            "X",
            "--title",
            "Y",
            "--nip",
            "1",
        ],
    ));

    // Import the CA's answer; a certificate for another key is refused.
    let chain = issue_for_csr(
        &std::fs::read_to_string(&csr_path).unwrap(),
        &root().join("keys-example"),
        time::OffsetDateTime::now_utc() + time::Duration::days(365),
    );
    let chain_path = write(dir.path(), "andi.chain.pem", chain.as_bytes());
    let e = err(&segel(
        &ks,
        &[],
        &[
            "keys",
            "import-cert",
            "andi",
            "keys-example/officials/siti.chain.pem",
            "--trust",
            "keys-example/root-ca.pem",
        ],
    ));
    assert!(e.contains("does not match"), "{e}");
    let e = err(&segel(
        &ks,
        &[],
        &[
            "keys",
            "import-cert",
            "andi",
            chain_path.to_str().unwrap(),
            "--trust",
            "fixtures/pki/root-ca.cert.pem",
        ],
    ));
    assert!(e.contains("anchor"), "{e}");
    ok(&segel(
        &ks,
        &[],
        &[
            "keys",
            "import-cert",
            "andi",
            chain_path.to_str().unwrap(),
            "--trust",
            "keys-example/root-ca.pem",
        ],
    ));

    // Sign with the keystore key.
    let out = dir.path().join("signed.pdf");
    let sign = |env: &[(&str, &str)], out: &Path| {
        segel(
            &ks,
            env,
            &[
                "sign",
                "fixtures/pdf/letter.pdf",
                "-o",
                out.to_str().unwrap(),
                "--official",
                "andi",
                "--visible",
                "--anchor",
                "${ttd}",
            ],
        )
    };
    ok(&sign(&pp, &out));
    assert_validators_accept(&out, 1, false);
    let e = err(&sign(
        &[("SEGEL_PASSPHRASE", "salah sekali")],
        &dir.path().join("x.pdf"),
    ));
    assert!(
        e.contains("wrong passphrase") && !e.contains("salah"),
        "{e}"
    );
    assert!(!dir.path().join("x.pdf").exists());

    // Re-wrap: same key and certificate, new passphrase.
    let before: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ks.join("andi.json")).unwrap()).unwrap();
    ok(&segel(
        &ks,
        &[
            ("SEGEL_PASSPHRASE", "kata sandi rahasia"),
            ("SEGEL_NEW_PASSPHRASE", "sandi baru yang panjang"),
        ],
        &["keys", "passphrase", "andi"],
    ));
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ks.join("andi.json")).unwrap()).unwrap();
    assert_eq!(before["public_key"], after["public_key"]);
    assert_eq!(before["chain_pem"], after["chain_pem"]);
    assert_ne!(
        before["location"]["sealed"]["ciphertext"],
        after["location"]["sealed"]["ciphertext"]
    );
    err(&sign(&pp, &dir.path().join("old.pdf")));
    ok(&sign(
        &[("SEGEL_PASSPHRASE", "sandi baru yang panjang")],
        &dir.path().join("new.pdf"),
    ));

    // List, disable.
    let list = ok(&segel(&ks, &[], &["keys", "list"]));
    assert!(
        list.contains("andi")
            && list.contains("p256")
            && list.contains("keystore")
            && list.contains("active"),
        "{list}"
    );
    ok(&segel(&ks, &[], &["keys", "disable", "andi"]));
    // Every key event went to the audit log, which verifies.
    let db = format!("sqlite://{}", ks.with_extension("audit.db").display());
    let verified = ok(&segel(
        &ks,
        &[],
        &["audit", "verify", "--database-url", &db],
    ));
    assert!(verified.contains("6 entries"), "{verified}");
    assert_eq!(
        audit_actions(&db),
        [
            ("key.created", "andi"),
            ("key.certificate_imported", "andi"),
            ("key.unlock_failed", "andi"),
            ("key.passphrase_changed", "andi"),
            ("key.unlock_failed", "andi"),
            ("key.disabled", "andi"),
        ]
        .map(|(a, o)| (a.to_string(), o.to_string()))
    );
    let e = err(&sign(
        &[("SEGEL_PASSPHRASE", "sandi baru yang panjang")],
        &dir.path().join("d.pdf"),
    ));
    assert!(e.contains("disabled"), "{e}");
    assert!(ok(&segel(&ks, &[], &["keys", "list"])).contains("disabled"));
}

#[test]
fn pkcs12_import_resealed_under_the_passphrase() {
    let dir = tempdir();
    let ks = dir.path().join("keys");
    for (id, file) in [
        ("budi", "fixtures/pki/signer-rsa.p12"),
        ("budi-legacy", "fixtures/pki/signer-rsa-legacy.p12"),
    ] {
        let env = [
            ("SEGEL_PASSPHRASE", "kata sandi rahasia"),
            ("SEGEL_P12_PASSWORD", "test1234"),
        ];
        ok(&segel(&ks, &env, &["keys", "import-p12", id, file]));
        let out = dir.path().join(format!("{id}.pdf"));
        ok(&segel(
            &ks,
            &env,
            &[
                "sign",
                "fixtures/pdf/letter.pdf",
                "-o",
                out.to_str().unwrap(),
                "--official",
                id,
            ],
        ));
        assert_validators_accept(&out, 1, false);
    }
    let e = err(&segel(
        &ks,
        &[
            ("SEGEL_PASSPHRASE", "kata sandi rahasia"),
            ("SEGEL_P12_PASSWORD", "nope"),
        ],
        &["keys", "import-p12", "x", "fixtures/pki/signer-rsa.p12"],
    ));
    assert!(e.contains("PKCS#12") && e.contains("wrong password"), "{e}");
    assert!(!ks.join("x.json").exists());

    // The identity comes from the certificate: the NIP in serialNumber.
    let record = |id: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(ks.join(format!("{id}.json"))).unwrap()).unwrap()
    };
    assert_eq!(record("budi")["name"], "Budi Santoso");
    assert_eq!(record("budi")["nip"], "NIP198001012005011001");

    // A second PKCS#12 for an official who has a key is refused, leaving the key alone ...
    let env = [
        ("SEGEL_PASSPHRASE", "kata sandi rahasia"),
        ("SEGEL_P12_PASSWORD", "test1234"),
    ];
    let before = std::fs::read(ks.join("budi.json")).unwrap();
    let p12 = dir.path().join("budi-dev.p12");
    let o = Command::new("openssl")
        .args(["pkcs12", "-export", "-passout", "pass:test1234", "-inkey"])
        .arg(root().join("keys-example/officials/budi.key.pem"))
        .arg("-in")
        .arg(root().join("keys-example/officials/budi.chain.pem"))
        .arg("-out")
        .arg(&p12)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let p12 = p12.to_str().unwrap();
    let e = err(&segel(&ks, &env, &["keys", "import-p12", "budi", p12]));
    assert!(
        e.contains("already has a key") && e.contains("--replace"),
        "{e}"
    );
    assert_eq!(std::fs::read(ks.join("budi.json")).unwrap(), before);
    // ... unless --replace is given; title and NIP are kept from the new certificate.
    ok(&segel(
        &ks,
        &env,
        &["keys", "import-p12", "budi", p12, "--replace"],
    ));
    let after = record("budi");
    assert_ne!(
        serde_json::from_slice::<serde_json::Value>(&before).unwrap()["public_key"],
        after["public_key"]
    );
    assert_eq!(after["name"], "Dr. Budi Santoso, M.Si.");
    assert_eq!(after["title"], "Sekretaris Jenderal");
    assert_eq!(after["nip"], "197001012000031001");
}

#[test]
fn expired_and_revoked_certificates_are_refused_before_signing() {
    let dir = tempdir();
    let opts = InitOptions {
        base_url: "http://127.0.0.1:9".into(),
        organisation: "Uji".into(),
        now: time::OffsetDateTime::now_utc(),
    };
    let pki = DevPki::init(&dir.path().join("pki"), &opts).unwrap();
    let store = FileKeyStore::open(dir.path().join("keys")).unwrap();
    let pp = Passphrase::new("kata sandi rahasia");
    let now = time::OffsetDateTime::now_utc();
    let fast = KdfParams::insecure_fast();
    for (id, not_after) in [
        ("old", now - time::Duration::days(1)),
        ("live", now + time::Duration::days(30)),
    ] {
        let csr = store
            .generate(
                id,
                KeyAlgorithm::P256,
                ("A", "B", "1", "Uji"),
                &pp,
                &fast,
                now,
                &LogEvents,
            )
            .unwrap();
        let chain =
            segel::keys::load_certificates_pem(issue_for_csr(&csr, &pki.dir, not_after).as_bytes())
                .unwrap();
        let mut record = store.get(id).unwrap();
        record.chain_pem = Some(
            chain
                .iter()
                .map(|c| segel::keys::devpki::cert_pem(c))
                .collect(),
        );
        store.put(&record).unwrap();
    }
    let e = store
        .unlock("old", &pp, false, now, &[], &LogEvents)
        .unwrap_err();
    assert!(matches!(e, KeyError::CertificateState(_)), "{e}");
    assert!(e.to_string().contains("expired"), "{e}");
    assert!(
        store
            .unlock("live", &pp, false, now, &[], &LogEvents)
            .is_ok()
    );
    // Not yet valid: the same certificate "a year ago".
    let e = store
        .unlock(
            "live",
            &pp,
            false,
            now - time::Duration::days(365),
            &[],
            &LogEvents,
        )
        .unwrap_err();
    assert!(e.to_string().contains("not valid before"), "{e}");
    // Revoked: `segel dev-pki revoke` updates the CRL the signer is checked against.
    let chain = segel::keys::load_certificates_pem(
        store.get("live").unwrap().chain_pem.unwrap().as_bytes(),
    )
    .unwrap();
    let serial = x509_parser::parse_x509_certificate(&chain[0])
        .unwrap()
        .1
        .raw_serial_as_string()
        .replace(':', "");
    let o = Command::new(env!("CARGO_BIN_EXE_segel"))
        .args(["dev-pki", "revoke", "--dir"])
        .arg(&pki.dir)
        .arg(&serial)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let crl = std::fs::read(pki.path("crl/issuing-ca.crl")).unwrap();
    assert!(
        crl_lists_serial(&crl, &serial),
        "the re-issued CRL lists {serial}"
    );
    let e = store
        .unlock(
            "live",
            &pp,
            false,
            now,
            std::slice::from_ref(&crl),
            &LogEvents,
        )
        .unwrap_err();
    assert!(e.to_string().contains("revoked"), "{e}");
    // A signature the revoked key makes anyway (its owner bypassing Segel): Segel's verifier
    // calls it revoked when given that CRL, and not without it.
    let segel::keys::keystore::KeyLocation::Keystore { sealed } =
        store.get("live").unwrap().location
    else {
        panic!("a keystore key")
    };
    let pkcs8 = segel::keys::keystore::unseal(&sealed, "live", &pp).unwrap();
    let rogue = segel::keys::SoftwareSigner::from_pkcs8(&pkcs8, chain, false).unwrap();
    let signed = segel::pdf::sign_pdf(
        read("fixtures/pdf/letter.pdf"),
        &rogue,
        &Default::default(),
        &crate::common::now(),
    )
    .unwrap();
    let with_crl = crate::verify::verify(
        &signed.bytes,
        &crate::verify::store(
            &[pki.path("root-ca.pem")],
            &[pki.path("crl/issuing-ca.crl")],
        ),
    );
    assert_eq!(
        with_crl.signatures[0].verdict,
        segel::trust::Verdict::Revoked,
        "{with_crl:#?}"
    );
    assert_eq!(with_crl.signatures[0].revocation.status, "revoked");
    let without = crate::verify::verify(
        &signed.bytes,
        &crate::verify::store(&[pki.path("root-ca.pem")], &[]),
    );
    assert_ne!(
        without.signatures[0].verdict,
        segel::trust::Verdict::Revoked
    );
}

/// Whether a DER CRL lists the certificate with this hex serial.
pub fn crl_lists_serial(crl_der: &[u8], serial_hex: &str) -> bool {
    let (_, crl) = x509_parser::parse_x509_crl(crl_der).unwrap();
    crl.iter_revoked_certificates().any(|r| {
        r.raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .trim_start_matches('0')
            == serial_hex.to_ascii_lowercase().trim_start_matches('0')
    })
}

#[test]
fn dev_pki_issue_adds_an_official_that_signs_valid() {
    let dir = tempdir();
    let opts = InitOptions {
        base_url: "http://127.0.0.1:9".into(),
        organisation: "Uji".into(),
        now: time::OffsetDateTime::now_utc(),
    };
    let pki = DevPki::init(&dir.path().join("pki"), &opts).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_segel"))
        .args(["dev-pki", "issue", "--dir"])
        .arg(&pki.dir)
        .args([
            "--id",
            "rina",
            "--cn",
            "Rina Kusuma",
            "--title",
            "Direktur",
            "--nip",
            "198501012010012001",
            "--algorithm",
            "rsa2048",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = signer(
        pki.path("officials/rina.key.pem").to_str().unwrap(),
        &[pki.path("officials/rina.chain.pem").to_str().unwrap()],
        false,
    );
    let signed = segel::pdf::sign_pdf(
        read("fixtures/pdf/letter.pdf"),
        &s,
        &Default::default(),
        &now(),
    )
    .unwrap();
    let report = crate::verify::verify(
        &signed.bytes,
        &crate::verify::store(&[pki.path("root-ca.pem")], &[]),
    );
    assert!(report.all_valid(), "{report:#?}");
}

/// A copy of a directory tree (a development PKI a test may revoke in).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

fn serial_of(chain_pem: &Path) -> String {
    let der = segel::keys::load_certificates_pem(&std::fs::read(chain_pem).unwrap())
        .unwrap()
        .remove(0);
    x509_parser::parse_x509_certificate(&der)
        .unwrap()
        .1
        .raw_serial_as_string()
        .replace(':', "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_stops_the_running_service_from_signing() {
    let dir = tempdir();
    let pki = dir.path().join("pki");
    copy_dir(&root().join("keys-example"), &pki);
    let data = dir.path().join("data");
    let cfg = segel::config::Config {
        keys_dir: pki.clone(),
        ..crate::service::config(&crate::db::sqlite_url(dir.path()), &data)
    };
    let app = crate::service::spawn(cfg).await;
    let submit = || async {
        let r = app
            .submit(
                read("fixtures/pdf/letter.pdf"),
                crate::service::letter_meta(None),
            )
            .await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        r.json::<serde_json::Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (first, second) = (submit().await, submit().await);
    let token = app.login("reviewer").await;
    let pp = app.passphrase("reviewer");
    let r = app.approve(&token, &first, 1, &pp).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // The reviewer's certificate is revoked while the service runs.
    let serial = serial_of(&pki.join("officials/siti.chain.pem"));
    let o = Command::new(env!("CARGO_BIN_EXE_segel"))
        .args(["dev-pki", "revoke", "--dir"])
        .arg(&pki)
        .arg(&serial)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The service publishes the new CRL ...
    let crl = app
        .client
        .get(format!("{}/crl/issuing-ca.crl", app.base))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        crl_lists_serial(&crl, &serial),
        "published CRL lists {serial}"
    );
    // ... and refuses the next approval with the revoked key, changing nothing.
    let r = app.approve(&token, &second, 1, &pp).await;
    assert_eq!(r.status(), 403);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "forbidden", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("revoked"), "{msg}");
    let d: serde_json::Value = app
        .client
        .get(format!("{}/api/v1/documents/{second}", app.base))
        .bearer_auth(app.app_key())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["current_sha256"], d["original_sha256"], "{d}");
}

fn crl_number_and_next_update(path: &Path) -> (Vec<u8>, i64) {
    let der = std::fs::read(path).unwrap();
    let (_, crl) = x509_parser::parse_x509_crl(&der).unwrap();
    let number = crl
        .crl_number()
        .map(|n| n.to_bytes_be())
        .expect("a CRL number");
    (number, crl.next_update().unwrap().timestamp())
}

#[test]
fn serve_refreshes_a_stale_development_crl() {
    let dir = tempdir();
    let pki_dir = dir.path().join("pki");
    copy_dir(&root().join("keys-example"), &pki_dir);
    let pki = DevPki {
        dir: pki_dir.clone(),
    };
    let now = time::OffsetDateTime::now_utc();
    let crl = pki.path("crl/issuing-ca.crl");
    // A revocation (which re-issues the CRL).
    let serial = serial_of(&pki.path("officials/siti.chain.pem"));
    pki.revoke(&serial, now - time::Duration::days(9)).unwrap();
    // A CRL with more than a day left is kept.
    pki.write_crl(now).unwrap();
    let kept = std::fs::read(&crl).unwrap();
    assert!(!pki.refresh_crl(now, time::Duration::hours(24)).unwrap());
    assert_eq!(std::fs::read(&crl).unwrap(), kept);
    // One within a day of expiry is re-issued: same revocations, next CRL number.
    pki.write_crl(now - time::Duration::days(6) - time::Duration::hours(12))
        .unwrap();
    let (almost_number, almost_next) = crl_number_and_next_update(&crl);
    assert!(almost_next < (now + time::Duration::hours(24)).unix_timestamp());
    assert_eq!(
        segel::keys::devpki::refresh_dev_crl(&pki_dir, now)
            .unwrap()
            .map(|t| t.unix_timestamp()),
        Some(crl_number_and_next_update(&crl).1)
    );
    let (fresh_number, fresh_next) = crl_number_and_next_update(&crl);
    assert!(fresh_next > (now + time::Duration::days(6)).unix_timestamp());
    assert!(fresh_number > almost_number, "the next CRL number");
    assert!(crl_lists_serial(&std::fs::read(&crl).unwrap(), &serial));
    assert_eq!(
        segel::keys::devpki::refresh_dev_crl(&pki_dir, now).unwrap(),
        None,
        "a fresh CRL is left alone"
    );
    // Without the issuing CA's key (a real PKI) nothing is written.
    let no_key = dir.path().join("nokey");
    copy_dir(&pki_dir, &no_key);
    std::fs::remove_file(no_key.join("issuing-ca.key.pem")).unwrap();
    DevPki {
        dir: pki_dir.clone(),
    }
    .write_crl(now - time::Duration::days(8))
    .unwrap();
    std::fs::copy(&crl, no_key.join("crl/issuing-ca.crl")).unwrap();
    assert_eq!(
        segel::keys::devpki::refresh_dev_crl(&no_key, now).unwrap(),
        None
    );
    assert_eq!(
        std::fs::read(no_key.join("crl/issuing-ca.crl")).unwrap(),
        std::fs::read(&crl).unwrap()
    );

    // `segel serve` does it at start, before it listens.
    let (expired_number, _) = crl_number_and_next_update(&crl);
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_segel"))
        .arg("serve")
        .env("SEGEL_LISTEN", "127.0.0.1:0")
        .env(
            "SEGEL_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("serve.db").display()),
        )
        .env("SEGEL_DATA_DIR", &data)
        .env("SEGEL_KEYS_DIR", &pki_dir)
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = String::new();
    {
        use std::io::BufRead;
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        for line in stderr.lines() {
            let line = line.unwrap();
            log.push_str(&line);
            log.push('\n');
            if line.contains("listening") {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(log.contains("development CRL re-issued"), "{log}");
    let (served_number, served_next) = crl_number_and_next_update(&crl);
    assert!(served_number > expired_number, "{log}");
    assert!(served_next > (now + time::Duration::days(6)).unix_timestamp());
    assert!(crl_lists_serial(&std::fs::read(&crl).unwrap(), &serial));
}

#[test]
fn a_key_command_whose_audit_entry_cannot_be_written_changes_nothing() {
    let dir = tempdir();
    let ks = dir.path().join("keys");
    let pp = [("SEGEL_PASSPHRASE", "kata sandi rahasia")];
    let new_key = |env: &[(&str, &str)], id: &str| {
        segel(
            &ks,
            env,
            &[
                "keys",
                "new",
                "--official",
                id,
                "--name",
                "Andi",
                "--title",
                "Kepala",
                "--nip",
                "1",
            ],
        )
    };
    ok(&new_key(&pp, "andi"));
    let before = std::fs::read(ks.join("andi.json")).unwrap();
    // A database under a path that is a file: it cannot be opened.
    let blocker = write(dir.path(), "blocker", b"not a directory");
    let bad = format!("sqlite://{}", blocker.join("audit.db").display());
    let bad_db = [("SEGEL_DATABASE_URL", bad.as_str())];
    let e = err(&segel(&ks, &bad_db, &["keys", "disable", "andi"]));
    assert!(e.contains("audit log"), "{e}");
    assert_eq!(std::fs::read(ks.join("andi.json")).unwrap(), before);
    let env = [pp[0], bad_db[0]];
    let e = err(&new_key(&env, "budi"));
    assert!(e.contains("audit log"), "{e}");
    assert!(!ks.join("budi.json").exists());
    assert!(!ks.join("budi.csr.pem").exists());
    // Listing writes nothing and needs no audit log.
    assert!(ok(&segel(&ks, &bad_db, &["keys", "list"])).contains("andi"));
    // With the log reachable, the same command works and is recorded.
    ok(&segel(&ks, &[], &["keys", "disable", "andi"]));
    let db = format!("sqlite://{}", ks.with_extension("audit.db").display());
    assert_eq!(
        audit_actions(&db),
        [("key.created", "andi"), ("key.disabled", "andi")]
            .map(|(a, o)| (a.to_string(), o.to_string()))
    );
}

#[test]
fn keys_new_list_and_import_cert_rules() {
    let dir = tempdir();
    let ks = dir.path().join("keys");
    let opts = InitOptions {
        base_url: "http://127.0.0.1:9".into(),
        organisation: "Uji".into(),
        now: time::OffsetDateTime::now_utc(),
    };
    let pki = DevPki::init(&dir.path().join("pki"), &opts).unwrap();
    let pki_dir = pki.dir.to_str().unwrap().to_string();
    let keys_dir = [("SEGEL_KEYS_DIR", pki_dir.as_str())];
    let new_key = |id: &str, title: &str, pp: &str| {
        segel(
            &ks,
            &[("SEGEL_PASSPHRASE", pp)],
            &[
                "keys",
                "new",
                "--official",
                id,
                "--name",
                "Andi",
                "--title",
                title,
                "--nip",
                "199001012015031001",
            ],
        )
    };
    // The CSR subject needs a title (and name, NIP); a new passphrase needs 8 characters,
    // from the environment too.
    let e = err(&new_key("x", " ", "kata sandi rahasia"));
    assert!(e.contains("title"), "{e}");
    let e = err(&new_key("x", "Kepala", "pendek"));
    assert!(e.contains("at least 8 characters"), "{e}");
    assert!(!ks.join("x.json").exists());

    // Four keys: valid, expired, not yet valid, revoked.
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    for (id, from, to) in [
        ("valid", now - day, now + 300 * day),
        ("expired", now - 300 * day, now - day),
        ("future", now + 10 * day, now + 300 * day),
        ("revoked", now - day, now + 300 * day),
    ] {
        ok(&new_key(id, "Kepala", "kata sandi rahasia"));
        let csr = std::fs::read_to_string(ks.join(format!("{id}.csr.pem"))).unwrap();
        let chain = issue_for_csr_between(&csr, &pki.dir, from, to);
        let path = write(dir.path(), &format!("{id}.chain.pem"), chain.as_bytes());
        if id == "valid" || id == "revoked" {
            // No --trust: the configured anchors (here the keys directory's root) decide;
            // keys-example's root does not anchor this PKI.
            let args = ["keys", "import-cert", id, path.to_str().unwrap()];
            let e = err(&segel(&ks, &[], &args));
            assert!(e.contains("anchor"), "{e}");
            ok(&segel(&ks, &keys_dir, &args));
        } else {
            let store = FileKeyStore::open(&ks).unwrap();
            let mut record = store.get(id).unwrap();
            record.chain_pem = Some(chain);
            store.put(&record).unwrap();
        }
    }
    let serial = serial_of(&dir.path().join("revoked.chain.pem"));
    pki.revoke(&serial, now).unwrap();
    let list = ok(&segel(&ks, &keys_dir, &["keys", "list"]));
    let status = |id: &str| {
        list.lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(3))
            .unwrap_or_else(|| panic!("{id} in {list}"))
            .to_string()
    };
    assert_eq!(status("valid"), "active", "{list}");
    assert_eq!(status("expired"), "expired", "{list}");
    assert_eq!(status("future"), "not-yet-valid", "{list}");
    assert_eq!(status("revoked"), "revoked", "{list}");
}

#[test]
fn dev_pki_init_makes_the_documented_hierarchy() {
    let dir = tempdir();
    let pki = dir.path().join("pki");
    let o = Command::new(env!("CARGO_BIN_EXE_segel"))
        .args(["dev-pki", "init"])
        .arg(&pki)
        .args(["--base-url", "http://segel.test:8080/"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let der = |rel: &str| {
        segel::keys::load_certificates_pem(&std::fs::read(pki.join(rel)).unwrap())
            .unwrap()
            .remove(0)
    };
    let (root_der, ca_der) = (der("root-ca.pem"), der("issuing-ca.pem"));
    let (_, root) = x509_parser::parse_x509_certificate(&root_der).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert!(root.is_ca() && ca.is_ca());
    root.verify_signature(None)
        .expect("the root is self-signed");
    ca.verify_signature(Some(root.public_key()))
        .expect("the issuing CA is under the root");
    let crl_url = "http://segel.test:8080/crl/issuing-ca.crl";
    for stem in ["officials/budi", "officials/siti", "tsa", "seal", "auditor"] {
        let leaf_der = der(&format!("{stem}.pem"));
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
        assert!(!leaf.is_ca(), "{stem}");
        leaf.verify_signature(Some(ca.public_key()))
            .unwrap_or_else(|e| panic!("{stem} is issued by the issuing CA: {e}"));
        assert_eq!(
            segel::keys::load_certificates_pem(
                &std::fs::read(pki.join(format!("{stem}.chain.pem"))).unwrap()
            )
            .unwrap(),
            vec![leaf_der.clone(), ca_der.clone(), root_der.clone()],
            "{stem}.chain.pem is leaf, issuing CA, root"
        );
        assert!(pki.join(format!("{stem}.key.pem")).is_file(), "{stem}");
        assert_eq!(
            segel::trust::revocation::crl_urls(&leaf_der),
            vec![crl_url.to_string()],
            "{stem}"
        );
    }
    // Officials: RSA-2048 and P-256.
    let budi_der = der("officials/budi.pem");
    let (_, budi) = x509_parser::parse_x509_certificate(&budi_der).unwrap();
    match budi.public_key().parsed().unwrap() {
        x509_parser::public_key::PublicKey::RSA(k) => assert_eq!(k.key_size(), 2048),
        other => panic!("budi: {other:?}"),
    }
    let siti_der = der("officials/siti.pem");
    let (_, siti) = x509_parser::parse_x509_certificate(&siti_der).unwrap();
    assert_eq!(
        siti.public_key()
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| o.to_id_string()),
        Some("1.2.840.10045.3.1.7".to_string()),
        "siti's key is on P-256"
    );
    // The TSA: a critical extended key usage of timeStamping only.
    let tsa_der = der("tsa.pem");
    let (_, tsa) = x509_parser::parse_x509_certificate(&tsa_der).unwrap();
    let eku = tsa.extended_key_usage().unwrap().expect("an EKU extension");
    assert!(eku.critical, "the TSA's EKU is critical (RFC 3161 §2.3)");
    assert!(eku.value.time_stamping);
    assert!(eku.value.other.is_empty() && !eku.value.any && !eku.value.email_protection);
    // The CRL is the issuing CA's.
    let crl = std::fs::read(pki.join("crl/issuing-ca.crl")).unwrap();
    let (_, crl) = x509_parser::parse_x509_crl(&crl).unwrap();
    crl.verify_signature(ca.public_key()).unwrap();
}

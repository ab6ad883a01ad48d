//! The organisation seal key in an HSM, configured in `[seal_hsm]` (module, token, key label
//! and id, PIN file), run as the real `segel serve` process with a SoftHSM2 token of its own:
//! letters sealed through the token pass the validators; a wrong PIN stops the start with one
//! line; a token that disappears fails `/readyz` and answers 503 without recording anything.
//!
//! The token lives in a separate process because SoftHSM2 reads its configuration once per
//! process (tests/it/pkcs11.rs holds this test binary's own token).

use crate::common::*;
use crate::pkcs11::{softhsm_module, softhsm_util};
use crate::sign_interop::assert_validators_accept;
use crate::validators;
use serde_json::Value;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

const TOKEN: &str = "segel-seal";
const USER_PIN: &str = "246810";

/// `segel serve --config CONFIG` with its own SoftHSM2 configuration; returns the child, its
/// port once it listens (its later output keeps being read into `log`, so it never writes to a
/// closed pipe), or everything it printed if it stopped instead.
fn serve(
    config: &Path,
    softhsm_conf: &Path,
    log: &Arc<Mutex<Vec<String>>>,
) -> Result<(Child, u16), Vec<String>> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_segel"))
        .args(["serve", "--config"])
        .arg(config)
        .env("SOFTHSM2_CONF", softhsm_conf)
        .env_remove("SEGEL_DATABASE_URL")
        .env_remove("SEGEL_DATA_DIR")
        .env_remove("SEGEL_KEYS_DIR")
        .env_remove("SEGEL_LISTEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    while let Some(Ok(line)) = lines.next() {
        if let Some(port) = line
            .strip_suffix(')')
            .and_then(|l| l.rsplit_once("(port "))
            .filter(|(head, _)| head.contains("segel listening on"))
            .and_then(|(_, p)| p.parse().ok())
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            });
            return Ok((child, port));
        }
        seen.push(line);
    }
    child.wait().unwrap();
    Err(seen)
}

struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn seal_key_in_an_hsm_from_the_configuration() {
    if !validators::require("softhsm2-util") {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    // A development PKI of this test's own (a copy of keys-example), with a seal certificate
    // for a key that goes into the token.
    let pki = d.join("pki");
    let out = Command::new("cp")
        .arg("-r")
        .arg(root().join("keys-example"))
        .arg(&pki)
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = Command::new(env!("CARGO_BIN_EXE_segel"))
        .args(["dev-pki", "issue", "--dir"])
        .arg(&pki)
        .args([
            "--id",
            "seal-hsm",
            "--cn",
            "Kementerian Contoh (segel dalam HSM)",
            "--title",
            "Segel elektronik",
            "--nip",
            "-",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let tokens = d.join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = write(
        d,
        "softhsm2.conf",
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        )
        .as_bytes(),
    );
    softhsm_util(
        &conf,
        &[
            "--init-token",
            "--free",
            "--label",
            TOKEN,
            "--so-pin",
            "1357",
            "--pin",
            USER_PIN,
        ],
    );
    let key = pki.join("officials/seal-hsm.key.pem");
    softhsm_util(
        &conf,
        &[
            "--import",
            key.to_str().unwrap(),
            "--token",
            TOKEN,
            "--label",
            "seal",
            "--id",
            "5ea1",
            "--pin",
            USER_PIN,
        ],
    );
    // The key is in the token now; nothing else keeps it.
    std::fs::remove_file(&key).unwrap();

    let config = |pin_file: &Path| {
        let text = format!(
            "listen = \"127.0.0.1:0\"\npublic_url = \"http://segel.test\"\n\
             database_url = \"sqlite://{data}/segel.db\"\ndata_dir = \"{data}\"\n\
             keys_dir = \"{pki}\"\ninsecure_fast_kdf = true\n\n\
             [seal_hsm]\nmodule = \"{module}\"\ntoken_label = \"{TOKEN}\"\nkey_label = \"seal\"\n\
             key_id = \"5ea1\"\npin_file = \"{pin}\"\nchain = \"{pki}/officials/seal-hsm.chain.pem\"\n",
            data = d.join("data").display(),
            pki = pki.display(),
            module = softhsm_module().display(),
            pin = pin_file.display(),
        );
        write(d, "segel.toml", text.as_bytes())
    };

    // A wrong PIN: the service does not start, and says why in one line.
    let wrong = write(d, "wrong.pin", b"000000\n");
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = serve(&config(&wrong), &conf, &log).expect_err("must not start with a wrong PIN");
    let last = seen.last().cloned().unwrap_or_default();
    assert!(
        last.contains("seal key in the HSM") && last.contains("PIN"),
        "{seen:?}"
    );

    let pin = write(d, "user.pin", format!("{USER_PIN}\n").as_bytes());
    let (child, port) = serve(&config(&pin), &conf, &log).unwrap_or_else(|seen| panic!("{seen:?}"));
    let _stop = Stop(child);
    let base = format!("http://127.0.0.1:{port}");
    let creds: Value =
        serde_json::from_slice(&std::fs::read(d.join("data/demo-credentials.json")).unwrap())
            .unwrap();
    let app_key = creds["app_key"].as_str().unwrap().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = reqwest::Client::new();
    let seal = |n: usize| {
        let form = reqwest::multipart::Form::new()
            .part(
                "file",
                reqwest::multipart::Part::bytes(read("fixtures/pdf/letter.pdf"))
                    .file_name("l.pdf"),
            )
            .text(
                "metadata",
                format!(r#"{{"title": "Surat", "letter_number": "HSM-{n}", "placement": {{"anchor": "${{ttd}}"}}}}"#),
            );
        c.post(format!("{base}/api/v1/seal"))
            .bearer_auth(&app_key)
            .multipart(form)
            .send()
    };

    let sealed = rt.block_on(async {
        let r = c.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let r = seal(1).await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap().to_vec()
    });
    let report = crate::verify::verify(&sealed, &crate::verify::default_store());
    assert!(report.all_valid(), "{report:?}");
    let signer = report.signatures[0].signer.as_ref().unwrap();
    assert!(
        signer.subject.contains("segel dalam HSM"),
        "sealed by the token's key: {}",
        signer.subject
    );
    let file = write(d, "sealed.pdf", &sealed);
    assert_validators_accept(&file, 1, false);

    // The token disappears: not ready, and sealing answers 503 with nothing recorded.
    softhsm_util(&conf, &["--delete-token", "--token", TOKEN]);
    let db = format!("sqlite://{}/segel.db", d.join("data").display());
    let count = || async {
        let db = segel::storage::Db::connect(&db).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM documents")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        n
    };
    rt.block_on(async {
        let before = count().await;
        let r = c.get(format!("{base}/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 503);
        let body: Value = r.json().await.unwrap();
        assert!(body["problems"].to_string().contains("seal key"), "{body}");
        let r = seal(2)
            .await
            .unwrap_or_else(|e| panic!("{e}; segel serve said: {:?}", log.lock().unwrap()));
        assert_eq!(r.status(), 503);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "key_unavailable", "{v}");
        assert_eq!(count().await, before, "nothing recorded");
    });
}

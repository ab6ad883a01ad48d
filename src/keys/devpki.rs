//! The development PKI (`segel dev-pki`): root CA → issuing CA → officials, a TSA, an
//! organisation seal and an audit key, all made with rcgen. Never for production.

use super::KeyError;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// Key algorithms the development PKI (and enrolment) can generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyAlgorithm {
    P256,
    P384,
    Rsa2048,
    Rsa3072,
}

impl std::str::FromStr for KeyAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "p256" => Ok(KeyAlgorithm::P256),
            "p384" => Ok(KeyAlgorithm::P384),
            "rsa2048" => Ok(KeyAlgorithm::Rsa2048),
            "rsa3072" => Ok(KeyAlgorithm::Rsa3072),
            other => Err(format!(
                "unknown algorithm {other:?} (p256, p384, rsa2048, rsa3072)"
            )),
        }
    }
}

/// Generate a private key as PKCS#8 DER.
///
/// EC keys come from `ring`. RSA keys come from OpenSSL (`openssl` crate, the system
/// libcrypto): ring cannot generate RSA keys, and the pure-Rust `rsa` crate has a known timing
/// side channel in private-key operations (RUSTSEC-2023-0071), whereas OpenSSL's key
/// generation and blinded RSA are constant-time. Signing itself always goes through ring.
pub fn generate_pkcs8(alg: KeyAlgorithm) -> Result<zeroize::Zeroizing<Vec<u8>>, KeyError> {
    let rng = ring::rand::SystemRandom::new();
    let ec = |a: &'static ring::signature::EcdsaSigningAlgorithm| {
        ring::signature::EcdsaKeyPair::generate_pkcs8(a, &rng)
            .map(|d| zeroize::Zeroizing::new(d.as_ref().to_vec()))
            .map_err(|_| KeyError::Signing("EC key generation failed".into()))
    };
    match alg {
        KeyAlgorithm::P256 => ec(&ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING),
        KeyAlgorithm::P384 => ec(&ring::signature::ECDSA_P384_SHA384_ASN1_SIGNING),
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 => {
            let bits = if alg == KeyAlgorithm::Rsa2048 {
                2048
            } else {
                3072
            };
            let rsa = openssl::rsa::Rsa::generate(bits)
                .map_err(|e| KeyError::Signing(format!("RSA key generation: {e}")))?;
            let pkey =
                openssl::pkey::PKey::from_rsa(rsa).map_err(|e| KeyError::Signing(e.to_string()))?;
            pkey.private_key_to_pkcs8()
                .map(zeroize::Zeroizing::new)
                .map_err(|e| KeyError::Signing(format!("RSA key encoding: {e}")))
        }
    }
}

/// An rcgen key pair from PKCS#8 DER of a generated key.
pub fn rcgen_key(pkcs8: &[u8], alg: KeyAlgorithm) -> Result<KeyPair, KeyError> {
    let sig_alg = match alg {
        KeyAlgorithm::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyAlgorithm::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 => &rcgen::PKCS_RSA_SHA256,
    };
    KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.into(), sig_alg)
        .map_err(|e| KeyError::Format(e.to_string()))
}

fn pkcs8_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("PRIVATE KEY", der.to_vec()))
}

/// An official to enrol: name, position (jabatan), NIP.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OfficialSpec {
    /// File stem under `officials/`.
    pub id: String,
    pub name: String,
    pub title: String,
    pub nip: String,
    pub algorithm: KeyAlgorithm,
}

/// A DN of C=ID, O and CN.
fn simple_dn(org: impl Into<String>, cn: impl Into<String>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "ID");
    dn.push(DnType::OrganizationName, org.into());
    dn.push(DnType::CommonName, cn.into());
    dn
}

/// Subject DN of an official: CN, title (2.5.4.12), serialNumber (2.5.4.5) = NIP, O, C.
pub fn official_dn(name: &str, title: &str, nip: &str, org: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "ID");
    dn.push(DnType::OrganizationName, org);
    dn.push(DnType::CustomDnType(vec![2, 5, 4, 12]), title);
    dn.push(DnType::CustomDnType(vec![2, 5, 4, 5]), nip);
    dn.push(DnType::CommonName, name);
    dn
}

/// Persistent state of a development PKI directory (`pki.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PkiState {
    pub crl_url: String,
    pub organisation: String,
    pub crl_number: u64,
    pub revoked: Vec<Revoked>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Revoked {
    /// Hex serial number.
    pub serial: String,
    pub time: i64,
}

/// Options for `segel dev-pki init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Base URL of the service; the CRL distribution point is `{base}/crl/issuing-ca.crl`.
    pub base_url: String,
    pub organisation: String,
    pub now: OffsetDateTime,
}

const NOT_FOR_PRODUCTION: &str = "Segel Development PKI - NOT FOR PRODUCTION";

fn random_serial() -> SerialNumber {
    let mut b = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b[0] &= 0x7f;
    b[0] |= 0x10;
    SerialNumber::from_slice(&b)
}

fn base_params(dn: DistinguishedName, now: OffsetDateTime, years: i64) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn;
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(365 * years);
    p.serial_number = Some(random_serial());
    p.key_identifier_method = KeyIdMethod::Sha256;
    p.use_authority_key_identifier_extension = true;
    p
}

fn write(path: &Path, data: &[u8], secret: bool) -> Result<(), KeyError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| KeyError::Format(format!("{}: {e}", dir.display())))?;
    }
    // Written beside the target and renamed over it, so that a reader (the service re-reading
    // its CRL) never sees half a file.
    use std::io::Write;
    let fail = |e: std::io::Error| KeyError::Format(format!("{}: {e}", path.display()));
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let mut tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new("."))).map_err(fail)?;
    tmp.write_all(data).map_err(fail)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = if secret { 0o600 } else { 0o644 };
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(fail)?;
    }
    #[cfg(not(unix))]
    let _ = secret;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// A DER certificate's PEM.
pub fn cert_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// The officials `segel dev-pki init` enrols.
pub fn demo_officials() -> Vec<OfficialSpec> {
    vec![
        OfficialSpec {
            id: "budi".into(),
            name: "Dr. Budi Santoso, M.Si.".into(),
            title: "Sekretaris Jenderal".into(),
            nip: "197001012000031001".into(),
            algorithm: KeyAlgorithm::Rsa2048,
        },
        OfficialSpec {
            id: "siti".into(),
            name: "Siti Rahmawati, S.H.".into(),
            title: "Kepala Biro Umum".into(),
            nip: "198203152006042002".into(),
            algorithm: KeyAlgorithm::P256,
        },
    ]
}

/// A development PKI on disk.
pub struct DevPki {
    pub dir: PathBuf,
}

impl DevPki {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn issuing(&self) -> Result<(Issuer<'static, KeyPair>, Vec<u8>), KeyError> {
        let key_pem = fs::read_to_string(self.path("issuing-ca.key.pem"))
            .map_err(|e| KeyError::Format(format!("issuing-ca.key.pem: {e}")))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| KeyError::Format(e.to_string()))?;
        let cert_pem = fs::read_to_string(self.path("issuing-ca.pem"))
            .map_err(|e| KeyError::Format(format!("issuing-ca.pem: {e}")))?;
        let der = pem::parse(&cert_pem)
            .map_err(|e| KeyError::Format(e.to_string()))?
            .into_contents();
        let issuer = Issuer::from_ca_cert_der(&der.clone().into(), key)
            .map_err(|e| KeyError::Format(e.to_string()))?;
        Ok((issuer, der))
    }

    fn state(&self) -> Result<PkiState, KeyError> {
        let data = fs::read(self.path("pki.json"))
            .map_err(|e| KeyError::Format(format!("pki.json: {e}")))?;
        serde_json::from_slice(&data).map_err(|e| KeyError::Format(format!("pki.json: {e}")))
    }

    /// Create a new PKI in `dir` (which must not already hold one).
    pub fn init(dir: &Path, opts: &InitOptions) -> Result<DevPki, KeyError> {
        if dir.join("root-ca.pem").exists() {
            return Err(KeyError::Format(format!(
                "{} already holds a PKI",
                dir.display()
            )));
        }
        let pki = DevPki {
            dir: dir.to_path_buf(),
        };
        let now = opts.now;
        let crl_url = format!("{}/crl/issuing-ca.crl", opts.base_url.trim_end_matches('/'));

        // Root CA.
        let root_der = generate_pkcs8(KeyAlgorithm::P384)?;
        let root_key = rcgen_key(&root_der, KeyAlgorithm::P384)?;
        let dn = simple_dn(NOT_FOR_PRODUCTION, "Segel Development Root CA");
        let mut p = base_params(dn, now, 20);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root = p
            .self_signed(&root_key)
            .map_err(|e| KeyError::Format(e.to_string()))?;
        let root_issuer = Issuer::new(p, root_key);
        write(
            &pki.path("root-ca.pem"),
            cert_pem(root.der()).as_bytes(),
            false,
        )?;
        write(
            &pki.path("root-ca.key.pem"),
            pkcs8_pem(&root_der).as_bytes(),
            true,
        )?;

        // Issuing CA.
        let ca_der = generate_pkcs8(KeyAlgorithm::P256)?;
        let ca_key = rcgen_key(&ca_der, KeyAlgorithm::P256)?;
        let dn = simple_dn(NOT_FOR_PRODUCTION, "Segel Development Issuing CA");
        let mut p = base_params(dn, now, 10);
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = p
            .signed_by(&ca_key, &root_issuer)
            .map_err(|e| KeyError::Format(e.to_string()))?;
        write(
            &pki.path("issuing-ca.pem"),
            cert_pem(ca.der()).as_bytes(),
            false,
        )?;
        write(
            &pki.path("issuing-ca.key.pem"),
            pkcs8_pem(&ca_der).as_bytes(),
            true,
        )?;
        let chain = format!("{}{}", cert_pem(ca.der()), cert_pem(root.der()));
        write(&pki.path("chain.pem"), chain.as_bytes(), false)?;

        let state = PkiState {
            crl_url,
            organisation: opts.organisation.clone(),
            crl_number: 0,
            revoked: vec![],
        };
        write(
            &pki.path("pki.json"),
            serde_json::to_string_pretty(&state)
                .unwrap_or_default()
                .as_bytes(),
            false,
        )?;

        for official in demo_officials() {
            pki.issue_official(&official, now)?;
        }
        // TSA: a critical timeStamping EKU, which rcgen's EKU field cannot mark critical.
        let dn = simple_dn(NOT_FOR_PRODUCTION, "Segel Development TSA");
        let mut eku = CustomExtension::from_oid_content(
            &[2, 5, 29, 37],
            vec![
                0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08,
            ],
        );
        eku.set_criticality(true);
        pki.issue_leaf(
            "tsa",
            dn,
            KeyAlgorithm::P256,
            vec![KeyUsagePurpose::DigitalSignature],
            vec![],
            vec![eku],
            now,
        )?;
        // Organisation seal (e-seal of the ministry).
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CountryName, "ID");
        dn.push(DnType::OrganizationName, opts.organisation.as_str());
        dn.push(
            DnType::CommonName,
            format!("{} (Segel seal)", opts.organisation),
        );
        pki.issue_leaf(
            "seal",
            dn,
            KeyAlgorithm::P256,
            vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::ContentCommitment,
            ],
            vec![ExtendedKeyUsagePurpose::Other(vec![
                1, 3, 6, 1, 5, 5, 7, 3, 36,
            ])],
            vec![],
            now,
        )?;
        // Audit checkpoint key.
        let dn = simple_dn(opts.organisation.as_str(), "Segel audit log");
        pki.issue_leaf(
            "auditor",
            dn,
            KeyAlgorithm::P256,
            vec![KeyUsagePurpose::DigitalSignature],
            vec![],
            vec![],
            now,
        )?;
        pki.write_crl(now)?;
        write(
            &pki.path("README.md"),
            readme(&opts.organisation).as_bytes(),
            false,
        )?;
        Ok(pki)
    }

    /// Issue (or re-issue) an official's key and certificate under `officials/ID`.
    pub fn issue_official(
        &self,
        o: &OfficialSpec,
        now: OffsetDateTime,
    ) -> Result<Vec<u8>, KeyError> {
        let state = self.state()?;
        let dn = official_dn(&o.name, &o.title, &o.nip, &state.organisation);
        self.issue_leaf(
            &format!("officials/{}", o.id),
            dn,
            o.algorithm,
            vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::ContentCommitment,
            ],
            // id-kp-documentSigning (RFC 9336) and emailProtection.
            vec![
                ExtendedKeyUsagePurpose::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 36]),
                ExtendedKeyUsagePurpose::EmailProtection,
            ],
            vec![],
            now,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn issue_leaf(
        &self,
        stem: &str,
        dn: DistinguishedName,
        alg: KeyAlgorithm,
        key_usages: Vec<KeyUsagePurpose>,
        ekus: Vec<ExtendedKeyUsagePurpose>,
        extensions: Vec<CustomExtension>,
        now: OffsetDateTime,
    ) -> Result<Vec<u8>, KeyError> {
        let state = self.state()?;
        let (issuer, ca_der) = self.issuing()?;
        let der = generate_pkcs8(alg)?;
        let key = rcgen_key(&der, alg)?;
        let mut p = base_params(dn, now, 5);
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = key_usages;
        p.extended_key_usages = ekus;
        p.custom_extensions = extensions;
        p.crl_distribution_points = vec![CrlDistributionPoint {
            uris: vec![state.crl_url.clone()],
        }];
        let cert = p
            .signed_by(&key, &issuer)
            .map_err(|e| KeyError::Format(e.to_string()))?;
        write(
            &self.path(&format!("{stem}.pem")),
            cert_pem(cert.der()).as_bytes(),
            false,
        )?;
        write(
            &self.path(&format!("{stem}.key.pem")),
            pkcs8_pem(&der).as_bytes(),
            true,
        )?;
        let root = fs::read_to_string(self.path("root-ca.pem"))
            .map_err(|e| KeyError::Format(e.to_string()))?;
        let chain = format!("{}{}{}", cert_pem(cert.der()), cert_pem(&ca_der), root);
        write(
            &self.path(&format!("{stem}.chain.pem")),
            chain.as_bytes(),
            false,
        )?;
        Ok(cert.der().to_vec())
    }

    /// Revoke a certificate by hex serial and re-issue the CRL.
    pub fn revoke(&self, serial_hex: &str, now: OffsetDateTime) -> Result<(), KeyError> {
        let mut state = self.state()?;
        let serial = serial_hex
            .trim()
            .trim_start_matches("0x")
            .to_ascii_lowercase()
            .replace(':', "");
        if serial.is_empty() || !serial.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(KeyError::Format(format!(
                "serial {serial_hex:?} is not hexadecimal"
            )));
        }
        if !state.revoked.iter().any(|r| r.serial == serial) {
            state.revoked.push(Revoked {
                serial,
                time: now.unix_timestamp(),
            });
        }
        write(
            &self.path("pki.json"),
            serde_json::to_string_pretty(&state)
                .unwrap_or_default()
                .as_bytes(),
            false,
        )?;
        self.write_crl(now)
    }

    /// The nextUpdate of the CRL on disk, if there is a readable one.
    pub fn crl_next_update(&self) -> Option<OffsetDateTime> {
        let der = fs::read(self.path("crl/issuing-ca.crl")).ok()?;
        let (_, crl) = x509_parser::parse_x509_crl(&der).ok()?;
        OffsetDateTime::from_unix_timestamp(crl.next_update()?.timestamp()).ok()
    }

    /// Re-issue the CRL (same revocations, next CRL number) when it is missing, unreadable,
    /// or its nextUpdate is past or within `margin` of `now`. Needs the issuing CA's key;
    /// returns whether a CRL was written.
    pub fn refresh_crl(&self, now: OffsetDateTime, margin: Duration) -> Result<bool, KeyError> {
        if self
            .crl_next_update()
            .is_some_and(|next| next > now + margin)
        {
            return Ok(false);
        }
        self.write_crl(now)?;
        Ok(true)
    }

    /// Write `crl/issuing-ca.crl` (DER) and `.pem`, valid for 7 days.
    pub fn write_crl(&self, now: OffsetDateTime) -> Result<(), KeyError> {
        let mut state = self.state()?;
        state.crl_number += 1;
        let (issuer, _) = self.issuing()?;
        let revoked = state
            .revoked
            .iter()
            .map(|r| {
                let bytes = hex_decode(&r.serial)
                    .ok_or_else(|| KeyError::Format(format!("bad serial {}", r.serial)))?;
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: OffsetDateTime::from_unix_timestamp(r.time).unwrap_or(now),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, KeyError>>()?;
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(7),
            crl_number: SerialNumber::from_slice(&state.crl_number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&issuer)
            .map_err(|e| KeyError::Format(e.to_string()))?;
        write(&self.path("crl/issuing-ca.crl"), crl.der(), false)?;
        write(
            &self.path("crl/issuing-ca.crl.pem"),
            crl.pem().unwrap_or_default().as_bytes(),
            false,
        )?;
        write(
            &self.path("pki.json"),
            serde_json::to_string_pretty(&state)
                .unwrap_or_default()
                .as_bytes(),
            false,
        )
    }
}

/// At service start: when `keys_dir` holds a development PKI with its issuing CA's key,
/// re-issue its CRL if it expires within a day, so the CRL the service publishes and checks
/// against stays current. Returns the new nextUpdate when a CRL was written.
pub fn refresh_dev_crl(
    keys_dir: &Path,
    now: OffsetDateTime,
) -> Result<Option<OffsetDateTime>, KeyError> {
    let pki = DevPki {
        dir: keys_dir.to_path_buf(),
    };
    if !pki.path("issuing-ca.key.pem").is_file() || !pki.path("pki.json").is_file() {
        return Ok(None);
    }
    Ok(if pki.refresh_crl(now, Duration::hours(24))? {
        pki.crl_next_update()
    } else {
        None
    })
}

/// Bytes of a hex string (an odd length gets a leading zero).
pub(crate) fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let s = if s.len() % 2 == 1 {
        format!("0{s}")
    } else {
        s.to_string()
    };
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

fn readme(org: &str) -> String {
    format!(
        "# Development PKI — NEVER USE IN PRODUCTION\n\n\
Every private key in this directory is public: it is committed to the Segel repository so that\n\
the service runs out of the box and tests are reproducible. A signature made with these keys\n\
proves nothing. Production keys come from a real CA (in Indonesia, BSrE) through\n\
`segel keys new` and `segel keys import-cert`.\n\n\
Made by `segel dev-pki init <DIR>` (organisation: {org}). Regenerate with:\n\n\
    rm -rf keys-example && cargo run -- dev-pki init keys-example\n\n\
| file | what |\n|---|---|\n\
| root-ca.pem / .key.pem | root CA (P-384), trust anchor |\n\
| issuing-ca.pem / .key.pem | issuing CA (P-256) under the root |\n\
| chain.pem | issuing CA + root |\n\
| officials/budi.* | Sekretaris Jenderal, RSA-2048 (final signer) |\n\
| officials/siti.* | Kepala Biro Umum, ECDSA P-256 (reviewer, paraf) |\n\
| tsa.* | time-stamp authority (critical timeStamping EKU) |\n\
| seal.* | organisation seal for bulk letters |\n\
| auditor.* | key that signs audit-log checkpoints |\n\
| crl/issuing-ca.crl | CRL of the issuing CA (DER; .pem beside it) |\n\
| pki.json | CRL number, revoked serials, CRL URL |\n\n\
Each `X.pem` is the certificate, `X.key.pem` the PKCS#8 key, `X.chain.pem` certificate + CAs.\n"
    )
}

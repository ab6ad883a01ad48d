//! Software keys loaded from PEM (PKCS#8, PKCS#1, SEC1) or PKCS#12 files, signing with `ring`.

use super::{KeyError, SignatureAlgorithm, Signer, certificate_public_key};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use std::fmt;
use zeroize::Zeroizing;

enum KeyKind {
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair),
}

/// A private key held in process memory, with its certificate chain.
pub struct SoftwareSigner {
    key: KeyKind,
    algorithm: SignatureAlgorithm,
    chain: Vec<Vec<u8>>,
    rng: SystemRandom,
}

impl fmt::Debug for SoftwareSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftwareSigner")
            .field("algorithm", &self.algorithm)
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// OIDs of the named curves ring supports.
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

impl SoftwareSigner {
    /// A signer from a PEM private key and a certificate chain (signer first).
    ///
    /// Accepts `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` (PKCS#1) and `EC PRIVATE KEY` (SEC1).
    /// `pss` selects RSASSA-PSS for RSA keys. The first certificate must carry this key's public
    /// key, or the key is refused before anything is signed.
    pub fn from_pem(key_pem: &[u8], chain: Vec<Vec<u8>>, pss: bool) -> Result<Self, KeyError> {
        let blocks =
            pem::parse_many(key_pem).map_err(|e| KeyError::Format(format!("not PEM: {e}")))?;
        let block = blocks
            .into_iter()
            .find(|b| b.tag().ends_with("PRIVATE KEY"))
            .ok_or_else(|| KeyError::Format("no PRIVATE KEY block in the key file".into()))?;
        let der = Zeroizing::new(block.contents().to_vec());
        let key = match block.tag() {
            "PRIVATE KEY" => parse_pkcs8(&der)?,
            "RSA PRIVATE KEY" => KeyKind::Rsa(
                RsaKeyPair::from_der(&der)
                    .map_err(|e| KeyError::Unsupported(format!("RSA key: {e}")))?,
            ),
            "EC PRIVATE KEY" => parse_sec1(&der)?,
            "ENCRYPTED PRIVATE KEY" => {
                return Err(KeyError::Unsupported(
                    "encrypted PEM keys are not read; use a PKCS#12 file or an unencrypted key"
                        .into(),
                ));
            }
            other => return Err(KeyError::Format(format!("unexpected PEM block {other}"))),
        };
        Self::new(key, chain, pss)
    }

    /// A signer from a PKCS#8 DER private key.
    pub fn from_pkcs8(der: &[u8], chain: Vec<Vec<u8>>, pss: bool) -> Result<Self, KeyError> {
        Self::new(parse_pkcs8(der)?, chain, pss)
    }

    /// A signer from a PKCS#12 file: the key and the certificates that came with it.
    pub fn from_pkcs12(data: &[u8], password: &str, pss: bool) -> Result<Self, KeyError> {
        let archive = p12_keystore::Pkcs12Archive::from_pkcs12(data, password).map_err(|e| {
            KeyError::Pkcs12(format!(
                "cannot open (wrong password or unsupported encryption): {e}"
            ))
        })?;
        let key_bag = match archive.keys.as_slice() {
            [one] => one,
            [] => return Err(KeyError::Pkcs12("the file holds no private key".into())),
            _ => {
                return Err(KeyError::Pkcs12(
                    "the file holds more than one private key".into(),
                ));
            }
        };
        let key_der = Zeroizing::new(key_bag.key.as_der().to_vec());
        let key = parse_pkcs8(&key_der)?;
        let public = key_public(&key);
        let certs: Vec<Vec<u8>> = archive
            .certs
            .iter()
            .map(|c| c.cert.as_der().to_vec())
            .collect();
        let leaf_index = certs
            .iter()
            .position(|c| {
                certificate_public_key(c)
                    .map(|p| p == public)
                    .unwrap_or(false)
            })
            .ok_or(KeyError::CertificateMismatch)?;
        let chain = order_chain(certs, leaf_index);
        Self::new(key, chain, pss)
    }

    fn new(key: KeyKind, chain: Vec<Vec<u8>>, pss: bool) -> Result<Self, KeyError> {
        let leaf = chain
            .first()
            .ok_or_else(|| KeyError::Certificate("no certificate given for the key".into()))?;
        if certificate_public_key(leaf)? != key_public(&key) {
            return Err(KeyError::CertificateMismatch);
        }
        let algorithm = match &key {
            KeyKind::Rsa(k) => {
                let bits = k.public().modulus_len() * 8;
                if !(2048..=4096).contains(&bits) {
                    return Err(KeyError::Unsupported(format!(
                        "RSA-{bits}: keys of 2048 to 4096 bits are accepted"
                    )));
                }
                if pss {
                    SignatureAlgorithm::RsaPssSha256
                } else {
                    SignatureAlgorithm::RsaPkcs1Sha256
                }
            }
            KeyKind::Ecdsa(k) => {
                if k.public_key().as_ref().len() == 65 {
                    SignatureAlgorithm::EcdsaP256Sha256
                } else {
                    SignatureAlgorithm::EcdsaP384Sha384
                }
            }
        };
        Ok(SoftwareSigner {
            key,
            algorithm,
            chain,
            rng: SystemRandom::new(),
        })
    }
}

impl SoftwareSigner {
    /// The certificate chain (signer first), as DER.
    pub fn chain_ders(&self) -> Vec<Vec<u8>> {
        self.chain.clone()
    }
}

impl Signer for SoftwareSigner {
    fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    fn certificate_chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.key {
            KeyKind::Rsa(k) => {
                let padding: &dyn signature::RsaEncoding = match self.algorithm {
                    SignatureAlgorithm::RsaPssSha256 => &signature::RSA_PSS_SHA256,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut out = vec![0u8; k.public().modulus_len()];
                k.sign(padding, &self.rng, message, &mut out)
                    .map_err(|_| KeyError::Signing("RSA signing failed".into()))?;
                Ok(out)
            }
            KeyKind::Ecdsa(k) => k
                .sign(&self.rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Signing("ECDSA signing failed".into())),
        }
    }

    fn max_signature_len(&self) -> usize {
        match &self.key {
            KeyKind::Rsa(k) => k.public().modulus_len(),
            // DER ECDSA-Sig-Value: SEQUENCE { INTEGER r, INTEGER s }, each up to n+1 bytes.
            KeyKind::Ecdsa(_) => match self.algorithm {
                SignatureAlgorithm::EcdsaP256Sha256 => 72,
                _ => 104,
            },
        }
    }
}

fn key_public(key: &KeyKind) -> Vec<u8> {
    match key {
        KeyKind::Rsa(k) => k.public().as_ref().to_vec(),
        KeyKind::Ecdsa(k) => k.public_key().as_ref().to_vec(),
    }
}

fn parse_pkcs8(der: &[u8]) -> Result<KeyKind, KeyError> {
    use pkcs8::der::Decode;
    let info = pkcs8::PrivateKeyInfo::from_der(der)
        .map_err(|e| KeyError::Format(format!("PKCS#8: {e}")))?;
    let rng = SystemRandom::new();
    match info.algorithm.oid.to_string().as_str() {
        "1.2.840.113549.1.1.1" => RsaKeyPair::from_pkcs8(der)
            .map(KeyKind::Rsa)
            .map_err(|e| KeyError::Unsupported(format!("RSA key: {e}"))),
        "1.2.840.10045.2.1" => {
            let curve = info
                .algorithm
                .parameters_oid()
                .map_err(|_| KeyError::Format("EC key without a named curve".into()))?
                .to_string();
            let alg = match curve.as_str() {
                OID_P256 => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                OID_P384 => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                other => {
                    return Err(KeyError::Unsupported(format!(
                        "EC curve {other} (P-256 and P-384 are accepted)"
                    )));
                }
            };
            EcdsaKeyPair::from_pkcs8(alg, der, &rng)
                .map(KeyKind::Ecdsa)
                .map_err(|e| KeyError::Unsupported(format!("EC key: {e}")))
        }
        other => Err(KeyError::Unsupported(format!("key algorithm {other}"))),
    }
}

fn parse_sec1(der: &[u8]) -> Result<KeyKind, KeyError> {
    use sec1::der::Decode;
    let key = sec1::EcPrivateKey::from_der(der)
        .map_err(|e| KeyError::Format(format!("SEC1 EC key: {e}")))?;
    let curve = key
        .parameters
        .and_then(|p| p.named_curve())
        .ok_or_else(|| KeyError::Format("SEC1 EC key without a named curve".into()))?
        .to_string();
    let alg = match curve.as_str() {
        OID_P256 => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        OID_P384 => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
        other => {
            return Err(KeyError::Unsupported(format!(
                "EC curve {other} (P-256 and P-384 are accepted)"
            )));
        }
    };
    let public = key
        .public_key
        .ok_or_else(|| KeyError::Format("SEC1 EC key without its public key".into()))?;
    EcdsaKeyPair::from_private_key_and_public_key(
        alg,
        key.private_key,
        public,
        &SystemRandom::new(),
    )
    .map(KeyKind::Ecdsa)
    .map_err(|e| KeyError::Unsupported(format!("EC key: {e}")))
}

/// Put the leaf first, then each issuer in turn; certificates that are not part of the path follow.
fn order_chain(mut certs: Vec<Vec<u8>>, leaf_index: usize) -> Vec<Vec<u8>> {
    let mut ordered = vec![certs.remove(leaf_index)];
    loop {
        let Some(last) = ordered.last() else { break };
        let Ok((_, last)) = x509_parser::parse_x509_certificate(last) else {
            break;
        };
        if last.subject() == last.issuer() {
            break;
        }
        let issuer = last.issuer().as_raw().to_vec();
        let Some(pos) = certs.iter().position(|c| {
            x509_parser::parse_x509_certificate(c)
                .map(|(_, c)| c.subject().as_raw() == issuer)
                .unwrap_or(false)
        }) else {
            break;
        };
        ordered.push(certs.remove(pos));
    }
    ordered.extend(certs);
    ordered
}

/// All `CERTIFICATE` blocks of a PEM file, in order, as DER.
pub fn load_certificates_pem(data: &[u8]) -> Result<Vec<Vec<u8>>, KeyError> {
    let blocks =
        pem::parse_many(data).map_err(|e| KeyError::Certificate(format!("not PEM: {e}")))?;
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect();
    if certs.is_empty() {
        return Err(KeyError::Certificate(
            "no CERTIFICATE block in the file".into(),
        ));
    }
    for c in &certs {
        x509_parser::parse_x509_certificate(c)
            .map_err(|e| KeyError::Certificate(format!("not a valid X.509 certificate: {e}")))?;
    }
    Ok(certs)
}

//! RFC 3161 time-stamping: a client (`HttpTsa`), Segel's own authority (`BuiltinTsa`), and the
//! request/response encoding they share.

use super::builder::{build_signed_data, digest_algorithm_identifier};
use super::oids::*;
use super::{CmsError, enc};
use crate::clock::Clock;
use crate::keys::{DigestAlgorithm, Signer};
use cmpv2::status::{PkiStatus, PkiStatusInfo};
use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use der::asn1::{GeneralizedTime, Int, OctetString};
use der::{Decode, Encode};
use ring::rand::SecureRandom;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use x509_tsp::{MessageImprint, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

/// Something that returns an RFC 3161 TimeStampToken (a DER ContentInfo) over a digest.
pub trait TimeStamper: Send + Sync {
    /// A token whose messageImprint is `digest` computed with `alg`.
    fn timestamp(&self, alg: DigestAlgorithm, digest: &[u8]) -> Result<Vec<u8>, CmsError>;
}

fn message_imprint(alg: DigestAlgorithm, digest: &[u8]) -> Result<MessageImprint, CmsError> {
    let id = digest_algorithm_identifier(alg);
    Ok(MessageImprint {
        hash_algorithm: spki::AlgorithmIdentifier {
            oid: id.oid,
            parameters: id.parameters,
        },
        hashed_message: OctetString::new(digest.to_vec()).map_err(enc("messageImprint"))?,
    })
}

fn random_nonce() -> Result<[u8; 8], CmsError> {
    let mut nonce = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| CmsError::Timestamp("no randomness for the nonce".into()))?;
    nonce[0] &= 0x7f; // a positive INTEGER
    nonce[0] |= 0x01; // and no leading zero octet to strip
    Ok(nonce)
}

/// DER of a TimeStampReq (RFC 3161 §2.4.1) asking for the TSA certificate, with a nonce.
pub fn encode_request(
    alg: DigestAlgorithm,
    digest: &[u8],
    nonce: &[u8],
) -> Result<Vec<u8>, CmsError> {
    TimeStampReq {
        version: TspVersion::V1,
        message_imprint: message_imprint(alg, digest)?,
        req_policy: None,
        nonce: Some(Int::new(nonce).map_err(enc("nonce"))?),
        cert_req: true,
        extensions: None,
    }
    .to_der()
    .map_err(enc("TimeStampReq"))
}

/// The TSTInfo inside a time-stamp token (no signature check: that is the verifier's job).
pub fn token_tst_info(token: &[u8]) -> Result<TstInfo, CmsError> {
    let ci = ContentInfo::from_der(token).map_err(enc("time-stamp token"))?;
    if ci.content_type != ID_SIGNED_DATA {
        return Err(CmsError::Timestamp("the token is not SignedData".into()));
    }
    let sd: SignedData = ci
        .content
        .decode_as()
        .map_err(enc("time-stamp SignedData"))?;
    if sd.encap_content_info.econtent_type != ID_CT_TST_INFO {
        return Err(CmsError::Timestamp(
            "the token does not encapsulate a TSTInfo".into(),
        ));
    }
    let econtent = sd
        .encap_content_info
        .econtent
        .ok_or_else(|| CmsError::Timestamp("the token has no TSTInfo".into()))?;
    let octets: OctetString = econtent.decode_as().map_err(enc("TSTInfo octets"))?;
    TstInfo::from_der(octets.as_bytes()).map_err(enc("TSTInfo"))
}

/// Check a TimeStampResp against the request that was sent and return its token.
pub fn decode_response(
    resp: &[u8],
    alg: DigestAlgorithm,
    digest: &[u8],
    nonce: &[u8],
) -> Result<Vec<u8>, CmsError> {
    let resp = TimeStampResp::from_der(resp)
        .map_err(|e| CmsError::Timestamp(format!("the answer is not a TimeStampResp: {e}")))?;
    match resp.status.status {
        PkiStatus::Accepted | PkiStatus::GrantedWithMods => {}
        other => {
            let text: Vec<String> = resp
                .status
                .status_string
                .iter()
                .flatten()
                .map(|s| s.as_str().to_string())
                .collect();
            return Err(CmsError::Timestamp(format!(
                "request refused ({other:?}) {}",
                text.join("; ")
            )));
        }
    }
    let token = resp
        .time_stamp_token
        .ok_or_else(|| CmsError::Timestamp("granted without a token".into()))?;
    let token = token.to_der().map_err(enc("time-stamp token"))?;
    let info = token_tst_info(&token)?;
    if info.message_imprint.hashed_message.as_bytes() != digest
        || info.message_imprint.hash_algorithm.oid != digest_algorithm_identifier(alg).oid
    {
        return Err(CmsError::Timestamp(
            "the token time-stamps another digest".into(),
        ));
    }
    if info.nonce.as_ref().map(|n| n.as_bytes()) != Some(nonce) {
        return Err(CmsError::Timestamp(
            "the token's nonce does not match the request".into(),
        ));
    }
    Ok(token)
}

/// An external TSA reached over HTTP (RFC 3161 §3.4, `application/timestamp-query`).
#[derive(Debug, Clone)]
pub struct HttpTsa {
    pub url: String,
    pub timeout: Duration,
}

impl HttpTsa {
    pub fn new(url: impl Into<String>) -> Self {
        HttpTsa {
            url: url.into(),
            timeout: Duration::from_secs(20),
        }
    }
}

impl TimeStamper for HttpTsa {
    fn timestamp(&self, alg: DigestAlgorithm, digest: &[u8]) -> Result<Vec<u8>, CmsError> {
        let nonce = random_nonce()?;
        let body = encode_request(alg, digest, &nonce)?;
        let client = reqwest::blocking::Client::builder()
            .timeout(self.timeout)
            .build()
            .map_err(|e| CmsError::Timestamp(format!("HTTP client: {e}")))?;
        let response = client
            .post(&self.url)
            .header("Content-Type", "application/timestamp-query")
            .body(body)
            .send()
            .map_err(|e| CmsError::Timestamp(format!("{}: {e}", self.url)))?;
        if !response.status().is_success() {
            return Err(CmsError::Timestamp(format!(
                "{} answered HTTP {}",
                self.url,
                response.status()
            )));
        }
        let bytes = response
            .bytes()
            .map_err(|e| CmsError::Timestamp(format!("{}: {e}", self.url)))?;
        decode_response(&bytes, alg, digest, &nonce)
    }
}

/// Segel's own time-stamp authority: a key with a timeStamping certificate and a policy OID.
pub struct BuiltinTsa {
    signer: Arc<dyn Signer>,
    policy: der::oid::ObjectIdentifier,
    clock: Arc<dyn Clock>,
    serial: AtomicU64,
}

/// Policy OID of Segel's development TSA, under enterprise number 32473, which RFC 5612 reserves
/// for documentation and examples.
pub const DEV_TSA_POLICY: &str = "1.3.6.1.4.1.32473.7345.1";

impl BuiltinTsa {
    /// The TSA's certificate first, then its CAs.
    pub fn certificate_chain(&self) -> &[Vec<u8>] {
        self.signer.certificate_chain()
    }

    /// A TSA signing with `signer` (whose certificate must carry a critical timeStamping EKU).
    pub fn new(
        signer: Arc<dyn Signer>,
        policy: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, CmsError> {
        // const-oid's parser overflows on arcs beyond 32 bits; check them first.
        if policy.split('.').any(|arc| arc.parse::<u32>().is_err()) {
            return Err(CmsError::Timestamp(format!(
                "policy {policy} is not an OID with 32-bit arcs"
            )));
        }
        let policy = der::oid::ObjectIdentifier::new(policy)
            .map_err(|e| CmsError::Timestamp(format!("policy {policy} is not an OID: {e}")))?;
        let leaf = signer
            .certificate_chain()
            .first()
            .ok_or_else(|| CmsError::Timestamp("the TSA key has no certificate".into()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| CmsError::Certificate(format!("TSA certificate: {e}")))?;
        let eku = cert
            .extended_key_usage()
            .map_err(|e| CmsError::Certificate(format!("TSA certificate EKU: {e}")))?
            .ok_or_else(|| {
                CmsError::Timestamp("the TSA certificate has no extendedKeyUsage".into())
            })?;
        if !eku.critical || !eku.value.time_stamping {
            return Err(CmsError::Timestamp(
                "the TSA certificate needs a critical timeStamping extendedKeyUsage (RFC 3161 §2.3)".into(),
            ));
        }
        // Serial numbers start from the clock so a restarted TSA does not reuse them.
        let start = u64::try_from(clock.now().unix_timestamp_nanos() / 1000).unwrap_or(1);
        Ok(BuiltinTsa {
            signer,
            policy,
            clock,
            serial: AtomicU64::new(start),
        })
    }

    fn token(&self, imprint: MessageImprint, nonce: Option<Int>) -> Result<Vec<u8>, CmsError> {
        let now = self.clock.now();
        let gen_time = GeneralizedTime::from_unix_duration(Duration::from_secs(
            u64::try_from(now.unix_timestamp())
                .map_err(|_| CmsError::Timestamp("clock before 1970".into()))?,
        ))
        .map_err(enc("genTime"))?;
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let info = TstInfo {
            version: TspVersion::V1,
            policy: self.policy,
            message_imprint: imprint,
            serial_number: positive_int(serial)?,
            gen_time,
            accuracy: Some(x509_tsp::Accuracy {
                seconds: Some(1),
                millis: None,
                micros: None,
            }),
            ordering: false,
            nonce,
            tsa: None,
            extensions: None,
        };
        let tst_der = info.to_der().map_err(enc("TSTInfo"))?;
        let digest = self.signer.algorithm().digest().digest(&tst_der);
        Ok(build_signed_data(
            self.signer.as_ref(),
            ID_CT_TST_INFO,
            Some(tst_der),
            &digest,
            None,
        )?
        .cms)
    }

    /// Answer a DER TimeStampReq with a DER TimeStampResp (RFC 3161 §2.4.2); requests that
    /// cannot be decoded or use an unknown hash get a `rejection` status, as the RFC asks.
    pub fn respond(&self, request: &[u8]) -> Vec<u8> {
        let result = TimeStampReq::from_der(request)
            .map_err(|e| CmsError::Timestamp(format!("bad request: {e}")))
            .and_then(|req| {
                let oid = req.message_imprint.hash_algorithm.oid;
                let len = match oid {
                    o if o == SHA256 => 32,
                    o if o == SHA384 => 48,
                    o if o == SHA512 => 64,
                    _ => return Err(CmsError::Timestamp("unsupported hash algorithm".into())),
                };
                if req.message_imprint.hashed_message.as_bytes().len() != len {
                    return Err(CmsError::Timestamp(
                        "imprint length does not match its algorithm".into(),
                    ));
                }
                self.token(req.message_imprint, req.nonce)
            });
        let (status, token) = match result {
            Ok(token) => (PkiStatus::Accepted, Some(token)),
            Err(e) => {
                tracing::info!(error = %e, "time-stamp request rejected");
                (PkiStatus::Rejection, None)
            }
        };
        encode_response(status, token).unwrap_or_else(|_| {
            // The smallest valid TimeStampResp: SEQUENCE { SEQUENCE { INTEGER 2 (rejection) } }.
            vec![0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x02]
        })
    }
}

/// A non-negative INTEGER in minimal DER form (X.690 §8.3.2).
fn positive_int(v: u64) -> Result<Int, CmsError> {
    let bytes = v.to_be_bytes();
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(7);
    let mut minimal = bytes[first..].to_vec();
    if minimal[0] & 0x80 != 0 {
        minimal.insert(0, 0);
    }
    Int::new(&minimal).map_err(enc("serialNumber"))
}

fn encode_response(status: PkiStatus, token: Option<Vec<u8>>) -> Result<Vec<u8>, CmsError> {
    let token = match token {
        Some(t) => Some(ContentInfo::from_der(&t).map_err(enc("token"))?),
        None => None,
    };
    TimeStampResp {
        status: PkiStatusInfo {
            status,
            status_string: None,
            fail_info: None,
        },
        time_stamp_token: token,
    }
    .to_der()
    .map_err(enc("TimeStampResp"))
}

impl TimeStamper for BuiltinTsa {
    fn timestamp(&self, alg: DigestAlgorithm, digest: &[u8]) -> Result<Vec<u8>, CmsError> {
        let nonce = random_nonce()?;
        let request = encode_request(alg, digest, &nonce)?;
        let response = self.respond(&request);
        decode_response(&response, alg, digest, &nonce)
    }
}

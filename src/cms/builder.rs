//! Building SignedData (RFC 5652 §5.1) with one SignerInfo for PAdES and for time-stamp tokens.

use super::oids::*;
use super::{
    CmsError, EssCertIdV2, IssuerSerial, SigningCertificateV2, TimeStamper, enc, single_attribute,
};
use crate::keys::{DigestAlgorithm, SignatureAlgorithm, Signer};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{OctetString, SetOfVec};
use der::{Any, Decode, Encode, Sequence};
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;
use x509_cert::ext::pkix::name::GeneralName;

/// The CMS of a PAdES signature and the signature value it carries.
#[derive(Debug, Clone)]
pub struct PadesSignature {
    /// DER ContentInfo (id-signedData), ready for /Contents.
    pub cms: Vec<u8>,
    /// The SignerInfo's signature value (what a signature time-stamp covers).
    pub signature_value: Vec<u8>,
}

/// `AlgorithmIdentifier` of a digest; parameters absent (RFC 5754 §2).
pub fn digest_algorithm_identifier(alg: DigestAlgorithm) -> AlgorithmIdentifierOwned {
    let oid = match alg {
        DigestAlgorithm::Sha256 => SHA256,
        DigestAlgorithm::Sha384 => SHA384,
        DigestAlgorithm::Sha512 => SHA512,
    };
    AlgorithmIdentifierOwned {
        oid,
        parameters: None,
    }
}

/// `RSASSA-PSS-params` (RFC 4055 §3.1); trailerField keeps its default.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct RsaPssParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    hash_algorithm: AlgorithmIdentifierOwned,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT")]
    mask_gen_algorithm: AlgorithmIdentifierOwned,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT")]
    salt_length: u32,
}

/// The SignerInfo `signatureAlgorithm` for a Segel signature algorithm.
pub fn signature_algorithm_identifier(
    alg: SignatureAlgorithm,
) -> Result<AlgorithmIdentifierOwned, CmsError> {
    Ok(match alg {
        // RFC 4055 §5: sha256WithRSAEncryption with NULL parameters.
        SignatureAlgorithm::RsaPkcs1Sha256 => AlgorithmIdentifierOwned {
            oid: SHA256_WITH_RSA,
            parameters: Some(Any::null()),
        },
        SignatureAlgorithm::RsaPssSha256 => {
            let sha256 = digest_algorithm_identifier(DigestAlgorithm::Sha256);
            let params = RsaPssParams {
                hash_algorithm: sha256.clone(),
                mask_gen_algorithm: AlgorithmIdentifierOwned {
                    oid: MGF1,
                    parameters: Some(Any::encode_from(&sha256).map_err(enc("MGF1 parameters"))?),
                },
                salt_length: 32,
            };
            AlgorithmIdentifierOwned {
                oid: RSASSA_PSS,
                parameters: Some(Any::encode_from(&params).map_err(enc("RSASSA-PSS parameters"))?),
            }
        }
        // RFC 5758 §3.2: the ECDSA identifiers carry no parameters.
        SignatureAlgorithm::EcdsaP256Sha256 => AlgorithmIdentifierOwned {
            oid: ECDSA_WITH_SHA256,
            parameters: None,
        },
        SignatureAlgorithm::EcdsaP384Sha384 => AlgorithmIdentifierOwned {
            oid: ECDSA_WITH_SHA384,
            parameters: None,
        },
    })
}

pub(crate) fn parse_chain(chain: &[Vec<u8>]) -> Result<Vec<Certificate>, CmsError> {
    chain
        .iter()
        .map(|der| {
            Certificate::from_der(der)
                .map_err(|e| CmsError::Certificate(format!("cannot be decoded: {e}")))
        })
        .collect()
}

/// The signing-certificate-v2 attribute value for `cert` (RFC 5035), hashed with SHA-256.
fn signing_certificate_v2(cert: &Certificate, cert_der: &[u8]) -> SigningCertificateV2 {
    SigningCertificateV2 {
        certs: vec![EssCertIdV2 {
            hash_algorithm: None,
            cert_hash: OctetString::new(DigestAlgorithm::Sha256.digest(cert_der))
                .expect("a SHA-256 digest always fits an OCTET STRING"),
            issuer_serial: Some(IssuerSerial {
                issuer: vec![GeneralName::DirectoryName(
                    cert.tbs_certificate.issuer.clone(),
                )],
                serial_number: cert.tbs_certificate.serial_number.clone(),
            }),
        }],
    }
}

/// Build SignedData around one SignerInfo signed by `signer`.
///
/// Signed attributes (RFC 5652 §11, EN 319 122-1 §5.2): content-type, message-digest of
/// `content_digest`, signing-certificate-v2; no signing-time (PAdES B-B takes the time from /M).
/// `econtent` is the encapsulated content (time-stamp tokens) or `None` for a detached signature.
pub(crate) fn build_signed_data(
    signer: &dyn Signer,
    econtent_type: der::oid::ObjectIdentifier,
    econtent: Option<Vec<u8>>,
    content_digest: &[u8],
    tsa: Option<&dyn TimeStamper>,
) -> Result<PadesSignature, CmsError> {
    let alg = signer.algorithm();
    let digest_alg = alg.digest();
    let chain_der = signer.certificate_chain();
    let chain = parse_chain(chain_der)?;
    let leaf = chain
        .first()
        .ok_or_else(|| CmsError::Certificate("the signer has no certificate".into()))?;

    let content_type = single_attribute(ID_CONTENT_TYPE, &econtent_type, "content-type attribute")?;
    let message_digest = single_attribute(
        ID_MESSAGE_DIGEST,
        &OctetString::new(content_digest.to_vec()).map_err(enc("message-digest"))?,
        "message-digest attribute",
    )?;
    let signing_cert = single_attribute(
        ID_AA_SIGNING_CERTIFICATE_V2,
        &signing_certificate_v2(leaf, &chain_der[0]),
        "signing-certificate-v2 attribute",
    )?;
    let signed_attrs = SetOfVec::try_from(vec![content_type, message_digest, signing_cert])
        .map_err(enc("signed attributes"))?;
    // RFC 5652 §5.4: the signature covers the DER of the attributes with an explicit SET OF tag.
    let to_be_signed = signed_attrs.to_der().map_err(enc("signed attributes"))?;
    let signature = signer.sign(&to_be_signed)?;

    let unsigned_attrs = match tsa {
        None => None,
        Some(tsa) => {
            let token = tsa.timestamp(
                DigestAlgorithm::Sha256,
                &DigestAlgorithm::Sha256.digest(&signature),
            )?;
            let token = Any::from_der(&token).map_err(enc("time-stamp token"))?;
            let mut values = SetOfVec::new();
            values.insert(token).map_err(enc("time-stamp token"))?;
            let attr = x509_cert::attr::Attribute {
                oid: ID_AA_SIGNATURE_TIME_STAMP_TOKEN,
                values,
            };
            Some(SetOfVec::try_from(vec![attr]).map_err(enc("unsigned attributes"))?)
        }
    };

    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: leaf.tbs_certificate.issuer.clone(),
            serial_number: leaf.tbs_certificate.serial_number.clone(),
        }),
        digest_alg: digest_algorithm_identifier(digest_alg),
        signed_attrs: Some(signed_attrs),
        signature_algorithm: signature_algorithm_identifier(alg)?,
        signature: OctetString::new(signature.clone()).map_err(enc("signature value"))?,
        unsigned_attrs,
    };

    let certificates = CertificateSet::try_from(
        chain
            .into_iter()
            .map(CertificateChoices::Certificate)
            .collect::<Vec<_>>(),
    )
    .map_err(enc("certificate set"))?;
    let econtent = match econtent {
        None => None,
        Some(bytes) => Some(
            Any::encode_from(&OctetString::new(bytes).map_err(enc("eContent"))?)
                .map_err(enc("eContent"))?,
        ),
    };
    // RFC 5652 §5.1: version 3 when the content type is not id-data, else 1.
    let version = if econtent_type == ID_DATA {
        CmsVersion::V1
    } else {
        CmsVersion::V3
    };
    let mut digest_algorithms = SetOfVec::new();
    digest_algorithms
        .insert(digest_algorithm_identifier(digest_alg))
        .map_err(enc("digest algorithms"))?;
    let signed_data = SignedData {
        version,
        digest_algorithms,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type,
            econtent,
        },
        certificates: Some(certificates),
        crls: None,
        signer_infos: SignerInfos::try_from(vec![signer_info]).map_err(enc("signer infos"))?,
    };
    let content_info = ContentInfo {
        content_type: ID_SIGNED_DATA,
        content: Any::encode_from(&signed_data).map_err(enc("SignedData"))?,
    };
    Ok(PadesSignature {
        cms: content_info.to_der().map_err(enc("ContentInfo"))?,
        signature_value: signature,
    })
}

/// A detached CMS signature over a PDF's byte ranges (`document_digest` computed with
/// `signer.algorithm().digest()`), optionally with a signature time-stamp (PAdES B-T).
pub fn build_pades_cms(
    signer: &dyn Signer,
    document_digest: &[u8],
    tsa: Option<&dyn TimeStamper>,
) -> Result<PadesSignature, CmsError> {
    build_signed_data(signer, ID_DATA, None, document_digest, tsa)
}

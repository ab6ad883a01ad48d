//! Shared helpers: keys from keys-example and the openssl-made fixture PKI, inputs, temp dirs.
#![allow(dead_code)]

use segel::clock::FixedClock;
use segel::keys::{SoftwareSigner, load_certificates_pem};
use std::path::{Path, PathBuf};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn read(rel: &str) -> Vec<u8> {
    std::fs::read(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A signer from key + chain PEM files relative to the crate root.
pub fn signer(key: &str, chain: &[&str], pss: bool) -> SoftwareSigner {
    let mut certs = Vec::new();
    for c in chain {
        certs.extend(load_certificates_pem(&read(c)).unwrap());
    }
    SoftwareSigner::from_pem(&read(key), certs, pss).unwrap()
}

/// Segel's development PKI: the RSA-2048 official.
pub fn dev_rsa() -> SoftwareSigner {
    signer(
        "keys-example/officials/budi.key.pem",
        &["keys-example/officials/budi.chain.pem"],
        false,
    )
}

/// Segel's development PKI: the P-256 official.
pub fn dev_ec() -> SoftwareSigner {
    signer(
        "keys-example/officials/siti.key.pem",
        &["keys-example/officials/siti.chain.pem"],
        false,
    )
}

/// The openssl-CLI PKI in fixtures/pki (made without Segel's code).
pub fn ossl(name: &str, pss: bool) -> SoftwareSigner {
    signer(
        &format!("fixtures/pki/{name}.key.pem"),
        &[
            &format!("fixtures/pki/{name}.cert.pem"),
            "fixtures/pki/chain.pem",
        ],
        pss,
    )
}

/// Trust roots for validators: both PKIs.
pub fn trust_roots() -> Vec<PathBuf> {
    vec![
        root().join("keys-example/root-ca.pem"),
        root().join("fixtures/pki/root-ca.cert.pem"),
    ]
}

pub fn other_certs() -> Vec<PathBuf> {
    vec![
        root().join("keys-example/issuing-ca.pem"),
        root().join("fixtures/pki/intermediate-ca.cert.pem"),
    ]
}

/// A clock at the current time (the certificates are valid now).
pub fn now() -> FixedClock {
    FixedClock(time::OffsetDateTime::now_utc())
}

/// A fresh temporary directory kept for the test's lifetime.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("segel-it-")
        .tempdir()
        .unwrap()
}

/// A one-page PDF of about `size` bytes carrying an incompressible "scanned" image, made with
/// lopdf (classic xref table), like a scanned attachment.
pub fn big_pdf(size: usize) -> Vec<u8> {
    use lopdf::{Document, Object, Stream, dictionary};
    let mut doc = Document::with_version("1.7");
    let pages_id = doc.new_object_id();
    let side = ((size / 3) as f64).sqrt() as i64;
    let mut data = vec![0u8; (side * side * 3) as usize];
    let mut x: u64 = 0x9E3779B97F4A7C15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    let image = Stream::new(
        dictionary! { "Type" => "XObject", "Subtype" => "Image", "Width" => side, "Height" => side,
        "ColorSpace" => "DeviceRGB", "BitsPerComponent" => 8 },
        data,
    );
    let image_id = doc.add_object(image);
    let font_id = doc.add_object(
        dictionary! { "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica" },
    );
    let content =
        b"q 500 0 0 500 47 300 cm /Im1 Do Q BT /F1 11 Tf 350 200 Td (${ttd}) Tj ET".to_vec();
    let content_id = doc.add_object(Stream::new(dictionary! {}, content));
    let page_id = doc.add_object(dictionary! {
        "Type" => "Page", "Parent" => pages_id, "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        "Contents" => content_id,
        "Resources" => dictionary! { "XObject" => dictionary! { "Im1" => image_id }, "Font" => dictionary! { "F1" => font_id } },
    });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(
            dictionary! { "Type" => "Pages", "Kids" => vec![page_id.into()], "Count" => 1 },
        ),
    );
    let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog_id);
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

pub fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

//! Verification benchmarks (criterion). Targets (issue #3): ≤ 0.5 ms for a 2 KB single-signature
//! letter; a 20 MB signed PDF within 2× the time of SHA-256 over the file.

#[path = "../tests/it/common.rs"]
mod common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use segel::trust::{TrustStore, VerifyOptions, verify_pdf};

fn store() -> TrustStore {
    let mut s = TrustStore::default();
    s.add_certificates(&common::root().join("keys-example/root-ca.pem"))
        .unwrap();
    s
}

fn letter(c: &mut Criterion) {
    let clock = common::now();
    let signed = segel::pdf::sign_pdf(
        common::read("fixtures/pdf/letter.pdf"),
        &common::dev_rsa(),
        &Default::default(),
        &clock,
    )
    .unwrap()
    .bytes;
    let signed_ec = segel::pdf::sign_pdf(
        common::read("fixtures/pdf/letter.pdf"),
        &common::dev_ec(),
        &Default::default(),
        &clock,
    )
    .unwrap()
    .bytes;
    let store = store();
    let opts = VerifyOptions::default();
    assert!(
        verify_pdf(&signed, &store, &opts, &clock)
            .unwrap()
            .all_valid()
    );
    let mut g = c.benchmark_group("verify_letter_2kb");
    g.bench_function("rsa2048", |b| {
        b.iter(|| verify_pdf(&signed, &store, &opts, &clock).unwrap())
    });
    g.bench_function("p256", |b| {
        b.iter(|| verify_pdf(&signed_ec, &store, &opts, &clock).unwrap())
    });
    // The first letter from a signer: the certificate path is validated from scratch.
    g.bench_function("rsa2048_cold_path", |b| {
        b.iter(|| {
            segel::trust::chain::clear_path_cache();
            verify_pdf(&signed, &store, &opts, &clock).unwrap()
        })
    });
    g.finish();
}

fn big(c: &mut Criterion) {
    let clock = common::now();
    let signed = segel::pdf::sign_pdf(
        common::big_pdf(20 << 20),
        &common::dev_ec(),
        &Default::default(),
        &clock,
    )
    .unwrap()
    .bytes;
    let store = store();
    let opts = VerifyOptions::default();
    assert!(
        verify_pdf(&signed, &store, &opts, &clock)
            .unwrap()
            .all_valid()
    );
    let mut g = c.benchmark_group("verify_20mb");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(signed.len() as u64));
    g.bench_function("sha256_baseline", |b| {
        b.iter(|| ring::digest::digest(&ring::digest::SHA256, &signed))
    });
    g.bench_function("p256", |b| {
        b.iter(|| verify_pdf(&signed, &store, &opts, &clock).unwrap())
    });
    g.finish();
}

criterion_group!(benches, letter, big);
criterion_main!(benches);

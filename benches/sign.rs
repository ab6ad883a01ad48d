//! Signing benchmarks (criterion). Targets (issue #2): ≤ 1 ms per RSA-2048 signature of a small
//! letter; a 20 MB PDF within 2× the time of SHA-256 over the file.

#[path = "../tests/it/common.rs"]
mod common;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use segel::pdf::sign::SignRequest;
use segel::pdf::sign_pdf;

fn letter(c: &mut Criterion) {
    let input = common::read("fixtures/pdf/letter.pdf");
    let clock = common::now();
    let rsa = common::dev_rsa();
    let ec = common::dev_ec();
    let req = SignRequest::default();
    let mut g = c.benchmark_group("sign_letter_2kb");
    g.bench_function("rsa2048", |b| {
        b.iter_batched(
            || input.clone(),
            |i| sign_pdf(i, &rsa, &req, &clock).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("p256", |b| {
        b.iter_batched(
            || input.clone(),
            |i| sign_pdf(i, &ec, &req, &clock).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn big(c: &mut Criterion) {
    let input = common::big_pdf(20 << 20);
    let clock = common::now();
    let ec = common::dev_ec();
    let req = SignRequest::default();
    let mut g = c.benchmark_group("sign_20mb");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.bench_function("sha256_baseline", |b| {
        b.iter(|| ring::digest::digest(&ring::digest::SHA256, &input))
    });
    // The input buffer has spare capacity for the appended revision, as `segel sign` reads it.
    let with_slack = || {
        let mut v = Vec::with_capacity(input.len() + (1 << 20));
        v.extend_from_slice(&input);
        v
    };
    g.bench_function("p256", |b| {
        b.iter_batched(
            with_slack,
            |i| sign_pdf(i, &ec, &req, &clock).unwrap(),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, letter, big);
criterion_main!(benches);

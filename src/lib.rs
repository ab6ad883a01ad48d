//! Segel signs and verifies administrative documents (PAdES) for single-window government services.
//!
//! The engine (`pdf`, `cms`, `keys`) knows nothing of HTTP or SQL and can be used as a library;
//! `cli` is the command-line front end.

/// Tamper-evident audit log: hash chain, signed checkpoints, chain verification.
pub mod audit;
/// Command-line front end (`segel sign`, `segel tsa`, `segel dev-pki`).
pub mod cli;
/// Time as a parameter: the `Clock` every signing and validity decision reads.
pub mod clock;
/// CMS SignedData for PAdES (RFC 5652, ETSI EN 319 122-1) and RFC 3161 time-stamp tokens.
pub mod cms;
/// Typed configuration: defaults, segel.toml, SEGEL_* overrides.
pub mod config;
/// The HTTP service: routes, auth, errors, public pages, operations endpoints.
pub mod http;
/// The `Signer` trait and its key sources (PEM/PKCS#12 files, development PKI).
pub mod keys;
/// Heap blocks are wiped when freed, so no copy of a key or passphrase outlives its use.
pub mod memory;
/// PDF parsing, incremental update, signature placeholder, visible stamp and anchor search.
pub mod pdf;
/// Assembling the service: workflow from configuration, demo bootstrap, the application.
pub mod service;
/// Persistence: the sqlx pool (SQLite or PostgreSQL), migrations, write transactions.
pub mod storage;
/// Trust: certificate paths, revocation, and verification of signed PDFs into a report.
pub mod trust;
/// The business rules: documents, steps, approvals, seal, webhooks.
pub mod workflow;

/// Every binary that links Segel (the CLI, the tests, the benchmarks) frees through
/// [`memory::WipeOnFree`]: the figures in the README include its cost.
#[global_allocator]
static ALLOCATOR: memory::WipeOnFree<std::alloc::System> = memory::WipeOnFree(std::alloc::System);

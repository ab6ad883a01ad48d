//! Segel's integration tests: one binary so it links once.

mod audit;
mod bsre;
mod common;
mod db;
mod fuzz_smoke;
mod hsm_seal;
mod keys;
mod openapi;
mod pkcs11;
mod revoke;
mod seal;
mod service;
mod service_paths;
mod sign_cli;
mod sign_interop;
mod validators;
mod verify;

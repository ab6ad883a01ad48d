//! Segel's integration tests: one binary so it links once.

mod audit;
mod common;
mod db;
mod keys;
mod openapi;
mod pkcs11;
mod service;
mod sign_cli;
mod sign_interop;
mod validators;
mod verify;

#![allow(clippy::unwrap_used)] // test helpers fail loudly by design
//! Tests of `spillway-client`.
//!
//! - `offline`: against a scripted HTTP server (no PostgreSQL): parsing, batches,
//!   reconnect positions, errors, the request/response endpoints.
//! - `pg`: against a real Spillway server on a throwaway PostgreSQL cluster, so `make
//!   test` can run them again against a second PostgreSQL major version.
//! - `reference_004`: reference 004's Rust snippets, compiled and run against a real
//!   server.

#[path = "main/offline.rs"]
mod offline;
#[path = "main/pg.rs"]
mod pg;
#[path = "main/reference_004.rs"]
mod reference_004;

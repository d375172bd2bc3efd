#![allow(clippy::unwrap_used)] // test helpers fail loudly by design
//! Tests of `spillway-client`.
//!
//! - `offline`: against a scripted HTTP server (no PostgreSQL): parsing, batches,
//!   reconnect positions, errors, the request/response endpoints.
//! - `pg`: against a real Spillway server on a throwaway PostgreSQL cluster, so `make
//!   test` can run them again against a second PostgreSQL major version.

#[path = "main/offline.rs"]
mod offline;
#[path = "main/pg.rs"]
mod pg;

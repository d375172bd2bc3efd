#![allow(clippy::unwrap_used)] // test helpers fail loudly by design
//! End-to-end tests of the `spillway` binary and pipeline against real PostgreSQL
//! clusters (started per test by `spillway-testkit`, removed afterwards).
//!
//! Tests that need PostgreSQL live in `pg` so `make test` can run them again against a
//! second major version (`SPILLWAY_PG_BIN`).

mod cli;
mod pg;
mod pg_durability;
mod pg_network;
mod pg_publication;
mod pg_recovery;
mod pg_stream;
mod scenarios;

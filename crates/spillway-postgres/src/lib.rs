//! The PostgreSQL source: connection, slot and publication management, the logical
//! replication stream and the capture loop that appends decoded changes to the change log.
//!
//! # Layout
//!
//! | module        | what it holds                                                        |
//! |---------------|----------------------------------------------------------------------|
//! | [`dsn`]       | connection strings (URL and key/value), `sslmode`                    |
//! | `tls`         | rustls set-up per `sslmode`                                          |
//! | [`wire`]      | start-up, authentication (password, MD5, SCRAM-SHA-256), simple query |
//! | [`replication`] | `START_REPLICATION`, XLogData/keepalive codec, standby status      |
//! | [`catalog`]   | preflight checks, slot/publication creation, type and key look-ups   |
//! | [`capture`]   | the capture loop: decode → encode → append → confirm what is durable |
//!
//! Wire code knows nothing of change events; [`capture`] is where replication semantics
//! live. Why a thin layer of our own instead of a replication crate is recorded in
//! `docs/adr/0001-replication-client.md`.

pub mod capture;
pub mod catalog;
pub mod dsn;
mod error;
pub mod replication;
mod tls;
pub mod wire;

pub use dsn::{ConnectConfig, SslMode};
pub use error::{PgError, ServerError};
pub use wire::PgConnection;

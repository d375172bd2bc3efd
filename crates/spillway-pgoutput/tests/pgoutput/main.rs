//! Integration tests for spillway-pgoutput.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

mod decode;
mod events;
mod helpers;
mod random;
mod values;

//! Fuzz target: decode arbitrary bytes as pgoutput messages and, for every
//! message that decodes, run it through an `EventEncoder`.
//!
//! Input layout: a sequence of chunks, each a big-endian `u16` length followed
//! by that many bytes (a short final chunk takes what is left). Each chunk is
//! one message, so a single input can exercise a whole Begin / Relation /
//! change / Commit sequence. The encoder starts primed with an open
//! transaction and a relation covering many column types, so even a single
//! change message reaches the value converters.
//!
//! Run with: `cargo +nightly fuzz run decode_message` from
//! `crates/spillway-pgoutput`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spillway_pgoutput::{decode, EventEncoder, TypeInfo, TypeKind};

/// Begin: final_lsn 0x100, commit timestamp 0, xid 1.
fn begin_message() -> Vec<u8> {
    let mut m = vec![b'B'];
    m.extend_from_slice(&0x100u64.to_be_bytes());
    m.extend_from_slice(&0i64.to_be_bytes());
    m.extend_from_slice(&1u32.to_be_bytes());
    m
}

fn relation_message() -> Vec<u8> {
    let cols: &[(u8, &str, u32)] = &[
        (1, "id", 23),
        (0, "name", 25),
        (0, "amount", 1700),
        (0, "ratio", 701),
        (0, "flag", 16),
        (0, "doc", 3802),
        (0, "raw", 17),
        (0, "day", 1082),
        (0, "at", 1184),
        (0, "ts", 1114),
        (0, "t", 1083),
        (0, "ttz", 1266),
        (0, "tags", 1009),
        (0, "grid", 1007),
        (0, "mood", 16_385),
    ];
    let mut m = vec![b'R'];
    m.extend_from_slice(&16_390u32.to_be_bytes());
    m.extend_from_slice(b"public\0orders\0d");
    m.extend_from_slice(&(cols.len() as i16).to_be_bytes());
    for (flags, name, oid) in cols {
        m.push(*flags);
        m.extend_from_slice(name.as_bytes());
        m.push(0);
        m.extend_from_slice(&oid.to_be_bytes());
        m.extend_from_slice(&(-1i32).to_be_bytes());
    }
    m
}

fuzz_target!(|data: &[u8]| {
    let mut enc = EventEncoder::new("fuzz".to_owned(), Box::new(|_, table, _| table != "skip"));
    enc.types_mut().insert(
        16_385,
        TypeInfo {
            name: "mood".to_owned(),
            kind: TypeKind::Enum,
        },
    );
    let mut next_lsn = 0u64;
    let mut out = Vec::new();
    for prime in [begin_message(), relation_message()] {
        if let Ok(msg) = decode(&prime) {
            let _ = enc.encode(&msg, 0, &mut next_lsn, &mut out);
        }
    }

    let mut rest = data;
    let mut wal = 0x1000u64;
    while !rest.is_empty() {
        let (chunk, tail) = match rest {
            [hi, lo, tail @ ..] => {
                let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
                tail.split_at(len)
            }
            _ => (rest, &[][..]),
        };
        rest = tail;
        wal += 1;
        if let Ok(msg) = decode(chunk) {
            out.clear();
            if enc.encode(&msg, wal, &mut next_lsn, &mut out).is_ok() {
                for event in &out {
                    assert!(
                        serde_json::from_slice::<&serde_json::value::RawValue>(&event.json).is_ok(),
                        "encoder produced invalid JSON: {:?}",
                        String::from_utf8_lossy(&event.json)
                    );
                }
            }
        }
    }
});

//! Every encoding, field by field; determinism; malformed input.

use super::uuid::event_uuid;
use super::*;

const SCHEMA: &str = r#"{"type":"schema_change","lsn":1041,"id":"0/1A2B3C8:1","timestamp":1763683200123456,"entity":"public.orders","schema":"public","table":"orders","replica_identity":"full","columns":[{"name":"id","type":"int4","type_oid":23,"key":true},{"name":"status","type":"text","type_oid":25,"key":false},{"name":"total","type":"numeric","type_oid":1700,"key":false},{"name":"placed","type":"timestamp","type_oid":1114,"key":false}],"tx":{"xid":731,"commit_lsn":"0/1A2B3C8","index":1},"source":{"db":"shop","pg_lsn":"0/1A2B300"}}"#;

fn change(op: &str, lsn: u64, index: u32, entity_id: &str, old: &str, new: &str) -> String {
    format!(
        r#"{{"type":"change","lsn":{lsn},"id":"0/1A2B3C8:{index}","timestamp":1763683200123456,"operation":"{op}","entity":"public.orders","schema":"public","table":"orders","entity_id":{entity_id},"old_data":{old},"new_data":{new},"tx":{{"xid":731,"commit_lsn":"0/1A2B3C8","index":{index}}},"source":{{"db":"shop","pg_lsn":"0/1A2B3A0"}}}}"#
    )
}

fn insert() -> String {
    change(
        "insert",
        1042,
        2,
        r#"{"id":7}"#,
        "null",
        r#"{"id":7,"status":"paid","total":"19.90","placed":"1969-07-20T20:17:40.000000"}"#,
    )
}

fn update() -> String {
    change(
        "update",
        1043,
        3,
        r#"{"id":7}"#,
        r#"{"id":7,"status":"paid","total":"19.90","placed":null}"#,
        r#"{"id":7,"status":"shipped","total":"19.90","placed":null}"#,
    )
}

fn delete() -> String {
    change(
        "delete",
        1044,
        4,
        r#"{"id":7}"#,
        r#"{"id":7,"status":"shipped","total":"19.90","placed":null}"#,
        "null",
    )
}

fn delete_key_only() -> String {
    change("delete", 1045, 5, r#"{"id":8}"#, "null", "null")
}

fn truncate() -> String {
    change("truncate", 1046, 6, "null", "null", "null")
}

fn read() -> String {
    change(
        "read",
        1047,
        7,
        r#"{"id":9}"#,
        "null",
        r#"{"id":9,"status":null}"#,
    )
}

const REQUERY: &str =
    r#"{"type":"requery_required","requested_lsn":5,"oldest_lsn":100,"timestamp":1}"#;
const HEARTBEAT: &str = r#"{"type":"heartbeat","current_lsn":5,"timestamp":1}"#;
const MESSAGE: &str = r#"{"type":"message","lsn":1048,"id":"0/1A2B400:0","timestamp":1763683200123456,"transactional":false,"prefix":"p","content":"c","content_base64":null,"tx":null,"source":{"db":"shop","pg_lsn":"0/1A2B400"}}"#;

fn encoder(format: Format) -> Encoder {
    let mut enc = Encoder::new(
        format,
        EncoderOptions::default().with_payload_time(PayloadTime::CommitTime),
    );
    enc.encode(SCHEMA.as_bytes()).unwrap();
    enc
}

fn text(bytes: &Option<Vec<u8>>) -> &str {
    std::str::from_utf8(bytes.as_deref().unwrap()).unwrap()
}

fn one(enc: &mut Encoder, event: &str) -> Encoded {
    enc.encode(event.as_bytes()).unwrap().unwrap()
}

// ---------------------------------------------------------------------------
// Format names
// ---------------------------------------------------------------------------

#[test]
fn format_names_round_trip() {
    for name in Format::NAMES {
        let f: Format = name.parse().unwrap();
        assert_eq!(f.to_string(), name);
    }
    assert_eq!(
        "Debezium".parse::<Format>().unwrap(),
        Format::Debezium { schemas: true }
    );
    assert_eq!(Format::default(), Format::Native);
    let err = "avro".parse::<Format>().unwrap_err().to_string();
    assert_eq!(
        err,
        r#"unknown format "avro"; valid values: native, debezium, debezium-schemaless, document, flat"#
    );
    let f: Format = serde_json::from_str(r#""document""#).unwrap();
    assert_eq!(f, Format::Document);
    assert!(serde_json::from_str::<Format>(r#""xml""#).is_err());
    assert_eq!(serde_json::to_string(&Format::Flat).unwrap(), r#""flat""#);
}

// ---------------------------------------------------------------------------
// native
// ---------------------------------------------------------------------------

#[test]
fn native_passes_events_through() {
    let mut enc = Encoder::new(Format::Native, EncoderOptions::default());
    let ev = update();
    let out = one(&mut enc, &ev);
    assert_eq!(text(&out.value), ev);
    assert_eq!(text(&out.key), r#"{"id":7}"#);
    assert_eq!(out.id, "0/1A2B3C8:3");

    let out = one(&mut enc, SCHEMA);
    assert_eq!(text(&out.value), SCHEMA);
    assert_eq!(out.key, None);
    assert_eq!(out.id, "0/1A2B3C8:1");

    let out = one(&mut enc, &truncate());
    assert_eq!(out.key, None);

    let out = one(&mut enc, REQUERY);
    assert_eq!(out.id, "requery:5:100");
    assert_eq!(text(&out.value), REQUERY);

    assert_eq!(one(&mut enc, MESSAGE).key, None);
    assert_eq!(enc.encode(HEARTBEAT.as_bytes()).unwrap(), None);
}

#[test]
fn keys_are_compact_whatever_the_input_spacing() {
    let mut enc = Encoder::new(Format::Native, EncoderOptions::default());
    let ev = change("insert", 1, 1, r#"{ "a" : 1 , "b" : "x y" }"#, "null", "{}");
    assert_eq!(text(&one(&mut enc, &ev).key), r#"{"a":1,"b":"x y"}"#);
}

// ---------------------------------------------------------------------------
// document
// ---------------------------------------------------------------------------

#[test]
fn document_insert_is_an_upsert() {
    let out = one(&mut encoder(Format::Document), &insert());
    assert_eq!(
        text(&out.value),
        r#"{"txnId":1042,"type":"documentChanged","collection":"public.orders","change":{"method":"upsert","oldValue":null,"newValue":{"id":7,"status":"paid","total":"19.90","placed":"1969-07-20T20:17:40.000000"}}}"#
    );
    assert_eq!(text(&out.key), r#"{"id":7}"#);
    assert_eq!(out.id, "0/1A2B3C8:2");
}

#[test]
fn document_update_has_old_and_new_value() {
    let out = one(&mut encoder(Format::Document), &update());
    assert_eq!(
        text(&out.value),
        r#"{"txnId":1043,"type":"documentChanged","collection":"public.orders","change":{"method":"update","oldValue":{"id":7,"status":"paid","total":"19.90","placed":null},"newValue":{"id":7,"status":"shipped","total":"19.90","placed":null}}}"#
    );
    // Without REPLICA IDENTITY FULL there is no old row.
    let ev = change("update", 5, 1, r#"{"id":7}"#, "null", r#"{"id":7}"#);
    let out = one(&mut encoder(Format::Document), &ev);
    assert!(text(&out.value).contains(r#""method":"update","oldValue":null,"newValue":{"id":7}"#));
}

#[test]
fn document_delete_is_a_remove_with_value() {
    let out = one(&mut encoder(Format::Document), &delete());
    assert_eq!(
        text(&out.value),
        r#"{"txnId":1044,"type":"documentChanged","collection":"public.orders","change":{"method":"remove","value":{"id":7,"status":"shipped","total":"19.90","placed":null}}}"#
    );
    // Without the old row, the key is the value.
    let out = one(&mut encoder(Format::Document), &delete_key_only());
    assert!(text(&out.value).ends_with(r#""change":{"method":"remove","value":{"id":8}}}"#));
}

#[test]
fn document_truncate_and_requery_are_requery_required() {
    let mut enc = encoder(Format::Document);
    let out = one(&mut enc, &truncate());
    assert_eq!(
        text(&out.value),
        r#"{"txnId":1046,"type":"requeryRequired","collection":"public.orders","documents":[]}"#
    );
    assert_eq!(out.key, None);
    let out = one(&mut enc, REQUERY);
    assert_eq!(
        text(&out.value),
        r#"{"txnId":99,"type":"requeryRequired","documents":[]}"#
    );
    assert_eq!(out.id, "requery:5:100");
}

#[test]
fn document_read_is_an_upsert_and_control_events_are_not_carried() {
    let mut enc = encoder(Format::Document);
    assert!(text(&one(&mut enc, &read()).value).contains(r#""method":"upsert""#));
    assert_eq!(enc.encode(SCHEMA.as_bytes()).unwrap(), None);
    assert_eq!(enc.encode(MESSAGE.as_bytes()).unwrap(), None);
    assert_eq!(enc.encode(HEARTBEAT.as_bytes()).unwrap(), None);
}

// ---------------------------------------------------------------------------
// flat
// ---------------------------------------------------------------------------

#[test]
fn flat_rows() {
    let mut enc = encoder(Format::Flat);
    let out = one(&mut enc, &insert());
    assert_eq!(
        text(&out.value),
        format!(
            r#"{{"ID":"{}","Schema":"public","Table":"orders","Action":"insert","Data":{{"id":7,"status":"paid","total":"19.90","placed":"1969-07-20T20:17:40.000000"}},"DataOld":null,"EventTime":"2025-11-21T00:00:00.123456Z"}}"#,
            event_uuid("0/1A2B3C8:2")
        )
    );
    assert_eq!(text(&out.key), r#"{"id":7}"#);

    let out = one(&mut enc, &update());
    let v: serde_json::Value = serde_json::from_slice(out.value.as_ref().unwrap()).unwrap();
    assert_eq!(v["Action"], "update");
    assert_eq!(v["Data"]["status"], "shipped");
    assert_eq!(v["DataOld"]["status"], "paid");
    assert_eq!(v["ID"], event_uuid("0/1A2B3C8:3"));

    let v: serde_json::Value =
        serde_json::from_slice(one(&mut enc, &delete()).value.as_ref().unwrap()).unwrap();
    assert_eq!(v["Action"], "delete");
    assert_eq!(v["Data"], serde_json::Value::Null);
    assert_eq!(v["DataOld"]["id"], 7);

    let out = one(&mut enc, &truncate());
    assert_eq!(out.key, None);
    let v: serde_json::Value = serde_json::from_slice(out.value.as_ref().unwrap()).unwrap();
    assert_eq!(v["Action"], "truncate");
    assert_eq!(v["Data"], serde_json::Value::Null);
    assert_eq!(v["DataOld"], serde_json::Value::Null);

    let v: serde_json::Value =
        serde_json::from_slice(one(&mut enc, &read()).value.as_ref().unwrap()).unwrap();
    assert_eq!(v["Action"], "insert");
}

#[test]
fn flat_ids_are_uuid_v5_of_the_event_id() {
    let id = event_uuid("0/1A2B3C8:3");
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "5");
    assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
    assert_ne!(id, event_uuid("0/1A2B3C8:4"));
}

#[test]
fn flat_carries_only_changes() {
    let mut enc = encoder(Format::Flat);
    for ev in [SCHEMA, MESSAGE, REQUERY, HEARTBEAT] {
        assert_eq!(enc.encode(ev.as_bytes()).unwrap(), None, "{ev}");
    }
}

// ---------------------------------------------------------------------------
// Across formats
// ---------------------------------------------------------------------------

fn all_formats() -> [Format; 5] {
    [
        Format::Native,
        Format::Debezium { schemas: true },
        Format::Debezium { schemas: false },
        Format::Document,
        Format::Flat,
    ]
}

#[test]
fn encoding_is_deterministic() {
    let events = [
        insert(),
        update(),
        delete(),
        delete_key_only(),
        truncate(),
        read(),
    ];
    for format in all_formats() {
        // Two independent encoders, as after a restart: identical output.
        let (mut a, mut b) = (encoder(format), encoder(format));
        for ev in &events {
            let x = a.encode(ev.as_bytes()).unwrap();
            let y = b.encode(ev.as_bytes()).unwrap();
            let z = a.encode(ev.as_bytes()).unwrap();
            assert_eq!(x, y, "{format}: {ev}");
            assert_eq!(x, z, "{format}: {ev}");
        }
    }
    // With the default payload time only Debezium's envelope ts_* may differ.
    let mut enc = Encoder::new(
        Format::Debezium { schemas: false },
        EncoderOptions::default(),
    );
    enc.encode(SCHEMA.as_bytes()).unwrap();
    let x = enc.encode(update().as_bytes()).unwrap().unwrap();
    let y = enc.encode(update().as_bytes()).unwrap().unwrap();
    assert_eq!((&x.id, &x.key), (&y.id, &y.key));
    let strip = |e: &Encoded| {
        let mut v: serde_json::Value = serde_json::from_slice(e.value.as_ref().unwrap()).unwrap();
        for f in ["ts_ms", "ts_us", "ts_ns"] {
            v[f] = serde_json::Value::Null;
        }
        v
    };
    assert_eq!(strip(&x), strip(&y));
}

#[test]
fn the_id_is_the_same_in_every_format() {
    for ev in [insert(), update(), delete(), truncate()] {
        let ids: Vec<String> = all_formats()
            .into_iter()
            .map(|f| one(&mut encoder(f), &ev).id)
            .collect();
        assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    }
}

#[test]
fn null_values_stay_null() {
    for format in all_formats() {
        let out = one(&mut encoder(format), &read());
        let v: serde_json::Value = serde_json::from_slice(out.value.as_ref().unwrap()).unwrap();
        let row = match format {
            Format::Native => &v["new_data"],
            Format::Debezium { schemas: true } => &v["payload"]["after"],
            Format::Debezium { schemas: false } => &v["after"],
            Format::Document => &v["change"]["newValue"],
            Format::Flat => &v["Data"],
        };
        assert_eq!(row["status"], serde_json::Value::Null, "{format}");
    }
}

#[test]
fn numeric_stays_an_exact_string() {
    for format in all_formats() {
        let ev = change(
            "insert",
            1,
            1,
            r#"{"id":1}"#,
            "null",
            r#"{"id":1,"total":"123456789012345678901234567890.000000001"}"#,
        );
        let out = one(&mut encoder(format), &ev);
        assert!(
            text(&out.value).contains(r#""total":"123456789012345678901234567890.000000001""#),
            "{format}"
        );
    }
}

#[test]
fn pre_1970_timestamps_are_negative_in_debezium_and_unchanged_elsewhere() {
    let mut enc = encoder(Format::Debezium { schemas: false });
    let v: serde_json::Value =
        serde_json::from_slice(one(&mut enc, &insert()).value.as_ref().unwrap()).unwrap();
    // 1969-07-20T20:17:40 UTC
    assert_eq!(v["after"]["placed"], -14_182_940_000_000_i64);
    let out = one(&mut encoder(Format::Document), &insert());
    assert!(text(&out.value).contains(r#""placed":"1969-07-20T20:17:40.000000""#));
}

#[test]
fn malformed_input_is_a_one_line_error() {
    let bad: [&[u8]; 9] = [
        b"",
        b"not json",
        b"[]",
        br#"{"type":"change"}"#,
        br#"{"type":"nope","id":"x"}"#,
        br#"{"type":"change","lsn":1,"id":"x","timestamp":1,"operation":"upsert","schema":"s","table":"t","tx":null,"source":{"db":"d","pg_lsn":"0/1"}}"#,
        br#"{"type":"change","lsn":1,"id":"x","timestamp":1,"operation":"insert","schema":"s","table":"t","new_data":[1],"tx":null,"source":{"db":"d","pg_lsn":"0/1"}}"#,
        br#"{"type":"change","lsn":1,"id":"x","timestamp":1,"operation":"insert","schema":"s","table":"t","tx":null,"source":{"db":"d","pg_lsn":"zz"}}"#,
        b"{\"type\":\"change\",\"id\":\"x\",\"lsn\":\n1",
    ];
    for format in all_formats() {
        for input in bad {
            match Encoder::new(format, EncoderOptions::default()).encode(input) {
                Err(e) => {
                    let msg = e.to_string();
                    assert!(!msg.contains('\n'), "{msg}");
                    assert!(!msg.is_empty());
                }
                // Native and document need neither a parsable LSN nor `tx`.
                Ok(_) => assert!(
                    matches!(format, Format::Native | Format::Document | Format::Flat),
                    "{format} accepted {}",
                    String::from_utf8_lossy(input)
                ),
            }
        }
    }
}

/// Mutated events never panic any encoder.
#[test]
fn mutated_input_never_panics() {
    let seeds = [
        insert(),
        update(),
        delete(),
        truncate(),
        read(),
        SCHEMA.to_owned(),
        MESSAGE.to_owned(),
        REQUERY.to_owned(),
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    const BYTES: &[u8] = b"{}[]\":,0123456789-.eE tfnul\\xZT/";
    for format in all_formats() {
        let mut enc = encoder(format);
        for _ in 0..3000 {
            let seed = &seeds[(next() % seeds.len() as u64) as usize];
            let mut bytes = seed.clone().into_bytes();
            for _ in 0..(1 + next() % 4) {
                let i = (next() % bytes.len() as u64) as usize;
                match next() % 3 {
                    0 => bytes[i] = BYTES[(next() % BYTES.len() as u64) as usize],
                    1 => {
                        bytes.remove(i);
                    }
                    _ => bytes.insert(i, BYTES[(next() % BYTES.len() as u64) as usize]),
                }
            }
            let _ = enc.encode(&bytes);
        }
    }
}

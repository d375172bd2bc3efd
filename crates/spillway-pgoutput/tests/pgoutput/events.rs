//! Event assembly tests: exact JSON output, ids, filtering, TOAST handling.

use spillway_pgoutput::*;

use crate::helpers::*;

const COMMIT_LSN: u64 = 0x1A2_B3C8;
const WAL: u64 = 0x1A2_B3A0;

struct H {
    enc: EventEncoder,
    next: u64,
    out: Vec<EncodedEvent>,
}

impl H {
    fn new() -> Self {
        let enc = EventEncoder::new(
            "shop".to_owned(),
            Box::new(|schema, table, op| {
                assert!(!schema.is_empty());
                table != "ignored" && !(table == "audit_only" && op == Operation::Update)
            }),
        );
        H {
            enc,
            next: 1040,
            out: Vec::new(),
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        self.feed_at(bytes, WAL)
    }

    fn feed_at(&mut self, bytes: &[u8], wal: u64) -> Result<(), EncodeError> {
        let msg = decode(bytes).expect("test message must decode");
        self.enc.encode(&msg, wal, &mut self.next, &mut self.out)
    }

    fn ok(&mut self, bytes: &[u8]) {
        self.feed(bytes).unwrap();
    }

    /// Takes the produced events as strings, checking they are valid JSON.
    fn take(&mut self) -> Vec<String> {
        self.out
            .drain(..)
            .map(|e| {
                let s = String::from_utf8(e.json).unwrap();
                let v: serde_json::Value = serde_json::from_str(&s).unwrap();
                assert_eq!(v["lsn"].as_u64(), Some(e.lsn));
                assert_eq!(v["timestamp"].as_i64(), Some(e.timestamp_us));
                let t = v["type"].as_str().unwrap();
                let kind = match t {
                    "change" => EventKind::Change,
                    "schema_change" => EventKind::SchemaChange,
                    "message" => EventKind::Message,
                    _ => panic!("bad type {t}"),
                };
                assert_eq!(kind, e.kind);
                assert!(!s.ends_with('\n'));
                s
            })
            .collect()
    }

    fn take_values(&mut self) -> Vec<serde_json::Value> {
        self.take()
            .iter()
            .map(|s| serde_json::from_str(s).unwrap())
            .collect()
    }
}

fn orders_rel() -> Vec<u8> {
    relation(
        16_390,
        "public",
        "orders",
        b'd',
        &[(1, "id", 23), (0, "status", 25)],
    )
}

const TX: &str = r#""tx":{"xid":731,"commit_lsn":"0/1A2B3C8","index":"#;
const SRC: &str = r#""source":{"db":"shop","pg_lsn":"0/1A2B3A0"}"#;

#[test]
fn default_identity_lifecycle_exact_json() {
    let mut h = H::new();
    h.enc.set_primary_key("public", "orders", vec!["id".into()]);
    h.ok(&begin(COMMIT_LSN, TS_PG, 731));
    assert!(h.enc.in_transaction());
    h.ok(&orders_rel());
    h.ok(&insert(16_390, &[Col::T("7"), Col::T("paid")]));
    h.ok(&update(16_390, None, &[Col::T("7"), Col::T("shipped")]));
    h.ok(&update(
        16_390,
        Some((b'K', &[Col::T("7"), Col::N])),
        &[Col::T("8"), Col::T("shipped")],
    ));
    h.ok(&delete(16_390, b'K', &[Col::T("8"), Col::N]));
    h.ok(&commit(COMMIT_LSN, COMMIT_LSN + 0x28, TS_PG));
    assert!(!h.enc.in_transaction());
    let ev = h.take();
    assert_eq!(ev.len(), 5);
    assert_eq!(
        ev[0],
        format!(
            r#"{{"type":"schema_change","lsn":1040,"id":"0/1A2B3C8:1","timestamp":1763683200123456,"entity":"public.orders","schema":"public","table":"orders","replica_identity":"default","columns":[{{"name":"id","type":"int4","type_oid":23,"key":true}},{{"name":"status","type":"text","type_oid":25,"key":false}}],{TX}1}},{SRC}}}"#
        )
    );
    assert_eq!(
        ev[1],
        format!(
            r#"{{"type":"change","lsn":1041,"id":"0/1A2B3C8:2","timestamp":1763683200123456,"operation":"insert","entity":"public.orders","schema":"public","table":"orders","entity_id":{{"id":7}},"old_data":null,"new_data":{{"id":7,"status":"paid"}},{TX}2}},{SRC}}}"#
        )
    );
    assert_eq!(
        ev[2],
        format!(
            r#"{{"type":"change","lsn":1042,"id":"0/1A2B3C8:3","timestamp":1763683200123456,"operation":"update","entity":"public.orders","schema":"public","table":"orders","entity_id":{{"id":7}},"old_data":null,"new_data":{{"id":7,"status":"shipped"}},{TX}3}},{SRC}}}"#
        )
    );
    assert_eq!(
        ev[3],
        format!(
            r#"{{"type":"change","lsn":1043,"id":"0/1A2B3C8:4","timestamp":1763683200123456,"operation":"update","entity":"public.orders","schema":"public","table":"orders","entity_id":{{"id":8}},"old_data":{{"id":7}},"new_data":{{"id":8,"status":"shipped"}},{TX}4}},{SRC}}}"#
        )
    );
    assert_eq!(
        ev[4],
        format!(
            r#"{{"type":"change","lsn":1044,"id":"0/1A2B3C8:5","timestamp":1763683200123456,"operation":"delete","entity":"public.orders","schema":"public","table":"orders","entity_id":{{"id":8}},"old_data":{{"id":8}},"new_data":null,{TX}5}},{SRC}}}"#
        )
    );
    assert_eq!(h.next, 1045);
    assert_eq!(
        top_level_keys(ev[3].as_bytes()),
        [
            "type",
            "lsn",
            "id",
            "timestamp",
            "operation",
            "entity",
            "schema",
            "table",
            "entity_id",
            "old_data",
            "new_data",
            "tx",
            "source"
        ]
    );
    assert_eq!(
        top_level_keys(ev[0].as_bytes()),
        [
            "type",
            "lsn",
            "id",
            "timestamp",
            "entity",
            "schema",
            "table",
            "replica_identity",
            "columns",
            "tx",
            "source"
        ]
    );

    // Next transaction: relation already known → no schema_change; ordinal restarts.
    h.ok(&begin(0x2_0000_0010, TS_PG + 1, 732));
    h.ok(&orders_rel());
    h.ok(&insert(16_390, &[Col::T("9"), Col::N]));
    h.ok(&commit(0x2_0000_0010, 0x2_0000_0040, TS_PG + 1));
    let ev = h.take_values();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["id"], "2/10:1");
    assert_eq!(ev[0]["tx"]["index"], 1);
    assert_eq!(ev[0]["tx"]["xid"], 732);
    assert_eq!(ev[0]["timestamp"], TS_UNIX + 1);
    assert_eq!(ev[0]["new_data"]["status"], serde_json::Value::Null);
}

#[test]
fn full_identity_and_toast() {
    let mut h = H::new();
    h.ok(&begin(COMMIT_LSN, TS_PG, 731));
    h.ok(&relation(
        20,
        "public",
        "docs",
        b'f',
        &[(1, "id", 23), (1, "body", 25), (1, "meta", 3802)],
    ));
    let schema = h.take_values();
    assert_eq!(schema[0]["replica_identity"], "full");
    assert_eq!(schema[0]["columns"][2]["type"], "jsonb");
    assert_eq!(schema[0]["columns"][2]["key"], true);

    // Old row carries the TOASTed body → filled into new_data.
    h.ok(&update(
        20,
        Some((
            b'O',
            &[Col::T("1"), Col::T("long body"), Col::T(r#"{"v": 1}"#)],
        )),
        &[Col::T("1"), Col::U, Col::T(r#"{"v": 2}"#)],
    ));
    // Old row also lacks it → left out and listed.
    h.ok(&update(
        20,
        Some((b'O', &[Col::T("1"), Col::U, Col::T(r#"{"v": 2}"#)])),
        &[Col::T("1"), Col::U, Col::N],
    ));
    // No old row at all.
    h.ok(&update(20, None, &[Col::T("2"), Col::U, Col::U]));
    h.ok(&delete(20, b'O', &[Col::T("2"), Col::U, Col::N]));
    let ev = h.take();
    assert_eq!(ev.len(), 4);
    let tail =
        |s: &str| s[s.find(r#""entity_id""#).unwrap()..s.find(r#","tx""#).unwrap()].to_owned();
    assert_eq!(
        tail(&ev[0]),
        r#""entity_id":{"id":1,"body":"long body","meta":{"v": 2}},"old_data":{"id":1,"body":"long body","meta":{"v": 1}},"new_data":{"id":1,"body":"long body","meta":{"v": 2}}"#
    );
    assert_eq!(
        tail(&ev[1]),
        r#""entity_id":null,"old_data":{"id":1,"meta":{"v": 2}},"new_data":{"id":1,"meta":null},"unchanged_toast":["body"]"#
    );
    assert_eq!(
        tail(&ev[2]),
        r#""entity_id":null,"old_data":null,"new_data":{"id":2},"unchanged_toast":["body","meta"]"#
    );
    assert_eq!(
        tail(&ev[3]),
        r#""entity_id":null,"old_data":{"id":2,"meta":null},"new_data":null"#
    );
    assert_eq!(
        top_level_keys(ev[1].as_bytes())[10..],
        ["new_data", "unchanged_toast", "tx", "source"]
    );

    // With a known primary key, entity_id is just the key.
    h.enc.set_primary_key("public", "docs", vec!["id".into()]);
    h.ok(&update(
        20,
        Some((b'O', &[Col::T("3"), Col::T("b"), Col::N])),
        &[Col::T("3"), Col::U, Col::N],
    ));
    let ev = h.take_values();
    assert_eq!(ev[0]["entity_id"], serde_json::json!({"id": 3}));
    assert_eq!(
        ev[0]["new_data"],
        serde_json::json!({"id": 3, "body": "b", "meta": null})
    );
}

#[test]
fn primary_key_differs_from_replica_identity_index() {
    let mut h = H::new();
    h.enc.set_primary_key("app", "users", vec!["id".into()]);
    h.ok(&begin(COMMIT_LSN, TS_PG, 1));
    h.ok(&relation(
        30,
        "app",
        "users",
        b'i',
        &[(0, "id", 20), (1, "email", 25)],
    ));
    let ev = h.take_values();
    assert_eq!(ev[0]["replica_identity"], "index");
    assert_eq!(ev[0]["columns"][0]["key"], true);
    assert_eq!(ev[0]["columns"][1]["key"], false);
    // 'K' tuple carries only the index column: id is not available.
    h.ok(&delete(30, b'K', &[Col::N, Col::T("a@b.c")]));
    h.ok(&update(
        30,
        Some((b'K', &[Col::N, Col::T("a@b.c")])),
        &[Col::T("5"), Col::T("x@y.z")],
    ));
    let ev = h.take_values();
    assert_eq!(ev[0]["entity_id"], serde_json::Value::Null);
    assert_eq!(ev[0]["old_data"], serde_json::json!({"email": "a@b.c"}));
    assert_eq!(ev[1]["entity_id"], serde_json::json!({"id": 5}));
    assert_eq!(ev[1]["old_data"], serde_json::json!({"email": "a@b.c"}));

    // Without a known PK, replica-identity columns are the entity id.
    let mut h = H::new();
    h.ok(&begin(COMMIT_LSN, TS_PG, 1));
    h.ok(&relation(
        30,
        "app",
        "users",
        b'i',
        &[(0, "id", 20), (1, "email", 25)],
    ));
    h.ok(&delete(30, b'K', &[Col::N, Col::T("a@b.c")]));
    let ev = h.take_values();
    assert_eq!(ev[0]["columns"][1]["key"], true);
    assert_eq!(ev[1]["entity_id"], serde_json::json!({"email": "a@b.c"}));

    // No key at all (REPLICA IDENTITY NOTHING, no PK): entity_id null.
    h.ok(&relation(31, "app", "logs", b'n', &[(0, "line", 25)]));
    h.ok(&insert(31, &[Col::T("x")]));
    let ev = h.take_values();
    assert_eq!(ev[0]["replica_identity"], "nothing");
    assert_eq!(ev[1]["entity_id"], serde_json::Value::Null);
}

#[test]
fn schema_change_on_first_sight_and_on_column_added() {
    let mut h = H::new();
    h.ok(&begin(COMMIT_LSN, TS_PG, 1));
    h.ok(&orders_rel());
    h.ok(&orders_rel());
    assert_eq!(h.take().len(), 1, "same definition twice → one event");

    h.ok(&relation(
        16_390,
        "public",
        "orders",
        b'd',
        &[(1, "id", 23), (0, "status", 25), (0, "note", 1043)],
    ));
    let ev = h.take_values();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["type"], "schema_change");
    assert_eq!(ev[0]["columns"].as_array().unwrap().len(), 3);
    assert_eq!(ev[0]["columns"][2]["type"], "varchar");
    assert_eq!(ev[0]["id"], "0/1A2B3C8:2");

    // Type change of a column.
    h.ok(&relation(
        16_390,
        "public",
        "orders",
        b'd',
        &[(1, "id", 20), (0, "status", 25), (0, "note", 1043)],
    ));
    // Replica identity change.
    h.ok(&relation(
        16_390,
        "public",
        "orders",
        b'f',
        &[(1, "id", 20), (1, "status", 25), (1, "note", 1043)],
    ));
    assert_eq!(h.take().len(), 2);

    // Rename: same rel id, new name → first sight of the new name.
    h.ok(&relation(
        16_390,
        "public",
        "orders_v2",
        b'f',
        &[(1, "id", 20), (1, "status", 25), (1, "note", 1043)],
    ));
    let ev = h.take_values();
    assert_eq!(ev[0]["entity"], "public.orders_v2");
    assert_eq!(h.enc.relation(16_390).unwrap().name, "orders_v2");

    // Changes now use the new definition (3 columns).
    h.ok(&insert(16_390, &[Col::T("1"), Col::T("s"), Col::T("n")]));
    assert!(matches!(
        h.feed(&insert(16_390, &[Col::T("1"), Col::T("s")])),
        Err(EncodeError::ColumnCountMismatch {
            expected: 3,
            actual: 2,
            ..
        })
    ));
}

#[test]
fn filter_and_ordinals() {
    let mut h = H::new();
    h.ok(&begin(COMMIT_LSN, TS_PG, 5));
    h.ok(&relation(1, "public", "ignored", b'd', &[(1, "id", 23)]));
    h.ok(&insert(1, &[Col::T("1")]));
    h.ok(&relation(2, "public", "audit_only", b'd', &[(1, "id", 23)]));
    h.ok(&insert(1, &[Col::T("2")]));
    h.ok(&update(2, None, &[Col::T("1")]));
    h.ok(&insert(2, &[Col::T("1")]));
    h.ok(&delete(2, b'K', &[Col::T("1")]));
    h.ok(&truncate(0, &[1, 2]));
    let ev = h.take_values();
    let ids: Vec<_> = ev
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        ["0/1A2B3C8:1", "0/1A2B3C8:2", "0/1A2B3C8:3", "0/1A2B3C8:4"]
    );
    assert_eq!(ev[0]["type"], "schema_change");
    assert_eq!(ev[0]["table"], "audit_only");
    assert_eq!(ev[1]["operation"], "insert");
    assert_eq!(ev[2]["operation"], "delete");
    assert_eq!(ev[3]["operation"], "truncate");
    assert_eq!(ev[3]["table"], "audit_only");
    let lsns: Vec<_> = ev.iter().map(|e| e["lsn"].as_u64().unwrap()).collect();
    assert_eq!(lsns, [1040, 1041, 1042, 1043]);
    assert_eq!(h.next, 1044);
}

#[test]
fn truncate_events() {
    let mut h = H::new();
    h.ok(&begin(COMMIT_LSN, TS_PG, 731));
    h.ok(&orders_rel());
    h.ok(&relation(17, "s", "t", b'd', &[(1, "k", 25)]));
    h.take();
    h.ok(&truncate(1, &[16_390, 17]));
    let ev = h.take();
    assert_eq!(ev.len(), 2);
    assert_eq!(
        ev[0],
        format!(
            r#"{{"type":"change","lsn":1042,"id":"0/1A2B3C8:3","timestamp":1763683200123456,"operation":"truncate","entity":"public.orders","schema":"public","table":"orders","entity_id":null,"old_data":null,"new_data":null,{TX}3}},{SRC}}}"#
        )
    );
    assert!(ev[1].contains(r#""entity":"s.t""#));
    // Unknown relation: error and nothing emitted.
    assert_eq!(
        h.feed(&truncate(0, &[16_390, 99])),
        Err(EncodeError::UnknownRelation(99))
    );
    assert!(h.out.is_empty());
}

#[test]
fn logical_messages() {
    let mut h = H::new();
    // Non-transactional before any transaction: timestamp 0.
    h.ok(&message(0, 0x10, "hb", b"ping"));
    h.ok(&begin(COMMIT_LSN, TS_PG, 731));
    h.ok(&message(1, 0x1A2_B3B0, "audit", b"user \"x\" logged in"));
    h.ok(&message(1, 0x1A2_B3B8, "bin", b"\xff\xfe"));
    h.ok(&commit(COMMIT_LSN, COMMIT_LSN + 8, TS_PG));
    h.ok(&message(0, 0x3_0000_0000, "hb", b""));
    let ev = h.take();
    assert_eq!(
        ev[0],
        r#"{"type":"message","lsn":1040,"id":"0/10:0","timestamp":0,"transactional":false,"prefix":"hb","content":"ping","tx":null,"source":{"db":"shop","pg_lsn":"0/1A2B3A0"}}"#
    );
    assert_eq!(
        ev[1],
        format!(
            r#"{{"type":"message","lsn":1041,"id":"0/1A2B3C8:1","timestamp":1763683200123456,"transactional":true,"prefix":"audit","content":"user \"x\" logged in",{TX}1}},{SRC}}}"#
        )
    );
    assert_eq!(
        ev[2],
        format!(
            r#"{{"type":"message","lsn":1042,"id":"0/1A2B3C8:2","timestamp":1763683200123456,"transactional":true,"prefix":"bin","content_base64":"//4=",{TX}2}},{SRC}}}"#
        )
    );
    assert_eq!(
        ev[3],
        r#"{"type":"message","lsn":1043,"id":"3/0:0","timestamp":1763683200123456,"transactional":false,"prefix":"hb","content":"","tx":null,"source":{"db":"shop","pg_lsn":"0/1A2B3A0"}}"#
    );
    assert_eq!(
        h.feed(&message(1, 1, "p", b"x")),
        Err(EncodeError::OutsideTransaction("transactional logical"))
    );
}

#[test]
fn origin_in_source() {
    let mut h = H::new();
    h.ok(&begin(COMMIT_LSN, TS_PG, 731));
    h.ok(&origin(0x99, "node \"b\""));
    h.ok(&orders_rel());
    h.ok(&insert(16_390, &[Col::T("1"), Col::N]));
    h.ok(&commit(COMMIT_LSN, COMMIT_LSN + 8, TS_PG));
    h.ok(&begin(COMMIT_LSN + 100, TS_PG, 732));
    h.ok(&insert(16_390, &[Col::T("2"), Col::N]));
    let ev = h.take();
    for e in &ev[..2] {
        assert!(
            e.ends_with(r#""source":{"db":"shop","pg_lsn":"0/1A2B3A0","origin":"node \"b\""}}"#),
            "{e}"
        );
    }
    assert!(
        ev[2].ends_with(&format!("{SRC}}}")),
        "origin does not leak into the next tx"
    );
}

#[test]
fn relation_outside_transaction() {
    let mut h = H::new();
    h.ok(&begin(COMMIT_LSN, TS_PG, 1));
    h.ok(&commit(COMMIT_LSN, COMMIT_LSN + 1, TS_PG));
    h.feed_at(&orders_rel(), 0x5_0000_0001).unwrap();
    let ev = h.take_values();
    assert_eq!(ev[0]["id"], "5/1:0");
    assert_eq!(ev[0]["tx"], serde_json::Value::Null);
    assert_eq!(ev[0]["timestamp"], TS_UNIX);
    assert_eq!(ev[0]["source"]["pg_lsn"], "5/1");
}

#[test]
fn values_binary_and_catalog_schema() {
    let mut h = H::new();
    h.ok(&begin(COMMIT_LSN, TS_PG, 1));
    h.ok(&relation(
        40,
        "",
        "cat",
        b'd',
        &[
            (1, "id", 20),
            (0, "b", 17),
            (0, "arr", 1007),
            (0, "ts", 1184),
        ],
    ));
    h.ok(&insert(
        40,
        &[
            Col::T("1"),
            Col::B(b"\x01\x02"),
            Col::T("{{1,NULL},{3,4}}"),
            Col::T("2024-01-02 03:04:05.5+01"),
        ],
    ));
    let ev = h.take_values();
    assert_eq!(ev[0]["schema"], "pg_catalog");
    assert_eq!(ev[0]["columns"][2]["type"], "_int4");
    assert_eq!(
        ev[1]["new_data"],
        serde_json::json!({"id": 1, "b": "AQI=", "arr": [[1, null], [3, 4]], "ts": "2024-01-02T02:04:05.500000Z"})
    );
    assert_eq!(ev[1]["entity"], "pg_catalog.cat");
}

#[test]
fn errors() {
    let mut h = H::new();
    assert_eq!(
        h.feed(&insert(1, &[Col::T("1")])),
        Err(EncodeError::OutsideTransaction("insert"))
    );
    assert_eq!(
        h.feed(&commit(1, 2, 3)),
        Err(EncodeError::OutsideTransaction("commit"))
    );
    assert_eq!(
        h.feed(&truncate(0, &[1])),
        Err(EncodeError::OutsideTransaction("truncate"))
    );
    h.ok(&begin(COMMIT_LSN, TS_PG, 1));
    assert_eq!(
        h.feed(&update(77, None, &[Col::T("1")])),
        Err(EncodeError::UnknownRelation(77))
    );
    h.ok(&orders_rel());
    h.take();
    let next = h.next;
    let e = h
        .feed(&update(
            16_390,
            Some((b'O', &[Col::T("1")])),
            &[Col::T("1"), Col::N],
        ))
        .unwrap_err();
    assert!(matches!(
        e,
        EncodeError::ColumnCountMismatch {
            rel_id: 16_390,
            expected: 2,
            actual: 1,
            ..
        }
    ));
    assert_eq!(
        e.to_string(),
        "tuple for public.orders (relation id 16390) has 1 columns, relation has 2"
    );
    let e = h
        .feed(&insert(16_390, &[Col::T("x1"), Col::N]))
        .unwrap_err();
    assert!(matches!(e, EncodeError::Value { ref column, .. } if column == "id"));
    assert_eq!(
        e.to_string(),
        r#"cannot convert column id of public.orders (type int4): invalid integer value "x1""#
    );
    assert!(h.out.is_empty());
    assert_eq!(h.next, next);
    // A failed change does not consume an ordinal.
    h.ok(&insert(16_390, &[Col::T("1"), Col::N]));
    let ev = h.take_values();
    assert_eq!(ev[0]["id"], "0/1A2B3C8:2");
    for e in [
        EncodeError::UnknownRelation(1),
        EncodeError::OutsideTransaction("delete"),
    ] {
        let s = e.to_string();
        assert!(!s.contains('\n') && s.chars().next().unwrap().is_lowercase());
    }
}

#[test]
fn types_registry_and_unknown_oids() {
    let mut h = H::new();
    let rel = relation(
        50,
        "public",
        "t",
        b'd',
        &[
            (1, "id", 23),
            (0, "mood", 70_000),
            (0, "moods", 70_001),
            (0, "again", 70_000),
        ],
    );
    let PgOutputMessage::Relation(r) = decode(&rel).unwrap() else {
        panic!()
    };
    assert_eq!(h.enc.unknown_type_oids(&r), vec![70_000, 70_001]);
    h.enc.types_mut().insert(
        70_001,
        TypeInfo {
            name: "_mood".into(),
            kind: TypeKind::Array { elem: 70_000 },
        },
    );
    assert_eq!(h.enc.unknown_type_oids(&r), vec![70_000]);
    h.enc.types_mut().insert(
        70_000,
        TypeInfo {
            name: "mood".into(),
            kind: TypeKind::Enum,
        },
    );
    assert!(h.enc.unknown_type_oids(&r).is_empty());

    // Type messages register unknown types only.
    h.ok(&type_msg(70_002, "public", "color"));
    h.ok(&type_msg(70_000, "public", "renamed"));
    h.ok(&type_msg(23, "pg_catalog", "bogus"));
    assert_eq!(h.enc.types().name(70_002), "color");
    assert_eq!(h.enc.types().get(70_002).unwrap().kind, TypeKind::Other);
    assert_eq!(h.enc.types().name(70_000), "mood");
    assert_eq!(h.enc.types().name(23), "int4");

    h.ok(&begin(COMMIT_LSN, TS_PG, 1));
    h.ok(&rel);
    h.ok(&insert(
        50,
        &[
            Col::T("1"),
            Col::T("happy"),
            Col::T("{sad,NULL}"),
            Col::T("ok"),
        ],
    ));
    let ev = h.take_values();
    assert_eq!(ev[0]["columns"][1]["type"], "mood");
    assert_eq!(
        ev[1]["new_data"],
        serde_json::json!({"id": 1, "mood": "happy", "moods": ["sad", null], "again": "ok"})
    );
    assert!(h.enc.relation(50).is_some());
    assert!(h.enc.relation(51).is_none());
}

#[test]
fn set_primary_key_after_relation_and_abort() {
    let mut h = H::new();
    h.ok(&begin(COMMIT_LSN, TS_PG, 1));
    h.ok(&relation(
        60,
        "public",
        "p",
        b'f',
        &[(1, "a", 23), (1, "b", 23)],
    ));
    h.enc.set_primary_key("public", "p", vec!["b".into()]);
    assert_eq!(
        h.enc.primary_key("public", "p"),
        Some(&["b".to_owned()][..])
    );
    h.ok(&insert(60, &[Col::T("1"), Col::T("2")]));
    let ev = h.take_values();
    assert_eq!(ev[1]["entity_id"], serde_json::json!({"b": 2}));
    // A PK naming a missing column falls back to the replica identity columns.
    h.enc.set_primary_key("public", "p", vec!["zzz".into()]);
    h.ok(&insert(60, &[Col::T("1"), Col::T("2")]));
    let ev = h.take_values();
    assert_eq!(ev[0]["entity_id"], serde_json::json!({"a": 1, "b": 2}));
    h.enc.abort_transaction();
    assert!(!h.enc.in_transaction());
}

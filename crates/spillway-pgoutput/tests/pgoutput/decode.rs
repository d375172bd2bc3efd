//! Decoder tests: every message kind and every malformed-input path.

use spillway_pgoutput::*;

use crate::helpers::*;

#[test]
fn begin_commit_origin() {
    let b = begin(0x01A2_B3C8, TS_PG, 731);
    assert_eq!(
        decode(&b).unwrap(),
        PgOutputMessage::Begin(Begin {
            final_lsn: 0x01A2_B3C8,
            timestamp: TS_PG,
            xid: 731
        })
    );
    let c = commit(10, 20, -5);
    assert_eq!(
        decode(&c).unwrap(),
        PgOutputMessage::Commit(Commit {
            flags: 0,
            commit_lsn: 10,
            end_lsn: 20,
            timestamp: -5
        })
    );
    let o = origin(99, "node_a");
    assert_eq!(
        decode(&o).unwrap(),
        PgOutputMessage::Origin(Origin {
            commit_lsn: 99,
            name: "node_a"
        })
    );
    assert_eq!(decode(&b).unwrap().tag(), b'B');
}

#[test]
fn relation_and_type() {
    let r = relation(
        16_390,
        "public",
        "orders",
        b'd',
        &[(1, "id", 23), (0, "status", 25)],
    );
    let PgOutputMessage::Relation(rel) = decode(&r).unwrap() else {
        panic!("not a relation")
    };
    assert_eq!(rel.rel_id, 16_390);
    assert_eq!(rel.namespace, "public");
    assert_eq!(rel.name, "orders");
    assert_eq!(rel.replica_identity, ReplicaIdentity::Default);
    assert_eq!(rel.columns.len(), 2);
    assert!(rel.columns[0].is_key());
    assert!(!rel.columns[1].is_key());
    assert_eq!(rel.columns[1].name, "status");
    assert_eq!(rel.columns[1].type_oid, 25);
    assert_eq!(rel.columns[1].type_modifier, -1);

    for (b, ri) in [
        (b'd', ReplicaIdentity::Default),
        (b'n', ReplicaIdentity::Nothing),
        (b'f', ReplicaIdentity::Full),
        (b'i', ReplicaIdentity::Index),
    ] {
        let PgOutputMessage::Relation(rel) = decode(&relation(1, "s", "t", b, &[])).unwrap() else {
            panic!()
        };
        assert_eq!(rel.replica_identity, ri);
        assert_eq!(ri.as_byte(), b);
    }

    let t = type_msg(16_385, "public", "mood");
    assert_eq!(
        decode(&t).unwrap(),
        PgOutputMessage::Type(TypeMessage {
            oid: 16_385,
            namespace: "public",
            name: "mood"
        })
    );
}

#[test]
fn insert_update_delete() {
    let i = insert(5, &[Col::T("7"), Col::N, Col::U, Col::B(&[0, 1, 2])]);
    assert_eq!(
        decode(&i).unwrap(),
        PgOutputMessage::Insert(Insert {
            rel_id: 5,
            new: TupleData {
                columns: vec![
                    ColumnValue::Text(b"7"),
                    ColumnValue::Null,
                    ColumnValue::UnchangedToast,
                    ColumnValue::Binary(&[0, 1, 2]),
                ]
            }
        })
    );

    let u = update(5, None, &[Col::T("")]);
    let PgOutputMessage::Update(up) = decode(&u).unwrap() else {
        panic!()
    };
    assert_eq!(up.old, None);
    assert_eq!(up.new.columns, vec![ColumnValue::Text(b"")]);

    for (marker, kind) in [(b'K', OldTupleKind::Key), (b'O', OldTupleKind::Old)] {
        let u = update(5, Some((marker, &[Col::T("1")])), &[Col::T("2")]);
        let PgOutputMessage::Update(up) = decode(&u).unwrap() else {
            panic!()
        };
        let old = up.old.unwrap();
        assert_eq!(old.kind, kind);
        assert_eq!(old.data.columns, vec![ColumnValue::Text(b"1")]);
        assert_eq!(up.new.columns, vec![ColumnValue::Text(b"2")]);

        let d = delete(9, marker, &[Col::T("1"), Col::N]);
        let PgOutputMessage::Delete(del) = decode(&d).unwrap() else {
            panic!()
        };
        assert_eq!(del.rel_id, 9);
        assert_eq!(del.old.kind, kind);
        assert_eq!(del.old.data.columns.len(), 2);
    }
}

#[test]
fn truncate_and_message() {
    let t = truncate(3, &[1, 2, 3]);
    let PgOutputMessage::Truncate(tr) = decode(&t).unwrap() else {
        panic!()
    };
    assert_eq!(tr.rel_ids, vec![1, 2, 3]);
    assert!(tr.cascade());
    assert!(tr.restart_identity());
    let PgOutputMessage::Truncate(tr) = decode(&truncate(0, &[])).unwrap() else {
        panic!()
    };
    assert!(!tr.cascade() && !tr.restart_identity() && tr.rel_ids.is_empty());

    let m = message(1, 0x42, "audit", b"\xff\x00hi");
    let PgOutputMessage::Message(msg) = decode(&m).unwrap() else {
        panic!()
    };
    assert!(msg.transactional());
    assert_eq!(msg.lsn, 0x42);
    assert_eq!(msg.prefix, "audit");
    assert_eq!(msg.content, b"\xff\x00hi");
    let m = message(0, 1, "p", b"");
    let PgOutputMessage::Message(msg) = decode(&m).unwrap() else {
        panic!()
    };
    assert!(!msg.transactional());
}

#[test]
fn every_truncation_is_an_error() {
    for msg in sample_messages() {
        let msg = msg.as_slice();
        assert!(decode(msg).is_ok(), "sample must decode: {msg:?}");
        for len in 0..msg.len() {
            let r = decode(&msg[..len]);
            assert!(r.is_err(), "prefix {len} of {msg:?} decoded: {r:?}");
        }
    }
}

#[test]
fn trailing_bytes_are_an_error() {
    for msg in sample_messages() {
        let mut m = msg.clone();
        m.push(0);
        match decode(&m) {
            Err(DecodeError::TrailingBytes { offset, remaining }) => {
                assert_eq!(offset, msg.len());
                assert_eq!(remaining, 1);
            }
            other => panic!("expected trailing bytes error, got {other:?}"),
        }
    }
}

#[test]
fn specific_errors() {
    assert_eq!(decode(&[]), Err(DecodeError::Empty));
    assert_eq!(decode(b"Z"), Err(DecodeError::UnknownMessage(b'Z')));
    // Protocol v2 stream messages are not supported.
    assert_eq!(
        decode(b"S\0\0\0\x01\x01"),
        Err(DecodeError::UnknownMessage(b'S'))
    );

    // Truncated begin reports the field and offset.
    match decode(&begin(1, 2, 3)[..12]) {
        Err(DecodeError::UnexpectedEof {
            what,
            offset,
            needed,
            available,
        }) => {
            assert_eq!(what, "begin timestamp");
            assert_eq!(offset, 9);
            assert_eq!(needed, 8);
            assert_eq!(available, 3);
        }
        other => panic!("{other:?}"),
    }

    // Negative text length.
    let m = Buf::new(b'I')
        .u32(1)
        .u8(b'N')
        .i16(1)
        .u8(b't')
        .i32(-1)
        .done();
    assert!(matches!(
        decode(&m),
        Err(DecodeError::NegativeLength {
            value: -1,
            offset: 9,
            ..
        })
    ));
    // Length beyond the buffer.
    let m = Buf::new(b'I')
        .u32(1)
        .u8(b'N')
        .i16(1)
        .u8(b't')
        .i32(100)
        .bytes(b"abc")
        .done();
    assert!(matches!(
        decode(&m),
        Err(DecodeError::UnexpectedEof { needed: 100, .. })
    ));
    // i32::MAX length must not overflow.
    let m = Buf::new(b'I')
        .u32(1)
        .u8(b'N')
        .i16(1)
        .u8(b'b')
        .i32(i32::MAX)
        .done();
    assert!(matches!(decode(&m), Err(DecodeError::UnexpectedEof { .. })));
    // Negative column count.
    let m = Buf::new(b'I').u32(1).u8(b'N').i16(-3).done();
    assert!(matches!(
        decode(&m),
        Err(DecodeError::NegativeLength { value: -3, .. })
    ));
    let m = Buf::new(b'R')
        .u32(1)
        .cstr("s")
        .cstr("t")
        .u8(b'd')
        .i16(-1)
        .done();
    assert!(matches!(
        decode(&m),
        Err(DecodeError::NegativeLength { .. })
    ));
    // Huge column count with no data: error, no huge allocation.
    let m = Buf::new(b'I').u32(1).u8(b'N').i16(i16::MAX).done();
    assert!(matches!(decode(&m), Err(DecodeError::UnexpectedEof { .. })));
    let m = Buf::new(b'T').u32(u32::MAX).u8(0).done();
    assert!(matches!(decode(&m), Err(DecodeError::UnexpectedEof { .. })));
    // Bad column kind.
    let m = Buf::new(b'I').u32(1).u8(b'N').i16(1).u8(b'x').done();
    assert_eq!(
        decode(&m),
        Err(DecodeError::InvalidByte {
            what: "column kind",
            offset: 8,
            byte: b'x'
        })
    );
    // Bad tuple markers.
    let m = Buf::new(b'I').u32(1).u8(b'K').i16(0).done();
    assert!(matches!(
        decode(&m),
        Err(DecodeError::InvalidByte {
            offset: 5,
            byte: b'K',
            ..
        })
    ));
    let m = Buf::new(b'U').u32(1).u8(b'X').i16(0).done();
    assert!(matches!(
        decode(&m),
        Err(DecodeError::InvalidByte { byte: b'X', .. })
    ));
    let m = Buf::new(b'U').u32(1).u8(b'K').i16(0).u8(b'K').i16(0).done();
    assert!(matches!(
        decode(&m),
        Err(DecodeError::InvalidByte {
            offset: 8,
            byte: b'K',
            ..
        })
    ));
    let m = Buf::new(b'D').u32(1).u8(b'N').i16(0).done();
    assert!(matches!(
        decode(&m),
        Err(DecodeError::InvalidByte { byte: b'N', .. })
    ));
    // Bad replica identity.
    let m = Buf::new(b'R')
        .u32(1)
        .cstr("s")
        .cstr("t")
        .u8(b'z')
        .i16(0)
        .done();
    assert!(matches!(
        decode(&m),
        Err(DecodeError::InvalidByte {
            what: "replica identity",
            byte: b'z',
            ..
        })
    ));
    // Missing NUL.
    let m = Buf::new(b'O').u64(1).bytes(b"abc").done();
    assert_eq!(
        decode(&m),
        Err(DecodeError::MissingNul {
            what: "origin name",
            offset: 9
        })
    );
    // Invalid UTF-8 in a name.
    let m = Buf::new(b'Y').u32(1).cstr("s").bytes(b"\xff\xfe\0").done();
    assert_eq!(
        decode(&m),
        Err(DecodeError::InvalidUtf8 {
            what: "type name",
            offset: 7
        })
    );
    // Message content length negative / too long.
    let m = Buf::new(b'M').u8(1).u64(1).cstr("p").i32(-5).done();
    assert!(matches!(
        decode(&m),
        Err(DecodeError::NegativeLength { value: -5, .. })
    ));
    let m = Buf::new(b'M')
        .u8(1)
        .u64(1)
        .cstr("p")
        .i32(5)
        .bytes(b"abcd")
        .done();
    assert!(matches!(decode(&m), Err(DecodeError::UnexpectedEof { .. })));
}

#[test]
fn error_messages_are_one_line() {
    let errs = [
        decode(&[]).unwrap_err(),
        decode(b"Z").unwrap_err(),
        decode(&begin(1, 2, 3)[..5]).unwrap_err(),
        decode(&Buf::new(b'O').u64(1).bytes(b"x").done()).unwrap_err(),
    ];
    for e in errs {
        let s = e.to_string();
        assert!(!s.contains('\n'));
        assert!(
            s.chars().next().unwrap().is_lowercase() || s.starts_with(char::is_numeric),
            "{s}"
        );
    }
}

#[test]
fn lsn_helpers() {
    assert_eq!(format_pg_lsn(0x1_00A2_B3C8), "1/A2B3C8");
    assert_eq!(format_pg_lsn(0x01A2_B3C8), "0/1A2B3C8");
    assert_eq!(format_pg_lsn(0), "0/0");
    assert_eq!(format_pg_lsn(u64::MAX), "FFFFFFFF/FFFFFFFF");
    assert_eq!(format_pg_lsn(0x16B_3748), "0/16B3748");
    for lsn in [
        0,
        1,
        0x01A2_B3C8,
        0x1_00A2_B3C8,
        u64::MAX,
        0xDEAD_BEEF_0000_0001,
    ] {
        assert_eq!(parse_pg_lsn(&format_pg_lsn(lsn)), Some(lsn));
    }
    assert_eq!(parse_pg_lsn("0/16b3748"), Some(0x16B_3748));
    assert_eq!(parse_pg_lsn("00000001/00000002"), Some(0x1_0000_0002));
    for bad in [
        "",
        "/",
        "1/",
        "/1",
        "1",
        "1/2/3",
        "g/1",
        "+1/1",
        "1/-1",
        "123456789/0",
        " 1/1",
        "1/1 ",
    ] {
        assert_eq!(parse_pg_lsn(bad), None, "{bad:?}");
    }
}

#[test]
fn timestamp_helper() {
    assert_eq!(pg_epoch_to_unix_micros(0), 946_684_800_000_000);
    assert_eq!(pg_epoch_to_unix_micros(TS_PG), TS_UNIX);
    assert_eq!(pg_epoch_to_unix_micros(i64::MAX), i64::MAX);
}

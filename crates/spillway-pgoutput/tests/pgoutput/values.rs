//! Value conversion rules.

use spillway_pgoutput::value::oid;
use spillway_pgoutput::*;

fn conv_with(types: &TypeRegistry, oid: u32, text: &str) -> Result<String, ValueError> {
    let mut out = b"prefix".to_vec();
    let r = write_json_value(&mut out, oid, text.as_bytes(), types);
    match r {
        Ok(()) => {
            let json = String::from_utf8(out[6..].to_vec()).unwrap();
            serde_json::from_str::<serde_json::Value>(&json)
                .unwrap_or_else(|e| panic!("invalid JSON {json:?} for {text:?}: {e}"));
            Ok(json)
        }
        Err(e) => {
            assert_eq!(out, b"prefix", "output must be untouched on error");
            Err(e)
        }
    }
}

fn conv(oid: u32, text: &str) -> String {
    conv_with(&TypeRegistry::new(), oid, text).unwrap_or_else(|e| panic!("{oid} {text:?}: {e}"))
}

fn conv_err(oid: u32, text: &str) -> ValueError {
    conv_with(&TypeRegistry::new(), oid, text).expect_err(text)
}

#[test]
fn registry_builtins() {
    let t = TypeRegistry::new();
    let expect = [
        (16, "bool"),
        (17, "bytea"),
        (18, "char"),
        (19, "name"),
        (20, "int8"),
        (21, "int2"),
        (23, "int4"),
        (25, "text"),
        (26, "oid"),
        (114, "json"),
        (142, "xml"),
        (700, "float4"),
        (701, "float8"),
        (790, "money"),
        (869, "inet"),
        (650, "cidr"),
        (829, "macaddr"),
        (1042, "bpchar"),
        (1043, "varchar"),
        (1082, "date"),
        (1083, "time"),
        (1114, "timestamp"),
        (1184, "timestamptz"),
        (1186, "interval"),
        (1266, "timetz"),
        (1560, "bit"),
        (1562, "varbit"),
        (1700, "numeric"),
        (2950, "uuid"),
        (3802, "jsonb"),
        (3220, "pg_lsn"),
        (3614, "tsvector"),
    ];
    for (o, name) in expect {
        let info = t.get(o).unwrap();
        assert_eq!(info.name, name);
        assert_eq!(info.kind, TypeKind::Builtin);
        assert_eq!(t.name(o), name);
    }
    let arrays = [
        (1000, 16),
        (1005, 21),
        (1007, 23),
        (1016, 20),
        (1009, 25),
        (1015, 1043),
        (1014, 1042),
        (1021, 700),
        (1022, 701),
        (1231, 1700),
        (1115, 1114),
        (1185, 1184),
        (1182, 1082),
        (1183, 1083),
        (1270, 1266),
        (1187, 1186),
        (2951, 2950),
        (199, 114),
        (3807, 3802),
        (1001, 17),
        (1002, 18),
        (1003, 19),
        (1028, 26),
        (1041, 869),
        (651, 650),
        (1040, 829),
        (1561, 1560),
        (1563, 1562),
        (791, 790),
        (143, 142),
    ];
    for (a, e) in arrays {
        let info = t.get(a).unwrap();
        assert_eq!(info.kind, TypeKind::Array { elem: e }, "{a}");
        assert_eq!(info.name, format!("_{}", t.name(e)));
    }
    for r in [3904, 3906, 3908, 3910, 3912, 3926] {
        assert_eq!(t.get(r).unwrap().kind, TypeKind::Range);
    }
    assert_eq!(t.name(1007), "_int4");
    assert_eq!(t.get(1020).unwrap().kind, TypeKind::Other); // _box uses ';'
    assert!(!t.contains(99_999));
    assert_eq!(t.name(99_999), "99999");
}

#[test]
fn integers() {
    assert_eq!(conv(oid::INT4, "42"), "42");
    assert_eq!(conv(oid::INT2, "-32768"), "-32768");
    assert_eq!(
        conv(oid::INT8, "9223372036854775807"),
        "9223372036854775807"
    );
    assert_eq!(conv(oid::OID, "0"), "0");
    for bad in ["", "-", "+1", "01", "1.0", "1e3", " 1", "abc", "NaN"] {
        assert!(
            matches!(conv_err(oid::INT4, bad), ValueError::Invalid { .. }),
            "{bad}"
        );
    }
}

#[test]
fn floats() {
    assert_eq!(conv(oid::FLOAT8, "1.5"), "1.5");
    assert_eq!(conv(oid::FLOAT4, "-0"), "-0");
    assert_eq!(conv(oid::FLOAT8, "1e+100"), "1e+100");
    assert_eq!(
        conv(oid::FLOAT8, "1.2345678901234567e-05"),
        "1.2345678901234567e-05"
    );
    assert_eq!(conv(oid::FLOAT8, "NaN"), "\"NaN\"");
    assert_eq!(conv(oid::FLOAT4, "Infinity"), "\"Infinity\"");
    assert_eq!(conv(oid::FLOAT8, "-Infinity"), "\"-Infinity\"");
    for bad in ["", "1.", ".5", "inf", "nan", "1e", "0x10"] {
        assert!(
            conv_with(&TypeRegistry::new(), oid::FLOAT8, bad).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn numeric_and_money_are_exact_strings() {
    assert_eq!(
        conv(oid::NUMERIC, "12345678901234567890.000000000001"),
        "\"12345678901234567890.000000000001\""
    );
    assert_eq!(conv(oid::NUMERIC, "-0.10"), "\"-0.10\"");
    assert_eq!(conv(oid::NUMERIC, "NaN"), "\"NaN\"");
    assert_eq!(conv(oid::NUMERIC, "Infinity"), "\"Infinity\"");
    assert_eq!(conv(oid::NUMERIC, "-Infinity"), "\"-Infinity\"");
    assert_eq!(conv(oid::MONEY, "$1,234.50"), "\"$1,234.50\"");
}

#[test]
fn booleans() {
    assert_eq!(conv(oid::BOOL, "t"), "true");
    assert_eq!(conv(oid::BOOL, "f"), "false");
    assert!(conv_with(&TypeRegistry::new(), oid::BOOL, "true").is_err());
}

#[test]
fn strings_and_escaping() {
    assert_eq!(conv(oid::TEXT, "hello"), "\"hello\"");
    assert_eq!(conv(oid::TEXT, ""), "\"\"");
    assert_eq!(conv(oid::TEXT, "a\"b\\c"), r#""a\"b\\c""#);
    assert_eq!(
        conv(oid::TEXT, "tab\tnl\ncr\r\u{0}\u{1f}\u{7f}"),
        "\"tab\\u0009nl\\u000acr\\u000d\\u0000\\u001f\u{7f}\""
    );
    assert_eq!(conv(oid::VARCHAR, "héllo ✓ 😀"), "\"héllo ✓ 😀\"");
    let v: String = serde_json::from_str(&conv(oid::TEXT, "x\u{1}y\"z")).unwrap();
    assert_eq!(v, "x\u{1}y\"z");
    // Invalid UTF-8 is replaced, never emitted raw.
    let mut out = Vec::new();
    write_json_value(&mut out, oid::TEXT, b"a\xffb", &TypeRegistry::new()).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "\"a\u{fffd}b\"");
    for (o, text) in [
        (oid::BPCHAR, "ab  "),
        (oid::CHAR, "x"),
        (oid::NAME, "pg_class"),
        (oid::XML, "<a>1</a>"),
        (oid::UUID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        (oid::INET, "192.168.0.1/24"),
        (oid::CIDR, "10.0.0.0/8"),
        (oid::MACADDR, "08:00:2b:01:02:03"),
        (oid::BIT, "101"),
        (oid::VARBIT, "1"),
        (oid::TSVECTOR, "'a' 'b'"),
        (oid::PG_LSN, "0/16B3748"),
        (oid::INTERVAL, "1 year 2 mons 3 days 04:05:06.5"),
        (oid::INT4RANGE, "[1,10)"),
        (603, "(1,1),(0,0)"),
        (1020, "{(1,1),(0,0);(2,2),(1,1)}"),
        (424_242, "unknown type"),
    ] {
        let got = conv(o, text);
        let v: String = serde_json::from_str(&got).unwrap();
        assert_eq!(v, text);
    }

    let mut out = Vec::new();
    write_json_string(&mut out, "q\"\u{8}");
    assert_eq!(out, br#""q\"\u0008""#);
}

#[test]
fn json_embedding() {
    assert_eq!(
        conv(oid::JSONB, r#"{"a": [1, 2, {"b": null}]}"#),
        r#"{"a": [1, 2, {"b": null}]}"#
    );
    assert_eq!(conv(oid::JSON, "  [1,2]\n"), "[1,2]");
    assert_eq!(conv(oid::JSON, "\"s\""), "\"s\"");
    assert_eq!(conv(oid::JSON, "3.5"), "3.5");
    // Invalid JSON falls back to a string.
    assert_eq!(conv(oid::JSON, "{bad"), "\"{bad\"");
    assert_eq!(conv(oid::JSONB, ""), "\"\"");
    assert_eq!(conv(oid::JSON, "1 2"), "\"1 2\"");
}

#[test]
fn bytea_base64() {
    assert_eq!(conv(oid::BYTEA, "\\x"), "\"\"");
    assert_eq!(conv(oid::BYTEA, "\\xdeadbeef"), "\"3q2+7w==\"");
    assert_eq!(conv(oid::BYTEA, "\\x00FF10"), "\"AP8Q\"");
    assert_eq!(conv(oid::BYTEA, "\\x616263"), "\"YWJj\"");
    for bad in ["", "deadbeef", "\\xabc", "\\xzz", "\\x12 3"] {
        assert!(
            conv_with(&TypeRegistry::new(), oid::BYTEA, bad).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn dates() {
    assert_eq!(conv(oid::DATE, "2024-01-02"), "\"2024-01-02\"");
    assert_eq!(conv(oid::DATE, "infinity"), "\"infinity\"");
    assert_eq!(conv(oid::DATE, "-infinity"), "\"-infinity\"");
    assert_eq!(conv(oid::DATE, "0044-03-15 BC"), "\"-0043-03-15\"");
    assert_eq!(conv(oid::DATE, "0001-01-01 BC"), "\"0000-01-01\"");
    assert_eq!(conv(oid::DATE, "0002-12-31 BC"), "\"-0001-12-31\"");
    assert_eq!(conv(oid::DATE, "4714-11-24 BC"), "\"-4713-11-24\"");
    assert_eq!(conv(oid::DATE, "0001-01-01"), "\"0001-01-01\"");
    assert_eq!(conv(oid::DATE, "5874897-12-31"), "\"5874897-12-31\"");
    assert_eq!(conv(oid::DATE, "2024-02-29"), "\"2024-02-29\"");
    for bad in [
        "2023-02-29",
        "2024-13-01",
        "2024-00-10",
        "2024-01-32",
        "24-01-02",
        "2024-1-02",
        "2024-01-02 ",
        "2024-01-02 AD",
        "0000-01-01",
        "2024/01/02",
        "",
    ] {
        assert!(
            conv_with(&TypeRegistry::new(), oid::DATE, bad).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn timestamps() {
    let ts = oid::TIMESTAMP;
    assert_eq!(
        conv(ts, "2024-01-02 03:04:05.12"),
        "\"2024-01-02T03:04:05.120000\""
    );
    assert_eq!(
        conv(ts, "2024-01-02 03:04:05"),
        "\"2024-01-02T03:04:05.000000\""
    );
    assert_eq!(
        conv(ts, "2024-01-02 03:04:05.123456"),
        "\"2024-01-02T03:04:05.123456\""
    );
    assert_eq!(
        conv(ts, "0044-03-15 12:00:00 BC"),
        "\"-0043-03-15T12:00:00.000000\""
    );
    assert_eq!(conv(ts, "infinity"), "\"infinity\"");
    assert_eq!(conv(ts, "-infinity"), "\"-infinity\"");
    for bad in [
        "2024-01-02T03:04:05",
        "2024-01-02 03:04",
        "2024-01-02 24:00:00",
        "2024-01-02 03:04:05.1234567",
        "2024-01-02 03:04:05.",
        "2024-01-02 03:60:05",
        "2024-01-02 03:04:05+00",
    ] {
        assert!(conv_with(&TypeRegistry::new(), ts, bad).is_err(), "{bad}");
    }
}

#[test]
fn timestamptz_to_utc() {
    let tz = oid::TIMESTAMPTZ;
    assert_eq!(
        conv(tz, "2024-01-02 03:04:05.12+00"),
        "\"2024-01-02T03:04:05.120000Z\""
    );
    assert_eq!(
        conv(tz, "2024-01-02 03:04:05+05:30"),
        "\"2024-01-01T21:34:05.000000Z\""
    );
    assert_eq!(
        conv(tz, "2024-12-31 20:00:00.5-08"),
        "\"2025-01-01T04:00:00.500000Z\""
    );
    assert_eq!(
        conv(tz, "2024-03-01 01:00:00+02"),
        "\"2024-02-29T23:00:00.000000Z\""
    );
    assert_eq!(
        conv(tz, "2023-03-01 01:00:00+02"),
        "\"2023-02-28T23:00:00.000000Z\""
    );
    assert_eq!(
        conv(tz, "1900-01-01 00:00:00+00:53:28"),
        "\"1899-12-31T23:06:32.000000Z\""
    );
    assert_eq!(
        conv(tz, "0001-01-01 00:30:00+01 BC"),
        "\"-0001-12-31T23:30:00.000000Z\""
    );
    assert_eq!(
        conv(tz, "0044-03-15 12:00:00+00 BC"),
        "\"-0043-03-15T12:00:00.000000Z\""
    );
    assert_eq!(conv(tz, "infinity"), "\"infinity\"");
    assert_eq!(conv(tz, "-infinity"), "\"-infinity\"");
    for bad in [
        "2024-01-02 03:04:05",
        "2024-01-02 03:04:05+",
        "2024-01-02 03:04:05+5",
        "2024-01-02 03:04:05+05:3",
        "2024-01-02 03:04:05+05:60",
        "2024-01-02 03:04:05 UTC",
    ] {
        assert!(conv_with(&TypeRegistry::new(), tz, bad).is_err(), "{bad}");
    }
}

#[test]
fn times() {
    assert_eq!(conv(oid::TIME, "03:04:05"), "\"03:04:05.000000\"");
    assert_eq!(conv(oid::TIME, "23:59:59.999999"), "\"23:59:59.999999\"");
    assert_eq!(conv(oid::TIME, "24:00:00"), "\"24:00:00.000000\"");
    assert_eq!(
        conv(oid::TIMETZ, "03:04:05.5+02"),
        "\"03:04:05.500000+02:00\""
    );
    assert_eq!(
        conv(oid::TIMETZ, "03:04:05-05:30"),
        "\"03:04:05.000000-05:30\""
    );
    assert_eq!(
        conv(oid::TIMETZ, "03:04:05+00"),
        "\"03:04:05.000000+00:00\""
    );
    assert_eq!(
        conv(oid::TIMETZ, "03:04:05+00:53:28"),
        "\"03:04:05.000000+00:53:28\""
    );
    for bad in ["3:04:05", "03:04", "24:00:01", "03:04:05+02", "25:00:00"] {
        assert!(
            conv_with(&TypeRegistry::new(), oid::TIME, bad).is_err(),
            "{bad}"
        );
    }
    assert!(conv_with(&TypeRegistry::new(), oid::TIMETZ, "03:04:05").is_err());
}

#[test]
fn arrays() {
    assert_eq!(conv(oid::INT4_ARRAY, "{1,2,NULL}"), "[1,2,null]");
    assert_eq!(conv(oid::INT4_ARRAY, "{}"), "[]");
    assert_eq!(conv(oid::INT4_ARRAY, "{{1,2},{3,4}}"), "[[1,2],[3,4]]");
    assert_eq!(
        conv(oid::INT4_ARRAY, "{{{1},{2}},{{3},{NULL}}}"),
        "[[[1],[2]],[[3],[null]]]"
    );
    assert_eq!(conv(oid::INT4_ARRAY, "[0:1]={1,2}"), "[1,2]");
    assert_eq!(
        conv(oid::INT4_ARRAY, "[1:2][-1:0]={{1,2},{3,4}}"),
        "[[1,2],[3,4]]"
    );
    assert_eq!(conv(oid::INT4_ARRAY, " { 1 , 2 } "), "[1,2]");
    assert_eq!(
        conv(
            oid::TEXT_ARRAY,
            r#"{"a b","c\"d",NULL,"NULL",null,plain,"back\\slash"}"#
        ),
        r#"["a b","c\"d",null,"NULL",null,"plain","back\\slash"]"#
    );
    assert_eq!(conv(oid::TEXT_ARRAY, r#"{"",x\,y}"#), r#"["","x,y"]"#);
    assert_eq!(conv(oid::VARCHAR_ARRAY, "{a,b}"), r#"["a","b"]"#);
    assert_eq!(conv(oid::BOOL_ARRAY, "{t,f,NULL}"), "[true,false,null]");
    assert_eq!(
        conv(oid::FLOAT8_ARRAY, "{1.5,NaN,-Infinity}"),
        r#"[1.5,"NaN","-Infinity"]"#
    );
    assert_eq!(conv(oid::NUMERIC_ARRAY, "{1.10,NaN}"), r#"["1.10","NaN"]"#);
    assert_eq!(
        conv(
            oid::TIMESTAMPTZ_ARRAY,
            r#"{"2024-01-02 03:04:05+00","2024-01-02 03:04:05+01"}"#
        ),
        r#"["2024-01-02T03:04:05.000000Z","2024-01-02T02:04:05.000000Z"]"#
    );
    assert_eq!(
        conv(oid::JSONB_ARRAY, r#"{"{\"a\": 1}","[1, 2]",NULL}"#),
        r#"[{"a": 1},[1, 2],null]"#
    );
    assert_eq!(
        conv(oid::BYTEA_ARRAY, r#"{"\\xdeadbeef",NULL}"#),
        r#"["3q2+7w==",null]"#
    );
    assert_eq!(
        conv(1182, "{2024-01-02,\"0044-03-15 BC\"}"),
        r#"["2024-01-02","-0043-03-15"]"#
    );

    for bad in [
        "", "1,2", "{1,2", "{1,,2}", "{1,2}x", "{{1},2}", "{1,{2}}", "{\"a}", "{a\"b}", "[1:2]{1}",
        "{", "}", "{1 2}x", "{,}", "{1,}",
    ] {
        assert!(
            conv_with(&TypeRegistry::new(), oid::TEXT_ARRAY, bad).is_err(),
            "{bad:?}"
        );
    }
    // Element conversion errors propagate.
    assert!(conv_with(&TypeRegistry::new(), oid::INT4_ARRAY, "{1,x}").is_err());
    assert!(conv_with(&TypeRegistry::new(), oid::INT4_ARRAY, "{1,\"NULL\"}").is_err());
    // Deep nesting is rejected without stack overflow.
    let deep = format!("{}{}", "{".repeat(10_000), "}".repeat(10_000));
    assert!(conv_with(&TypeRegistry::new(), oid::INT4_ARRAY, &deep).is_err());
}

#[test]
fn enums_domains_composites() {
    let mut t = TypeRegistry::new();
    t.insert(
        50_000,
        TypeInfo {
            name: "mood".into(),
            kind: TypeKind::Enum,
        },
    );
    t.insert(
        50_001,
        TypeInfo {
            name: "_mood".into(),
            kind: TypeKind::Array { elem: 50_000 },
        },
    );
    t.insert(
        50_002,
        TypeInfo {
            name: "posint".into(),
            kind: TypeKind::Domain { base: oid::INT4 },
        },
    );
    t.insert(
        50_003,
        TypeInfo {
            name: "posint2".into(),
            kind: TypeKind::Domain { base: 50_002 },
        },
    );
    t.insert(
        50_004,
        TypeInfo {
            name: "_posint2".into(),
            kind: TypeKind::Array { elem: 50_003 },
        },
    );
    t.insert(
        50_005,
        TypeInfo {
            name: "loop_a".into(),
            kind: TypeKind::Domain { base: 50_006 },
        },
    );
    t.insert(
        50_006,
        TypeInfo {
            name: "loop_b".into(),
            kind: TypeKind::Domain { base: 50_005 },
        },
    );
    t.insert(
        50_007,
        TypeInfo {
            name: "addr".into(),
            kind: TypeKind::Composite,
        },
    );
    t.insert(
        50_008,
        TypeInfo {
            name: "int_list".into(),
            kind: TypeKind::Domain {
                base: oid::INT4_ARRAY,
            },
        },
    );
    t.insert(
        50_009,
        TypeInfo {
            name: "dangling".into(),
            kind: TypeKind::Domain { base: 77_777 },
        },
    );
    assert_eq!(conv_with(&t, 50_000, "happy").unwrap(), "\"happy\"");
    assert_eq!(
        conv_with(&t, 50_001, "{happy,sad,NULL}").unwrap(),
        r#"["happy","sad",null]"#
    );
    assert_eq!(conv_with(&t, 50_002, "5").unwrap(), "5");
    assert_eq!(conv_with(&t, 50_003, "6").unwrap(), "6");
    assert_eq!(conv_with(&t, 50_004, "{1,NULL}").unwrap(), "[1,null]");
    assert_eq!(conv_with(&t, 50_005, "cyc").unwrap(), "\"cyc\"");
    assert_eq!(
        conv_with(&t, 50_007, r#"(1,"Main St")"#).unwrap(),
        r#""(1,\"Main St\")""#
    );
    assert_eq!(conv_with(&t, 50_008, "{1,2}").unwrap(), "[1,2]");
    assert_eq!(conv_with(&t, 50_009, "x").unwrap(), "\"x\"");
    assert_eq!(t.name(50_001), "_mood");
}

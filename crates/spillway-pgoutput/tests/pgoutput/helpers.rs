//! Builders for pgoutput protocol messages and test helpers.
#![allow(dead_code)]

/// One column value in a built tuple.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Col<'a> {
    N,
    U,
    T(&'a str),
    B(&'a [u8]),
}

#[derive(Debug, Default)]
pub(crate) struct Buf(pub(crate) Vec<u8>);

impl Buf {
    pub(crate) fn new(tag: u8) -> Self {
        Buf(vec![tag])
    }
    pub(crate) fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub(crate) fn i16(mut self, v: i16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn i32(mut self, v: i32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn i64(mut self, v: i64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn cstr(mut self, s: &str) -> Self {
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
        self
    }
    pub(crate) fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    pub(crate) fn tuple(mut self, cols: &[Col<'_>]) -> Self {
        self = self.i16(cols.len() as i16);
        for c in cols {
            self = match c {
                Col::N => self.u8(b'n'),
                Col::U => self.u8(b'u'),
                Col::T(s) => self.u8(b't').i32(s.len() as i32).bytes(s.as_bytes()),
                Col::B(b) => self.u8(b'b').i32(b.len() as i32).bytes(b),
            };
        }
        self
    }
    pub(crate) fn done(self) -> Vec<u8> {
        self.0
    }
}

/// Microseconds since 2000-01-01 for 2025-11-21 00:00:00.123456 UTC.
pub(crate) const TS_PG: i64 = 816_998_400_123_456;
/// The same instant in Unix microseconds.
pub(crate) const TS_UNIX: i64 = 1_763_683_200_123_456;

pub(crate) fn begin(final_lsn: u64, ts: i64, xid: u32) -> Vec<u8> {
    Buf::new(b'B').u64(final_lsn).i64(ts).u32(xid).done()
}

pub(crate) fn commit(commit_lsn: u64, end_lsn: u64, ts: i64) -> Vec<u8> {
    Buf::new(b'C')
        .u8(0)
        .u64(commit_lsn)
        .u64(end_lsn)
        .i64(ts)
        .done()
}

pub(crate) fn origin(lsn: u64, name: &str) -> Vec<u8> {
    Buf::new(b'O').u64(lsn).cstr(name).done()
}

pub(crate) fn type_msg(oid: u32, ns: &str, name: &str) -> Vec<u8> {
    Buf::new(b'Y').u32(oid).cstr(ns).cstr(name).done()
}

/// `cols`: (flags, name, type oid).
pub(crate) fn relation(
    rel_id: u32,
    ns: &str,
    name: &str,
    ri: u8,
    cols: &[(u8, &str, u32)],
) -> Vec<u8> {
    let mut b = Buf::new(b'R')
        .u32(rel_id)
        .cstr(ns)
        .cstr(name)
        .u8(ri)
        .i16(cols.len() as i16);
    for (flags, name, oid) in cols {
        b = b.u8(*flags).cstr(name).u32(*oid).i32(-1);
    }
    b.done()
}

pub(crate) fn insert(rel_id: u32, new: &[Col<'_>]) -> Vec<u8> {
    Buf::new(b'I').u32(rel_id).u8(b'N').tuple(new).done()
}

pub(crate) fn update(rel_id: u32, old: Option<(u8, &[Col<'_>])>, new: &[Col<'_>]) -> Vec<u8> {
    let mut b = Buf::new(b'U').u32(rel_id);
    if let Some((kind, cols)) = old {
        b = b.u8(kind).tuple(cols);
    }
    b.u8(b'N').tuple(new).done()
}

pub(crate) fn delete(rel_id: u32, kind: u8, old: &[Col<'_>]) -> Vec<u8> {
    Buf::new(b'D').u32(rel_id).u8(kind).tuple(old).done()
}

pub(crate) fn truncate(options: u8, rel_ids: &[u32]) -> Vec<u8> {
    let mut b = Buf::new(b'T').u32(rel_ids.len() as u32).u8(options);
    for id in rel_ids {
        b = b.u32(*id);
    }
    b.done()
}

pub(crate) fn message(flags: u8, lsn: u64, prefix: &str, content: &[u8]) -> Vec<u8> {
    Buf::new(b'M')
        .u8(flags)
        .u64(lsn)
        .cstr(prefix)
        .i32(content.len() as i32)
        .bytes(content)
        .done()
}

/// A set of valid messages of every kind (used by truncation and mutation tests).
pub(crate) fn sample_messages() -> Vec<Vec<u8>> {
    vec![
        begin(0x01A2_B3C8, TS_PG, 731),
        commit(0x01A2_B3C8, 0x01A2_B3F0, TS_PG),
        origin(0x55, "upstream"),
        type_msg(16_385, "public", "mood"),
        relation(
            16_390,
            "public",
            "orders",
            b'd',
            &[(1, "id", 23), (0, "status", 25), (0, "tags", 1009)],
        ),
        relation(1, "", "x", b'f', &[]),
        insert(16_390, &[Col::T("7"), Col::T("paid"), Col::N]),
        update(
            16_390,
            Some((b'O', &[Col::T("7"), Col::T("paid"), Col::U])),
            &[Col::T("7"), Col::T("shipped"), Col::U],
        ),
        update(
            16_390,
            Some((b'K', &[Col::T("7"), Col::N, Col::N])),
            &[Col::T("8"), Col::T("x"), Col::N],
        ),
        update(16_390, None, &[Col::T("7"), Col::B(b"\x00\x01"), Col::N]),
        delete(16_390, b'K', &[Col::T("7"), Col::N, Col::N]),
        delete(16_390, b'O', &[Col::T("7"), Col::T("paid"), Col::T("{a}")]),
        truncate(3, &[16_390, 16_391]),
        truncate(0, &[]),
        message(1, 0x01A2_B3A0, "audit", b"hello"),
        message(0, 0x10, "", b""),
    ]
}

/// Keys of the top-level JSON object in document order.
pub(crate) fn top_level_keys(json: &[u8]) -> Vec<String> {
    let mut keys = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let mut expect_key = false;
    while i < json.len() {
        match json[i] {
            b'{' => {
                depth += 1;
                expect_key = depth == 1;
            }
            b'[' => depth += 1,
            b'}' | b']' => depth -= 1,
            b',' if depth == 1 => expect_key = true,
            b'"' => {
                let start = i + 1;
                i += 1;
                while json[i] != b'"' {
                    if json[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if expect_key && depth == 1 {
                    keys.push(String::from_utf8(json[start..i].to_vec()).unwrap());
                    expect_key = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    keys
}

/// Deterministic xorshift64* PRNG.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

//! Conversion of PostgreSQL text-format values to JSON text.
//!
//! The replication session is expected to run with `DateStyle=ISO`,
//! `TimeZone=UTC`, `IntervalStyle=postgres`, `extra_float_digits=3` and
//! `bytea_output=hex`; values arrive in those output formats and
//! [`write_json_value`] maps them to JSON following Spillway's value contract
//! (see the function docs). JSON is written directly into a byte buffer; no
//! intermediate `serde_json::Value` is built.
//!
//! Types are resolved through a [`TypeRegistry`], prefilled with PostgreSQL's
//! builtin types and their array types; the I/O layer registers user-defined
//! types (enums, domains, composites, arrays of them) after looking them up in
//! `pg_type`.
//!
//! Everything here is total: arbitrary bytes never cause a panic, and every
//! successful call appends exactly one syntactically valid JSON value.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use base64::Engine as _;
use spillway_core::time;

/// OIDs of builtin PostgreSQL types referenced by the conversion rules.
pub mod oid {
    /// `bool`
    pub const BOOL: u32 = 16;
    /// `bytea`
    pub const BYTEA: u32 = 17;
    /// `char`
    pub const CHAR: u32 = 18;
    /// `name`
    pub const NAME: u32 = 19;
    /// `int8`
    pub const INT8: u32 = 20;
    /// `int2`
    pub const INT2: u32 = 21;
    /// `int4`
    pub const INT4: u32 = 23;
    /// `text`
    pub const TEXT: u32 = 25;
    /// `oid`
    pub const OID: u32 = 26;
    /// `json`
    pub const JSON: u32 = 114;
    /// `xml`
    pub const XML: u32 = 142;
    /// `cidr`
    pub const CIDR: u32 = 650;
    /// `float4`
    pub const FLOAT4: u32 = 700;
    /// `float8`
    pub const FLOAT8: u32 = 701;
    /// `money`
    pub const MONEY: u32 = 790;
    /// `macaddr`
    pub const MACADDR: u32 = 829;
    /// `inet`
    pub const INET: u32 = 869;
    /// `bpchar`
    pub const BPCHAR: u32 = 1042;
    /// `varchar`
    pub const VARCHAR: u32 = 1043;
    /// `date`
    pub const DATE: u32 = 1082;
    /// `time`
    pub const TIME: u32 = 1083;
    /// `timestamp`
    pub const TIMESTAMP: u32 = 1114;
    /// `timestamptz`
    pub const TIMESTAMPTZ: u32 = 1184;
    /// `interval`
    pub const INTERVAL: u32 = 1186;
    /// `timetz`
    pub const TIMETZ: u32 = 1266;
    /// `bit`
    pub const BIT: u32 = 1560;
    /// `varbit`
    pub const VARBIT: u32 = 1562;
    /// `numeric`
    pub const NUMERIC: u32 = 1700;
    /// `uuid`
    pub const UUID: u32 = 2950;
    /// `pg_lsn`
    pub const PG_LSN: u32 = 3220;
    /// `tsvector`
    pub const TSVECTOR: u32 = 3614;
    /// `jsonb`
    pub const JSONB: u32 = 3802;
    /// `int4range`
    pub const INT4RANGE: u32 = 3904;
    /// `_bool`
    pub const BOOL_ARRAY: u32 = 1000;
    /// `_bytea`
    pub const BYTEA_ARRAY: u32 = 1001;
    /// `_int2`
    pub const INT2_ARRAY: u32 = 1005;
    /// `_int4`
    pub const INT4_ARRAY: u32 = 1007;
    /// `_text`
    pub const TEXT_ARRAY: u32 = 1009;
    /// `_varchar`
    pub const VARCHAR_ARRAY: u32 = 1015;
    /// `_int8`
    pub const INT8_ARRAY: u32 = 1016;
    /// `_float8`
    pub const FLOAT8_ARRAY: u32 = 1022;
    /// `_timestamptz`
    pub const TIMESTAMPTZ_ARRAY: u32 = 1185;
    /// `_numeric`
    pub const NUMERIC_ARRAY: u32 = 1231;
    /// `_jsonb`
    pub const JSONB_ARRAY: u32 = 3807;
}

/// How a type is converted; see [`write_json_value`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TypeKind {
    /// A builtin scalar; the conversion is chosen by its OID.
    Builtin,
    /// An array whose elements have type `elem` (delimiter `,`). Register
    /// arrays of element types with another `typdelim` as [`TypeKind::Other`].
    Array {
        /// Element type OID.
        elem: u32,
    },
    /// A domain, converted as its base type.
    Domain {
        /// Base type OID (may itself be a domain).
        base: u32,
    },
    /// An enum; values become JSON strings.
    Enum,
    /// A composite (row) type; values become JSON strings of the text form.
    Composite,
    /// A range or multirange type; values become JSON strings.
    Range,
    /// Anything else; values become JSON strings.
    Other,
}

/// A registered type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TypeInfo {
    /// `pg_type.typname`, e.g. `int4` or `_int4`.
    pub name: String,
    /// Conversion class.
    pub kind: TypeKind,
}

/// Cheap hasher for `u32` keys (OIDs, relation ids): a multiplicative hash,
/// good enough for keys chosen by PostgreSQL rather than an adversary.
#[derive(Default, Clone, Copy)]
pub(crate) struct OidHasher(u64);

impl Hasher for OidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, i: u32) {
        self.0 = (self.0 ^ u64::from(i)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) type OidMap<V> = HashMap<u32, V, BuildHasherDefault<OidHasher>>;

/// Builtin scalar types: (oid, typname, kind).
const BUILTIN_SCALARS: &[(u32, &str, TypeKind)] = &[
    (16, "bool", TypeKind::Builtin),
    (17, "bytea", TypeKind::Builtin),
    (18, "char", TypeKind::Builtin),
    (19, "name", TypeKind::Builtin),
    (20, "int8", TypeKind::Builtin),
    (21, "int2", TypeKind::Builtin),
    (22, "int2vector", TypeKind::Builtin),
    (23, "int4", TypeKind::Builtin),
    (24, "regproc", TypeKind::Builtin),
    (25, "text", TypeKind::Builtin),
    (26, "oid", TypeKind::Builtin),
    (27, "tid", TypeKind::Builtin),
    (28, "xid", TypeKind::Builtin),
    (29, "cid", TypeKind::Builtin),
    (30, "oidvector", TypeKind::Builtin),
    (114, "json", TypeKind::Builtin),
    (142, "xml", TypeKind::Builtin),
    (600, "point", TypeKind::Builtin),
    (601, "lseg", TypeKind::Builtin),
    (602, "path", TypeKind::Builtin),
    (603, "box", TypeKind::Builtin),
    (604, "polygon", TypeKind::Builtin),
    (628, "line", TypeKind::Builtin),
    (650, "cidr", TypeKind::Builtin),
    (700, "float4", TypeKind::Builtin),
    (701, "float8", TypeKind::Builtin),
    (718, "circle", TypeKind::Builtin),
    (774, "macaddr8", TypeKind::Builtin),
    (790, "money", TypeKind::Builtin),
    (829, "macaddr", TypeKind::Builtin),
    (869, "inet", TypeKind::Builtin),
    (1033, "aclitem", TypeKind::Builtin),
    (1042, "bpchar", TypeKind::Builtin),
    (1043, "varchar", TypeKind::Builtin),
    (1082, "date", TypeKind::Builtin),
    (1083, "time", TypeKind::Builtin),
    (1114, "timestamp", TypeKind::Builtin),
    (1184, "timestamptz", TypeKind::Builtin),
    (1186, "interval", TypeKind::Builtin),
    (1266, "timetz", TypeKind::Builtin),
    (1560, "bit", TypeKind::Builtin),
    (1562, "varbit", TypeKind::Builtin),
    (1700, "numeric", TypeKind::Builtin),
    (1790, "refcursor", TypeKind::Builtin),
    (2202, "regprocedure", TypeKind::Builtin),
    (2203, "regoper", TypeKind::Builtin),
    (2204, "regoperator", TypeKind::Builtin),
    (2205, "regclass", TypeKind::Builtin),
    (2206, "regtype", TypeKind::Builtin),
    (2950, "uuid", TypeKind::Builtin),
    (2970, "txid_snapshot", TypeKind::Builtin),
    (3220, "pg_lsn", TypeKind::Builtin),
    (3614, "tsvector", TypeKind::Builtin),
    (3615, "tsquery", TypeKind::Builtin),
    (3642, "gtsvector", TypeKind::Builtin),
    (3734, "regconfig", TypeKind::Builtin),
    (3769, "regdictionary", TypeKind::Builtin),
    (3802, "jsonb", TypeKind::Builtin),
    (4072, "jsonpath", TypeKind::Builtin),
    (4089, "regnamespace", TypeKind::Builtin),
    (4096, "regrole", TypeKind::Builtin),
    (4191, "regcollation", TypeKind::Builtin),
    (5038, "pg_snapshot", TypeKind::Builtin),
    (5069, "xid8", TypeKind::Builtin),
    (3904, "int4range", TypeKind::Range),
    (3906, "numrange", TypeKind::Range),
    (3908, "tsrange", TypeKind::Range),
    (3910, "tstzrange", TypeKind::Range),
    (3912, "daterange", TypeKind::Range),
    (3926, "int8range", TypeKind::Range),
    (4451, "int4multirange", TypeKind::Range),
    (4532, "nummultirange", TypeKind::Range),
    (4533, "tsmultirange", TypeKind::Range),
    (4534, "tstzmultirange", TypeKind::Range),
    (4535, "datemultirange", TypeKind::Range),
    (4536, "int8multirange", TypeKind::Range),
];

/// Builtin array types: (array oid, element oid). The name is `_` + the
/// element's name.
const BUILTIN_ARRAYS: &[(u32, u32)] = &[
    (1000, 16),
    (1001, 17),
    (1002, 18),
    (1003, 19),
    (1016, 20),
    (1005, 21),
    (1006, 22),
    (1007, 23),
    (1008, 24),
    (1009, 25),
    (1028, 26),
    (1010, 27),
    (1011, 28),
    (1012, 29),
    (1013, 30),
    (199, 114),
    (143, 142),
    (1017, 600),
    (1018, 601),
    (1019, 602),
    (1020, 603), // _box: elements delimited by ';' → registered as Other
    (1027, 604),
    (629, 628),
    (651, 650),
    (1021, 700),
    (1022, 701),
    (719, 718),
    (775, 774),
    (791, 790),
    (1040, 829),
    (1041, 869),
    (1034, 1033),
    (1014, 1042),
    (1015, 1043),
    (1182, 1082),
    (1183, 1083),
    (1115, 1114),
    (1185, 1184),
    (1187, 1186),
    (1270, 1266),
    (1561, 1560),
    (1563, 1562),
    (1231, 1700),
    (2201, 1790),
    (2207, 2202),
    (2208, 2203),
    (2209, 2204),
    (2210, 2205),
    (2211, 2206),
    (2951, 2950),
    (2949, 2970),
    (3221, 3220),
    (3643, 3614),
    (3645, 3615),
    (3644, 3642),
    (3735, 3734),
    (3770, 3769),
    (3807, 3802),
    (4073, 4072),
    (4090, 4089),
    (4097, 4096),
    (4192, 4191),
    (5039, 5038),
    (271, 5069),
    (3905, 3904),
    (3907, 3906),
    (3909, 3908),
    (3911, 3910),
    (3913, 3912),
    (3927, 3926),
    (6150, 4451),
    (6151, 4532),
    (6152, 4533),
    (6153, 4534),
    (6155, 4535),
    (6157, 4536),
];

/// Maps type OIDs to names and conversion classes.
#[derive(Debug, Clone)]
pub struct TypeRegistry {
    types: OidMap<TypeInfo>,
}

impl Default for TypeRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl TypeRegistry {
    /// A registry prefilled with PostgreSQL's builtin scalar, range and
    /// array types.
    #[must_use]
    pub fn new() -> Self {
        let mut types = OidMap::default();
        types.reserve(BUILTIN_SCALARS.len() + BUILTIN_ARRAYS.len());
        for &(oid, name, kind) in BUILTIN_SCALARS {
            types.insert(
                oid,
                TypeInfo {
                    name: name.to_owned(),
                    kind,
                },
            );
        }
        for &(array_oid, elem) in BUILTIN_ARRAYS {
            let elem_name = types
                .get(&elem)
                .map_or_else(|| elem.to_string(), |t| t.name.clone());
            let kind = if elem == 603 {
                TypeKind::Other
            } else {
                TypeKind::Array { elem }
            };
            types.insert(
                array_oid,
                TypeInfo {
                    name: format!("_{elem_name}"),
                    kind,
                },
            );
        }
        Self { types }
    }

    /// Whether `oid` is registered.
    #[must_use]
    pub fn contains(&self, oid: u32) -> bool {
        self.types.contains_key(&oid)
    }

    /// The registration of `oid`, if any.
    #[must_use]
    pub fn get(&self, oid: u32) -> Option<&TypeInfo> {
        self.types.get(&oid)
    }

    /// Registers (or replaces) a type; returns the previous registration.
    pub fn insert(&mut self, oid: u32, info: TypeInfo) -> Option<TypeInfo> {
        self.types.insert(oid, info)
    }

    /// The type's name, or the OID in decimal if it is not registered.
    #[must_use]
    pub fn name(&self, oid: u32) -> String {
        match self.types.get(&oid) {
            Some(t) => t.name.clone(),
            None => oid.to_string(),
        }
    }

    /// Number of registered types.
    #[must_use]
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// Whether no type is registered (never true for [`TypeRegistry::new`]).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }
}

/// A value whose text does not match the output format of its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The text is not a valid output of the type.
    #[error("invalid {type_name} value {text:?}")]
    Invalid {
        /// Conversion class that rejected the text.
        type_name: &'static str,
        /// The offending text (lossily decoded, cut to 64 bytes).
        text: String,
    },
    /// An array literal is malformed.
    #[error("malformed array literal at byte {offset}: {reason}")]
    MalformedArray {
        /// Offset in the array text.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

fn invalid(type_name: &'static str, text: &[u8]) -> ValueError {
    let cut = text.get(..64).unwrap_or(text);
    ValueError::Invalid {
        type_name,
        text: String::from_utf8_lossy(cut).into_owned(),
    }
}

/// How one resolved type is converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conv {
    Int,
    Float,
    Bool,
    Json,
    Bytea,
    Date,
    Timestamp,
    TimestampTz,
    Time,
    TimeTz,
    Array(u32),
    String,
}

/// Longest domain chain followed before giving up (treating as string).
const MAX_DOMAIN_DEPTH: usize = 32;
/// Deepest array nesting accepted (PostgreSQL allows 6 dimensions).
const MAX_ARRAY_NESTING: usize = 16;
/// How many times an array element may itself be an array type (arrays of
/// domains over arrays) before elements are kept as strings.
const MAX_ARRAY_TYPE_DEPTH: usize = 4;

fn resolve(oid: u32, types: &TypeRegistry) -> Conv {
    let mut cur = oid;
    for _ in 0..MAX_DOMAIN_DEPTH {
        let Some(info) = types.get(cur) else {
            return Conv::String;
        };
        match info.kind {
            TypeKind::Builtin => return builtin_conv(cur),
            TypeKind::Array { elem } => return Conv::Array(elem),
            TypeKind::Domain { base } => cur = base,
            TypeKind::Enum | TypeKind::Composite | TypeKind::Range | TypeKind::Other => {
                return Conv::String
            }
        }
    }
    Conv::String
}

fn builtin_conv(oid: u32) -> Conv {
    match oid {
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID => Conv::Int,
        oid::FLOAT4 | oid::FLOAT8 => Conv::Float,
        oid::BOOL => Conv::Bool,
        oid::JSON | oid::JSONB => Conv::Json,
        oid::BYTEA => Conv::Bytea,
        oid::DATE => Conv::Date,
        oid::TIMESTAMP => Conv::Timestamp,
        oid::TIMESTAMPTZ => Conv::TimestampTz,
        oid::TIME => Conv::Time,
        oid::TIMETZ => Conv::TimeTz,
        _ => Conv::String,
    }
}

/// Appends the JSON form of one non-null text-format value of type `oid`.
///
/// Rules (Spillway's value contract):
/// - `int2`, `int4`, `int8`, `oid` → JSON number.
/// - `float4`, `float8` → JSON number; `NaN`, `Infinity`, `-Infinity` →
///   JSON strings.
/// - `numeric`, `money` → JSON string of the exact text.
/// - `bool` → `true` / `false`.
/// - `json`, `jsonb` → embedded JSON (trimmed); text that is not valid JSON
///   becomes a JSON string instead.
/// - `bytea` (hex output) → JSON string of standard, padded base64.
/// - `date` → `"YYYY-MM-DD"`, BC dates in astronomical numbering
///   (`0044-03-15 BC` → `"-0043-03-15"`); `infinity`/`-infinity` kept.
/// - `timestamp` → `"YYYY-MM-DDTHH:MM:SS.ffffff"` (six fractional digits).
/// - `timestamptz` → same, converted to UTC, with a `Z` suffix.
/// - `time` → `"HH:MM:SS.ffffff"`; `timetz` → `"HH:MM:SS.ffffff±HH:MM"`
///   (`:SS` appended to the offset only when non-zero).
/// - arrays → nested JSON arrays, elements converted by the element type;
///   unquoted `NULL` is null, a quoted `"NULL"` is the string.
/// - domains → as their base type; enums, composites, ranges, unknown OIDs
///   and all other types → JSON string of the text.
///
/// Strings are escaped per JSON (control characters as `\u00XX`); invalid
/// UTF-8 is replaced with U+FFFD.
///
/// # Errors
/// Returns [`ValueError`] if the text does not match the session output
/// format of a type that needs parsing (integers, floats, bool, bytea,
/// date/time types, arrays). On error `out` is left as it was.
pub fn write_json_value(
    out: &mut Vec<u8>,
    oid: u32,
    text: &[u8],
    types: &TypeRegistry,
) -> Result<(), ValueError> {
    let start = out.len();
    let result = write_value(out, oid, text, types, 0);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn write_value(
    out: &mut Vec<u8>,
    oid: u32,
    text: &[u8],
    types: &TypeRegistry,
    array_depth: usize,
) -> Result<(), ValueError> {
    match resolve(oid, types) {
        Conv::Int => {
            if is_json_integer(text) {
                out.extend_from_slice(text);
                Ok(())
            } else {
                Err(invalid("integer", text))
            }
        }
        Conv::Float => match text {
            b"NaN" | b"Infinity" | b"-Infinity" => {
                out.push(b'"');
                out.extend_from_slice(text);
                out.push(b'"');
                Ok(())
            }
            _ if is_json_number(text) && float_in_range(text) => {
                out.extend_from_slice(text);
                Ok(())
            }
            _ => Err(invalid("float", text)),
        },
        Conv::Bool => match text {
            b"t" => {
                out.extend_from_slice(b"true");
                Ok(())
            }
            b"f" => {
                out.extend_from_slice(b"false");
                Ok(())
            }
            _ => Err(invalid("bool", text)),
        },
        Conv::Json => {
            let trimmed = text.trim_ascii();
            if serde_json::from_slice::<&serde_json::value::RawValue>(trimmed).is_ok() {
                out.extend_from_slice(trimmed);
            } else {
                write_json_string_lossy(out, text);
            }
            Ok(())
        }
        Conv::Bytea => write_bytea(out, text),
        Conv::Date => write_date(out, text),
        Conv::Timestamp => write_timestamp(out, text, false),
        Conv::TimestampTz => write_timestamp(out, text, true),
        Conv::Time => write_time(out, text, false),
        Conv::TimeTz => write_time(out, text, true),
        Conv::Array(elem) if array_depth < MAX_ARRAY_TYPE_DEPTH => ArrayParser {
            text,
            pos: 0,
            elem,
            types,
            array_depth,
        }
        .write(out),
        Conv::Array(_) | Conv::String => {
            write_json_string_lossy(out, text);
            Ok(())
        }
    }
}

/// `-?(0|[1-9][0-9]*)`
fn is_json_integer(s: &[u8]) -> bool {
    let digits = s.strip_prefix(b"-").unwrap_or(s);
    match digits {
        [] => false,
        [b'0'] => true,
        [b'0', ..] => false,
        _ => digits.iter().all(u8::is_ascii_digit),
    }
}

/// JSON number grammar: `-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?`
fn is_json_number(s: &[u8]) -> bool {
    fn digits(s: &[u8], mut i: usize) -> usize {
        while s.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    }
    let mut i = usize::from(s.first() == Some(&b'-'));
    match s.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(s, i + 1),
        _ => return false,
    }
    if s.get(i) == Some(&b'.') {
        let j = digits(s, i + 1);
        if j == i + 1 {
            return false;
        }
        i = j;
    }
    if matches!(s.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(s.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let j = digits(s, i);
        if j == i {
            return false;
        }
        i = j;
    }
    i == s.len()
}

/// Whether a JSON-number-shaped float text is within `f64` range (PostgreSQL
/// never prints anything else, but consumers reject overflowing literals).
fn float_in_range(text: &[u8]) -> bool {
    // Without an exponent, anything shorter than f64::MAX's 309 digits fits;
    // only exponent forms and very long texts need the (slower) real parse.
    if text.len() < 300 && !text.iter().any(|&b| b == b'e' || b == b'E') {
        return true;
    }
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .is_some_and(f64::is_finite)
}

/// Appends `s` as a JSON string literal. `"` and `\` are backslash-escaped,
/// control characters (U+0000–U+001F) become `\u00XX`; everything else is
/// copied verbatim.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0'));
                out.push(HEX.get(usize::from(b & 0xF)).copied().unwrap_or(b'0'));
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
    out.push(b'"');
}

/// Appends `bytes` as a JSON string, replacing invalid UTF-8 sequences with
/// U+FFFD.
pub fn write_json_string_lossy(out: &mut Vec<u8>, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => write_json_string(out, s),
        Err(_) => write_json_string(out, &String::from_utf8_lossy(bytes)),
    }
}

/// Appends `bytes` as a JSON string of their standard padded base64.
pub fn write_base64_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    let start = out.len();
    let len = base64::encoded_len(bytes.len(), true).unwrap_or(0);
    out.resize(start + len, 0);
    let written = out.get_mut(start..).map_or(0, |dst| {
        base64::engine::general_purpose::STANDARD
            .encode_slice(bytes, dst)
            .unwrap_or(0)
    });
    out.truncate(start + written);
    out.push(b'"');
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn write_bytea(out: &mut Vec<u8>, text: &[u8]) -> Result<(), ValueError> {
    let hex = text
        .strip_prefix(b"\\x")
        .ok_or_else(|| invalid("bytea", text))?;
    if hex.len() % 2 != 0 {
        return Err(invalid("bytea", text));
    }
    let mut bytes = Vec::with_capacity(hex.len() / 2);
    for pair in hex.chunks_exact(2) {
        let (Some(&h), Some(&l)) = (pair.first(), pair.get(1)) else {
            return Err(invalid("bytea", text));
        };
        match (hex_val(h), hex_val(l)) {
            (Some(h), Some(l)) => bytes.push((h << 4) | l),
            _ => return Err(invalid("bytea", text)),
        }
    }
    write_base64_string(out, &bytes);
    Ok(())
}

// ---------------------------------------------------------------------------
// Dates and times
// ---------------------------------------------------------------------------

// The calendar and the text forms are `spillway_core::time`'s; here they are only
// quoted into JSON.

/// `infinity` / `-infinity` are passed through as strings.
fn write_infinity(out: &mut Vec<u8>, text: &[u8]) -> bool {
    match text {
        b"infinity" | b"-infinity" => {
            out.push(b'"');
            out.extend_from_slice(text);
            out.push(b'"');
            true
        }
        _ => false,
    }
}

fn write_date(out: &mut Vec<u8>, text: &[u8]) -> Result<(), ValueError> {
    if write_infinity(out, text) {
        return Ok(());
    }
    let date = time::parse_pg_date(text).ok_or_else(|| invalid("date", text))?;
    out.push(b'"');
    time::write_native_date(out, date);
    out.push(b'"');
    Ok(())
}

fn write_timestamp(out: &mut Vec<u8>, text: &[u8], with_tz: bool) -> Result<(), ValueError> {
    if write_infinity(out, text) {
        return Ok(());
    }
    let (date, tod) = time::parse_pg_timestamp(text, with_tz)
        .ok_or_else(|| invalid(if with_tz { "timestamptz" } else { "timestamp" }, text))?;
    out.push(b'"');
    time::write_native_date(out, date);
    out.push(b'T');
    time::write_native_time(out, tod);
    if with_tz {
        out.push(b'Z');
    }
    out.push(b'"');
    Ok(())
}

fn write_time(out: &mut Vec<u8>, text: &[u8], with_tz: bool) -> Result<(), ValueError> {
    let (tod, offset) = time::parse_pg_time(text, with_tz)
        .ok_or_else(|| invalid(if with_tz { "timetz" } else { "time" }, text))?;
    out.push(b'"');
    time::write_native_time(out, tod);
    if let Some(offset) = offset {
        time::write_native_offset(out, offset);
    }
    out.push(b'"');
    Ok(())
}

// ---------------------------------------------------------------------------
// Arrays
// ---------------------------------------------------------------------------

struct ArrayParser<'a> {
    text: &'a [u8],
    pos: usize,
    elem: u32,
    types: &'a TypeRegistry,
    array_depth: usize,
}

/// Whitespace as recognised by PostgreSQL's `array_in` (`scanner_isspace`).
fn is_array_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
}

impl ArrayParser<'_> {
    fn err(&self, reason: &'static str) -> ValueError {
        ValueError::MalformedArray {
            offset: self.pos,
            reason,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(is_array_space) {
            self.pos += 1;
        }
    }

    fn write(mut self, out: &mut Vec<u8>) -> Result<(), ValueError> {
        self.skip_space();
        if self.peek() == Some(b'[') {
            self.skip_dimensions()?;
        }
        self.skip_space();
        if self.peek() != Some(b'{') {
            return Err(self.err("expected '{'"));
        }
        self.pos += 1;
        let mut scratch = Vec::new();
        self.level(out, 1, &mut scratch)?;
        self.skip_space();
        if self.pos != self.text.len() {
            return Err(self.err("junk after closing '}'"));
        }
        Ok(())
    }

    /// Skips `[lo:hi][lo:hi]...=`.
    fn skip_dimensions(&mut self) -> Result<(), ValueError> {
        while self.peek() == Some(b'[') {
            self.pos += 1;
            loop {
                match self.peek() {
                    Some(b']') => {
                        self.pos += 1;
                        break;
                    }
                    Some(b'0'..=b'9' | b'-' | b'+' | b':') => self.pos += 1,
                    Some(b) if is_array_space(b) => self.pos += 1,
                    _ => return Err(self.err("malformed dimension decoration")),
                }
            }
            self.skip_space();
        }
        if self.peek() != Some(b'=') {
            return Err(self.err("expected '=' after dimensions"));
        }
        self.pos += 1;
        Ok(())
    }

    /// Parses the contents of one `{...}` level (the `{` already consumed).
    fn level(
        &mut self,
        out: &mut Vec<u8>,
        nesting: usize,
        scratch: &mut Vec<u8>,
    ) -> Result<(), ValueError> {
        if nesting > MAX_ARRAY_NESTING {
            return Err(self.err("array nested too deeply"));
        }
        out.push(b'[');
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            out.push(b']');
            return Ok(());
        }
        // None = undecided, Some(true) = sub-arrays, Some(false) = scalars.
        let mut has_subarrays: Option<bool> = None;
        let mut first = true;
        loop {
            self.skip_space();
            if !first {
                out.push(b',');
            }
            first = false;
            let is_sub = self.peek() == Some(b'{');
            if *has_subarrays.get_or_insert(is_sub) != is_sub {
                return Err(self.err("mixed sub-arrays and scalars"));
            }
            if is_sub {
                self.pos += 1;
                self.level(out, nesting + 1, scratch)?;
            } else {
                self.element(out, scratch)?;
            }
            self.skip_space();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    out.push(b']');
                    return Ok(());
                }
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
    }

    /// Parses one scalar element and writes its JSON form.
    fn element(&mut self, out: &mut Vec<u8>, scratch: &mut Vec<u8>) -> Result<(), ValueError> {
        scratch.clear();
        if self.peek() == Some(b'"') {
            self.pos += 1;
            loop {
                match self.peek() {
                    None => return Err(self.err("unterminated quoted element")),
                    Some(b'"') => {
                        self.pos += 1;
                        break;
                    }
                    Some(b'\\') => {
                        self.pos += 1;
                        let Some(b) = self.peek() else {
                            return Err(self.err("unterminated quoted element"));
                        };
                        scratch.push(b);
                        self.pos += 1;
                    }
                    Some(b) => {
                        scratch.push(b);
                        self.pos += 1;
                    }
                }
            }
        } else {
            let start = self.pos;
            let mut escaped = false;
            // Length of `scratch` up to the last escaped or non-space byte:
            // trailing unescaped whitespace is not part of the element.
            let mut keep = 0;
            loop {
                match self.peek() {
                    None => return Err(self.err("unexpected end of array")),
                    Some(b',' | b'}') => break,
                    Some(b'{' | b'"') => return Err(self.err("unexpected character in element")),
                    Some(b'\\') => {
                        self.pos += 1;
                        let Some(b) = self.peek() else {
                            return Err(self.err("unexpected end of array"));
                        };
                        escaped = true;
                        scratch.push(b);
                        keep = scratch.len();
                        self.pos += 1;
                    }
                    Some(b) => {
                        scratch.push(b);
                        if !is_array_space(b) {
                            keep = scratch.len();
                        }
                        self.pos += 1;
                    }
                }
            }
            scratch.truncate(keep);
            if scratch.is_empty() {
                return Err(ValueError::MalformedArray {
                    offset: start,
                    reason: "empty element",
                });
            }
            if !escaped && scratch.eq_ignore_ascii_case(b"NULL") {
                out.extend_from_slice(b"null");
                return Ok(());
            }
        }
        // Elements are converted with a fresh scratch buffer only if they are
        // arrays themselves (rare), so the common path allocates nothing.
        let text = std::mem::take(scratch);
        let result = write_value(out, self.elem, &text, self.types, self.array_depth + 1);
        *scratch = text;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_number_grammar() {
        for ok in ["0", "-0", "1.5", "1e+100", "1E5", "-1.25e-05", "123"] {
            assert!(is_json_number(ok.as_bytes()), "{ok}");
        }
        for bad in ["", "-", "01", "1.", ".5", "1e", "+1", "1e+", "NaN", "1 "] {
            assert!(!is_json_number(bad.as_bytes()), "{bad}");
        }
    }
}

//! PostgreSQL column types → Kafka Connect schemas, as Debezium 3.x's PostgreSQL connector
//! maps them with its defaults (`decimal.handling.mode=string`,
//! `time.precision.mode=adaptive`, `interval.handling.mode=numeric`,
//! `binary.handling.mode=bytes`), and the schema JSON the Kafka Connect `JsonConverter`
//! writes for them.

use std::fmt::Write as _;

use super::super::json::{write_key, write_str};
use crate::time::{self, Date, TimeOfDay};

/// How one column is represented in Debezium's value and schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DbzType {
    /// `int2` → `int16`.
    Int16,
    /// `int4` → `int32`.
    Int32,
    /// `int8`, `oid` → `int64`.
    Int64,
    /// `float4` → `float`.
    Float32,
    /// `float8` → `double`.
    Float64,
    /// `bool` → `boolean`.
    Bool,
    /// Character types and everything Debezium sends as its text: `text`, `varchar`,
    /// `bpchar`, `char`, `name`, `citext`, `inet`, `cidr`, `macaddr`, ranges, …
    Text,
    /// `bytea` → `bytes` (base64 in JSON).
    Bytes,
    /// `numeric` → `string` (`decimal.handling.mode=string`).
    Numeric,
    /// `money` → `string` (plain decimal, no currency symbol).
    Money,
    /// `json`, `jsonb` → `io.debezium.data.Json` string.
    Json,
    /// `uuid` → `io.debezium.data.Uuid` string.
    Uuid,
    /// `xml` → `io.debezium.data.Xml` string.
    Xml,
    /// `date` → `io.debezium.time.Date`, days since the epoch.
    Date,
    /// `time(4..6)`, `time` → `io.debezium.time.MicroTime`, µs since midnight.
    MicroTime,
    /// `time(0..3)` → `io.debezium.time.Time`, ms since midnight.
    MilliTime,
    /// `timestamp(4..6)`, `timestamp` → `io.debezium.time.MicroTimestamp`, epoch µs.
    MicroTimestamp,
    /// `timestamp(0..3)` → `io.debezium.time.Timestamp`, epoch ms.
    MilliTimestamp,
    /// `timestamptz` → `io.debezium.time.ZonedTimestamp`, ISO-8601 UTC text with
    /// `width` fractional digits (`None`: as few as needed, for `timestamptz(0)`).
    ZonedTimestamp {
        /// Fractional digits.
        width: Option<usize>,
    },
    /// `timetz` → `io.debezium.time.ZonedTime`, ISO-8601 UTC time text.
    ZonedTime,
    /// `interval` → `io.debezium.time.MicroDuration`, µs (a month is 30.4375 days).
    MicroDuration,
    /// `_elem` → `array` of the element's schema (elements optional).
    Array(Box<DbzType>),
    /// Types whose definition the native stream does not carry (enums, domains,
    /// composites, extension types): their text as a plain `string`.
    Other,
}

impl DbzType {
    /// The representation of a column of PostgreSQL type `type_name` (`pg_type.typname`,
    /// arrays as `_elem`) with type modifier `typmod` (-1 or `None`: none).
    pub(crate) fn from_pg(type_name: &str, typmod: Option<i32>) -> DbzType {
        // `time(p)`, `timestamp(p)`, `timestamptz(p)`: atttypmod is p; -1 means default (6).
        let precision = typmod.filter(|m| *m >= 0).unwrap_or(6);
        match type_name {
            "int2" | "smallserial" => DbzType::Int16,
            "int4" | "serial" => DbzType::Int32,
            "int8" | "bigserial" | "oid" => DbzType::Int64,
            "float4" => DbzType::Float32,
            "float8" => DbzType::Float64,
            "bool" => DbzType::Bool,
            "text" | "varchar" | "bpchar" | "char" | "name" | "citext" | "inet" | "cidr"
            | "macaddr" | "macaddr8" | "int4range" | "int8range" | "numrange" | "tsrange"
            | "tstzrange" | "daterange" => DbzType::Text,
            "bytea" => DbzType::Bytes,
            "numeric" => DbzType::Numeric,
            "money" => DbzType::Money,
            "json" | "jsonb" => DbzType::Json,
            "uuid" => DbzType::Uuid,
            "xml" => DbzType::Xml,
            "date" => DbzType::Date,
            "time" if precision <= 3 => DbzType::MilliTime,
            "time" => DbzType::MicroTime,
            "timestamp" if precision <= 3 => DbzType::MilliTimestamp,
            "timestamp" => DbzType::MicroTimestamp,
            "timestamptz" => DbzType::ZonedTimestamp {
                width: (precision > 0).then(|| usize::try_from(precision.min(6)).unwrap_or(6)),
            },
            "timetz" => DbzType::ZonedTime,
            "interval" => DbzType::MicroDuration,
            _ => match type_name.strip_prefix('_') {
                Some(elem) if !elem.is_empty() => {
                    DbzType::Array(Box::new(DbzType::from_pg(elem, typmod)))
                }
                _ => DbzType::Other,
            },
        }
    }

    /// Kafka Connect schema type.
    fn connect_type(&self) -> &'static str {
        match self {
            DbzType::Int16 => "int16",
            DbzType::Int32 | DbzType::Date | DbzType::MilliTime => "int32",
            DbzType::Int64
            | DbzType::MicroTime
            | DbzType::MicroTimestamp
            | DbzType::MilliTimestamp
            | DbzType::MicroDuration => "int64",
            DbzType::Float32 => "float",
            DbzType::Float64 => "double",
            DbzType::Bool => "boolean",
            DbzType::Bytes => "bytes",
            DbzType::Array(_) => "array",
            DbzType::Text
            | DbzType::Numeric
            | DbzType::Money
            | DbzType::Json
            | DbzType::Uuid
            | DbzType::Xml
            | DbzType::ZonedTimestamp { .. }
            | DbzType::ZonedTime
            | DbzType::Other => "string",
        }
    }

    /// Debezium semantic type name (all of them at version 1).
    fn semantic_name(&self) -> Option<&'static str> {
        Some(match self {
            DbzType::Json => "io.debezium.data.Json",
            DbzType::Uuid => "io.debezium.data.Uuid",
            DbzType::Xml => "io.debezium.data.Xml",
            DbzType::Date => "io.debezium.time.Date",
            DbzType::MicroTime => "io.debezium.time.MicroTime",
            DbzType::MilliTime => "io.debezium.time.Time",
            DbzType::MicroTimestamp => "io.debezium.time.MicroTimestamp",
            DbzType::MilliTimestamp => "io.debezium.time.Timestamp",
            DbzType::ZonedTimestamp { .. } => "io.debezium.time.ZonedTimestamp",
            DbzType::ZonedTime => "io.debezium.time.ZonedTime",
            DbzType::MicroDuration => "io.debezium.time.MicroDuration",
            _ => return None,
        })
    }

    /// Appends the `JsonConverter` schema object:
    /// `{"type", ["items"], "optional", ["name", "version"], ["default"], ["field"]}`.
    pub(crate) fn write_schema(
        &self,
        out: &mut String,
        optional: bool,
        default: Option<&str>,
        field: Option<&str>,
    ) {
        out.push('{');
        write_key(out, "type");
        write_str(out, self.connect_type());
        if let DbzType::Array(elem) = self {
            out.push(',');
            write_key(out, "items");
            elem.write_schema(out, true, None, None);
        }
        let _ = write!(out, ",\"optional\":{optional}");
        if let Some(name) = self.semantic_name() {
            out.push(',');
            write_key(out, "name");
            write_str(out, name);
            out.push_str(",\"version\":1");
        }
        if let Some(default) = default {
            out.push(',');
            write_key(out, "default");
            out.push_str(default);
        }
        if let Some(field) = field {
            out.push(',');
            write_key(out, "field");
            write_str(out, field);
        }
        out.push('}');
    }
}

/// The schema `default` (as JSON text) Debezium derives from a column default expression
/// (`pg_get_expr` text), following its `PostgresDefaultValueConverter`: `NULL::…` is no
/// default; a function call (`nextval(…)`, `now()`) or `CURRENT_TIMESTAMP`-like keyword
/// gives the type's placeholder (0, `""`, `false`, the epoch, …); a literal (`5`,
/// `'abc'::text`) is converted like a value. Types Debezium has no default mapper for,
/// and literals it cannot parse, give no default.
pub(crate) fn default_json(type_name: &str, ty: &DbzType, expr: &str) -> Option<String> {
    let expr = expr.trim();
    if expr.starts_with("NULL::") {
        return None;
    }
    let placeholder = match type_name {
        "int2" | "int4" | "int8" | "serial" | "bigserial" | "smallserial" => "0",
        "float4" | "float8" | "numeric" => "0.0",
        "bool" => "false",
        "bpchar" | "varchar" | "text" | "xml" => "",
        "json" | "jsonb" => "{}",
        "uuid" => "00000000-0000-0000-0000-000000000000",
        "date" | "timestamp" | "timestamptz" => "1970-01-01",
        "time" => "00:00",
        _ => return None,
    };
    let generated = is_function_call(expr)
        || matches!(
            expr.to_ascii_lowercase().as_str(),
            "current_timestamp" | "current_time" | "current_date" | "localtime" | "localtimestamp"
        );
    let literal = if generated {
        placeholder
    } else if let Some(start) = expr.find('\'') {
        let rest = expr.get(start + 1..)?;
        rest.get(..rest.find('\'')?)?
    } else {
        expr
    };
    let mut out = String::new();
    match ty {
        DbzType::Int16 => {
            let _ = write!(out, "{}", literal.trim().parse::<i16>().ok()?);
        }
        DbzType::Int32 => {
            let _ = write!(out, "{}", literal.trim().parse::<i32>().ok()?);
        }
        DbzType::Int64 => {
            let _ = write!(out, "{}", literal.trim().parse::<i64>().ok()?);
        }
        DbzType::Float32 | DbzType::Float64 => {
            let v = literal
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())?;
            // Jackson prints whole doubles with a `.0`.
            let s = format!("{v:?}");
            out.push_str(&s);
        }
        DbzType::Numeric => {
            let s = literal.trim();
            let digits = s.strip_prefix('-').unwrap_or(s);
            let valid = !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
                && digits.bytes().filter(|&b| b == b'.').count() <= 1;
            if !valid {
                return None;
            }
            write_str(&mut out, s);
        }
        DbzType::Bool => {
            out.push_str(if literal.trim().eq_ignore_ascii_case("true") {
                "true"
            } else {
                "false"
            });
        }
        DbzType::Text | DbzType::Json | DbzType::Xml | DbzType::Uuid => {
            write_str(&mut out, literal)
        }
        DbzType::Date => {
            let d = time::parse_date(literal.trim())?;
            let _ = write!(out, "{}", time::days_from_civil(d));
        }
        DbzType::MicroTime | DbzType::MilliTime => {
            let t = parse_time_literal(literal.trim())?;
            let v = if *ty == DbzType::MilliTime {
                t.0 / 1000
            } else {
                t.0
            };
            let _ = write!(out, "{v}");
        }
        DbzType::MicroTimestamp | DbzType::MilliTimestamp => {
            let (d, t, off) = parse_timestamp_literal(literal.trim())?;
            let micros = time::epoch_micros(d, t)?.checked_sub(off * time::MICROS_PER_SECOND)?;
            let v = if *ty == DbzType::MilliTimestamp {
                micros.div_euclid(1000)
            } else {
                micros
            };
            let _ = write!(out, "{v}");
        }
        DbzType::ZonedTimestamp { width } => {
            let (d, t, off) = parse_timestamp_literal(literal.trim())?;
            let micros = time::epoch_micros(d, t)?.checked_sub(off * time::MICROS_PER_SECOND)?;
            let mut s = String::new();
            time::write_iso_date(
                &mut s,
                time::civil_from_days(micros.div_euclid(time::MICROS_PER_DAY)),
            );
            s.push('T');
            time::write_time(
                &mut s,
                TimeOfDay(micros.rem_euclid(time::MICROS_PER_DAY)),
                *width,
            );
            s.push('Z');
            write_str(&mut out, &s);
        }
        _ => return None,
    }
    Some(out)
}

/// `^[(]?[A-Za-z0-9_.]+\(.*\)`: Debezium's test for a generated (function) default.
fn is_function_call(expr: &str) -> bool {
    let s = expr.strip_prefix('(').unwrap_or(expr);
    let name_len = s
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.')
        .count();
    name_len > 0
        && s.get(name_len..)
            .is_some_and(|rest| rest.starts_with('(') && rest.contains(')'))
}

/// `HH:MM[:SS[.f]]` as PostgreSQL prints time literals.
fn parse_time_literal(s: &str) -> Option<TimeOfDay> {
    match s.len() {
        5 => time::parse_time(&format!("{s}:00")),
        _ => time::parse_time(s),
    }
}

/// `YYYY-MM-DD[ HH:MM:SS[.f]][±HH[:MM]]` → (date, time, offset seconds east of UTC).
fn parse_timestamp_literal(s: &str) -> Option<(Date, TimeOfDay, i64)> {
    let (date_text, rest) = s.split_once(' ').unwrap_or((s, "00:00:00"));
    let date = time::parse_date(date_text)?;
    let split = rest.find(['+', '-']).unwrap_or(rest.len());
    let (time_text, offset_text) = rest.split_at(split);
    let tod = time::parse_time(time_text)?;
    let offset = if offset_text.is_empty() {
        0
    } else {
        let (_, off) = time::parse_timetz(&format!("00:00:00{offset_text}"))?;
        off
    };
    Some((date, tod, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(ty: &DbzType, optional: bool, default: Option<&str>) -> serde_json::Value {
        let mut out = String::new();
        ty.write_schema(&mut out, optional, default, Some("c"));
        serde_json::from_str(&out).unwrap()
    }

    #[test]
    fn type_mapping_follows_debezium_defaults() {
        use DbzType::*;
        assert_eq!(DbzType::from_pg("int2", None), Int16);
        assert_eq!(DbzType::from_pg("int8", Some(-1)), Int64);
        assert_eq!(DbzType::from_pg("timestamp", None), MicroTimestamp);
        assert_eq!(DbzType::from_pg("timestamp", Some(3)), MilliTimestamp);
        assert_eq!(DbzType::from_pg("time", Some(0)), MilliTime);
        assert_eq!(
            DbzType::from_pg("timestamptz", None),
            ZonedTimestamp { width: Some(6) }
        );
        assert_eq!(
            DbzType::from_pg("timestamptz", Some(0)),
            ZonedTimestamp { width: None }
        );
        assert_eq!(DbzType::from_pg("_int4", None), Array(Box::new(Int32)));
        assert_eq!(DbzType::from_pg("mood", None), Other);
        assert_eq!(DbzType::from_pg("_mood", None), Array(Box::new(Other)));
    }

    #[test]
    fn schema_json_has_debezium_field_order() {
        let mut out = String::new();
        DbzType::ZonedTimestamp { width: Some(6) }.write_schema(&mut out, true, None, Some("ts"));
        assert_eq!(
            out,
            r#"{"type":"string","optional":true,"name":"io.debezium.time.ZonedTimestamp","version":1,"field":"ts"}"#
        );
        out.clear();
        DbzType::Int64.write_schema(&mut out, false, Some("0"), Some("id"));
        assert_eq!(
            out,
            r#"{"type":"int64","optional":false,"default":0,"field":"id"}"#
        );
        assert_eq!(
            schema(&DbzType::Array(Box::new(DbzType::Date)), true, None),
            serde_json::json!({"type":"array","items":{"type":"int32","optional":true,"name":"io.debezium.time.Date","version":1},"optional":true,"field":"c"})
        );
        assert_eq!(schema(&DbzType::Float32, true, None)["type"], "float");
    }

    #[test]
    fn defaults_follow_debezium() {
        let d = |t: &str, tm: Option<i32>, e: &str| default_json(t, &DbzType::from_pg(t, tm), e);
        assert_eq!(
            d(
                "int8",
                None,
                "nextval('bench.holding_holding_id_seq'::regclass)"
            )
            .as_deref(),
            Some("0")
        );
        assert_eq!(d("int4", None, "42").as_deref(), Some("42"));
        assert_eq!(d("int4", None, "NULL::integer"), None);
        assert_eq!(d("int2", None, "'7'::smallint").as_deref(), Some("7"));
        assert_eq!(d("text", None, "'abc'::text").as_deref(), Some("\"abc\""));
        assert_eq!(d("varchar", None, "gen_code()").as_deref(), Some("\"\""));
        assert_eq!(d("bool", None, "true").as_deref(), Some("true"));
        assert_eq!(d("float8", None, "1").as_deref(), Some("1.0"));
        assert_eq!(d("numeric", None, "12.50").as_deref(), Some("\"12.50\""));
        assert_eq!(d("date", None, "CURRENT_DATE").as_deref(), Some("0"));
        assert_eq!(
            d("date", None, "'2016-11-04'::date").as_deref(),
            Some("17109")
        );
        assert_eq!(d("timestamp", None, "now()").as_deref(), Some("0"));
        assert_eq!(
            d("timestamptz", None, "now()").as_deref(),
            Some("\"1970-01-01T00:00:00.000000Z\"")
        );
        assert_eq!(
            d(
                "timestamptz",
                None,
                "'2020-01-01 02:00:00+02'::timestamp with time zone"
            )
            .as_deref(),
            Some("\"2020-01-01T00:00:00.000000Z\"")
        );
        assert_eq!(
            d("time", None, "'13:51:30'::time without time zone").as_deref(),
            Some("49890000000")
        );
        assert_eq!(d("int4", None, "(1 + 2)"), None);
        assert_eq!(d("mood", None, "'happy'::mood"), None);
        assert_eq!(d("interval", None, "'1 day'::interval"), None);
    }
}

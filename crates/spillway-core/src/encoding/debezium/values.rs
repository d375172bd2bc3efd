//! Native JSON values → Debezium's JSON values, per [`DbzType`].
//!
//! Special values follow Debezium 3.x exactly (its `PostgresValueConverter`):
//!
//! | value | Debezium |
//! |---|---|
//! | timestamp `infinity` / `-infinity` | `9223372036825200000` / `-9223372036832400000` µs (pgjdbc's `DATE_POSITIVE/NEGATIVE_INFINITY`); ms: `9223372036825200` / `-9223372036832400` |
//! | timestamptz `infinity` / `-infinity` | the strings `"infinity"` / `"-infinity"` |
//! | date `infinity` / `-infinity` | `-2147472692` / `-2147472691`: Debezium maps them to the dates `-5877611-06-21` / `-5877611-06-22` and sends their epoch days (yes, +infinity sorts before -infinity; that is what Debezium consumers receive) |
//! | numeric `NaN` / `Infinity` / `-Infinity` | `"NAN"` / `"POSITIVE_INFINITY"` / `"NEGATIVE_INFINITY"` |
//! | float `NaN` / `Infinity` / `-Infinity` | `"NaN"` / `"Infinity"` / `"-Infinity"` (Jackson quotes non-finite doubles) |
//! | unchanged TOAST value | `"__debezium_unavailable_value"` (bytes: its base64; text arrays: `[that]`; int arrays: its bytes as numbers) |

use std::fmt::Write as _;

use serde_json::value::RawValue;

use super::super::json::{is_null, raw_str, write_base64, write_compact, write_str};
use super::types::DbzType;
use crate::time::{self, TimeOfDay};

/// Debezium's default `unavailable.value.placeholder`.
pub(crate) const UNAVAILABLE: &str = "__debezium_unavailable_value";

/// `PGStatement.DATE_POSITIVE_INFINITY` (µs for timestamps).
const TIMESTAMP_POS_INFINITY_MICROS: i64 = 9_223_372_036_825_200_000;
/// `PGStatement.DATE_NEGATIVE_INFINITY`.
const TIMESTAMP_NEG_INFINITY_MICROS: i64 = -9_223_372_036_832_400_000;
/// Epoch day of `LocalDate.parse("-5877611-06-21")`, Debezium's date `infinity`.
const DATE_POS_INFINITY_DAYS: i64 = -2_147_472_692;
/// Epoch day of `LocalDate.parse("-5877611-06-22")`, Debezium's date `-infinity`.
const DATE_NEG_INFINITY_DAYS: i64 = -2_147_472_691;

fn expect_str<'a>(raw: &'a RawValue, what: &str) -> Result<std::borrow::Cow<'a, str>, String> {
    raw_str(raw).ok_or_else(|| format!("expected a {what} string, got {}", short(raw.get())))
}

fn short(text: &str) -> String {
    let mut s: String = text.chars().take(64).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

fn is_integer(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn is_number(text: &str) -> bool {
    text.starts_with(|c: char| c == '-' || c.is_ascii_digit())
}

/// Appends the Debezium JSON of one native value of type `ty`.
pub(crate) fn write_value(out: &mut String, ty: &DbzType, raw: &RawValue) -> Result<(), String> {
    let text = raw.get();
    if is_null(raw) {
        out.push_str("null");
        return Ok(());
    }
    match ty {
        DbzType::Int16 | DbzType::Int32 | DbzType::Int64 => {
            if !is_integer(text) {
                return Err(format!("expected an integer, got {}", short(text)));
            }
            out.push_str(text);
        }
        DbzType::Float32 | DbzType::Float64 => match raw_str(raw).as_deref() {
            Some("NaN" | "Infinity" | "-Infinity") => out.push_str(text),
            None if is_number(text) => out.push_str(text),
            _ => return Err(format!("expected a float, got {}", short(text))),
        },
        DbzType::Bool => {
            if text != "true" && text != "false" {
                return Err(format!("expected a boolean, got {}", short(text)));
            }
            out.push_str(text);
        }
        DbzType::Text | DbzType::Uuid | DbzType::Xml | DbzType::Other | DbzType::Bytes => {
            if text.starts_with('"') {
                out.push_str(text);
            } else {
                // Domains over numbers, composites etc.: the schema says string.
                let mut compact = String::with_capacity(text.len());
                write_compact(&mut compact, text);
                write_str(out, &compact);
            }
        }
        DbzType::Json => write_str(out, text),
        DbzType::Numeric => match raw_str(raw).as_deref() {
            Some("NaN") => out.push_str("\"NAN\""),
            Some("Infinity") => out.push_str("\"POSITIVE_INFINITY\""),
            Some("-Infinity") => out.push_str("\"NEGATIVE_INFINITY\""),
            Some(_) => out.push_str(text),
            None if is_number(text) => write_str(out, text),
            None => return Err(format!("expected a numeric, got {}", short(text))),
        },
        DbzType::Money => {
            let s = expect_str(raw, "money")?;
            write_str(out, &plain_money(&s));
        }
        DbzType::Date => {
            let s = expect_str(raw, "date")?;
            let days = match s.as_ref() {
                "infinity" => DATE_POS_INFINITY_DAYS,
                "-infinity" => DATE_NEG_INFINITY_DAYS,
                _ => {
                    let d = time::parse_date(&s)
                        .ok_or_else(|| format!("invalid date {}", short(text)))?;
                    time::days_from_civil(d)
                }
            };
            let days = i32::try_from(days)
                .map_err(|_| format!("date {} is out of Debezium's int32 range", short(text)))?;
            let _ = write!(out, "{days}");
        }
        DbzType::MicroTime | DbzType::MilliTime => {
            let s = expect_str(raw, "time")?;
            let t = time::parse_time(&s).ok_or_else(|| format!("invalid time {}", short(text)))?;
            let v = if *ty == DbzType::MilliTime {
                t.0 / 1000
            } else {
                t.0
            };
            let _ = write!(out, "{v}");
        }
        DbzType::MicroTimestamp | DbzType::MilliTimestamp => {
            let s = expect_str(raw, "timestamp")?;
            let micros = match s.as_ref() {
                "infinity" => TIMESTAMP_POS_INFINITY_MICROS,
                "-infinity" => TIMESTAMP_NEG_INFINITY_MICROS,
                _ => time::parse_timestamp(&s, false)
                    .and_then(|(d, t)| time::epoch_micros(d, t))
                    .ok_or_else(|| format!("invalid timestamp {}", short(text)))?,
            };
            let v = if *ty == DbzType::MilliTimestamp {
                micros.div_euclid(1000)
            } else {
                micros
            };
            let _ = write!(out, "{v}");
        }
        DbzType::ZonedTimestamp { width } => {
            let s = expect_str(raw, "timestamptz")?;
            if s == "infinity" || s == "-infinity" {
                out.push_str(text);
            } else {
                let (d, t) = time::parse_timestamp(&s, true)
                    .ok_or_else(|| format!("invalid timestamptz {}", short(text)))?;
                out.push('"');
                time::write_iso_date(out, d);
                out.push('T');
                time::write_time(out, t, *width);
                out.push_str("Z\"");
            }
        }
        DbzType::ZonedTime => {
            let s = expect_str(raw, "timetz")?;
            let (t, offset) =
                time::parse_timetz(&s).ok_or_else(|| format!("invalid timetz {}", short(text)))?;
            let utc = (t.0 - offset * time::MICROS_PER_SECOND).rem_euclid(time::MICROS_PER_DAY);
            out.push('"');
            time::write_time(out, TimeOfDay(utc), None);
            out.push_str("Z\"");
        }
        DbzType::MicroDuration => {
            let s = expect_str(raw, "interval")?;
            let micros =
                interval_micros(&s).ok_or_else(|| format!("invalid interval {}", short(text)))?;
            let _ = write!(out, "{micros}");
        }
        DbzType::Array(elem) => {
            let items: Vec<&RawValue> = serde_json::from_str(text)
                .map_err(|_| format!("expected an array, got {}", short(text)))?;
            out.push('[');
            for (i, item) in items.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if item.get().starts_with('[') {
                    // A multi-dimensional array: nested the same way.
                    write_value(out, ty, item)?;
                } else {
                    write_value(out, elem, item)?;
                }
            }
            out.push(']');
        }
    }
    Ok(())
}

/// What Debezium sends for a column whose unchanged TOAST value PostgreSQL did not send.
pub(crate) fn write_unavailable(out: &mut String, ty: &DbzType) {
    match ty {
        DbzType::Text
        | DbzType::Other
        | DbzType::Json
        | DbzType::Xml
        | DbzType::Numeric
        | DbzType::Money => write_str(out, UNAVAILABLE),
        DbzType::Bytes => {
            out.push('"');
            write_base64(out, UNAVAILABLE.as_bytes());
            out.push('"');
        }
        DbzType::Array(elem) => match elem.as_ref() {
            DbzType::Text | DbzType::Other | DbzType::Json | DbzType::Numeric => {
                out.push('[');
                write_str(out, UNAVAILABLE);
                out.push(']');
            }
            DbzType::Int16 | DbzType::Int32 | DbzType::Int64 => {
                out.push('[');
                for (i, b) in UNAVAILABLE.bytes().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{b}");
                }
                out.push(']');
            }
            DbzType::Bytes => {
                out.push_str("[\"");
                write_base64(out, UNAVAILABLE.as_bytes());
                out.push_str("\"]");
            }
            _ => out.push_str("null"),
        },
        _ => out.push_str("null"),
    }
}

/// `$1,234.56` → `1234.56`, `-$1,234.56` / `($1,234.56)` → `-1234.56`: the plain
/// decimal Debezium sends for `money` (currency symbol and grouping dropped).
fn plain_money(s: &str) -> String {
    let negative = s.contains('-') || (s.starts_with('(') && s.ends_with(')'));
    let mut out = String::with_capacity(s.len());
    if negative {
        out.push('-');
    }
    out.extend(s.chars().filter(|c| c.is_ascii_digit() || *c == '.'));
    out
}

/// Microseconds of a PostgreSQL interval in its default output style
/// (`1 year 2 mons -3 days +04:05:06.78`), computed like Debezium's
/// `MicroDuration.durationMicros` (a month is 365.25 / 12 days, in `double` arithmetic).
pub(crate) fn interval_micros(s: &str) -> Option<i64> {
    let (mut years, mut months, mut days, mut hours, mut minutes) = (0i64, 0i64, 0i64, 0i64, 0i64);
    let mut seconds = 0f64;
    let mut tokens = s.split_whitespace();
    while let Some(tok) = tokens.next() {
        if tok.contains(':') {
            let negative = tok.starts_with('-');
            let body = tok.trim_start_matches(['+', '-']);
            let mut parts = body.split(':');
            let h: i64 = parts.next()?.parse().ok()?;
            let m: i64 = parts.next()?.parse().ok()?;
            let sec_text = parts.next().unwrap_or("0");
            if parts.next().is_some() {
                return None;
            }
            let (whole, frac) = sec_text.split_once('.').unwrap_or((sec_text, ""));
            let whole: i64 = whole.parse().ok()?;
            let micros: i64 = if frac.is_empty() {
                0
            } else {
                if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                format!("{frac:0<6}").parse().ok()?
            };
            let secs = whole as f64 + micros as f64 / 1e6;
            if negative {
                hours -= h;
                minutes -= m;
                seconds -= secs;
            } else {
                hours += h;
                minutes += m;
                seconds += secs;
            }
        } else {
            let n: i64 = tok.parse().ok()?;
            let unit = tokens.next()?;
            match unit.trim_end_matches('s') {
                "year" => years += n,
                "mon" => months += n,
                "day" => days += n,
                "hour" => hours += n,
                "min" => minutes += n,
                "sec" => seconds += n as f64,
                _ => return None,
            }
        }
    }
    const DAYS_PER_MONTH_AVG: f64 = 365.25 / 12.0;
    let number_of_days = (years * 12 + months) as f64 * DAYS_PER_MONTH_AVG + days as f64;
    let number_of_seconds =
        ((number_of_days * 24.0 + hours as f64) * 60.0 + minutes as f64) * 60.0 + seconds;
    // Java's (long) cast: truncation toward zero, saturating; so is Rust's `as`.
    Some((number_of_seconds * 1e6) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(ty: &DbzType, json: &str) -> Result<String, String> {
        let raw: Box<RawValue> = serde_json::from_str(json).unwrap();
        let mut out = String::new();
        write_value(&mut out, ty, &raw).map(|()| out)
    }

    fn ok(ty: &DbzType, json: &str) -> String {
        conv(ty, json).unwrap()
    }

    #[test]
    fn scalars() {
        assert_eq!(ok(&DbzType::Int32, "42"), "42");
        assert!(conv(&DbzType::Int32, "\"42\"").is_err());
        assert_eq!(ok(&DbzType::Float64, "1.5e300"), "1.5e300");
        assert_eq!(ok(&DbzType::Float32, "\"NaN\""), "\"NaN\"");
        assert_eq!(ok(&DbzType::Bool, "true"), "true");
        assert_eq!(ok(&DbzType::Text, "\"a\\\"b\""), "\"a\\\"b\"");
        assert_eq!(ok(&DbzType::Other, "12"), "\"12\"");
        assert_eq!(ok(&DbzType::Int64, "null"), "null");
        assert_eq!(ok(&DbzType::Bytes, "\"AQID\""), "\"AQID\"");
    }

    #[test]
    fn numeric_is_a_string_with_debezium_specials() {
        assert_eq!(
            ok(&DbzType::Numeric, "\"12345678901234567890.000100\""),
            "\"12345678901234567890.000100\""
        );
        assert_eq!(ok(&DbzType::Numeric, "\"NaN\""), "\"NAN\"");
        assert_eq!(
            ok(&DbzType::Numeric, "\"Infinity\""),
            "\"POSITIVE_INFINITY\""
        );
        assert_eq!(
            ok(&DbzType::Numeric, "\"-Infinity\""),
            "\"NEGATIVE_INFINITY\""
        );
        assert_eq!(ok(&DbzType::Money, "\"-$1,234.11\""), "\"-1234.11\"");
        assert_eq!(ok(&DbzType::Money, "\"($1,234.11)\""), "\"-1234.11\"");
    }

    #[test]
    fn json_becomes_its_text() {
        assert_eq!(
            ok(&DbzType::Json, r#"{"a": [1, 2], "b": "x"}"#),
            r#""{\"a\": [1, 2], \"b\": \"x\"}""#
        );
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(ok(&DbzType::Date, "\"2016-11-04\""), "17109");
        assert_eq!(ok(&DbzType::Date, "\"1969-12-31\""), "-1");
        assert_eq!(ok(&DbzType::Date, "\"1900-01-01\""), "-25567");
        assert_eq!(ok(&DbzType::Date, "\"-0043-03-15\""), "-735160");
        assert_eq!(ok(&DbzType::Date, "\"infinity\""), "-2147472692");
        assert_eq!(ok(&DbzType::Date, "\"-infinity\""), "-2147472691");
        assert!(conv(&DbzType::Date, "\"2016-13-04\"").is_err());
        assert_eq!(
            ok(&DbzType::MicroTime, "\"13:51:30.000000\""),
            "49890000000"
        );
        assert_eq!(
            ok(&DbzType::MicroTime, "\"24:00:00.000000\""),
            "86400000000"
        );
        assert_eq!(ok(&DbzType::MilliTime, "\"13:51:30.123000\""), "49890123");
        assert_eq!(
            ok(&DbzType::MicroTimestamp, "\"2016-11-04T13:51:30.123456\""),
            "1478267490123456"
        );
        assert_eq!(
            ok(&DbzType::MicroTimestamp, "\"1936-10-25T22:10:12.608000\""),
            "-1047174587392000"
        );
        assert_eq!(
            ok(&DbzType::MilliTimestamp, "\"1969-12-31T23:59:59.999500\""),
            "-1"
        );
        assert_eq!(
            ok(&DbzType::MicroTimestamp, "\"infinity\""),
            "9223372036825200000"
        );
        assert_eq!(
            ok(&DbzType::MicroTimestamp, "\"-infinity\""),
            "-9223372036832400000"
        );
        assert_eq!(
            ok(&DbzType::MilliTimestamp, "\"infinity\""),
            "9223372036825200"
        );
        let tz = DbzType::ZonedTimestamp { width: Some(6) };
        assert_eq!(
            ok(&tz, "\"2016-11-04T11:51:30.123456Z\""),
            "\"2016-11-04T11:51:30.123456Z\""
        );
        assert_eq!(
            ok(&tz, "\"21016-11-04T06:51:30.000000Z\""),
            "\"+21016-11-04T06:51:30.000000Z\""
        );
        assert_eq!(
            ok(&tz, "\"-4713-12-31T23:59:59.999999Z\""),
            "\"-4713-12-31T23:59:59.999999Z\""
        );
        assert_eq!(ok(&tz, "\"infinity\""), "\"infinity\"");
        assert_eq!(ok(&tz, "\"-infinity\""), "\"-infinity\"");
        let tz3 = DbzType::ZonedTimestamp { width: Some(3) };
        assert_eq!(
            ok(&tz3, "\"2016-11-04T11:51:30.123000Z\""),
            "\"2016-11-04T11:51:30.123Z\""
        );
        let tz0 = DbzType::ZonedTimestamp { width: None };
        assert_eq!(
            ok(&tz0, "\"2016-11-04T11:51:30.000000Z\""),
            "\"2016-11-04T11:51:30Z\""
        );
        assert_eq!(
            ok(&DbzType::ZonedTime, "\"13:51:30.123789+02:00\""),
            "\"11:51:30.123789Z\""
        );
        assert_eq!(
            ok(&DbzType::ZonedTime, "\"13:51:30.123000+02:00\""),
            "\"11:51:30.123Z\""
        );
        assert_eq!(
            ok(&DbzType::ZonedTime, "\"01:00:00.000000+02:00\""),
            "\"23:00:00Z\""
        );
    }

    #[test]
    fn intervals_match_debezium_arithmetic() {
        // MicroDuration.durationMicros(1, 2, 3, 4, 5, 6.78, 365.25 / 12)
        let expected = {
            let days = (12 + 2) as f64 * (365.25 / 12.0) + 3.0;
            let secs = ((days * 24.0 + 4.0) * 60.0 + 5.0) * 60.0 + 6.78;
            (secs * 1e6) as i64
        };
        assert_eq!(
            interval_micros("1 year 2 mons 3 days 04:05:06.78"),
            Some(expected)
        );
        assert_eq!(interval_micros("00:00:01"), Some(1_000_000));
        assert_eq!(interval_micros("-00:00:01.5"), Some(-1_500_000));
        assert_eq!(interval_micros("1 day -02:00:00"), Some(22 * 3_600_000_000));
        assert_eq!(interval_micros("1 mon"), Some(2_629_800_000_000));
        assert_eq!(interval_micros("P1D"), None);
    }

    #[test]
    fn arrays_convert_elements() {
        let dates = DbzType::Array(Box::new(DbzType::Date));
        assert_eq!(ok(&dates, r#"["1970-01-02",null]"#), "[1,null]");
        let ints = DbzType::Array(Box::new(DbzType::Int32));
        assert_eq!(ok(&ints, "[[1,2],[3,4]]"), "[[1,2],[3,4]]");
        assert!(conv(&ints, "\"{1,2}\"").is_err());
    }

    #[test]
    fn unavailable_placeholders() {
        let mut out = String::new();
        write_unavailable(&mut out, &DbzType::Text);
        assert_eq!(out, "\"__debezium_unavailable_value\"");
        out.clear();
        write_unavailable(&mut out, &DbzType::Bytes);
        assert_eq!(out, "\"X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==\"");
        out.clear();
        write_unavailable(&mut out, &DbzType::Int32);
        assert_eq!(out, "null");
    }
}

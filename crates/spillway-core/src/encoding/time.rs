//! Calendar arithmetic and the date/time text forms of native events.
//!
//! Native values (SPEC §2): date `[-]YYYY-MM-DD` (astronomical years, so 1 BC is `0000`
//! and 44 BC is `-0043`; years may have more than four digits), timestamp
//! `[-]YYYY-MM-DDTHH:MM:SS.ffffff`, timestamptz the same in UTC with a `Z`, time
//! `HH:MM:SS.ffffff` (`24:00:00` allowed), timetz `HH:MM:SS.ffffff±HH:MM[:SS]`;
//! `infinity`/`-infinity` are kept as such for dates and timestamps. All calendar math is
//! proleptic Gregorian, like PostgreSQL and `java.time`.

use std::fmt::Write as _;

pub(crate) const MICROS_PER_SECOND: i64 = 1_000_000;
pub(crate) const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// A calendar date (astronomical year).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Date {
    pub(crate) year: i64,
    pub(crate) month: u32,
    pub(crate) day: u32,
}

/// A time of day in microseconds since midnight (`0..=86_400_000_000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeOfDay(pub(crate) i64);

impl TimeOfDay {
    fn hms_micros(self) -> (i64, i64, i64, i64) {
        let t = self.0;
        (
            t / 3_600_000_000,
            t / 60_000_000 % 60,
            t / MICROS_PER_SECOND % 60,
            t % MICROS_PER_SECOND,
        )
    }
}

fn is_leap(y: i64) -> bool {
    y.rem_euclid(4) == 0 && (y.rem_euclid(100) != 0 || y.rem_euclid(400) == 0)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 (negative before).
pub(crate) fn days_from_civil(d: Date) -> i64 {
    let m = i64::from(d.month);
    let y = if m <= 2 { d.year - 1 } else { d.year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d.day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The UTC calendar date (`YYYY-MM-DD`) of a time in µs since the Unix
/// epoch (for date-partitioned paths).
pub fn utc_date(timestamp_us: i64) -> String {
    let d = civil_from_days(timestamp_us.div_euclid(86_400_000_000));
    format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)
}

/// Inverse of [`days_from_civil`].
pub(crate) fn civil_from_days(z: i64) -> Date {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Date {
        year,
        month: u32::try_from(month).unwrap_or(1),
        day: u32::try_from(day).unwrap_or(1),
    }
}

/// A tiny cursor over ASCII text.
struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Cursor {
            s: s.as_bytes(),
            pos: 0,
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.s.get(self.pos) == Some(&b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    /// Reads `min..=max` digits.
    fn digits(&mut self, min: usize, max: usize) -> Option<(i64, usize)> {
        let start = self.pos;
        let mut v: i64 = 0;
        while let Some(d) = self.peek().filter(u8::is_ascii_digit) {
            if self.pos - start == max {
                return None;
            }
            v = v.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
            self.pos += 1;
        }
        let n = self.pos - start;
        (n >= min).then_some((v, n))
    }

    fn two(&mut self) -> Option<i64> {
        self.digits(2, 2).map(|(v, _)| v)
    }

    fn done(&self) -> bool {
        self.pos == self.s.len()
    }
}

fn date_part(c: &mut Cursor<'_>) -> Option<Date> {
    let negative = c.eat(b'-');
    let (year, _) = c.digits(4, 9)?;
    if !c.eat(b'-') {
        return None;
    }
    let month = u32::try_from(c.two()?).ok()?;
    if !c.eat(b'-') {
        return None;
    }
    let day = u32::try_from(c.two()?).ok()?;
    let date = Date {
        year: if negative { -year } else { year },
        month,
        day,
    };
    (day >= 1 && day <= days_in_month(date.year, month)).then_some(date)
}

/// `HH:MM:SS[.f{1,6}]`, hour 24 only as `24:00:00`.
fn time_part(c: &mut Cursor<'_>) -> Option<TimeOfDay> {
    let h = c.two()?;
    if !c.eat(b':') {
        return None;
    }
    let m = c.two()?;
    if !c.eat(b':') {
        return None;
    }
    let s = c.two()?;
    let mut micros = 0;
    if c.eat(b'.') {
        let (v, n) = c.digits(1, 6)?;
        micros = v * 10_i64.pow(u32::try_from(6 - n).ok()?);
    }
    if h > 24 || m > 59 || s > 59 || (h == 24 && (m, s, micros) != (0, 0, 0)) {
        return None;
    }
    Some(TimeOfDay(
        ((h * 60 + m) * 60 + s) * MICROS_PER_SECOND + micros,
    ))
}

/// `±HH[:MM[:SS]]` → seconds east of UTC.
fn offset_part(c: &mut Cursor<'_>) -> Option<i64> {
    let sign = match c.peek()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    c.pos += 1;
    let h = c.two()?;
    let mut m = 0;
    let mut s = 0;
    if c.eat(b':') {
        m = c.two()?;
        if c.eat(b':') {
            s = c.two()?;
        }
    }
    (m < 60 && s < 60).then_some(sign * (h * 3600 + m * 60 + s))
}

/// A native `date` value.
pub(crate) fn parse_date(s: &str) -> Option<Date> {
    let mut c = Cursor::new(s);
    let d = date_part(&mut c)?;
    c.done().then_some(d)
}

/// A native `timestamp` (`with_z = false`) or `timestamptz` (`with_z = true`) value.
pub(crate) fn parse_timestamp(s: &str, with_z: bool) -> Option<(Date, TimeOfDay)> {
    let mut c = Cursor::new(s);
    let d = date_part(&mut c)?;
    if !c.eat(b'T') {
        return None;
    }
    let t = time_part(&mut c)?;
    if t.0 >= MICROS_PER_DAY || (with_z && !c.eat(b'Z')) || !c.done() {
        return None;
    }
    Some((d, t))
}

/// A native `time` value.
pub(crate) fn parse_time(s: &str) -> Option<TimeOfDay> {
    let mut c = Cursor::new(s);
    let t = time_part(&mut c)?;
    c.done().then_some(t)
}

/// A native `timetz` value → (local time of day, offset seconds east of UTC).
pub(crate) fn parse_timetz(s: &str) -> Option<(TimeOfDay, i64)> {
    let mut c = Cursor::new(s);
    let t = time_part(&mut c)?;
    let off = offset_part(&mut c)?;
    c.done().then_some((t, off))
}

/// Microseconds since the Unix epoch of a UTC date and time, if it fits `i64`.
pub(crate) fn epoch_micros(d: Date, t: TimeOfDay) -> Option<i64> {
    let total = i128::from(days_from_civil(d)) * i128::from(MICROS_PER_DAY) + i128::from(t.0);
    i64::try_from(total).ok()
}

/// Appends a year the way `java.time`'s ISO formatters print it: four digits, `-` before
/// negative years, `+` before years beyond 9999.
pub(crate) fn write_iso_year(out: &mut String, year: i64) {
    if year > 9999 {
        out.push('+');
    } else if year < 0 {
        out.push('-');
    }
    let _ = write!(out, "{:04}", year.unsigned_abs());
}

/// Appends `YYYY-MM-DD` with a `java.time`-style year.
pub(crate) fn write_iso_date(out: &mut String, d: Date) {
    write_iso_year(out, d.year);
    let _ = write!(out, "-{:02}-{:02}", d.month, d.day);
}

/// Appends `HH:MM:SS`, then the fraction: with `width = Some(n)` exactly `n` digits
/// (`n` ≤ 6, zero-padded, truncated); with `None` as few digits as needed and nothing
/// at all for a whole second (`java.time`'s `ISO_LOCAL_TIME`, Go's `RFC3339Nano`).
pub(crate) fn write_time(out: &mut String, t: TimeOfDay, width: Option<usize>) {
    let (h, m, s, micros) = t.hms_micros();
    let _ = write!(out, "{h:02}:{m:02}:{s:02}");
    let digits = format!("{micros:06}");
    let frac = match width {
        Some(w) => digits.get(..w.min(6)).unwrap_or_default(),
        None => digits.trim_end_matches('0'),
    };
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
}

/// RFC 3339 UTC text of a µs timestamp, fraction trimmed like Go's `time.RFC3339Nano`
/// (`2026-11-22T00:15:43.682938Z`, `2026-11-22T00:15:43Z`).
pub(crate) fn rfc3339_micros(micros: i64) -> String {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let tod = TimeOfDay(micros.rem_euclid(MICROS_PER_DAY));
    let mut out = String::with_capacity(32);
    write_iso_date(&mut out, civil_from_days(days));
    out.push('T');
    write_time(&mut out, tod, None);
    out.push('Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(year: i64, month: u32, day: u32) -> Date {
        Date { year, month, day }
    }

    #[test]
    fn civil_days_round_trip() {
        assert_eq!(days_from_civil(d(1970, 1, 1)), 0);
        assert_eq!(days_from_civil(d(1969, 12, 31)), -1);
        assert_eq!(days_from_civil(d(2000, 3, 1)), 11_017);
        assert_eq!(days_from_civil(d(1900, 3, 1)), -25_508);
        // java.time: LocalDate.parse("-5877611-06-21").toEpochDay()
        assert_eq!(days_from_civil(d(-5_877_611, 6, 21)), -2_147_472_692);
        for z in [
            -800_000_000,
            -719_528,
            -1,
            0,
            1,
            59,
            60,
            10_957,
            2_000_000_000,
        ] {
            assert_eq!(days_from_civil(civil_from_days(z)), z);
        }
    }

    #[test]
    fn native_forms_parse() {
        assert_eq!(parse_date("2016-11-04"), Some(d(2016, 11, 4)));
        assert_eq!(parse_date("-0043-03-15"), Some(d(-43, 3, 15)));
        assert_eq!(parse_date("21016-11-04"), Some(d(21016, 11, 4)));
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("infinity"), None);
        let (date, t) = parse_timestamp("2016-11-04T13:51:30.123456", false).unwrap();
        assert_eq!(date, d(2016, 11, 4));
        assert_eq!(t, TimeOfDay(49_890_123_456));
        assert!(parse_timestamp("2016-11-04T13:51:30.123456", true).is_none());
        assert!(parse_timestamp("2016-11-04T13:51:30.123456Z", true).is_some());
        assert!(parse_timestamp("2016-11-04T24:00:00", false).is_none());
        assert_eq!(
            parse_time("24:00:00.000000"),
            Some(TimeOfDay(MICROS_PER_DAY))
        );
        assert_eq!(parse_time("13:51:30.5"), Some(TimeOfDay(49_890_500_000)));
        assert_eq!(
            parse_timetz("13:51:30.123789+02:00"),
            Some((TimeOfDay(49_890_123_789), 7200))
        );
        assert_eq!(
            parse_timetz("01:00:00-05:30:15").map(|x| x.1),
            Some(-19_815)
        );
    }

    #[test]
    fn epoch_micros_matches_java() {
        // Debezium test: '294247-01-01T23:59:59.999999'::TIMESTAMP → 9223371331200000000 - 1
        let (date, t) = parse_timestamp("294247-01-01T23:59:59.999999", false).unwrap();
        assert_eq!(epoch_micros(date, t), Some(9_223_371_331_200_000_000 - 1));
        // Debezium test: 4713-12-31T23:59:59.999999 BC → -210831897600000001
        let (date, t) = parse_timestamp("-4712-12-31T23:59:59.999999", false).unwrap();
        assert_eq!(epoch_micros(date, t), Some(-210_831_897_600_000_001));
    }

    #[test]
    fn iso_text_matches_java_and_go() {
        let mut s = String::new();
        write_iso_date(&mut s, d(21016, 11, 4));
        assert_eq!(s, "+21016-11-04");
        s.clear();
        write_iso_date(&mut s, d(-4713, 12, 31));
        assert_eq!(s, "-4713-12-31");
        s.clear();
        write_time(&mut s, TimeOfDay(49_890_120_000), None);
        assert_eq!(s, "13:51:30.12");
        s.clear();
        write_time(&mut s, TimeOfDay(49_890_000_000), Some(6));
        assert_eq!(s, "13:51:30.000000");
        assert_eq!(
            rfc3339_micros(1_795_306_543_685_698),
            "2026-11-22T00:15:43.685698Z"
        );
        assert_eq!(
            rfc3339_micros(1_500_000_000_000_000),
            "2017-07-14T02:40:00Z"
        );
        assert_eq!(rfc3339_micros(-1), "1969-12-31T23:59:59.999999Z");
    }
}

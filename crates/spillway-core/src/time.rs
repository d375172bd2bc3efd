//! Calendar arithmetic and the date/time text forms of native events.
//!
//! Native values (SPEC §2): date `[-]YYYY-MM-DD` (astronomical years, so 1 BC is `0000`
//! and 44 BC is `-0043`; years may have more than four digits), timestamp
//! `[-]YYYY-MM-DDTHH:MM:SS.ffffff`, timestamptz the same in UTC with a `Z`, time
//! `HH:MM:SS.ffffff` (`24:00:00` allowed), timetz `HH:MM:SS.ffffff±HH:MM[:SS]`;
//! `infinity`/`-infinity` are kept as such for dates and timestamps. All calendar math is
//! proleptic Gregorian, like PostgreSQL and `java.time`.

//! The one calendar of Spillway and every date/time text form it reads or writes.
//!
//! - **Calendar**: proleptic Gregorian, astronomical years (1 BC is year 0), like
//!   PostgreSQL and `java.time`: [`days_from_civil`], [`civil_from_days`],
//!   [`epoch_micros`], [`now_us`].
//! - **PostgreSQL's output** (`DateStyle=ISO`, `TimeZone=UTC`, as the replication session
//!   sets it), read by pgoutput's value conversion: [`parse_pg_date`],
//!   [`parse_pg_timestamp`], [`parse_pg_time`] (`2016-11-04 13:51:30.5+00`, `0044-03-15 BC`).
//! - **Native values** (SPEC §2): date `[-]YYYY-MM-DD` (years may have more than four
//!   digits), timestamp `[-]YYYY-MM-DDTHH:MM:SS.ffffff`, timestamptz the same in UTC with a
//!   `Z`, time `HH:MM:SS.ffffff` (`24:00:00` allowed), timetz `HH:MM:SS.ffffff±HH:MM[:SS]`;
//!   `infinity`/`-infinity` are kept as such for dates and timestamps. Written by
//!   [`write_native_date`], [`write_native_time`], [`write_native_offset`]; read back by
//!   [`parse_date`], [`parse_timestamp`], [`parse_time`], [`parse_timetz`] (the encodings).
//! - **`java.time` / Go forms** for Debezium and reference 001: [`write_iso_date`],
//!   [`write_time`], [`rfc3339_micros`].
//! - **RFC 3339 input** (`from_timestamp`): [`parse_rfc3339_micros`].
//!
//! Everything is total: arbitrary bytes give `None`, never a panic.

use std::fmt::Write as _;

/// µs in a second.
pub const MICROS_PER_SECOND: i64 = 1_000_000;
/// µs in a day.
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

/// The current time, µs since the Unix epoch (0 before 1970, saturating far after).
#[must_use]
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// A calendar date (astronomical year).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date {
    /// Astronomical year (1 BC = 0, 2 BC = -1).
    pub year: i64,
    /// 1..=12.
    pub month: u32,
    /// 1..=31.
    pub day: u32,
}

/// A time of day in microseconds since midnight (`0..=86_400_000_000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeOfDay(pub i64);

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

/// Whether `y` (astronomical) is a leap year.
#[must_use]
pub fn is_leap(y: i64) -> bool {
    y.rem_euclid(4) == 0 && (y.rem_euclid(100) != 0 || y.rem_euclid(400) == 0)
}

/// Days in month `m` of year `y` (0 for a month that does not exist).
#[must_use]
pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

fn valid_day(d: Date) -> bool {
    d.day >= 1 && d.day <= days_in_month(d.year, d.month)
}

/// Days since 1970-01-01 (negative before; Howard Hinnant's algorithm).
#[must_use]
pub fn days_from_civil(d: Date) -> i64 {
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
#[must_use]
pub fn utc_date(timestamp_us: i64) -> String {
    let d = civil_from_days(timestamp_us.div_euclid(MICROS_PER_DAY));
    format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)
}

/// Inverse of [`days_from_civil`].
#[must_use]
pub fn civil_from_days(z: i64) -> Date {
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

/// Microseconds since the Unix epoch of a UTC date and time, if it fits `i64`.
#[must_use]
pub fn epoch_micros(d: Date, t: TimeOfDay) -> Option<i64> {
    let total = i128::from(days_from_civil(d)) * i128::from(MICROS_PER_DAY) + i128::from(t.0);
    i64::try_from(total).ok()
}

/// A tiny cursor over ASCII text.
struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a [u8]) -> Self {
        Cursor { s, pos: 0 }
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.s.get(self.pos) == Some(&b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_str(&mut self, lit: &[u8]) -> bool {
        let end = self.pos + lit.len();
        if self.s.get(self.pos..end) == Some(lit) {
            self.pos = end;
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

/// `Y{4,9}-MM-DD` with a leading `-` when `signed`; the day is not checked against the
/// month yet (a BC suffix changes the year, and with it February).
fn date_part(c: &mut Cursor<'_>, signed: bool) -> Option<Date> {
    let negative = signed && c.eat(b'-');
    let (year, _) = c.digits(4, 9)?;
    if !c.eat(b'-') {
        return None;
    }
    let month = u32::try_from(c.two()?).ok()?;
    if !c.eat(b'-') {
        return None;
    }
    let day = u32::try_from(c.two()?).ok()?;
    if !(1..=12).contains(&month) {
        return None;
    }
    Some(Date {
        year: if negative { -year } else { year },
        month,
        day,
    })
}

/// `HH:MM:SS[.f{1,6}]`, hour at most `max_hour`, and 24 only as `24:00:00`.
fn time_part(c: &mut Cursor<'_>, max_hour: i64) -> Option<TimeOfDay> {
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
    if h > max_hour || m > 59 || s > 59 || (h == 24 && (m, s, micros) != (0, 0, 0)) {
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

/// A trailing ` BC` turns the year as printed into an astronomical one; PostgreSQL's
/// AD/BC numbering has no year 0.
fn pg_era(c: &mut Cursor<'_>, date: &mut Date) -> Option<()> {
    if date.year == 0 {
        return None;
    }
    if c.eat_str(b" BC") {
        date.year = 1 - date.year;
    }
    Some(())
}

/// PostgreSQL's `date` output: `YYYY-MM-DD[ BC]`.
#[must_use]
pub fn parse_pg_date(text: &[u8]) -> Option<Date> {
    let mut c = Cursor::new(text);
    let mut date = date_part(&mut c, false)?;
    pg_era(&mut c, &mut date)?;
    (c.done() && valid_day(date)).then_some(date)
}

/// PostgreSQL's `timestamp` output (`YYYY-MM-DD HH:MM:SS[.f][ BC]`), or with `with_tz` the
/// `timestamptz` output (an offset before the era), converted to UTC.
#[must_use]
pub fn parse_pg_timestamp(text: &[u8], with_tz: bool) -> Option<(Date, TimeOfDay)> {
    let mut c = Cursor::new(text);
    let mut date = date_part(&mut c, false)?;
    if !c.eat(b' ') {
        return None;
    }
    let time = time_part(&mut c, 23)?;
    let offset = if with_tz { offset_part(&mut c)? } else { 0 };
    pg_era(&mut c, &mut date)?;
    if !c.done() || !valid_day(date) {
        return None;
    }
    if offset == 0 {
        return Some((date, time));
    }
    let local = i128::from(days_from_civil(date)) * i128::from(MICROS_PER_DAY) + i128::from(time.0)
        - i128::from(offset) * i128::from(MICROS_PER_SECOND);
    let day = MICROS_PER_DAY as i128;
    let days = i64::try_from(local.div_euclid(day)).ok()?;
    let tod = i64::try_from(local.rem_euclid(day)).ok()?;
    Some((civil_from_days(days), TimeOfDay(tod)))
}

/// PostgreSQL's `time` output (`HH:MM:SS[.f]`, `24:00:00` allowed), or with `with_tz` the
/// `timetz` output with its offset (seconds east of UTC).
#[must_use]
pub fn parse_pg_time(text: &[u8], with_tz: bool) -> Option<(TimeOfDay, Option<i64>)> {
    let mut c = Cursor::new(text);
    let time = time_part(&mut c, 24)?;
    let offset = if with_tz {
        Some(offset_part(&mut c)?)
    } else {
        None
    };
    c.done().then_some((time, offset))
}

/// Appends `v` in decimal, zero-padded to at least `width` digits (no allocation; the
/// capture path writes its numbers with it too).
pub fn write_uint(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        if let Some(slot) = buf.get_mut(i) {
            *slot = b'0' + (v % 10) as u8;
        }
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
    let n = buf.len() - i;
    for _ in n..width {
        out.push(b'0');
    }
    out.extend_from_slice(buf.get(i..).unwrap_or_default());
}

/// Appends a native date: `[-]YYYY-MM-DD` (at least four year digits).
pub fn write_native_date(out: &mut Vec<u8>, d: Date) {
    if d.year < 0 {
        out.push(b'-');
    }
    write_uint(out, d.year.unsigned_abs(), 4);
    out.push(b'-');
    write_uint(out, u64::from(d.month), 2);
    out.push(b'-');
    write_uint(out, u64::from(d.day), 2);
}

/// Appends a native time of day: `HH:MM:SS.ffffff` (always six fraction digits).
pub fn write_native_time(out: &mut Vec<u8>, t: TimeOfDay) {
    let (h, m, s, micros) = t.hms_micros();
    write_uint(out, h.unsigned_abs(), 2);
    out.push(b':');
    write_uint(out, m.unsigned_abs(), 2);
    out.push(b':');
    write_uint(out, s.unsigned_abs(), 2);
    out.push(b'.');
    write_uint(out, micros.unsigned_abs(), 6);
}

/// Appends a native UTC offset: `±HH:MM`, with `:SS` only when the seconds are not zero.
pub fn write_native_offset(out: &mut Vec<u8>, offset_secs: i64) {
    out.push(if offset_secs < 0 { b'-' } else { b'+' });
    let abs = offset_secs.unsigned_abs();
    write_uint(out, abs / 3600, 2);
    out.push(b':');
    write_uint(out, abs % 3600 / 60, 2);
    if !abs.is_multiple_of(60) {
        out.push(b':');
        write_uint(out, abs % 60, 2);
    }
}

/// A native `date` value.
#[must_use]
pub fn parse_date(s: &str) -> Option<Date> {
    let mut c = Cursor::new(s.as_bytes());
    let d = date_part(&mut c, true)?;
    (c.done() && valid_day(d)).then_some(d)
}

/// A native `timestamp` (`with_z = false`) or `timestamptz` (`with_z = true`) value.
#[must_use]
pub fn parse_timestamp(s: &str, with_z: bool) -> Option<(Date, TimeOfDay)> {
    let mut c = Cursor::new(s.as_bytes());
    let d = date_part(&mut c, true)?;
    if !valid_day(d) || !c.eat(b'T') {
        return None;
    }
    let t = time_part(&mut c, 23)?;
    if (with_z && !c.eat(b'Z')) || !c.done() {
        return None;
    }
    Some((d, t))
}

/// A native `time` value.
#[must_use]
pub fn parse_time(s: &str) -> Option<TimeOfDay> {
    let mut c = Cursor::new(s.as_bytes());
    let t = time_part(&mut c, 24)?;
    c.done().then_some(t)
}

/// A native `timetz` value → (local time of day, offset seconds east of UTC).
#[must_use]
pub fn parse_timetz(s: &str) -> Option<(TimeOfDay, i64)> {
    let mut c = Cursor::new(s.as_bytes());
    let t = time_part(&mut c, 24)?;
    let off = offset_part(&mut c)?;
    c.done().then_some((t, off))
}

/// Appends a year the way `java.time`'s ISO formatters print it: four digits, `-` before
/// negative years, `+` before years beyond 9999.
pub fn write_iso_year(out: &mut String, year: i64) {
    if year > 9999 {
        out.push('+');
    } else if year < 0 {
        out.push('-');
    }
    let _ = write!(out, "{:04}", year.unsigned_abs());
}

/// Appends `YYYY-MM-DD` with a `java.time`-style year.
pub fn write_iso_date(out: &mut String, d: Date) {
    write_iso_year(out, d.year);
    let _ = write!(out, "-{:02}-{:02}", d.month, d.day);
}

/// Appends `HH:MM:SS`, then the fraction: with `width = Some(n)` exactly `n` digits
/// (`n` ≤ 6, zero-padded, truncated); with `None` as few digits as needed and nothing
/// at all for a whole second (`java.time`'s `ISO_LOCAL_TIME`, Go's `RFC3339Nano`).
pub fn write_time(out: &mut String, t: TimeOfDay, width: Option<usize>) {
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
#[must_use]
pub fn rfc3339_micros(micros: i64) -> String {
    let days = micros.div_euclid(MICROS_PER_DAY);
    let tod = TimeOfDay(micros.rem_euclid(MICROS_PER_DAY));
    let mut out = String::with_capacity(32);
    write_iso_date(&mut out, civil_from_days(days));
    out.push('T');
    write_time(&mut out, tod, None);
    out.push('Z');
    out
}

/// Parses `2024-01-02T03:04:05Z`, `2024-01-02T03:04:05.123456+02:00`, `2024-01-02 03:04:05Z`
/// into µs since the Unix epoch. Returns `None` for anything else.
#[must_use]
pub fn parse_rfc3339_micros(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = s.get(start..i)?;
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
        micros = digits.parse().ok()?;
    }
    let offset_secs = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b.get(i + 3) == Some(&b':') => {
            let h = num(i + 1..i + 3)?;
            let m = num(i + 4..i + 6)?;
            let v = h * 3600 + m * 60;
            if *sign == b'+' {
                v
            } else {
                -v
            }
        }
        _ => return None,
    };
    let date = Date {
        year,
        month: u32::try_from(month).ok()?,
        day: u32::try_from(day).ok()?,
    };
    if !valid_day(date) {
        return None;
    }
    let days = days_from_civil(date);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * 1_000_000 + micros)
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

    #[test]
    fn rfc3339_input() {
        assert_eq!(parse_rfc3339_micros("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_micros("2024-01-02T03:04:05.5Z"),
            Some(1_704_164_645_500_000)
        );
        assert_eq!(
            parse_rfc3339_micros("2024-01-02T05:04:05.5+02:00"),
            Some(1_704_164_645_500_000)
        );
        assert_eq!(
            parse_rfc3339_micros("2024-01-01T22:04:05.5-05:00"),
            Some(1_704_164_645_500_000)
        );
        assert_eq!(
            parse_rfc3339_micros("2000-02-29 00:00:00Z"),
            Some(951_782_400_000_000)
        );
        for bad in [
            "",
            "2024-01-02",
            "2024-13-02T00:00:00Z",
            "2024-01-02T00:00:00",
            "2024-01-02T00:00:00.Z",
            "yesterday",
            "2024-01-02T00:00:00+0200",
        ] {
            assert_eq!(parse_rfc3339_micros(bad), None, "{bad}");
        }
    }

    #[test]
    fn postgres_output_forms() {
        assert_eq!(parse_pg_date(b"2016-11-04"), Some(d(2016, 11, 4)));
        assert_eq!(parse_pg_date(b"0044-03-15 BC"), Some(d(-43, 3, 15)));
        // 1 BC is astronomical year 0, a leap year.
        assert_eq!(parse_pg_date(b"0001-02-29 BC"), Some(d(0, 2, 29)));
        assert_eq!(parse_pg_date(b"0001-02-29"), None);
        assert_eq!(parse_pg_date(b"0000-01-01"), None);
        assert_eq!(parse_pg_date(b"-0044-03-15"), None);
        let (date, t) = parse_pg_timestamp(b"2016-11-04 23:30:00.5-02", true).unwrap();
        assert_eq!((date, t), (d(2016, 11, 5), TimeOfDay(5_400_500_000)));
        assert!(parse_pg_timestamp(b"2016-11-04 24:00:00", false).is_none());
        assert_eq!(
            parse_pg_time(b"24:00:00", false),
            Some((TimeOfDay(MICROS_PER_DAY), None))
        );
        assert_eq!(
            parse_pg_time(b"13:51:30.123+05:30", true),
            Some((TimeOfDay(49_890_123_000), Some(19_800)))
        );
        let mut out = Vec::new();
        write_native_date(&mut out, d(-43, 3, 15));
        out.push(b' ');
        write_native_time(&mut out, TimeOfDay(49_890_123_000));
        write_native_offset(&mut out, -19_815);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "-0043-03-15 13:51:30.123000-05:30:15"
        );
    }
}

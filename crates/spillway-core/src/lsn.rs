//! PostgreSQL LSNs as text: `X/Y`, the high and low 32 bits in hex, as
//! PostgreSQL prints `pg_lsn`. One definition for every crate that reads or
//! writes them (events' `source.pg_lsn` and `tx.commit_lsn`, the API's status).

/// Formats an LSN the way PostgreSQL prints `pg_lsn`: upper-case hex of the
/// high and low 32 bits separated by `/`, without leading zeros
/// (`0x1_00A2_B3C8` → `"1/A2B3C8"`).
#[must_use]
pub fn format_pg_lsn(lsn: u64) -> String {
    let mut out = Vec::with_capacity(17);
    write_pg_lsn(&mut out, lsn);
    // Only ASCII hex digits and '/' were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends the `X/Y` form of `lsn` (see [`format_pg_lsn`]) to `out`.
pub fn write_pg_lsn(out: &mut Vec<u8>, lsn: u64) {
    write_upper_hex(out, lsn >> 32);
    out.push(b'/');
    write_upper_hex(out, lsn & 0xFFFF_FFFF);
}

fn write_upper_hex(out: &mut Vec<u8>, mut v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    loop {
        i -= 1;
        if let Some(slot) = buf.get_mut(i) {
            *slot = DIGITS.get((v & 0xF) as usize).copied().unwrap_or(b'0');
        }
        v >>= 4;
        if v == 0 || i == 0 {
            break;
        }
    }
    out.extend_from_slice(buf.get(i..).unwrap_or_default());
}

/// Parses PostgreSQL's `X/Y` LSN notation (1–8 hex digits on each side,
/// either case). Returns `None` for anything else.
#[must_use]
pub fn parse_pg_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    let parse_half = |h: &str| -> Option<u64> {
        if h.is_empty() || h.len() > 8 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(h, 16).ok()
    };
    Some((parse_half(hi)? << 32) | parse_half(lo)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_is_strict() {
        for lsn in [0, 1, 0x16B_3748, 0x1_00A2_B3C8, u64::MAX] {
            assert_eq!(parse_pg_lsn(&format_pg_lsn(lsn)), Some(lsn));
        }
        assert_eq!(format_pg_lsn(0x1_00A2_B3C8), "1/A2B3C8");
        assert_eq!(parse_pg_lsn("1/a2b3c8"), Some(0x1_00A2_B3C8));
        for bad in [
            "",
            "/",
            "1/",
            "/1",
            "1",
            "+1/2",
            "1/+2",
            "1/2/3",
            "123456789/0",
            "g/0",
            " 1/2",
        ] {
            assert_eq!(parse_pg_lsn(bad), None, "{bad:?}");
        }
    }
}

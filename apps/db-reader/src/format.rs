//! Pure functions: PostgreSQL TIMESTAMP decoding and formatting, the text line format, and query
//! parameter parsing. Everything here is unit-tested without a database.

use std::error::Error;
use std::fmt::Write as _;

use tokio_postgres::types::{FromSql, Type};

/// Microseconds since 2000-01-01 00:00:00, PostgreSQL's binary TIMESTAMP representation.
/// Decoded by hand so the reader needs no date library (chrono would pull in time-zone crates).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PgTimestamp(pub i64);

impl<'a> FromSql<'a> for PgTimestamp {
    fn from_sql(_ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        let bytes: [u8; 8] = raw
            .try_into()
            .map_err(|_| format!("TIMESTAMP value has {} bytes, expected 8", raw.len()))?;
        Ok(PgTimestamp(i64::from_be_bytes(bytes)))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMP
    }
}

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;
/// Days from 1970-01-01 to 2000-01-01.
const DAYS_UNIX_TO_PG_EPOCH: i64 = 10_957;

/// Broken-down civil time (proleptic Gregorian, astronomical year numbering).
#[derive(Debug, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    micro: u32,
}

/// Howard Hinnant's days-to-civil algorithm (days since 1970-01-01).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn civil(ts: PgTimestamp) -> Civil {
    // div_euclid: a timestamp before 2000 must floor, so 1999-12-31 23:59:59.999999 stays in 1999.
    let days = ts.0.div_euclid(MICROS_PER_DAY);
    let of_day = ts.0.rem_euclid(MICROS_PER_DAY);
    let (year, month, day) = civil_from_days(days + DAYS_UNIX_TO_PG_EPOCH);
    let secs = of_day / MICROS_PER_SECOND;
    Civil {
        year,
        month,
        day,
        hour: (secs / 3600) as u32,
        minute: (secs / 60 % 60) as u32,
        second: (secs % 60) as u32,
        micro: (of_day % MICROS_PER_SECOND) as u32,
    }
}

/// PostgreSQL's 'infinity' and '-infinity' are i64::MAX and i64::MIN.
fn infinity(ts: PgTimestamp) -> Option<&'static str> {
    match ts.0 {
        i64::MAX => Some("infinity"),
        i64::MIN => Some("-infinity"),
        _ => None,
    }
}

fn write_date_time(out: &mut String, c: &Civil, sep: char) {
    // Years before 1 AD are rare enough to show in ISO 8601's astronomical form (0 = 1 BC, -1 = 2 BC).
    let width = if c.year < 0 { 5 } else { 4 }; // the sign counts towards the width
    let _ = write!(
        out,
        "{:0width$}-{:02}-{:02}{}{:02}:{:02}:{:02}",
        c.year, c.month, c.day, sep, c.hour, c.minute, c.second
    );
}

/// `YYYY-mm-dd HH:MM:SS`, fractional seconds truncated: what the replaced system printed
/// (Python's `str(date)[:19]`).
pub fn text_date(ts: PgTimestamp) -> String {
    if let Some(inf) = infinity(ts) {
        return inf.to_string();
    }
    let mut out = String::with_capacity(19);
    write_date_time(&mut out, &civil(ts), ' ');
    out
}

/// ISO 8601 without a zone (the column is TIMESTAMP WITHOUT TIME ZONE), always 6 fractional digits:
/// `2026-11-21T23:30:05.123456`.
pub fn iso_date(ts: PgTimestamp) -> String {
    if let Some(inf) = infinity(ts) {
        return inf.to_string();
    }
    let c = civil(ts);
    let mut out = String::with_capacity(26);
    write_date_time(&mut out, &c, 'T');
    let _ = write!(out, ".{:06}", c.micro);
    out
}

/// Appends one `YYYY-mm-dd HH:MM:SS: content` line. Content is written verbatim, like the
/// replaced system did (the writer never stores a newline, since a line ends at one).
pub fn push_line(out: &mut String, ts: PgTimestamp, content: &str) {
    out.push_str(&text_date(ts));
    out.push_str(": ");
    out.push_str(content);
    out.push('\n');
}

pub const MAX_LIMIT: i64 = 10_000;
pub const DEFAULT_TEXT_LIMIT: i64 = 1_000;
pub const DEFAULT_JSON_LIMIT: i64 = 100;

/// `limit`: absent gives the default; otherwise an integer in 1..=MAX_LIMIT.
pub fn parse_limit(raw: Option<&str>, default: i64) -> Result<i64, String> {
    match raw {
        None => Ok(default),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(format!(
                "limit must be an integer from 1 to {MAX_LIMIT}, got {s:?}"
            )),
        },
    }
}

/// `before`: absent means "from the newest"; otherwise a positive id (rows with a smaller id follow).
pub fn parse_before(raw: Option<&str>) -> Result<Option<i64>, String> {
    match raw {
        None => Ok(None),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(format!("before must be a positive integer id, got {s:?}")),
        },
    }
}

/// Keyset pagination: the query fetched `limit + 1` rows (newest first) to learn whether more
/// exist. Keeps `limit` of them and returns the `before` for the next page, or None at the end.
pub fn paginate<T>(rows: &mut Vec<T>, limit: usize, id_of: impl Fn(&T) -> i64) -> Option<i64> {
    if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(id_of)
    } else {
        None
    }
}

/// The command line: exactly one argument, a TCP port 1..=65535.
pub fn parse_port(args: &[String]) -> Result<u16, String> {
    match args {
        [port] => match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(format!(
                "invalid port {port:?}: expected an integer from 1 to 65535"
            )),
        },
        [] => Err("missing <port>".to_string()),
        _ => Err(format!("expected exactly one argument, got {}", args.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Microseconds since 2000-01-01 for a UTC-free civil time, computed independently of
    /// `civil_from_days` (via day counts of whole years) so the tests are not circular.
    fn micros(year: i64, month: u32, day: u32, h: i64, m: i64, s: i64, us: i64) -> i64 {
        fn leap(y: i64) -> bool {
            (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
        }
        let month_days = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        let mut days: i64 = 0;
        if year >= 2000 {
            for y in 2000..year {
                days += if leap(y) { 366 } else { 365 };
            }
        } else {
            for y in year..2000 {
                days -= if leap(y) { 366 } else { 365 };
            }
        }
        for mo in 1..month {
            days += month_days[(mo - 1) as usize] + i64::from(mo == 2 && leap(year));
        }
        days += i64::from(day) - 1;
        days * MICROS_PER_DAY + ((h * 60 + m) * 60 + s) * MICROS_PER_SECOND + us
    }

    #[test]
    fn pg_epoch_is_2000_01_01() {
        assert_eq!(text_date(PgTimestamp(0)), "2000-01-01 00:00:00");
        assert_eq!(iso_date(PgTimestamp(0)), "2000-01-01T00:00:00.000000");
    }

    #[test]
    fn text_format_truncates_fraction_like_python_str_slice() {
        let ts = PgTimestamp(micros(2026, 11, 21, 23, 30, 5, 999_999));
        assert_eq!(text_date(ts), "2026-11-21 23:30:05");
        assert_eq!(iso_date(ts), "2026-11-21T23:30:05.999999");
    }

    #[test]
    fn before_2000_floors_instead_of_rounding_toward_zero() {
        assert_eq!(text_date(PgTimestamp(-1)), "1999-12-31 23:59:59");
        assert_eq!(iso_date(PgTimestamp(-1)), "1999-12-31T23:59:59.999999");
        assert_eq!(
            text_date(PgTimestamp(micros(1970, 1, 1, 0, 0, 0, 0))),
            "1970-01-01 00:00:00"
        );
    }

    #[test]
    fn leap_days_and_month_ends() {
        for (y, mo, d) in [
            (2024, 2, 29),
            (2000, 2, 29),
            (2100, 3, 1),
            (2023, 12, 31),
            (1900, 2, 28),
            (9999, 12, 31),
        ] {
            let ts = PgTimestamp(micros(y, mo, d, 12, 34, 56, 7));
            assert_eq!(text_date(ts), format!("{y:04}-{mo:02}-{d:02} 12:34:56"));
        }
    }

    #[test]
    fn every_day_for_centuries_round_trips() {
        // Walk day by day across 1600..2400 (covers all leap-year rules) against the independent count.
        let start = micros(1600, 1, 1, 0, 0, 0, 0) / MICROS_PER_DAY;
        let end = micros(2400, 1, 1, 0, 0, 0, 0) / MICROS_PER_DAY;
        let mut prev = civil(PgTimestamp(start * MICROS_PER_DAY));
        assert_eq!((prev.year, prev.month, prev.day), (1600, 1, 1));
        for d in start + 1..end {
            let c = civil(PgTimestamp(d * MICROS_PER_DAY));
            let next_day = (c.year, c.month, c.day) > (prev.year, prev.month, prev.day);
            assert!(next_day, "day {d}: {c:?} does not follow {prev:?}");
            assert_eq!(
                micros(c.year, c.month, c.day, 0, 0, 0, 0),
                d * MICROS_PER_DAY
            );
            prev = c;
        }
    }

    #[test]
    fn years_outside_four_digits() {
        // PostgreSQL's range is 4713 BC to 294276 AD. 44 BC is astronomical year -43 (ISO 8601).
        let ides = PgTimestamp(micros(-43, 3, 15, 12, 0, 0, 0));
        assert_eq!(text_date(ides), "-0043-03-15 12:00:00");
        assert_eq!(
            text_date(PgTimestamp(micros(0, 2, 29, 0, 0, 0, 0))),
            "0000-02-29 00:00:00"
        );
        let far = PgTimestamp(micros(12_345, 6, 7, 8, 9, 10, 0));
        assert_eq!(text_date(far), "12345-06-07 08:09:10");
    }

    #[test]
    fn infinities() {
        assert_eq!(text_date(PgTimestamp(i64::MAX)), "infinity");
        assert_eq!(iso_date(PgTimestamp(i64::MIN)), "-infinity");
    }

    #[test]
    fn line_format() {
        let mut out = String::new();
        push_line(
            &mut out,
            PgTimestamp(micros(2026, 11, 21, 23, 30, 5, 1)),
            "hello",
        );
        push_line(
            &mut out,
            PgTimestamp(micros(2026, 1, 2, 3, 4, 5, 0)),
            "'); DROP TABLE testcounter;-- ünï",
        );
        assert_eq!(
            out,
            "2026-11-21 23:30:05: hello\n2026-01-02 03:04:05: '); DROP TABLE testcounter;-- ünï\n"
        );
    }

    #[test]
    fn decodes_big_endian_binary_timestamps() {
        let raw = 1_234_567_i64.to_be_bytes();
        assert_eq!(
            PgTimestamp::from_sql(&Type::TIMESTAMP, &raw).unwrap(),
            PgTimestamp(1_234_567)
        );
        assert!(PgTimestamp::from_sql(&Type::TIMESTAMP, &raw[..4]).is_err());
        assert!(PgTimestamp::accepts(&Type::TIMESTAMP));
        assert!(!PgTimestamp::accepts(&Type::TIMESTAMPTZ));
    }

    #[test]
    fn limit_validation() {
        assert_eq!(parse_limit(None, DEFAULT_TEXT_LIMIT), Ok(1000));
        assert_eq!(parse_limit(Some("1"), 5), Ok(1));
        assert_eq!(parse_limit(Some("10000"), 5), Ok(10_000));
        for bad in [
            "0",
            "10001",
            "-1",
            "",
            "abc",
            "1.5",
            " 5",
            "99999999999999999999",
        ] {
            assert!(parse_limit(Some(bad), 5).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn before_validation() {
        assert_eq!(parse_before(None), Ok(None));
        assert_eq!(parse_before(Some("42")), Ok(Some(42)));
        for bad in ["0", "-3", "", "x", "4.2"] {
            assert!(parse_before(Some(bad)).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn pagination_cursor() {
        let mut rows = vec![9, 8, 7, 6];
        assert_eq!(paginate(&mut rows, 3, |r| *r), Some(7));
        assert_eq!(rows, vec![9, 8, 7]);
        let mut rows = vec![9, 8, 7];
        assert_eq!(
            paginate(&mut rows, 3, |r| *r),
            None,
            "exactly `limit` rows means no more"
        );
        let mut rows: Vec<i64> = vec![];
        assert_eq!(paginate(&mut rows, 3, |r| *r), None);
    }

    #[test]
    fn port_argument() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_port(&args(&["8000"])), Ok(8000));
        assert_eq!(parse_port(&args(&["65535"])), Ok(65535));
        for bad in [&[][..], &["0"], &["65536"], &["http"], &["80", "81"]] {
            assert!(parse_port(&args(bad)).is_err(), "{bad:?} accepted");
        }
    }
}

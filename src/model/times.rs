//! Times at the edges: parsing what clients send and formatting what pipestat answers.
//! Inside, every time is `i64` UTC milliseconds since the Unix epoch.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use time::{Date, Month};

/// Earliest and latest accepted instants: years 1970 through 9999.
const MIN_MS: i64 = 0;
const MAX_MS: i64 = 253_402_300_799_999;

/// Parses an RFC 3339 timestamp with any offset into UTC milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    let ms = i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()?;
    (MIN_MS..=MAX_MS).contains(&ms).then_some(ms)
}

/// Converts integer Unix seconds into milliseconds, within the accepted range.
pub fn from_unix_seconds(secs: i64) -> Option<i64> {
    let ms = secs.checked_mul(1000)?;
    (MIN_MS..=MAX_MS).contains(&ms).then_some(ms)
}

/// Formats UTC milliseconds as RFC 3339 with milliseconds and a `Z`, e.g. `2026-01-02T03:04:05.678Z`.
pub fn format_rfc3339(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// The Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;

/// The calendar date of a day counted from 1970-01-01, within the years `time` knows.
pub fn date_of_unix_day(day: i64) -> Option<time::Date> {
    day.checked_add(UNIX_EPOCH_JULIAN_DAY)
        .and_then(|jd| i32::try_from(jd).ok())
        .and_then(|jd| time::Date::from_julian_day(jd).ok())
}

/// The day counted from 1970-01-01 of a calendar date.
pub fn unix_day_of(date: time::Date) -> i64 {
    i64::from(date.to_julian_day()) - UNIX_EPOCH_JULIAN_DAY
}

/// The current time in UTC milliseconds.
pub fn now_ms() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// Parses a `+HH:MM` / `-HH:MM` UTC offset into minutes east of UTC.
pub fn parse_utc_offset(s: &str) -> Option<i32> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(h) || !two_digits(m) {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 14 && m < 60).then_some(sign * (h * 60 + m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_days_and_dates() {
        use time::{Date, Month};
        let date = |y, m, d| Date::from_calendar_date(y, m, d).unwrap();
        assert_eq!(date_of_unix_day(0), Some(date(1970, Month::January, 1)));
        assert_eq!(date_of_unix_day(-1), Some(date(1969, Month::December, 31)));
        // 1709251200 s (2024-03-01T00:00:00Z) / 86400 = 19783 days.
        assert_eq!(unix_day_of(date(2024, Month::March, 1)), 19_783);
        assert_eq!(date_of_unix_day(19_783), Some(date(2024, Month::March, 1)));
        assert_eq!(date_of_unix_day(i64::MAX), None);
    }

    #[test]
    fn rfc3339_any_offset_to_utc_ms() {
        // 2024-03-01T12:00:00+02:00 is 10:00 UTC; 1709287200 is 2024-03-01T10:00:00Z.
        assert_eq!(
            parse_rfc3339("2024-03-01T12:00:00+02:00"),
            Some(1_709_287_200_000)
        );
        assert_eq!(
            parse_rfc3339("2024-03-01T10:00:00.250Z"),
            Some(1_709_287_200_250)
        );
        assert_eq!(parse_rfc3339("2024-03-01 10:00:00"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn formats_with_milliseconds() {
        assert_eq!(
            format_rfc3339(1_709_287_200_250),
            "2024-03-01T10:00:00.250Z"
        );
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn unix_seconds_range() {
        assert_eq!(from_unix_seconds(1), Some(1000));
        assert_eq!(from_unix_seconds(-1), None);
        assert_eq!(from_unix_seconds(i64::MAX), None);
    }

    #[test]
    fn utc_offsets() {
        assert_eq!(parse_utc_offset("+08:00"), Some(480));
        assert_eq!(parse_utc_offset("-05:30"), Some(-330));
        assert_eq!(parse_utc_offset("+00:00"), Some(0));
        assert_eq!(parse_utc_offset("08:00"), None);
        assert_eq!(parse_utc_offset("+8:00"), None);
        assert_eq!(parse_utc_offset("+15:00"), None);
        // Each part is exactly two digits: no second sign hides in the hours.
        assert_eq!(parse_utc_offset("++1:00"), None);
        assert_eq!(parse_utc_offset("+-1:00"), None);
        assert_eq!(parse_utc_offset("+01:+5"), None);
    }
}

pub const SECOND: i64 = 1000;
pub const MINUTE: i64 = 60 * SECOND;
pub const HOUR: i64 = 60 * MINUTE;
pub const DAY: i64 = 24 * HOUR;
pub const WEEK: i64 = 7 * DAY;
/// Weeks start on Mondays, and the Unix epoch is a Thursday: shifting a time 3 days later puts
/// Mondays on multiples of a week. The shift is positive so that the SQL bucket expression, whose
/// integer division truncates toward zero, never divides a negative number (a time is never more
/// than `tzo` before the epoch).
pub const WEEK_SHIFT: i64 = 3 * DAY;

/// A unit of time buckets: fixed widths up to a week, calendar months beyond.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

impl Unit {
    pub fn parse(s: &str) -> Option<Unit> {
        Some(match s.to_ascii_lowercase().as_str() {
            "second" => Unit::Second,
            "minute" => Unit::Minute,
            "hour" => Unit::Hour,
            "day" => Unit::Day,
            "week" => Unit::Week,
            "month" => Unit::Month,
            "quarter" => Unit::Quarter,
            "year" => Unit::Year,
            _ => return None,
        })
    }

    /// Fixed-width units: (width, shift of the grid before the UTC offset).
    pub fn fixed(self) -> Option<(i64, i64)> {
        match self {
            Unit::Second => Some((SECOND, 0)),
            Unit::Minute => Some((MINUTE, 0)),
            Unit::Hour => Some((HOUR, 0)),
            Unit::Day => Some((DAY, 0)),
            Unit::Week => Some((WEEK, WEEK_SHIFT)),
            _ => None,
        }
    }

    /// Calendar units: months per bucket.
    pub fn months(self) -> i64 {
        match self {
            Unit::Quarter => 3,
            Unit::Year => 12,
            _ => 1,
        }
    }

    pub fn code(self) -> i64 {
        self as i64
    }

    pub fn from_code(c: i64) -> Option<Unit> {
        [
            Unit::Second,
            Unit::Minute,
            Unit::Hour,
            Unit::Day,
            Unit::Week,
            Unit::Month,
            Unit::Quarter,
            Unit::Year,
        ]
        .into_iter()
        .find(|u| u.code() == c)
    }
}

/// The start of the bucket holding `ms`, for a clock `tzo` minutes east of UTC.
pub fn bucket_start(ms: i64, unit: Unit, tzo: i32) -> i64 {
    let off = i64::from(tzo) * MINUTE;
    if let Some((width, shift)) = unit.fixed() {
        let s = off + shift;
        return (ms + s).div_euclid(width) * width - s;
    }
    let local_day = (ms + off).div_euclid(DAY);
    let date = date_of(local_day);
    let month0 = i64::from(u8::from(date.month())) - 1;
    let first = month0 - month0 % unit.months();
    month_start(i64::from(date.year()), first).map_or(0, |d| d * DAY - off)
}

/// The start of the bucket after the one starting at `start`; `i64::MAX`, after any range, when
/// that bucket would start past the year 9999.
pub fn bucket_next(start: i64, unit: Unit, tzo: i32) -> i64 {
    if let Some((width, _)) = unit.fixed() {
        return start + width;
    }
    let off = i64::from(tzo) * MINUTE;
    let date = date_of((start + off).div_euclid(DAY));
    let months = i64::from(date.year()) * 12 + i64::from(u8::from(date.month())) - 1;
    let next = months + unit.months();
    month_start(next.div_euclid(12), next.rem_euclid(12)).map_or(i64::MAX, |d| d * DAY - off)
}

fn date_of(unix_day: i64) -> Date {
    date_of_unix_day(unix_day).unwrap_or(Date::MIN)
}

/// Days since the Unix epoch of the first day of month `month0` (0-based) of `year`, for the
/// years the `time` crate knows (through 9999).
fn month_start(year: i64, month0: i64) -> Option<i64> {
    let month = Month::try_from(u8::try_from(month0 + 1).ok()?).ok()?;
    let date = Date::from_calendar_date(i32::try_from(year).ok()?, month, 1).ok()?;
    Some(unix_day_of(date))
}

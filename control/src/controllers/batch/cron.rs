//! Cron schedules as CronJobs write them: five fields (minute, hour, day of month, month, day of
//! week) of `*`, `?`, numbers, names (`jan`, `mon`), ranges, lists and `/steps`, or one of the
//! `@hourly`-style macros, read in a time zone. The rules are the ones Kubernetes inherits from
//! its cron library: when both day fields are restricted a time matches either of them; when
//! either is `*` (without a step) both must match.
//!
//! [`Schedule::next_after`] walks civil time in the zone, so a daily `30 2 * * *` fires once a
//! day through daylight-saving changes: a time the clocks skip fires at the first instant after
//! the gap, and a time the clocks repeat fires once, at its first occurrence.

use jiff::{
    Timestamp, ToSpan as _,
    civil::{DateTime, Time},
    tz::TimeZone,
};

/// One field's allowed values as a bit set, and whether it was written as an unstepped `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Field {
    bits: u64,
    star: bool,
}

impl Field {
    fn has(self, value: i8) -> bool {
        value >= 0 && self.bits & (1u64 << value) != 0
    }
}

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minute: Field,
    hour: Field,
    day: Field,
    month: Field,
    weekday: Field,
}

struct Bounds {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Bounds = Bounds { name: "minute", min: 0, max: 59, names: &[] };
const HOUR: Bounds = Bounds { name: "hour", min: 0, max: 23, names: &[] };
const DAY: Bounds = Bounds { name: "day of month", min: 1, max: 31, names: &[] };
const MONTH: Bounds = Bounds {
    name: "month",
    min: 1,
    max: 12,
    names: &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
};
// 7 is Sunday too, as in most crons.
const WEEKDAY: Bounds =
    Bounds { name: "day of week", min: 0, max: 7, names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"] };

fn value(text: &str, b: &Bounds) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = b.names.iter().position(|n| *n == lower) {
        return Ok(u32::try_from(i).unwrap_or(0) + if b.min == 1 { 1 } else { 0 });
    }
    let n: u32 = text.parse().map_err(|_| format!("failed to parse {} value \"{text}\"", b.name))?;
    if n < b.min || n > b.max {
        return Err(format!("{} value {n} is out of range {}-{}", b.name, b.min, b.max));
    }
    Ok(n)
}

fn field(text: &str, b: &Bounds) -> Result<Field, String> {
    let mut out = Field { bits: 0, star: false };
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 =
                    s.parse().map_err(|_| format!("failed to parse step \"{s}\" in \"{item}\""))?;
                if step == 0 {
                    return Err(format!("step of \"{item}\" must be at least 1"));
                }
                (r, Some(step))
            }
            None => (item, None),
        };
        let (low, high, star) = if range == "*" || range == "?" {
            (b.min, b.max, step.is_none_or(|s| s == 1))
        } else if let Some((l, h)) = range.split_once('-') {
            (value(l, b)?, value(h, b)?, false)
        } else {
            let v = value(range, b)?;
            // `5/15` means from 5 to the end in steps of 15.
            (v, if step.is_some() { b.max } else { v }, false)
        };
        if low > high {
            return Err(format!("{} range \"{range}\" runs backwards", b.name));
        }
        let mut v = low;
        while v <= high {
            out.bits |= 1u64 << v;
            v += step.unwrap_or(1);
        }
        out.star |= star;
    }
    Ok(out)
}

impl Schedule {
    /// Parses a schedule; the error says what is wrong, in words for a 422's cause.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        if text.starts_with("TZ=") || text.starts_with("CRON_TZ=") {
            return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
        }
        let expanded = match text.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => return Err(format!("unrecognized descriptor: {text}")),
            _ => text,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = parts[..] else {
            return Err(format!("expected exactly 5 fields, found {}: \"{text}\"", parts.len()));
        };
        let mut weekday = field(weekday, &WEEKDAY)?;
        if weekday.bits & (1 << 7) != 0 {
            weekday.bits = (weekday.bits & !(1 << 7)) | 1;
        }
        Ok(Schedule {
            minute: field(minute, &MINUTE)?,
            hour: field(hour, &HOUR)?,
            day: field(day, &DAY)?,
            month: field(month, &MONTH)?,
            weekday,
        })
    }

    fn day_matches(&self, t: DateTime) -> bool {
        let by_date = self.day.has(t.day());
        let by_weekday = self.weekday.has(t.weekday().to_sunday_zero_offset());
        if self.day.star || self.weekday.star { by_date && by_weekday } else { by_date || by_weekday }
    }

    /// The first time strictly after `after` that the schedule names, read in `zone`; `None` when
    /// there is none within five years (`0 0 30 2 *`).
    pub fn next_after(&self, after: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        let start = zone.to_datetime(after);
        let mut t = start.with().second(0).subsec_nanosecond(0).build().ok()?.checked_add(1.minute()).ok()?;
        let end_year = start.year().saturating_add(5);
        while t.year() <= end_year {
            if !self.month.has(t.month()) {
                t = t
                    .first_of_month()
                    .checked_add(1.month())
                    .ok()?
                    .with()
                    .time(Time::midnight())
                    .build()
                    .ok()?;
            } else if !self.day_matches(t) {
                t = t.date().tomorrow().ok()?.to_datetime(Time::midnight());
            } else if !self.hour.has(t.hour()) {
                t = t.with().minute(0).build().ok()?.checked_add(1.hour()).ok()?;
            } else if !self.minute.has(t.minute()) {
                t = t.checked_add(1.minute()).ok()?;
            } else {
                let at = zone.to_ambiguous_timestamp(t).compatible().ok()?;
                if at > after {
                    return Some(at);
                }
                // The first occurrence of a repeated hour lies before `after`: look further on.
                t = t.checked_add(1.minute()).ok()?;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn next(schedule: &str, after: &str, zone: &str) -> String {
        let zone = if zone == "UTC" { TimeZone::UTC } else { TimeZone::get(zone).expect("zone") };
        let s = Schedule::parse(schedule).expect("schedule");
        s.next_after(at(after), &zone).map(|t| t.to_string()).unwrap_or_default()
    }

    #[test]
    fn fields_lists_ranges_steps_and_names() {
        assert_eq!(next("* * * * *", "2026-01-01T00:00:30Z", "UTC"), "2026-01-01T00:01:00Z");
        assert_eq!(next("*/15 * * * *", "2026-01-01T00:16:00Z", "UTC"), "2026-01-01T00:30:00Z");
        assert_eq!(next("5/20 * * * *", "2026-01-01T00:26:00Z", "UTC"), "2026-01-01T00:45:00Z");
        assert_eq!(next("0 9-17/4 * * *", "2026-01-01T10:00:00Z", "UTC"), "2026-01-01T13:00:00Z");
        assert_eq!(next("0 0 1,15 * *", "2026-01-02T00:00:00Z", "UTC"), "2026-01-15T00:00:00Z");
        // 2026-01-01 is a Thursday.
        assert_eq!(next("30 8 * * mon-fri", "2026-01-02T09:00:00Z", "UTC"), "2026-01-05T08:30:00Z");
        assert_eq!(next("0 0 * * 7", "2026-01-01T00:00:00Z", "UTC"), "2026-01-04T00:00:00Z");
        assert_eq!(next("0 0 1 jun *", "2026-01-01T00:00:00Z", "UTC"), "2026-06-01T00:00:00Z");
        assert_eq!(next("@hourly", "2026-01-01T00:00:00Z", "UTC"), "2026-01-01T01:00:00Z");
        assert_eq!(next("@yearly", "2026-01-01T00:00:00Z", "UTC"), "2027-01-01T00:00:00Z");
    }

    #[test]
    fn restricted_day_fields_match_either_and_a_star_makes_both_count() {
        // The 13th or any Friday: Friday 2026-01-02 comes first.
        assert_eq!(next("0 0 13 * 5", "2026-01-01T00:00:00Z", "UTC"), "2026-01-02T00:00:00Z");
        // Every Friday only (the day field is `*`).
        assert_eq!(next("0 0 * * 5", "2026-01-03T00:00:00Z", "UTC"), "2026-01-09T00:00:00Z");
        // A stepped star is a restriction: odd days or Mondays.
        assert_eq!(next("0 0 */2 * 1", "2026-01-01T00:00:00Z", "UTC"), "2026-01-03T00:00:00Z");
        assert_eq!(next("0 0 29 2 *", "2026-03-01T00:00:00Z", "UTC"), "2028-02-29T00:00:00Z");
        let never = Schedule::parse("0 0 30 2 *").expect("parses");
        assert_eq!(never.next_after(at("2026-01-01T00:00:00Z"), &TimeZone::UTC), None);
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        // 09:00 in New York is 14:00 UTC in winter.
        assert_eq!(next("0 9 * * *", "2026-01-01T00:00:00Z", "America/New_York"), "2026-01-01T14:00:00Z");
        // 2026-03-08 02:30 does not exist there: it runs an hour on, at 03:30 EDT (07:30 UTC).
        assert_eq!(next("30 2 * * *", "2026-03-08T05:00:00Z", "America/New_York"), "2026-03-08T07:30:00Z");
        // 2026-11-01 01:30 happens twice: once only, at the first (EDT, 05:30 UTC).
        assert_eq!(next("30 1 * * *", "2026-11-01T04:00:00Z", "America/New_York"), "2026-11-01T05:30:00Z");
        assert_eq!(next("30 1 * * *", "2026-11-01T05:30:00Z", "America/New_York"), "2026-11-02T06:30:00Z");
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        for (bad, words) in [
            ("* * * *", "exactly 5 fields"),
            ("60 * * * *", "out of range"),
            ("* * 0 * *", "out of range"),
            ("*/0 * * * *", "at least 1"),
            ("5-1 * * * *", "backwards"),
            ("* * * foo *", "failed to parse month"),
            ("@every 5m", "unrecognized descriptor"),
            ("CRON_TZ=UTC * * * * *", "use timeZone field"),
        ] {
            let e = Schedule::parse(bad).expect_err(bad);
            assert!(e.contains(words), "{bad}: {e}");
        }
    }
}

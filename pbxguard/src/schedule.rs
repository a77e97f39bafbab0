//! Weekly schedules for the off-hours profile ("Mon-Fri 18:00-08:00", "Sat-Sun").
//!
//! Toll fraud peaks at night and at weekends, when nobody watches the PBX; during those
//! windows pbxguard applies stricter thresholds. Times are the host's local wall clock.

use std::fmt;

use chrono::{Datelike as _, NaiveDateTime, Timelike as _, Weekday};

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// One window: on each listed day from `start` to `end` (minutes since midnight); a window
/// whose end is not after its start runs past midnight into the next day.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Window {
    days: [bool; 7],
    start: u32,
    end: u32,
}

/// A set of weekly windows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    windows: Vec<Window>,
}

/// A window that could not be read; says what is accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "`{0}` is not a schedule window (expected e.g. \"Mon-Fri 18:00-08:00\", \"Sat,Sun\", \"daily 22:00-06:00\")"
)]
pub struct ScheduleError(pub String);

fn day(name: &str) -> Option<usize> {
    let name = name.to_ascii_lowercase();
    DAYS.iter()
        .position(|d| name.starts_with(d) && name.len() >= 3)
}

fn minutes(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

fn parse_days(text: &str) -> Option<[bool; 7]> {
    let mut days = [false; 7];
    if matches!(
        text.to_ascii_lowercase().as_str(),
        "daily" | "every" | "all"
    ) {
        return Some([true; 7]);
    }
    for part in text.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                let mut d = a;
                loop {
                    days[d] = true;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days[day(part)?] = true,
        }
    }
    Some(days)
}

impl Schedule {
    /// Parses windows like `Mon-Fri 18:00-08:00`; days alone mean the whole day.
    pub fn parse<S: AsRef<str>>(windows: &[S]) -> Result<Schedule, ScheduleError> {
        let mut out = Vec::new();
        for text in windows {
            let text = text.as_ref();
            let err = || ScheduleError(text.to_string());
            let mut parts = text.split_whitespace();
            let days = parse_days(parts.next().ok_or_else(err)?).ok_or_else(err)?;
            let (start, end) = match parts.next() {
                None => (0, 24 * 60),
                Some(range) => {
                    let (a, b) = range.split_once('-').ok_or_else(err)?;
                    (minutes(a).ok_or_else(err)?, minutes(b).ok_or_else(err)?)
                }
            };
            if parts.next().is_some() {
                return Err(err());
            }
            out.push(Window { days, start, end });
        }
        Ok(Schedule { windows: out })
    }

    /// Whether local wall time `at` falls in any window.
    pub fn contains(&self, at: NaiveDateTime) -> bool {
        let today = at.weekday().num_days_from_monday() as usize;
        let yesterday = (today + 6) % 7;
        let minute = at.hour() * 60 + at.minute();
        self.windows.iter().any(|w| {
            if w.start < w.end {
                w.days[today] && minute >= w.start && minute < w.end
            } else {
                (w.days[today] && minute >= w.start) || (w.days[yesterday] && minute < w.end)
            }
        })
    }

    /// Whether there are no windows.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, w) in self.windows.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let days: Vec<&str> = (0..7).filter(|d| w.days[*d]).map(|d| DAYS[d]).collect();
            write!(
                f,
                "{} {:02}:{:02}-{:02}:{:02}",
                days.join(","),
                w.start / 60,
                w.start % 60,
                w.end / 60,
                w.end % 60
            )?;
        }
        Ok(())
    }
}

/// Monday-first index, for tests and callers that build times.
pub fn weekday_index(day: Weekday) -> usize {
    day.num_days_from_monday() as usize
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, min, 0)
            .unwrap()
    }

    #[test]
    fn weekday_nights_wrap_past_midnight() {
        let s = Schedule::parse(&["Mon-Fri 18:00-08:00"]).unwrap();
        // 2026-11-23 is a Monday.
        assert!(!s.contains(at(2026, 11, 23, 12, 0)));
        assert!(s.contains(at(2026, 11, 23, 18, 0)));
        assert!(s.contains(at(2026, 11, 24, 7, 59)));
        assert!(!s.contains(at(2026, 11, 24, 8, 0)));
        // Friday night runs into Saturday morning, Sunday night does not (Sunday not listed).
        assert!(s.contains(at(2026, 11, 28, 3, 0)));
        assert!(!s.contains(at(2026, 11, 23, 3, 0)));
    }

    #[test]
    fn whole_days_and_lists() {
        let s = Schedule::parse(&["Sat,Sun", "daily 23:00-23:30"]).unwrap();
        assert!(s.contains(at(2026, 11, 28, 12, 0)));
        assert!(s.contains(at(2026, 11, 29, 23, 59)));
        assert!(s.contains(at(2026, 11, 25, 23, 10)));
        assert!(!s.contains(at(2026, 11, 25, 23, 30)));
        let wrap = Schedule::parse(&["Fri-Mon"]).unwrap();
        assert!(wrap.contains(at(2026, 11, 23, 1, 0)));
        assert!(!wrap.contains(at(2026, 11, 25, 1, 0)));
    }

    #[test]
    fn bad_windows_are_explained() {
        for bad in [
            "",
            "Someday",
            "Mon 25:00-26:00",
            "Mon 18:00",
            "Mon-Fri 18:00-08:00 extra",
            "Mo 1:00-2:00",
        ] {
            let err = Schedule::parse(&[bad]).unwrap_err();
            assert!(
                err.to_string().contains("Mon-Fri 18:00-08:00"),
                "{bad}: {err}"
            );
        }
    }
}

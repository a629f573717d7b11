//! Times and days as the viewer reads them: which local calendar day a message is on, the
//! conversation's day separators ("Today", "Yesterday", then dates), and a message's full date
//! and time (its hover title and what a screen reader says).
//!
//! In the browser the viewer's time zone and locale come from the platform (`Date`,
//! `Intl.DateTimeFormat`, whose formatters are made once); elsewhere (the server, unit tests)
//! days are UTC and dates ISO, which nothing shows: conversations render in the browser only.
//!
//! What names a day relative to today ("Today", "Yesterday", a list row's clock or date) reads
//! [`Today`], a signal that changes at the viewer's midnight (one timeout to the next one,
//! [`until_next_day`]), so an open page turns "Today" into "Yesterday" without waiting for
//! anything else to change.

use leptos::prelude::*;

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// The local calendar day of `ts_ms` (ms since the epoch), counted in days since 1970-01-01.
/// Two times are on the same day in the viewer's time zone exactly when these are equal.
pub fn local_day(ts_ms: i64) -> i64 {
    day_at(ts_ms, utc_offset_ms(ts_ms))
}

/// The day of `ts_ms` on a clock `ahead_ms` ahead of UTC.
fn day_at(ts_ms: i64, ahead_ms: i64) -> i64 {
    (ts_ms + ahead_ms).div_euclid(DAY_MS)
}

/// How long from `now_ms` until the next day starts on the viewer's clock, in ms (at least 1),
/// where `ahead(t)` is how far that clock is ahead of UTC at `t`. Midnight is taken with the
/// offset in force then, as daylight saving may change it overnight; where a change skips
/// midnight itself, the day starts at the change.
pub fn until_next_day(now_ms: i64, ahead: impl Fn(i64) -> i64) -> i64 {
    let next = day_at(now_ms, ahead(now_ms)) + 1;
    let by_today = next * DAY_MS - ahead(now_ms);
    let by_then = next * DAY_MS - ahead(by_today);
    let midnight = if by_then > now_ms && day_at(by_then, ahead(by_then)) >= next {
        by_then
    } else {
        by_today
    };
    (midnight - now_ms).max(1)
}

/// Today as [`local_day`] counts, kept current across midnight (`provide_today`).
#[derive(Clone, Copy)]
pub struct Today(RwSignal<i64>);

impl Today {
    /// Today; a reactive read, so what calls it runs again at midnight.
    pub fn get(self) -> i64 {
        self.0.get()
    }
}

/// Provides [`Today`]; in the browser, moves it on at every local midnight.
pub fn provide_today() {
    let day = RwSignal::new(today());
    provide_context(Today(day));
    #[cfg(feature = "hydrate")]
    follow_midnight(day);
}

pub fn use_today() -> Today {
    expect_context::<Today>()
}

/// Sets `day` to today at the next local midnight, and again at the one after.
#[cfg(feature = "hydrate")]
fn follow_midnight(day: RwSignal<i64>) {
    let wait = until_next_day(now_ms(), utc_offset_ms);
    set_timeout(
        move || {
            let now = today();
            if day.get_untracked() != now {
                day.set(now);
            }
            follow_midnight(day);
        },
        std::time::Duration::from_millis(wait.unsigned_abs()),
    );
}

/// Today, as [`local_day`] counts.
pub fn today() -> i64 {
    local_day(now_ms())
}

/// Whether a line at `ts` starts a day: it is the first (`previous` is `None`), or the line
/// before it, at `previous`, is on another day.
pub fn starts_day(previous: Option<i64>, ts: i64) -> bool {
    previous.map(local_day) != Some(local_day(ts))
}

/// What the day separator before a line at `ts` says on `today`: "Today", "Yesterday", or the
/// date ("Tuesday, December 1"; with the year when it is not this one).
pub fn day_label(ts: i64, today: i64) -> String {
    name_of_day(local_day(ts), ts, today)
}

/// [`day_label`] for a line at `ts` on `day`, seen on `today`.
fn name_of_day(day: i64, ts: i64, today: i64) -> String {
    match today - day {
        0 => "Today".to_owned(),
        1 => "Yesterday".to_owned(),
        _ => long_date(ts, same_year(ts, today)),
    }
}

/// `ts` as `<time datetime>` wants it: ISO 8601 in UTC (`2026-12-03T14:03:00.000Z`).
pub fn iso(ts_ms: i64) -> String {
    #[cfg(feature = "hydrate")]
    {
        if !valid(ts_ms) {
            return String::new();
        }
        String::from(js::date(ts_ms).to_iso_string())
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let (y, m, d) = civil(ts_ms.div_euclid(DAY_MS));
        let ms = ts_ms.rem_euclid(DAY_MS);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        )
    }
}

/// The full date and time, in the viewer's locale ("Thursday, December 3, 2026 at 2:03 PM").
pub fn full(ts_ms: i64) -> String {
    #[cfg(feature = "hydrate")]
    {
        js::format(js::Style::Full, ts_ms)
    }
    #[cfg(not(feature = "hydrate"))]
    {
        iso(ts_ms)
    }
}

fn long_date(ts_ms: i64, same_year: bool) -> String {
    #[cfg(feature = "hydrate")]
    {
        let style = if same_year {
            js::Style::Date
        } else {
            js::Style::DateYear
        };
        js::format(style, ts_ms)
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = same_year;
        let (y, m, d) = civil(local_day(ts_ms));
        format!("{y:04}-{m:02}-{d:02}")
    }
}

fn same_year(ts_ms: i64, today: i64) -> bool {
    #[cfg(feature = "hydrate")]
    {
        let _ = today;
        valid(ts_ms) && js::date(ts_ms).get_full_year() == js::date(now_ms()).get_full_year()
    }
    #[cfg(not(feature = "hydrate"))]
    {
        civil(local_day(ts_ms)).0 == civil(today).0
    }
}

fn now_ms() -> i64 {
    #[cfg(feature = "hydrate")]
    {
        js_sys::Date::now() as i64
    }
    #[cfg(not(feature = "hydrate"))]
    {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// How far the viewer's clock is ahead of UTC at `ts_ms`, in ms (daylight saving included).
fn utc_offset_ms(ts_ms: i64) -> i64 {
    #[cfg(feature = "hydrate")]
    {
        if !valid(ts_ms) {
            return 0;
        }
        // getTimezoneOffset is UTC minus local, in minutes.
        -(js::date(ts_ms).get_timezone_offset() as i64) * 60_000
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = ts_ms;
        0
    }
}

/// Within the range a JavaScript `Date` holds (±8.64e15 ms); outside it is an invalid date.
#[cfg(feature = "hydrate")]
fn valid(ts_ms: i64) -> bool {
    ts_ms.unsigned_abs() <= 8_640_000_000_000_000
}

/// The proleptic Gregorian (year, month, day) of a day counted from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
#[cfg(not(feature = "hydrate"))]
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(feature = "hydrate")]
mod js {
    //! `Date` and the three `Intl.DateTimeFormat`s, each made once (making one is the costly
    //! part of formatting).

    use js_sys::{Array, Date, Function, Intl, Object, Reflect};
    use wasm_bindgen::JsValue;

    #[derive(Clone, Copy)]
    pub enum Style {
        /// "Tuesday, December 1"
        Date,
        /// "Tuesday, December 1, 2025"
        DateYear,
        /// "Thursday, December 3, 2026 at 2:03 PM"
        Full,
    }

    pub fn date(ts_ms: i64) -> Date {
        Date::new(&JsValue::from_f64(ts_ms as f64))
    }

    fn options(pairs: &[(&str, &str)]) -> Object {
        let options = Object::new();
        for (key, value) in pairs {
            let _ = Reflect::set(&options, &(*key).into(), &(*value).into());
        }
        options
    }

    fn make(style: Style) -> Function {
        let options = match style {
            Style::Date => options(&[("weekday", "long"), ("month", "long"), ("day", "numeric")]),
            Style::DateYear => options(&[
                ("weekday", "long"),
                ("month", "long"),
                ("day", "numeric"),
                ("year", "numeric"),
            ]),
            Style::Full => options(&[("dateStyle", "full"), ("timeStyle", "short")]),
        };
        // No locales: the viewer's own.
        Intl::DateTimeFormat::new(&Array::new(), &options).format()
    }

    thread_local! {
        static FORMATS: [Function; 3] = [make(Style::Date), make(Style::DateYear), make(Style::Full)];
    }

    pub fn format(style: Style, ts_ms: i64) -> String {
        if !super::valid(ts_ms) {
            return String::new();
        }
        FORMATS.with(|formats| {
            formats[style as usize]
                .call1(&JsValue::UNDEFINED, &date(ts_ms))
                .ok()
                .and_then(|s| s.as_string())
                .unwrap_or_default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: i64 = DAY_MS;

    #[test]
    fn a_line_starts_a_day_when_the_one_before_is_on_another() {
        // Times in UTC (the tests' time zone).
        assert!(starts_day(None, 10 * D + 5));
        assert!(!starts_day(Some(10 * D + 5), 10 * D + 80_000));
        assert!(!starts_day(Some(10 * D), 11 * D - 1));
        assert!(starts_day(Some(11 * D - 1), 11 * D));
        assert!(starts_day(Some(11 * D), 13 * D));
        // Back on an earlier day (a clock that went back): a day of its own again.
        assert!(starts_day(Some(11 * D), 10 * D));
    }

    #[test]
    fn days_are_named_today_yesterday_then_by_date() {
        let today = local_day(1_764_770_000_000); // 2025-12-03
        assert_eq!(name_of_day(today, today * D, today), "Today");
        assert_eq!(name_of_day(today - 1, (today - 1) * D, today), "Yesterday");
        assert_eq!(name_of_day(today - 2, (today - 2) * D, today), "2025-12-01");
        // A time ahead of the viewer's clock is named by its date, never "Today".
        assert_eq!(name_of_day(today + 1, (today + 1) * D, today), "2025-12-04");
        assert_eq!(day_label(0, today), "1970-01-01");
    }

    const H: i64 = 3_600_000;

    #[test]
    fn a_day_is_counted_on_the_viewers_clock() {
        // 23:30 UTC is already the next day nine hours east, and still that day five hours west.
        assert_eq!(day_at(10 * D + 23 * H + 30 * 60_000, 9 * H), 11);
        assert_eq!(day_at(10 * D + 23 * H, -5 * H), 10);
        assert_eq!(day_at(10 * D + 2 * H, -5 * H), 9);
        assert_eq!(day_at(10 * D, 0), 10);
        assert_eq!(day_at(10 * D - 1, 0), 9);
    }

    #[test]
    fn the_next_day_starts_at_the_viewers_midnight() {
        let utc = |_| 0;
        assert_eq!(until_next_day(10 * D + 5, utc), D - 5);
        assert_eq!(until_next_day(10 * D, utc), D, "at midnight: the next one");
        assert_eq!(until_next_day(11 * D - 1, utc), 1);
        // Nine hours east: 14:00 UTC is 23:00 there.
        assert_eq!(until_next_day(10 * D + 14 * H, |_| 9 * H), H);
        // Five hours west: 03:00 UTC is 22:00 the day before there.
        assert_eq!(until_next_day(10 * D + 3 * H, |_| -5 * H), 2 * H);
    }

    #[test]
    fn a_clock_change_overnight_moves_midnight() {
        // At 02:00 (UTC+1 until then) the clock goes back to UTC+0: a usual night's midnight
        // is still by UTC+1.
        let change = 11 * D + H;
        let ahead = move |t: i64| if t < change { H } else { 0 };
        assert_eq!(until_next_day(10 * D + 22 * H, ahead), H);
        // The clock goes back at midnight itself (00:00 UTC+1 becomes 23:00 UTC+0): the day
        // starts an hour later.
        let change = 11 * D - H;
        let back = move |t: i64| if t < change { H } else { 0 };
        assert_eq!(until_next_day(change - 30 * 60_000, back), 90 * 60_000);
        // The clock goes forward at midnight (00:00 UTC+0 becomes 01:00 UTC+1): midnight never
        // comes, the day starts at the change.
        let change = 11 * D;
        let forward = move |t: i64| if t < change { 0 } else { H };
        assert_eq!(until_next_day(change - 30 * 60_000, forward), 30 * 60_000);
    }

    #[test]
    fn iso_times_are_utc_with_milliseconds() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(1_764_770_580_123), "2025-12-03T14:03:00.123Z");
        assert_eq!(iso(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(-1), (1969, 12, 31));
        assert_eq!(civil(19_417), (2023, 3, 1)); // after a February of 28 days
        assert_eq!(civil(11_016), (2000, 2, 29));
    }
}

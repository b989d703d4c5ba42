//! Cron expressions read in IANA timezones, and what a claim does with a due
//! schedule (SCH-7).
//!
//! Occurrences come from croner, so daylight-saving changes follow its
//! documented rule. A *fixed-time* expression has one value in each of the
//! second, minute and hour fields (`30 2 * * *`); anything else (`*`, a step,
//! a range or a list in any of them) is an *interval* expression.
//! - A wall-clock time skipped when clocks go forward: a fixed-time expression
//!   fires at the first instant after the gap, on the same day; an interval
//!   expression skips the times in the gap and carries on from the new wall
//!   clock.
//! - A wall-clock time that happens twice when clocks go back: a fixed-time
//!   expression fires only at its first occurrence; an interval expression
//!   fires at every matching time in both passes.
//!
//! Croner accepts more than the contract of `Schedule.cron_expression`
//! (nicknames, a year field, `L`, `W`, `#`, `?`, `+`, names in any field), so
//! an expression is checked against the contract before croner reads it.

use std::time::Duration;

use agentmesh_proto::scheduler::v1::{CatchUpPolicy, RunTrigger};
use chrono::{DateTime, TimeDelta, Timelike, Utc};
use chrono_tz::Tz;
use croner::{
    Cron,
    parser::{CronParser, Seconds, Year},
};

use crate::store::{DueSchedule, Plan};

/// The longest cron expression accepted, in characters.
pub const MAX_EXPRESSION_LEN: usize = 256;

/// How long a schedule whose timetable cannot be read waits before the claim
/// looks at it again.
pub const BAD_TIMETABLE_RETRY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TimetableError {
    #[error("cron_expression: {0}")]
    Expression(String),
    #[error("timezone: {0}")]
    Timezone(String),
}

impl TimetableError {
    /// The request field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            TimetableError::Expression(_) => "cron_expression",
            TimetableError::Timezone(_) => "timezone",
        }
    }

    /// What is wrong with the field, for humans.
    pub fn problem(&self) -> &str {
        match self {
            TimetableError::Expression(problem) | TimetableError::Timezone(problem) => problem,
        }
    }
}

/// A parsed cron expression in its timezone.
#[derive(Debug, Clone)]
pub struct Timetable {
    cron: Cron,
    timezone: Tz,
}

impl Timetable {
    /// Reads `expression` in `timezone` ("" is UTC), or says which of the
    /// two is wrong and why.
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, TimetableError> {
        check_contract(expression).map_err(TimetableError::Expression)?;
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            // Vixie cron: when both day fields are restricted, either may match.
            .dom_and_dow(false)
            .build()
            .parse(expression)
            .map_err(|error| TimetableError::Expression(error.to_string()))?;
        let timezone = normalize_timezone(timezone).parse::<Tz>().map_err(|_| {
            TimetableError::Timezone(format!("\"{timezone}\" is not an IANA timezone name such as \"Europe/Berlin\""))
        })?;
        Ok(Self { cron, timezone })
    }

    /// The first occurrence strictly after `after`; None if there is none (e.g. Feb 30).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Croner reports "no match before its search limit" as an error; every
        // error of a search on a valid instant means there is no occurrence.
        let local = after.with_timezone(&self.timezone);
        self.cron.find_next_occurrence(&local, false).ok().map(|next| next.with_timezone(&Utc))
    }

    /// The latest occurrence `t` with `from <= t <= until`, if any.
    pub fn latest_between(&self, from: DateTime<Utc>, until: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if from > until {
            return None;
        }
        // Asking forwards first bounds the backward search: without an
        // occurrence in the window, croner would search back for centuries
        // for an expression that matches rarely or never.
        if self.first_at_or_after(from)? > until {
            return None;
        }
        let local = until.with_timezone(&self.timezone);
        self.cron.find_previous_occurrence(&local, true).ok().map(|latest| latest.with_timezone(&Utc))
    }

    /// Whether `at` is one of the expression's occurrences (and not, say, a
    /// retry time set while the timetable could not be read).
    fn occurs_at(&self, at: DateTime<Utc>) -> bool {
        self.first_at_or_after(at) == Some(at)
    }

    fn first_at_or_after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Croner drops sub-seconds, so an inclusive search from 10:00:00.5
        // would return 10:00:00; occurrences fall on whole seconds, so the
        // next one strictly after such an instant is the first at or after it.
        if at.nanosecond() != 0 {
            return self.next_after(at);
        }
        let local = at.with_timezone(&self.timezone);
        self.cron.find_next_occurrence(&local, true).ok().map(|first| first.with_timezone(&Utc))
    }
}

/// "" → "UTC"; otherwise the name as given (after validation by `parse`).
pub fn normalize_timezone(timezone: &str) -> &str {
    if timezone.is_empty() { "UTC" } else { timezone }
}

/// What the claim does with a due schedule (SCH-7, catch-up policy);
/// `due.next_run_at <= now`.
///
/// Within `grace` of its due time a run is SCHEDULED at that time, and the
/// schedule moves to the following occurrence (which may itself be due; the
/// next claim takes it). Later than that, the times are missed: SKIP_MISSED
/// drops them and FIRE_ONCE makes one CATCH_UP run at the latest of them;
/// either way the schedule continues from `now`. A timetable that cannot be
/// read, or that has no next occurrence, keeps the schedule in place and asks
/// again after [`BAD_TIMETABLE_RETRY`].
pub fn plan(due: &DueSchedule, now: DateTime<Utc>, grace: Duration) -> Plan {
    let timetable = match Timetable::parse(&due.cron_expression, &due.timezone) {
        Ok(timetable) => timetable,
        Err(error) => return retry_later(now, error.to_string()),
    };
    let grace = TimeDelta::from_std(grace).unwrap_or(TimeDelta::MAX);
    let on_time = now.signed_duration_since(due.next_run_at) <= grace;

    let (run, next) = if on_time {
        // A due time left by a retry is not on the timetable: firing at it
        // would invent a run the expression never asked for.
        let run = timetable.occurs_at(due.next_run_at).then_some((RunTrigger::Scheduled, due.next_run_at));
        (run, timetable.next_after(due.next_run_at))
    } else {
        let run = match due.catch_up_policy {
            CatchUpPolicy::FireOnce => {
                timetable.latest_between(due.next_run_at, now).map(|missed| (RunTrigger::CatchUp, missed))
            }
            CatchUpPolicy::SkipMissed | CatchUpPolicy::Unspecified => None,
        };
        (run, timetable.next_after(now))
    };

    match next {
        Some(next_run_at) => Plan { run, next_run_at, error: None },
        None => retry_later(
            now,
            TimetableError::Expression(format!("matches no time after {}", now.to_rfc3339())).to_string(),
        ),
    }
}

fn retry_later(now: DateTime<Utc>, problem: String) -> Plan {
    Plan { run: None, next_run_at: now + BAD_TIMETABLE_RETRY, error: Some(problem) }
}

/// The fields a cron nickname stands for, to suggest in its place.
fn nickname_fields(nickname: &str) -> Option<&'static str> {
    Some(match nickname.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => return None,
    })
}

/// Checks `expression` against the contract of `Schedule.cron_expression`:
/// its length, 5 or 6 fields, and in each field only `*`, values in range
/// (names where the field takes them), ranges, lists and steps.
fn check_contract(expression: &str) -> Result<(), String> {
    let length = expression.chars().count();
    if length > MAX_EXPRESSION_LEN {
        return Err(format!("is {length} characters long; at most {MAX_EXPRESSION_LEN} are allowed"));
    }
    let texts: Vec<&str> = expression.split_whitespace().collect();
    if texts.is_empty() {
        return Err("is empty".to_owned());
    }
    if texts[0].starts_with('@') {
        return Err(match nickname_fields(texts[0]) {
            Some(fields) => format!("nicknames such as \"{}\" are not supported; write \"{fields}\"", texts[0]),
            None => format!("\"{}\" is not a cron field; write the 5 or 6 fields out", texts[0]),
        });
    }
    let fields = match texts.len() {
        6 => &FIELDS[..],
        5 => &FIELDS[1..],
        count => {
            return Err(format!(
                "has {count} fields; expected 5 (minute hour day-of-month month day-of-week) or 6 (with seconds first)"
            ));
        }
    };
    for (field, text) in fields.iter().zip(texts) {
        field.check(text).map_err(|problem| format!("{} field \"{text}\": {problem}", field.name))?;
    }
    Ok(())
}

/// One field of an expression, as the contract defines it.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names of the values from `min` on, if the field takes names.
    names: &'static [&'static str],
}

const FIELDS: [Field; 6] = [
    Field { name: "second", min: 0, max: 59, names: &[] },
    Field { name: "minute", min: 0, max: 59, names: &[] },
    Field { name: "hour", min: 0, max: 23, names: &[] },
    Field { name: "day-of-month", min: 1, max: 31, names: &[] },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
    },
    // 7 is Sunday as well as 0.
    Field { name: "day-of-week", min: 0, max: 7, names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"] },
];

/// Characters of croner's extensions, which the contract leaves out.
const EXTENSIONS: [char; 5] = ['L', 'W', '#', '?', '+'];

impl Field {
    fn check(&self, text: &str) -> Result<(), String> {
        if text == "*" {
            return Ok(());
        }
        for item in text.split(',') {
            self.check_item(item)?;
        }
        Ok(())
    }

    /// One list item: `*/n`, `a`, `a-b` or `a-b/n`.
    fn check_item(&self, item: &str) -> Result<(), String> {
        if item.is_empty() {
            return Err("a list item is empty".to_owned());
        }
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => (base, Some(step)),
            None => (item, None),
        };
        if let Some(step) = step {
            match step.parse::<u32>() {
                Ok(0) => return Err("a step must be at least 1".to_owned()),
                Ok(_) => {}
                Err(_) => return Err(format!("the step \"{step}\" is not a number")),
            }
        }
        if base == "*" {
            return match step {
                Some(_) => Ok(()),
                None => Err("`*` stands alone, or with a step as `*/n`".to_owned()),
            };
        }
        match base.split_once('-') {
            Some((low, high)) => {
                let low = self.value(low, false)?;
                let high = self.value(high, true)?;
                if low > high {
                    return Err(format!("the range {base} runs backwards"));
                }
                Ok(())
            }
            None if step.is_some() => Err(format!("a step applies to `*` or a range `a-b`, not to \"{base}\"")),
            None => self.value(base, false).map(|_| ()),
        }
    }

    fn value(&self, text: &str, ends_range: bool) -> Result<u32, String> {
        if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
            return match text.parse::<u32>() {
                Ok(value) if (self.min..=self.max).contains(&value) => Ok(value),
                _ => Err(format!("{text} is out of range {}-{}", self.min, self.max)),
            };
        }
        if let Some(index) = self.names.iter().position(|name| name.eq_ignore_ascii_case(text)) {
            let value = self.min + u32::try_from(index).expect("a field has at most 12 names");
            // Croner reads SUN at the end of a range as 7, so FRI-SUN is Friday to Sunday.
            return Ok(if ends_range && self.name == "day-of-week" && value == 0 { 7 } else { value });
        }
        if text.to_ascii_uppercase().contains(EXTENSIONS) {
            return Err("the extensions `L`, `W`, `#`, `?` and `+` are not supported".to_owned());
        }
        match (self.names.first(), self.names.last()) {
            (Some(first), Some(last)) => Err(format!("\"{text}\" is neither a number nor a name {first}-{last}")),
            _ => Err(format!("\"{text}\" is not a number")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use uuid::Uuid;

    use super::*;

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).expect("test times are valid RFC 3339").with_timezone(&Utc)
    }

    fn timetable(expression: &str, timezone: &str) -> Timetable {
        Timetable::parse(expression, timezone).expect("the test expression parses")
    }

    /// The first `count` occurrences after `after`, in UTC.
    fn occurrences(timetable: &Timetable, after: &str, count: usize) -> Vec<DateTime<Utc>> {
        let mut cursor = at(after);
        (0..count)
            .map(|_| {
                cursor = timetable.next_after(cursor).expect("the test expression keeps matching");
                cursor
            })
            .collect()
    }

    fn times(rfc3339: &[&str]) -> Vec<DateTime<Utc>> {
        rfc3339.iter().map(|text| at(text)).collect()
    }

    fn expression_problem(expression: &str) -> String {
        match Timetable::parse(expression, "UTC") {
            Err(error @ TimetableError::Expression(_)) => {
                assert_eq!(error.field(), "cron_expression");
                error.problem().to_owned()
            }
            other => panic!("{expression:?} should be a bad expression, got {other:?}"),
        }
    }

    #[test]
    fn five_fields_fire_on_whole_minutes() {
        let every_quarter = timetable("*/15 * * * *", "");
        assert_eq!(
            occurrences(&every_quarter, "2026-05-04T10:07:30Z", 3),
            times(&["2026-05-04T10:15:00Z", "2026-05-04T10:30:00Z", "2026-05-04T10:45:00Z"])
        );
    }

    #[test]
    fn six_fields_put_seconds_first() {
        let twice_a_minute = timetable("10,40 * * * * *", "");
        assert_eq!(
            occurrences(&twice_a_minute, "2026-05-04T10:00:10Z", 3),
            times(&["2026-05-04T10:00:40Z", "2026-05-04T10:01:10Z", "2026-05-04T10:01:40Z"])
        );
        let ranged_step = timetable("0 0 9-17/4 * * *", "");
        assert_eq!(
            occurrences(&ranged_step, "2026-05-04T00:00:00Z", 3),
            times(&["2026-05-04T09:00:00Z", "2026-05-04T13:00:00Z", "2026-05-04T17:00:00Z"])
        );
    }

    #[test]
    fn month_and_weekday_names_mean_their_numbers() {
        let start = "2026-01-01T00:00:00Z";
        let by_name = timetable("0 12 * jan-MAR,Dec MON-fri", "");
        let by_number = timetable("0 12 * 1-3,12 1-5", "");
        assert_eq!(occurrences(&by_name, start, 80), occurrences(&by_number, start, 80));
        // SUN closing a range is 7, so the range runs to the end of the week.
        let weekend = timetable("0 12 * * SAT-SUN", "");
        assert_eq!(
            occurrences(&weekend, "2026-05-04T00:00:00Z", 2),
            times(&["2026-05-09T12:00:00Z", "2026-05-10T12:00:00Z"])
        );
    }

    #[test]
    fn zero_and_seven_are_both_sunday() {
        let start = "2026-05-04T00:00:00Z";
        let sundays = times(&["2026-05-10T08:00:00Z", "2026-05-17T08:00:00Z"]);
        assert_eq!(occurrences(&timetable("0 8 * * 0", ""), start, 2), sundays);
        assert_eq!(occurrences(&timetable("0 8 * * 7", ""), start, 2), sundays);
        assert_eq!(occurrences(&timetable("0 8 * * SUN", ""), start, 2), sundays);
    }

    #[test]
    fn either_restricted_day_field_is_enough() {
        // April 2026: Fridays are the 3rd, 10th, 17th and 24th; the 13th is a Monday.
        let start = "2026-04-01T00:00:00Z";
        assert_eq!(
            occurrences(&timetable("0 0 13 * FRI", ""), start, 5),
            times(&[
                "2026-04-03T00:00:00Z",
                "2026-04-10T00:00:00Z",
                "2026-04-13T00:00:00Z",
                "2026-04-17T00:00:00Z",
                "2026-04-24T00:00:00Z",
            ])
        );
        // A `*` day field does not match every day: the other field decides.
        assert_eq!(
            occurrences(&timetable("0 0 13 * *", ""), start, 2),
            times(&["2026-04-13T00:00:00Z", "2026-05-13T00:00:00Z"])
        );
        assert_eq!(
            occurrences(&timetable("0 0 * * FRI", ""), start, 2),
            times(&["2026-04-03T00:00:00Z", "2026-04-10T00:00:00Z"])
        );
    }

    #[test]
    fn rejects_expressions_outside_the_contract() {
        assert_eq!(expression_problem(""), "is empty");
        assert_eq!(expression_problem("   "), "is empty");
        assert!(expression_problem("* * * *").starts_with("has 4 fields"));
        assert!(expression_problem("0 0 0 1 1 * 2027").starts_with("has 7 fields"));
        assert_eq!(expression_problem("61 * * * * *"), "second field \"61\": 61 is out of range 0-59");
        assert!(expression_problem("@hourly").ends_with("write \"0 * * * *\""));
        // Each nickname suggests what it stands for.
        assert!(expression_problem("@daily").ends_with("write \"0 0 * * *\""), "{}", expression_problem("@daily"));
        assert!(expression_problem("@WEEKLY").ends_with("write \"0 0 * * 0\""));
        assert!(expression_problem("@reboot").contains("write the 5 or 6 fields out"));
        assert!(expression_problem("@yearly").contains("nicknames"));
        for extension in ["0 0 L * *", "0 0 15W * *", "0 0 * * 5#2", "0 0 * * 5L", "0 0 ? * MON", "0 0 1 * +MON"] {
            assert!(expression_problem(extension).contains("not supported"), "{extension}");
        }
        assert_eq!(expression_problem("* 24 * * *"), "hour field \"24\": 24 is out of range 0-23");
        assert_eq!(expression_problem("0 0 0 * *"), "day-of-month field \"0\": 0 is out of range 1-31");
        assert_eq!(expression_problem("0 0 * 13 *"), "month field \"13\": 13 is out of range 1-12");
        assert_eq!(expression_problem("0 0 * * 8"), "day-of-week field \"8\": 8 is out of range 0-7");
        assert!(expression_problem("5-1 * * * *").contains("runs backwards"));
        assert!(expression_problem("*/0 * * * *").contains("at least 1"));
        assert!(expression_problem("5/15 * * * *").contains("a step applies to"));
        assert!(expression_problem("1,,2 * * * *").contains("empty"));
        assert!(expression_problem("*,5 * * * *").contains("stands alone"));
        // Names only where the contract allows them.
        assert_eq!(expression_problem("MON * * * *"), "minute field \"MON\": \"MON\" is not a number");
        assert!(expression_problem("0 0 * MON *").contains("neither a number nor a name JAN-DEC"));
        assert!(expression_problem("0 0 * * JAN").contains("neither a number nor a name SUN-SAT"));
        assert!(expression_problem("0 0 * * MONDAY").contains("neither a number nor a name SUN-SAT"));
    }

    #[test]
    fn limits_the_expression_to_256_characters() {
        // "00" and 123 more ",0" make a 248-character minute field.
        let minutes = format!("00{}", ",0".repeat(123));
        let longest = format!("{minutes} * * * *");
        assert_eq!(longest.chars().count(), MAX_EXPRESSION_LEN);
        assert!(Timetable::parse(&longest, "").is_ok());
        let too_long = format!("0{longest}");
        assert_eq!(expression_problem(&too_long), "is 257 characters long; at most 256 are allowed");
    }

    #[test]
    fn timezones_are_case_sensitive_iana_names() {
        for bad in ["CEST", "+02:00", "local", "europe/berlin", "Mars/Olympus", " UTC"] {
            match Timetable::parse("* * * * *", bad) {
                Err(error @ TimetableError::Timezone(_)) => {
                    assert_eq!(error.field(), "timezone");
                    assert_eq!(
                        error.problem(),
                        format!("\"{bad}\" is not an IANA timezone name such as \"Europe/Berlin\"")
                    );
                    assert_eq!(error.to_string(), format!("timezone: {}", error.problem()));
                }
                other => panic!("{bad:?} should be a bad timezone, got {other:?}"),
            }
        }
        for good in ["UTC", "Europe/Berlin", "America/New_York", "Etc/GMT+2"] {
            assert!(Timetable::parse("* * * * *", good).is_ok(), "{good}");
        }
    }

    #[test]
    fn an_empty_timezone_is_utc() {
        assert_eq!(normalize_timezone(""), "UTC");
        assert_eq!(normalize_timezone("Asia/Tokyo"), "Asia/Tokyo");
        let noon = timetable("0 12 * * *", "");
        assert_eq!(occurrences(&noon, "2026-05-04T00:00:00Z", 1), times(&["2026-05-04T12:00:00Z"]));
        let tokyo_noon = timetable("0 12 * * *", "Asia/Tokyo");
        assert_eq!(occurrences(&tokyo_noon, "2026-05-04T00:00:00Z", 1), times(&["2026-05-04T03:00:00Z"]));
    }

    #[test]
    fn an_expression_that_never_matches_has_no_next_occurrence() {
        let february_30 = timetable("0 0 30 2 *", "");
        assert_eq!(february_30.next_after(at("2026-01-01T00:00:00Z")), None);
        assert_eq!(february_30.latest_between(at("2026-01-01T00:00:00Z"), at("2026-12-31T00:00:00Z")), None);
    }

    // Daylight saving, as croner's README documents it ("Daylight Saving Time
    // (DST) Handling"). Fixed-time jobs have one value in each of second,
    // minute and hour; all others are interval/wildcard jobs.
    // - Gap: "Fixed-Time Jobs: Will execute at the first valid second/minute
    //   immediately following the gap on the same calendar day."
    //   "Interval/Wildcard Jobs: Occurrences within the gap are skipped."
    // - Overlap: "Fixed-Time Jobs: Will execute only once, at its first
    //   occurrence in wall clock time." "Interval/Wildcard Jobs: Will execute
    //   for each occurrence that matches its pattern in wall clock time
    //   within the duplicated hour."

    #[test]
    fn a_daily_time_in_the_spring_gap_fires_right_after_it() {
        // Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST, so 02:30 never
        // happens; the job runs at 03:00 CEST (01:00 UTC) and at 02:30 CEST
        // from the next day on.
        let berlin = timetable("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            occurrences(&berlin, "2026-03-27T12:00:00Z", 3),
            times(&["2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"])
        );
        // New York, 2026-03-08: 02:00 EST becomes 03:00 EDT; 03:00 EDT is 07:00 UTC.
        let new_york = timetable("30 2 * * *", "America/New_York");
        assert_eq!(
            occurrences(&new_york, "2026-03-06T12:00:00Z", 3),
            times(&["2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"])
        );
        // "The first valid second": a time with seconds also runs at 03:00:00.
        let with_seconds = timetable("15 30 2 * * *", "Europe/Berlin");
        assert_eq!(occurrences(&with_seconds, "2026-03-28T12:00:00Z", 1), times(&["2026-03-29T01:00:00Z"]));
    }

    #[test]
    fn interval_times_in_the_spring_gap_are_skipped() {
        // Berlin: from 01:30 CET (00:30 UTC) the next half hour is 03:00 CEST
        // (01:00 UTC); 02:00 and 02:30 do not happen.
        let half_hourly = timetable("*/30 * * * *", "Europe/Berlin");
        assert_eq!(
            occurrences(&half_hourly, "2026-03-29T00:00:00Z", 3),
            times(&["2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z"])
        );
        // A list in the hour field makes an interval job: its 02:30 is
        // skipped on the transition day, not moved.
        let twice_daily = timetable("30 2,14 * * *", "Europe/Berlin");
        assert_eq!(
            occurrences(&twice_daily, "2026-03-28T12:00:00Z", 3),
            times(&["2026-03-28T13:30:00Z", "2026-03-29T12:30:00Z", "2026-03-30T00:30:00Z"])
        );
        // Per second, time keeps flowing: the second after 01:59:59 CET is 03:00:00 CEST.
        let every_second = timetable("* * * * * *", "Europe/Berlin");
        assert_eq!(occurrences(&every_second, "2026-03-29T00:59:59Z", 1), times(&["2026-03-29T01:00:00Z"]));
    }

    #[test]
    fn a_daily_time_in_the_repeated_hour_fires_once_at_its_first_occurrence() {
        // Berlin, 2026-10-25: 03:00 CEST goes back to 02:00 CET, so 02:30
        // happens at 00:30 UTC and again at 01:30 UTC; only the first runs.
        let berlin = timetable("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            occurrences(&berlin, "2026-10-24T12:00:00Z", 2),
            times(&["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"])
        );
        // New York, 2026-11-01: 02:00 EDT goes back to 01:00 EST, so 02:30
        // happens once (EST, 07:30 UTC) and 01:30 twice (05:30 and 06:30 UTC).
        let new_york = timetable("30 2 * * *", "America/New_York");
        assert_eq!(
            occurrences(&new_york, "2026-10-31T12:00:00Z", 2),
            times(&["2026-11-01T07:30:00Z", "2026-11-02T07:30:00Z"])
        );
        let new_york_repeated = timetable("30 1 * * *", "America/New_York");
        assert_eq!(
            occurrences(&new_york_repeated, "2026-10-31T12:00:00Z", 2),
            times(&["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"])
        );
    }

    #[test]
    fn interval_times_in_the_repeated_hour_fire_in_both_passes() {
        let half_hourly = timetable("*/30 * * * *", "Europe/Berlin");
        assert_eq!(
            occurrences(&half_hourly, "2026-10-24T23:15:00Z", 5),
            times(&[
                "2026-10-24T23:30:00Z", // 01:30 CEST
                "2026-10-25T00:00:00Z", // 02:00 CEST
                "2026-10-25T00:30:00Z", // 02:30 CEST
                "2026-10-25T01:00:00Z", // 02:00 CET
                "2026-10-25T01:30:00Z", // 02:30 CET
            ])
        );
        let every_second = timetable("* * * * * *", "Europe/Berlin");
        assert_eq!(occurrences(&every_second, "2026-10-25T00:59:59Z", 1), times(&["2026-10-25T01:00:00Z"]));
    }

    #[test]
    fn latest_between_is_quick_for_a_per_second_expression_over_days() {
        let every_second = timetable("* * * * * *", "Europe/Berlin");
        let started = Instant::now();
        // Three days, across the spring change.
        let latest = every_second.latest_between(at("2026-03-27T00:00:00Z"), at("2026-03-30T00:00:00.750Z"));
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "took {:?}", started.elapsed());
        assert_eq!(latest, Some(at("2026-03-30T00:00:00Z")));
    }

    #[test]
    fn latest_between_keeps_to_the_window() {
        let daily = timetable("0 6 * * *", "");
        let latest = daily.latest_between(at("2026-05-01T00:00:00Z"), at("2026-05-04T05:59:59Z"));
        assert_eq!(latest, Some(at("2026-05-03T06:00:00Z")));
        // Both ends count.
        assert_eq!(
            daily.latest_between(at("2026-05-03T06:00:00Z"), at("2026-05-03T06:00:00Z")),
            Some(at("2026-05-03T06:00:00Z"))
        );
        // An occurrence just before a sub-second `from` is outside.
        assert_eq!(daily.latest_between(at("2026-05-03T06:00:00.001Z"), at("2026-05-04T05:59:59Z")), None);
        assert_eq!(daily.latest_between(at("2026-05-04T00:00:00Z"), at("2026-05-03T00:00:00Z")), None);
        // A moved gap time is found going backwards too.
        let berlin = timetable("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            berlin.latest_between(at("2026-03-28T12:00:00Z"), at("2026-03-29T12:00:00Z")),
            Some(at("2026-03-29T01:00:00Z"))
        );
    }

    const GRACE: Duration = Duration::from_secs(60);

    fn due(expression: &str, catch_up_policy: CatchUpPolicy, next_run_at: &str) -> DueSchedule {
        DueSchedule {
            id: Uuid::nil(),
            workspace_id: Uuid::nil(),
            cron_expression: expression.to_owned(),
            timezone: String::new(),
            catch_up_policy,
            next_run_at: at(next_run_at),
        }
    }

    #[test]
    fn plan_runs_a_schedule_on_time() {
        let hourly = due("0 * * * *", CatchUpPolicy::SkipMissed, "2026-05-04T10:00:00Z");
        assert_eq!(
            plan(&hourly, at("2026-05-04T10:00:00.200Z"), GRACE),
            Plan {
                run: Some((RunTrigger::Scheduled, at("2026-05-04T10:00:00Z"))),
                next_run_at: at("2026-05-04T11:00:00Z"),
                error: None,
            }
        );
    }

    #[test]
    fn plan_runs_a_late_schedule_within_grace_as_scheduled() {
        let hourly = due("0 * * * *", CatchUpPolicy::FireOnce, "2026-05-04T10:00:00Z");
        for now in ["2026-05-04T10:00:45Z", "2026-05-04T10:01:00Z"] {
            assert_eq!(
                plan(&hourly, at(now), GRACE),
                Plan {
                    run: Some((RunTrigger::Scheduled, at("2026-05-04T10:00:00Z"))),
                    next_run_at: at("2026-05-04T11:00:00Z"),
                    error: None,
                },
                "{now}"
            );
        }
        // The next time may be due already; the next claim takes it.
        let every_second = due("* * * * * *", CatchUpPolicy::SkipMissed, "2026-05-04T10:00:00Z");
        let planned = plan(&every_second, at("2026-05-04T10:00:05Z"), GRACE);
        assert_eq!(planned.run, Some((RunTrigger::Scheduled, at("2026-05-04T10:00:00Z"))));
        assert_eq!(planned.next_run_at, at("2026-05-04T10:00:01Z"));
    }

    #[test]
    fn plan_skips_missed_times() {
        for policy in [CatchUpPolicy::SkipMissed, CatchUpPolicy::Unspecified] {
            let hourly = due("0 * * * *", policy, "2026-05-04T10:00:00Z");
            assert_eq!(
                plan(&hourly, at("2026-05-04T13:20:00Z"), GRACE),
                Plan { run: None, next_run_at: at("2026-05-04T14:00:00Z"), error: None },
                "{policy:?}"
            );
        }
        // One second past the grace is missed.
        let hourly = due("0 * * * *", CatchUpPolicy::SkipMissed, "2026-05-04T10:00:00Z");
        assert_eq!(plan(&hourly, at("2026-05-04T10:01:01Z"), GRACE).run, None);
    }

    #[test]
    fn plan_fires_once_for_the_latest_missed_time() {
        let hourly = due("0 * * * *", CatchUpPolicy::FireOnce, "2026-05-04T10:00:00Z");
        assert_eq!(
            plan(&hourly, at("2026-05-04T13:20:00Z"), GRACE),
            Plan {
                run: Some((RunTrigger::CatchUp, at("2026-05-04T13:00:00Z"))),
                next_run_at: at("2026-05-04T14:00:00Z"),
                error: None,
            }
        );
    }

    #[test]
    fn plan_retries_a_poisoned_timetable_without_running() {
        let now = at("2026-05-04T13:20:00Z");
        let bad_expression = due("0 * * *", CatchUpPolicy::FireOnce, "2026-05-04T10:00:00Z");
        let planned = plan(&bad_expression, now, GRACE);
        assert_eq!(planned.run, None);
        assert_eq!(planned.next_run_at, at("2026-05-04T13:21:00Z"));
        assert!(planned.error.as_deref().is_some_and(|error| error.starts_with("cron_expression: has 4 fields")));

        let bad_timezone = DueSchedule {
            timezone: "Mars/Olympus".to_owned(),
            ..due("0 * * * *", CatchUpPolicy::FireOnce, "2026-05-04T13:00:00Z")
        };
        let planned = plan(&bad_timezone, now, GRACE);
        assert_eq!(planned.run, None);
        assert_eq!(planned.next_run_at, at("2026-05-04T13:21:00Z"));
        assert!(planned.error.as_deref().is_some_and(|error| error.starts_with("timezone: ")));

        let never = due("0 0 30 2 *", CatchUpPolicy::SkipMissed, "2026-05-04T13:20:00Z");
        let planned = plan(&never, now, GRACE);
        assert_eq!(planned.run, None);
        assert_eq!(planned.next_run_at, at("2026-05-04T13:21:00Z"));
        assert!(planned.error.as_deref().is_some_and(|error| error.contains("matches no time after")));
    }

    #[test]
    fn plan_does_not_fire_at_a_retry_time() {
        // A timetable readable again after a retry resumes at its own next
        // time, without a run at the retry time, which it never scheduled.
        let hourly = due("0 * * * *", CatchUpPolicy::SkipMissed, "2026-05-04T10:00:30Z");
        assert_eq!(
            plan(&hourly, at("2026-05-04T10:00:31Z"), GRACE),
            Plan { run: None, next_run_at: at("2026-05-04T11:00:00Z"), error: None }
        );
    }
}

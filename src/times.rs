//! Times as Feast's CLI and pandas accept them, for `tern materialize` windows and
//! pushed timestamp columns.

/// Parses a time as Feast's CLI accepts it (ISO 8601; naive is UTC) into epoch
/// microseconds.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "'{text}' is not a time (expected e.g. 2025-01-10T12:00:00, 2025-01-10, or with +00:00 / Z)"
        )
    };
    let t = text.trim();
    let (date, rest) = t.split_at(t.find(['T', ' ']).unwrap_or(t.len()));
    let rest = rest.trim_start_matches(['T', ' ']);
    let mut d = date.split('-');
    let (y, m, dd): (i64, u32, u32) = match (d.next(), d.next(), d.next(), d.next()) {
        (Some(y), Some(m), Some(dd), None) => (
            y.parse().map_err(|_| bad())?,
            m.parse().map_err(|_| bad())?,
            dd.parse().map_err(|_| bad())?,
        ),
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&dd) {
        return Err(bad());
    }
    // Time of day and offset.
    let (clock, offset_s) = if rest.is_empty() {
        ("", 0)
    } else if let Some(c) = rest.strip_suffix('Z') {
        (c, 0)
    } else if let Some(i) = rest.rfind(['+', '-']).filter(|i| *i >= 5) {
        let (c, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let mut hm = off[1..].split(':');
        let h: i64 = hm.next().and_then(|h| h.parse().ok()).ok_or_else(bad)?;
        let mi: i64 = hm.next().map_or(Ok(0), |x| x.parse().map_err(|_| bad()))?;
        (c, sign * (h * 3600 + mi * 60))
    } else {
        (rest, 0)
    };
    let mut parts = clock.split(':');
    let h: i64 = parts
        .next()
        .filter(|s| !s.is_empty())
        .map_or(Ok(0), |x| x.parse().map_err(|_| bad()))?;
    let mi: i64 = parts
        .next()
        .map_or(Ok(0), |x| x.parse().map_err(|_| bad()))?;
    let sec: f64 = parts
        .next()
        .map_or(Ok(0.0), |x| x.parse().map_err(|_| bad()))?;
    if h > 23 || mi > 59 || !(0.0..61.0).contains(&sec) {
        return Err(bad());
    }
    let days = days_from_civil(y, m, dd);
    let secs = days * 86_400 + h * 3600 + mi * 60 - offset_s;
    Ok(secs * 1_000_000 + (sec * 1_000_000.0).round() as i64)
}

// Howard Hinnant's civil-to-days algorithm.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Epoch seconds shown as `YYYY-MM-DDTHH:MM:SS` (UTC), as [`parse_time`] reads it back;
/// written straight into any formatter, with no string of its own.
#[derive(Debug, Clone, Copy)]
pub struct IsoUtc(pub i64);

impl std::fmt::Display for IsoUtc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (y, m, d) = civil_from_days(self.0.div_euclid(86_400));
        let s = self.0.rem_euclid(86_400);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    }
}

/// (year, month, day) of days since 1970-01-01 (Howard Hinnant's days-to-civil).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

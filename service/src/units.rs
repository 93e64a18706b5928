//! Sizes and durations as every setting writes them: a size with a binary suffix (`512`, `16K`, `256M`,
//! `1G`), a duration with a unit (`250ms`, `2s`, `1m`, `7d`, or `0`), so that the same setting has the same
//! units in every binary.
//!
//! Accepted forms, for `--help` texts and READMEs to quote:
//!
//! ```text
//! size      <digits>[suffix]   suffix: none or B (bytes), K KB KiB, M MB MiB, G GB GiB, T TB TiB
//!                              (binary multiples, any case): 0, 512, 16K, 256M, 1GiB
//! duration  <digits><unit>     unit: ms, s, m (minutes), h, d; 0 alone means zero: 250ms, 2s, 1m, 7d, 0
//! ```
//!
//! This module owns parsing, range checks and formatting of those two units. It does not know which
//! setting uses them, nor any default.

use std::time::Duration;

/// Parses a size in bytes: a number with an optional binary suffix (`K`, `M`, `G`, `T`, or `KB`/`KiB`...,
/// any case); a plain number is bytes. The error is one line.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let number: u64 = digits.parse().map_err(|_| format!("{text:?} is not a size such as 512K or 8M"))?;
    let multiplier: u64 = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(format!("{text:?} has an unknown size suffix; use K, M, G or T")),
    };
    number.checked_mul(multiplier).ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses a duration: a number with a unit `ms`, `s`, `m`, `h` or `d`; `0` alone means zero. A number
/// without a unit is refused, because whether it meant seconds or milliseconds cannot be known. The error
/// is one line.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 =
        digits.parse().map_err(|_| format!("{text:?} is not a duration such as 100ms or 30s"))?;
    let millis_per_unit: u64 = match unit.trim() {
        "" if number == 0 => 0,
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?} needs a unit: ms, s, m, h or d")),
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// A clap value parser for a size from `min` to `max` bytes inclusive; out of range is one line naming
/// both bounds.
pub fn size_between(
    min: u64,
    max: u64,
) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |text| {
        let size = parse_size(text)?;
        if (min..=max).contains(&size) {
            Ok(size)
        } else {
            Err(format!("{} is not between {} and {}", text.trim(), format_size(min), format_size(max)))
        }
    }
}

/// A clap value parser for a duration from `min` to `max` inclusive; out of range is one line naming
/// both bounds.
pub fn duration_between(
    min: Duration,
    max: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |text| {
        let duration = parse_duration(text)?;
        if (min..=max).contains(&duration) {
            Ok(duration)
        } else {
            Err(format!(
                "{} is not between {} and {}",
                text.trim(),
                format_duration(min),
                format_duration(max)
            ))
        }
    }
}

/// Writes a size the way [`parse_size`] reads it, in the largest suffix that divides it exactly (`8M`,
/// `1536K`, `100`).
pub fn format_size(bytes: u64) -> String {
    const SUFFIXES: [(u64, &str); 4] = [(1 << 40, "T"), (1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")];
    if bytes == 0 {
        return "0".to_string();
    }
    SUFFIXES
        .iter()
        .find(|(multiple, _)| bytes.is_multiple_of(*multiple))
        .map_or_else(|| bytes.to_string(), |(multiple, suffix)| format!("{}{suffix}", bytes / multiple))
}

/// Writes a duration the way [`parse_duration`] reads it, in the largest unit that divides it exactly
/// (`5s`, `1500ms`, `7d`); below a millisecond, as `Debug` writes it.
pub fn format_duration(duration: Duration) -> String {
    const UNITS: [(u128, &str); 5] =
        [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s"), (1, "ms")];
    if duration.is_zero() {
        return "0".to_string();
    }
    if !duration.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{duration:?}");
    }
    let millis = duration.as_millis();
    UNITS
        .iter()
        .find(|(multiple, _)| millis.is_multiple_of(*multiple))
        .map_or_else(|| format!("{millis}ms"), |(multiple, unit)| format!("{}{unit}", millis / multiple))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("16K").unwrap(), 16 << 10);
        assert_eq!(parse_size("256M").unwrap(), 256 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size(" 4 kb ").unwrap(), 4096);
        for bad in ["", "K", "1X", "-1", "1.5M", "99999999999T"] {
            let message = parse_size(bad).unwrap_err();
            assert!(!message.contains('\n'), "{message}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("3h").unwrap(), Duration::from_secs(3 * 3600));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(7 * 86_400));
        for bad in ["", "10", "1y", "ms", "1.5s", "-1s", "99999999999999999d"] {
            let message = parse_duration(bad).unwrap_err();
            assert!(!message.contains('\n'), "{message}");
        }
    }

    #[test]
    fn ranges_name_their_bounds() {
        let parse = duration_between(Duration::from_millis(50), Duration::from_secs(86_400));
        assert_eq!(parse("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse("50ms").unwrap(), Duration::from_millis(50));
        assert_eq!(parse("10ms").unwrap_err(), "10ms is not between 50ms and 1d");
        assert!(parse("2d").is_err());
        assert!(parse("soon").is_err());
        let parse = size_between(64 << 10, 64 << 20);
        assert_eq!(parse("8M").unwrap(), 8 << 20);
        assert_eq!(parse("1K").unwrap_err(), "1K is not between 64K and 64M");
    }

    #[test]
    fn formats_read_back() {
        for size in [0, 1, 100, 1024, 1536 * 1024, 8 << 20, 3 << 30, 2 << 40] {
            assert_eq!(parse_size(&format_size(size)).unwrap(), size);
        }
        assert_eq!(format_size(8 << 20), "8M");
        for millis in [0, 1, 250, 1_500, 5_000, 60_000, 90_000, 3_600_000, 7 * 86_400_000] {
            let duration = Duration::from_millis(millis);
            assert_eq!(parse_duration(&format_duration(duration)).unwrap(), duration);
        }
        assert_eq!(format_duration(Duration::from_millis(1_500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        assert_eq!(format_duration(Duration::from_micros(1_500)), "1.5ms");
    }
}

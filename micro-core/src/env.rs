//! How settings are written in environment variables (and flags): durations, sizes and
//! switches, read the same way by every crate, and the error that names a variable whose value
//! does not read.
//!
//! The functions only parse text; reading the environment is left to each `from_env`, so that
//! tests can hand them a map instead.

use std::time::Duration;

use crate::Error;

/// The error id of [`invalid`]: settings are read before any service has a name.
const ID: &str = "micro.config";

/// Reads a duration: `90` (seconds), `1.5s`, `500ms`, `2m`, `1h`, `10us` (or `10µs`), `100ns`.
///
/// The number may have a fraction, which is rounded to the nearest nanosecond, and a space may
/// stand before the unit. A sign, an exponent, an unknown unit or more than [`Duration::MAX`]
/// is `None`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    let nanos_per_unit: u128 = match unit.trim() {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "" | "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return None;
    }
    // Whole nanoseconds in integers rather than an f64 of seconds, so that long durations keep
    // every digit. Fraction digits past the 24th are worth less than a billionth of a
    // nanosecond even in hours: dropping them keeps the product below u128::MAX.
    let fraction = &fraction[..fraction.len().min(24)];
    let scale = 10u128.pow(fraction.len() as u32);
    let fraction_nanos = (digits(fraction)? * nanos_per_unit + scale / 2) / scale;
    let nanos = digits(whole)?
        .checked_mul(nanos_per_unit)?
        .checked_add(fraction_nanos)?;
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    let subsec_nanos = u32::try_from(nanos % 1_000_000_000).ok()?;
    Some(Duration::new(secs, subsec_nanos))
}

/// The value of a run of ASCII digits, 0 when there are none; `None` past `u128::MAX`.
fn digits(run: &str) -> Option<u128> {
    if run.is_empty() {
        return Some(0);
    }
    run.parse().ok()
}

/// Reads a size in bytes: `4194304`, `64K`, `64KiB`, `4M`, `4MiB`, `1G`, `1GiB`.
///
/// `K`, `M` and `G` are powers of 1024 however they are written (`k`, `KB`, `KiB`), and a space
/// may stand before them. A fraction, a sign, another unit or more than `usize::MAX` is `None`.
pub fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    let bytes_per_unit: usize = match unit.trim() {
        "" | "B" => 1,
        "K" | "k" | "KB" | "KiB" => 1 << 10,
        "M" | "m" | "MB" | "MiB" => 1 << 20,
        "G" | "g" | "GB" | "GiB" => 1 << 30,
        _ => return None,
    };
    number.parse::<usize>().ok()?.checked_mul(bytes_per_unit)
}

/// Reads a switch: `1`, `true`, `yes`, `on` or `0`, `false`, `no`, `off`, in any case.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// The 400 error, from `micro.config`, for a variable whose value does not read:
/// `MICRO_REGISTER_TTL="soon" is not a duration (like 90, 5s or 500ms)`.
///
/// `var` is the variable (or flag) as the user wrote it, and `expected` finishes the sentence
/// "... is not": say what to write instead.
pub fn invalid(var: &str, value: &str, expected: &str) -> Error {
    invalid_from(ID, var, value, expected)
}

/// [`invalid`], raised by `id` (a plugin's own error id, `micro.broker.nats`), so that the
/// error says which plugin read the variable.
pub fn invalid_from(id: &str, var: &str, value: &str, expected: &str) -> Error {
    Error::configuration(id, format!("{var}={value:?} is not {expected}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration(" 15s "), Some(Duration::from_secs(15)));
        assert_eq!(parse_duration("1.5s"), Some(ms(1500)));
        assert_eq!(parse_duration("500ms"), Some(ms(500)));
        assert_eq!(parse_duration("500 ms"), Some(ms(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("0.5m"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("10us"), Some(Duration::from_micros(10)));
        assert_eq!(parse_duration("10µs"), Some(Duration::from_micros(10)));
        assert_eq!(parse_duration("100ns"), Some(Duration::from_nanos(100)));
        assert_eq!(parse_duration(".25s"), Some(ms(250)));
        assert_eq!(parse_duration("5."), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
    }

    #[test]
    fn durations_are_exact_and_rounded_to_the_nanosecond() {
        assert_eq!(
            parse_duration("123456789.123456789s"),
            Some(Duration::new(123_456_789, 123_456_789))
        );
        assert_eq!(parse_duration("0.0000000004s"), Some(Duration::ZERO));
        assert_eq!(
            parse_duration("0.0000000006s"),
            Some(Duration::from_nanos(1))
        );
        assert_eq!(
            parse_duration("1.9999999999s"),
            Some(Duration::from_secs(2))
        );
        let long_fraction = format!("1.{}s", "3".repeat(60));
        assert_eq!(
            parse_duration(&long_fraction),
            Some(Duration::new(1, 333_333_333))
        );
        assert_eq!(
            parse_duration(&format!("{}s", u64::MAX)),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            parse_duration(&format!("{}ms", u64::MAX)),
            Some(Duration::from_millis(u64::MAX))
        );
        assert_eq!(parse_duration(&format!("{}m", u64::MAX)), None);
        assert_eq!(parse_duration(&"9".repeat(60)), None);
    }

    #[test]
    fn bad_durations() {
        for text in [
            "",
            " ",
            ".",
            "s",
            "-1s",
            "+1s",
            "1e3",
            "1.2.3s",
            "5 parsecs",
            "1h30m",
            "5d",
            "NaN",
            "inf",
        ] {
            assert_eq!(parse_duration(text), None, "{text:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4194304"), Some(4_194_304));
        assert_eq!(parse_size("512B"), Some(512));
        assert_eq!(parse_size("64K"), Some(64 << 10));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("64KB"), Some(64 << 10));
        assert_eq!(parse_size("3 KiB"), Some(3 << 10));
        assert_eq!(parse_size("4M"), Some(4 << 20));
        assert_eq!(parse_size("4m"), Some(4 << 20));
        assert_eq!(parse_size("4MB"), Some(4 << 20));
        assert_eq!(parse_size(" 16MiB "), Some(16 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        for text in ["", "lots", "KiB", "1.5MiB", "-1", "+1", "4kib", "4TiB"] {
            assert_eq!(parse_size(text), None, "{text:?}");
        }
        assert_eq!(parse_size(&format!("{}", usize::MAX)), Some(usize::MAX));
        assert_eq!(parse_size(&format!("{}K", usize::MAX)), None);
    }

    #[test]
    fn switches() {
        for text in ["1", "true", "TRUE", "yes", "On", " on "] {
            assert_eq!(parse_bool(text), Some(true), "{text:?}");
        }
        for text in ["0", "false", "False", "no", "OFF"] {
            assert_eq!(parse_bool(text), Some(false), "{text:?}");
        }
        for text in ["", "maybe", "2", "y", "t"] {
            assert_eq!(parse_bool(text), None, "{text:?}");
        }
    }

    #[test]
    fn invalid_names_the_variable_the_value_and_what_to_write() {
        let e = invalid(
            "MICRO_REGISTER_TTL",
            "soon",
            "a duration (like 90, 5s or 500ms)",
        );
        assert_eq!(e.code, 400);
        assert_eq!(e.id, "micro.config");
        assert_eq!(
            e.detail,
            r#"MICRO_REGISTER_TTL="soon" is not a duration (like 90, 5s or 500ms)"#
        );
        let e = invalid_from(
            "micro.broker.nats",
            "MICRO_NATS_TLS",
            "maybe",
            "true or false",
        );
        assert_eq!(e.id, "micro.broker.nats");
        assert_eq!(e.status, "Invalid Configuration");
        assert_eq!(
            e.to_string(),
            r#"400 Invalid Configuration from micro.broker.nats: MICRO_NATS_TLS="maybe" is not true or false"#
        );
        assert_eq!(e.detail, r#"MICRO_NATS_TLS="maybe" is not true or false"#);
    }
}

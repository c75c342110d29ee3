//! Percentiles and the way numbers are written in the report.

use std::time::Duration;

/// The `q` quantile (0.5 for the median) of `sorted` by the nearest-rank method; zero when
/// empty.
pub(crate) fn quantile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    // Nearest rank: the smallest value with at least q of the samples at or below it.
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A latency: `812 ns`, `41.3 µs`, `2.07 ms`, `1.20 s`.
pub(crate) fn latency(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.1} µs", ns / 1_000.0)
    } else if ns < 1_000_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else {
        format!("{:.2} s", ns / 1_000_000_000.0)
    }
}

/// A count with thousands separators: `1,234,567`.
pub(crate) fn count(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A ratio: `0.93x`; `n/a` when the base is zero.
pub(crate) fn ratio(value: f64, base: f64) -> String {
    if base > 0.0 {
        format!("{:.2}x", value / base)
    } else {
        "n/a".to_string()
    }
}

/// A size in bytes: `128 B`, `4 KiB`.
pub(crate) fn bytes(n: usize) -> String {
    if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}

/// Mebibytes from kibibytes, one decimal.
pub(crate) fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&[7u32], 0.99), 7);
        assert_eq!(quantile::<u32>(&[], 0.5), 0);
    }

    #[test]
    fn formats() {
        assert_eq!(latency(Duration::from_nanos(812)), "812 ns");
        assert_eq!(latency(Duration::from_nanos(41_300)), "41.3 µs");
        assert_eq!(latency(Duration::from_micros(2_070)), "2.07 ms");
        assert_eq!(count(1_234_567.0), "1,234,567");
        assert_eq!(count(999.0), "999");
        assert_eq!(ratio(93.0, 100.0), "0.93x");
        assert_eq!(bytes(4096), "4 KiB");
        assert_eq!(bytes(128), "128 B");
    }
}

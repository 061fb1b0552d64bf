//! Kubernetes resource quantities as numbers (k8s-openapi keeps them as
//! strings).

/// Bytes in a memory quantity: a decimal number with an optional binary
/// (`Ki`..`Ei`) or decimal (`k`..`E`, `m`) suffix, or an exponent (`1e9`).
/// `None` for anything else, or a value that does not fit.
pub fn bytes(q: &str) -> Option<u64> {
    const SUFFIXES: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
        ("m", 1e-3),
    ];
    let q = q.trim();
    let (num, scale) = SUFFIXES
        .iter()
        .find_map(|(s, f)| q.strip_suffix(s).map(|n| (n, *f)))
        .unwrap_or((q, 1.0));
    let v: f64 = num.parse().ok()?;
    let b = (v * scale).ceil();
    (b.is_finite() && b >= 0.0 && b < u64::MAX as f64).then_some(b as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_decimal_exponent_and_plain() {
        assert_eq!(bytes("512Mi"), Some(512 * 1024 * 1024));
        assert_eq!(bytes("1Gi"), Some(1 << 30));
        assert_eq!(bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(bytes("128M"), Some(128_000_000));
        assert_eq!(bytes("1e9"), Some(1_000_000_000));
        assert_eq!(bytes("1000"), Some(1000));
        assert_eq!(bytes("1500m"), Some(2));
    }

    #[test]
    fn nonsense_is_none() {
        for q in ["", "Mi", "ten", "-1Mi", "1Xi", "1e400"] {
            assert_eq!(bytes(q), None, "{q}");
        }
    }
}

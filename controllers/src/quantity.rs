//! Just enough of Kubernetes' resource quantities to add up node capacity: parse to a
//! base-unit integer (CPU in millicores, memory in bytes) and format back.

/// A quantity in thousandths of its unit (millicores for CPU, millibytes for memory), so
/// that `"500m"` and `"1.5"` stay exact.
pub fn parse_milli(quantity: &str) -> Option<i128> {
    let q = quantity.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let multiplier_milli: i128 = match suffix {
        "" => 1000,
        "m" => 1,
        "k" => 1_000_000,
        "M" => 1_000_000_000,
        "G" => 1_000_000_000_000,
        "T" => 1_000_000_000_000_000,
        "P" => 1_000_000_000_000_000_000,
        "Ki" => 1024 * 1000,
        "Mi" => 1024i128.pow(2) * 1000,
        "Gi" => 1024i128.pow(3) * 1000,
        "Ti" => 1024i128.pow(4) * 1000,
        "Pi" => 1024i128.pow(5) * 1000,
        "Ei" => 1024i128.pow(6) * 1000,
        s if s.starts_with(['e', 'E']) => {
            let exp: u32 = s[1..].parse().ok()?;
            10i128.checked_pow(exp)?.checked_mul(1000)?
        }
        _ => return None,
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let whole: i128 = if whole.is_empty() || whole == "+" {
        0
    } else {
        whole.parse().ok()?
    };
    let mut value = whole.checked_mul(multiplier_milli)?;
    if !frac.is_empty() {
        let digits = frac.len() as u32;
        let frac_value: i128 = frac.parse().ok()?;
        value += frac_value * multiplier_milli / 10i128.pow(digits);
    }
    Some(value)
}

/// A whole count (e.g. GPUs) from a quantity; `None` for fractions or garbage.
pub fn parse_count(quantity: &str) -> Option<i64> {
    let milli = parse_milli(quantity)?;
    (milli % 1000 == 0)
        .then(|| i64::try_from(milli / 1000).ok())
        .flatten()
}

/// CPU from millicores: whole cores when exact (`"96"`), else millicores (`"95500m"`).
pub fn format_cpu(milli: i128) -> String {
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

/// Memory from millibytes, in the largest binary unit that keeps it whole.
pub fn format_memory(milli: i128) -> String {
    let bytes = milli / 1000;
    for (suffix, unit) in [
        ("Ti", 1024i128.pow(4)),
        ("Gi", 1024i128.pow(3)),
        ("Mi", 1024i128.pow(2)),
        ("Ki", 1024),
    ] {
        if bytes != 0 && bytes % unit == 0 {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_nodes_report() {
        assert_eq!(parse_milli("192"), Some(192_000));
        assert_eq!(parse_milli("500m"), Some(500));
        assert_eq!(parse_milli("1.5"), Some(1500));
        assert_eq!(parse_milli("2Ti"), Some(2 * 1024i128.pow(4) * 1000));
        assert_eq!(parse_milli("64Gi"), Some(64 * 1024i128.pow(3) * 1000));
        assert_eq!(parse_milli("1k"), Some(1_000_000));
        assert_eq!(parse_milli("1e3"), Some(1_000_000));
        assert_eq!(parse_milli("12Q"), None);
        assert_eq!(parse_count("8"), Some(8));
        assert_eq!(parse_count("500m"), None);
    }

    #[test]
    fn formats_round_trip() {
        assert_eq!(format_cpu(parse_milli("96").unwrap()), "96");
        assert_eq!(format_cpu(parse_milli("95500m").unwrap()), "95500m");
        assert_eq!(format_memory(parse_milli("1152Gi").unwrap()), "1152Gi");
        assert_eq!(format_memory(parse_milli("2048Gi").unwrap()), "2Ti");
        assert_eq!(format_memory(parse_milli("1000").unwrap()), "1000");
    }
}

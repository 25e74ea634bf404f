//! Human durations on the command line: `500ms`, `30s`, `30m`, `12h`, `7d`, or plain seconds.

use std::time::Duration;

/// Parses `text` as a duration; the error names the accepted forms.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad duration {text:?}: expected e.g. 500ms, 30s, 30m, 12h, 7d"))?;
    let ms = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "bad duration unit in {text:?}: use ms, s, m, h or d"
            ))
        }
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse("12h").unwrap(), Duration::from_secs(43200));
        assert_eq!(parse("7").unwrap(), Duration::from_secs(7));
        assert!(parse("").is_err());
        assert!(parse("5x").is_err());
        assert!(parse("-5s").is_err());
        assert!(parse("99999999999999999999d").is_err());
    }
}

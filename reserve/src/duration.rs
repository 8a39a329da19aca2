//! Durations as operators write them in config: `"90s"`, `"4h"`, `"30m"`, `"1h30m"`, `"2d"`.

use std::time::Duration;

/// Deserialises a duration written as operators say it (`"90s"`, `"4h"`), for the
/// components' config sections: `#[serde(deserialize_with = "reserve::duration::deserialize")]`.
pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// Parses `"90s"`, `"500ms"`, `"30m"`, `"4h"`, `"2d"` and sums like `"1h30m"`.
/// Errors are lowercase phrases meant to follow a located prefix (`file:line: field`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("empty duration; write e.g. \"90s\", \"30m\", \"4h\"".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {s:?} lacks a unit (ms, s, m, h, d)"))?;
        if digits == 0 {
            return Err(format!("duration {s:?} is not a number followed by a unit"));
        }
        let value: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("duration {s:?} has a bad number"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            other => {
                return Err(format!(
                    "duration {s:?} has unknown unit {other:?} (use ms, s, m, h, d)"
                ));
            }
        };
        rest = &rest[unit_len..];
        // Checked: `99999999999999999999d` or a sum past `Duration::MAX` is an error for
        // whoever wrote it (a config file, an HTTP query), never a panic.
        let too_long = || format!("duration {s:?} is too long");
        let part = Duration::try_from_secs_f64(value * seconds).map_err(|_| too_long())?;
        total = total.checked_add(part).ok_or_else(too_long)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_operators_write_them() {
        let ok: &[(&str, u64)] = &[
            ("90s", 90_000),
            ("500ms", 500),
            ("30m", 1_800_000),
            ("4h", 14_400_000),
            ("2d", 172_800_000),
            ("1h30m", 5_400_000),
            ("1.5s", 1_500),
            ("0s", 0),
        ];
        for (input, ms) in ok {
            assert_eq!(
                parse_duration(input).unwrap().as_millis() as u64,
                *ms,
                "{input}"
            );
        }
        for bad in [
            "",
            "90",
            "s",
            "4x",
            "h4",
            "1..2s",
            "99999999999999999999d",
            "10000000000000000000s10000000000000000000s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
    }
}

//! What a town's message says of the warning level in force (docs/design.md#warning-levels):
//! "红色预警：目标 5 天（市气象台暴雨红色预警）" / "Red warning: target 5 days (…)" in an
//! email, "，红色预警 目标5天" / "; Red warning, target 5 d" in an SMS. The reader learns
//! why the target moved before reading the days against it.

use reserve::ledger::TownWarning;
use reserve::registry::Lang;

/// The email's line, under the introduction.
pub(super) fn line(warning: &TownWarning, lang: Lang) -> String {
    let level = warning.set.level;
    let reason = &warning.set.reason;
    match (lang, warning.days_target) {
        (Lang::Zh, Some(days)) => {
            format!(
                "{}预警：目标 {} 天（{reason}）",
                level.name_zh(),
                days_text(days)
            )
        }
        (Lang::Zh, None) => format!("{}预警（{reason}）", level.name_zh()),
        (Lang::En, Some(days)) => format!(
            "{} warning: target {} days ({reason})",
            level.name_en(),
            days_text(days)
        ),
        (Lang::En, None) => format!("{} warning ({reason})", level.name_en()),
    }
}

/// The SMS's part, after the problem; dropped before the problem and the way to
/// acknowledge when space is short.
pub(super) fn sms(warning: &TownWarning, lang: Lang) -> String {
    let level = warning.set.level;
    match (lang, warning.days_target) {
        (Lang::Zh, Some(days)) => format!("，{}预警 目标{}天", level.name_zh(), days_text(days)),
        (Lang::Zh, None) => format!("，{}预警", level.name_zh()),
        (Lang::En, Some(days)) => format!(
            "; {} warning, target {} d",
            level.name_en(),
            days_text(days)
        ),
        (Lang::En, None) => format!("; {} warning", level.name_en()),
    }
}

/// `5`, `4.5`: days as the registry wrote them, without a trailing `.0`.
fn days_text(days: f64) -> String {
    let rounded = (days * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 {
        format!("{rounded:.0}")
    } else {
        format!("{rounded:.1}")
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use reserve::ledger::{WarningScope, WarningSet};
    use reserve::registry::WarningLevel;

    use super::*;

    fn red(days_target: Option<f64>) -> TownWarning {
        TownWarning {
            set: WarningSet {
                id: 1,
                level: WarningLevel::Red,
                scope: WarningScope::District("dongcheng".into()),
                reason: "暴雨红色预警".into(),
                since: Utc.with_ymd_and_hms(2026, 7, 20, 6, 0, 0).unwrap(),
                until: None,
            },
            days_target,
        }
    }

    #[test]
    fn the_level_and_its_target_in_each_language() {
        let cases = [
            (
                Some(5.0),
                Lang::Zh,
                "红色预警：目标 5 天（暴雨红色预警）",
                "，红色预警 目标5天",
            ),
            (
                Some(4.5),
                Lang::En,
                "Red warning: target 4.5 days (暴雨红色预警)",
                "; Red warning, target 4.5 d",
            ),
            (None, Lang::Zh, "红色预警（暴雨红色预警）", "，红色预警"),
            (
                None,
                Lang::En,
                "Red warning (暴雨红色预警)",
                "; Red warning",
            ),
        ];
        for (days, lang, want_line, want_sms) in cases {
            assert_eq!(line(&red(days), lang), want_line);
            assert_eq!(sms(&red(days), lang), want_sms);
        }
    }
}

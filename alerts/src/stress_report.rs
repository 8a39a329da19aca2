//! The stress-test report (体检报告, issue 17): one email to a district contact about
//! its towns under the scheduled scenarios — which fall below their target under which
//! scenario, by how much, and what mutual aid inside the cluster would cover — in the
//! contact's language, text and HTML from `templates/stress_test.*`. The XLSX with the
//! same lines is attached by the sender; this module writes words only.

use chrono::{DateTime, FixedOffset, Utc};
use minijinja::{AutoEscape, Environment, context};
use reserve::registry::Lang;
use std::sync::LazyLock;

/// Lines the email body lists; the attachment holds them all.
const MAX_LINES_IN_BODY: usize = 30;

static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.set_trim_blocks(true);
    env.set_keep_trailing_newline(true);
    for (name, source) in [
        (
            "stress_test.txt",
            include_str!("../templates/stress_test.txt"),
        ),
        (
            "stress_test.html",
            include_str!("../templates/stress_test.html"),
        ),
    ] {
        // Our own templates, checked by the tests: a syntax error is a bug.
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("template {name}: {e}"));
    }
    env
});

/// One town below target in one category under one scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct StressReportLine {
    pub scenario: String,
    pub town: String,
    pub town_name: String,
    pub cluster: String,
    /// A category id, or `power` for power units' fuel.
    pub category: String,
    pub unit: String,
    /// Days in the live ledger when the test ran; `None` when not known.
    pub days_before: Option<f64>,
    /// Days when the scenario starts.
    pub days_after: f64,
    pub target_days: f64,
    /// Hours from the start until it is below target: 0 means at once.
    pub hours: f64,
    /// What the town lacks to reach its target at the start, in `unit`.
    pub shortfall: Option<f64>,
    /// How much of the shortfall towns of its cluster can send.
    pub aid_covers: Option<f64>,
}

/// A district's report.
#[derive(Debug, Clone, PartialEq)]
pub struct StressReport {
    pub district: String,
    pub ran: DateTime<Utc>,
    /// Times are shown in this zone.
    pub utc_offset: FixedOffset,
    /// Every scenario played, by name.
    pub scenarios: Vec<String>,
    /// Towns of the district.
    pub towns: usize,
    pub lines: Vec<StressReportLine>,
    /// Starts the subject, as the alert emails' does.
    pub subject_prefix: String,
}

/// A rendered email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StressReportMail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The report's email in `lang`.
pub fn render(report: &StressReport, lang: Lang) -> Result<StressReportMail, minijinja::Error> {
    let zh = lang == Lang::Zh;
    let (subject, intro) = headline(report, zh);
    let lines: Vec<String> = report
        .lines
        .iter()
        .take(MAX_LINES_IN_BODY)
        .map(|l| line(l, zh))
        .collect();
    let more = report.lines.len().saturating_sub(MAX_LINES_IN_BODY);
    let more = (more > 0).then(|| {
        if zh {
            format!("另有 {more} 条，见附件。")
        } else {
            format!("{more} more in the attachment.")
        }
    });
    let attachment = if zh {
        "附件 XLSX 列出全部情景下的每一条（含组团互助可补的数量）。"
    } else {
        "The attached XLSX lists every line of every scenario, with what mutual aid in the cluster covers."
    };
    let calm = if zh {
        "所有街镇在各情景下均不低于目标。"
    } else {
        "No town falls below its target in any scenario."
    };
    let ctx = context! {
        html_lang => if zh { "zh" } else { "en" },
        subject => &subject,
        intro => intro,
        lines => lines,
        more => more,
        calm => report.lines.is_empty().then_some(calm),
        attachment => attachment,
    };
    Ok(StressReportMail {
        text: TEMPLATES.get_template("stress_test.txt")?.render(&ctx)?,
        html: TEMPLATES.get_template("stress_test.html")?.render(&ctx)?,
        subject,
    })
}

/// The subject and the opening sentence: how many of the district's towns fall short.
fn headline(report: &StressReport, zh: bool) -> (String, String) {
    let when = report
        .ran
        .with_timezone(&report.utc_offset)
        .format("%Y-%m-%d %H:%M")
        .to_string();
    let weak_towns = {
        let mut towns: Vec<&str> = report.lines.iter().map(|l| l.town.as_str()).collect();
        towns.sort_unstable();
        towns.dedup();
        towns.len()
    };
    let subject = if zh {
        format!(
            "{} 韧性体检 {}：{} 个街镇中 {} 个在情景下低于目标",
            report.subject_prefix, report.district, report.towns, weak_towns
        )
    } else {
        format!(
            "{} Stress test {}: {} of {} towns fall below target",
            report.subject_prefix, report.district, weak_towns, report.towns
        )
    };
    let intro = if zh {
        format!(
            "{when} 的韧性体检（{}）：{} 下辖 {} 个街镇，{} 个在至少一个情景下低于储备目标。",
            report.scenarios.join("、"),
            report.district,
            report.towns,
            weak_towns
        )
    } else {
        format!(
            "Stress test of {when} ({}): {} of the {} towns of {} fall below their reserve target in at least one scenario.",
            report.scenarios.join(", "),
            weak_towns,
            report.towns,
            report.district
        )
    };
    (subject, intro)
}

/// `【断水】景山街道 water: 2.1 天（目标 3），缺 12000 L，组团互助可补 8000 L`.
fn line(l: &StressReportLine, zh: bool) -> String {
    let figure = |x: f64| format!("{x:.1}");
    let amount = |x: f64| format!("{x:.0} {}", l.unit);
    let mut out = if zh {
        format!(
            "【{}】{}（{}）{}：{} 天（目标 {}）",
            l.scenario,
            l.town_name,
            l.town,
            l.category,
            figure(l.days_after),
            figure(l.target_days)
        )
    } else {
        format!(
            "[{}] {} ({}) {}: {} days (target {})",
            l.scenario,
            l.town_name,
            l.town,
            l.category,
            figure(l.days_after),
            figure(l.target_days)
        )
    };
    if l.hours > 0.0 {
        out += &if zh {
            format!("，{:.0} 小时后低于目标", l.hours)
        } else {
            format!(", below target in {:.0} h", l.hours)
        };
    }
    if let Some(short) = l.shortfall {
        let covers = l.aid_covers.unwrap_or(0.0);
        out += &if zh {
            format!("，缺 {}，组团互助可补 {}", amount(short), amount(covers))
        } else {
            format!(
                ", short {}, mutual aid in the cluster covers {}",
                amount(short),
                amount(covers)
            )
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(lines: Vec<StressReportLine>) -> StressReport {
        StressReport {
            district: "东城区".into(),
            ran: DateTime::parse_from_rfc3339("2026-12-06T22:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            utc_offset: FixedOffset::east_opt(8 * 3600).unwrap(),
            scenarios: vec!["water_cut".into(), "flood".into()],
            towns: 2,
            lines,
            subject_prefix: "[Stockpile]".into(),
        }
    }

    fn water_line() -> StressReportLine {
        StressReportLine {
            scenario: "water_cut".into(),
            town: "jingshan".into(),
            town_name: "景山街道 <&>".into(),
            cluster: "c01".into(),
            category: "water".into(),
            unit: "L".into(),
            days_before: Some(4.0),
            days_after: 2.0,
            target_days: 3.0,
            hours: 0.0,
            shortfall: Some(90000.0),
            aid_covers: Some(60000.0),
        }
    }

    #[test]
    fn a_report_says_which_town_falls_short_under_which_scenario_in_both_languages() {
        let zh = render(&report(vec![water_line()]), Lang::Zh).unwrap();
        assert!(zh.subject.contains("2 个街镇中 1 个"), "{}", zh.subject);
        assert!(
            zh.text.contains("【water_cut】景山街道 <&>（jingshan）water：2.0 天（目标 3.0），缺 90000 L，组团互助可补 60000 L"),
            "{}",
            zh.text
        );
        let en = render(&report(vec![water_line()]), Lang::En).unwrap();
        assert!(en.subject.contains("1 of 2 towns"), "{}", en.subject);
        assert!(
            en.text.contains("mutual aid in the cluster covers 60000 L"),
            "{}",
            en.text
        );
        assert!(en.html.contains("景山街道 &lt;&amp;&gt;"), "{}", en.html);
        assert!(
            en.text.contains("2026-12-07 06:00"),
            "local time: {}",
            en.text
        );
    }

    #[test]
    fn a_calm_report_says_so() {
        let en = render(&report(Vec::new()), Lang::En).unwrap();
        assert!(
            en.text.contains("No town falls below its target"),
            "{}",
            en.text
        );
    }
}

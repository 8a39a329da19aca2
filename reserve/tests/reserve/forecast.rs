//! The consumption forecast on realistic series of one stock: what rate, and so what
//! hours to the target, an officer would see after each series (docs/design.md#forecast).

use chrono::{DateTime, TimeZone, Utc};
use reserve::coverage::{Drawdown, hours_to_target};

/// The default `[alerts] forecast_min_span`.
const MIN_SPAN_H: f64 = 1.0;
/// Three days of water for 10,000 people at 3 L a day.
const TARGET_L: f64 = 90_000.0;

fn at(h: f64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 0, 0, 0).unwrap()
        + chrono::Duration::milliseconds((h * 3_600_000.0).round() as i64)
}

/// Readings every `every_h` for `hours`, from `(start_h, start_qty)`, consumed at
/// `per_h`; returns the series and where it ends.
fn steady(start_h: f64, start_qty: f64, hours: f64, every_h: f64, per_h: f64) -> Vec<(f64, f64)> {
    let n = (hours / every_h).round() as usize;
    (1..=n)
        .map(|i| {
            let h = i as f64 * every_h;
            (start_h + h, start_qty - per_h * h)
        })
        .collect()
}

/// 2 h at 600 L/h, a reading every 5 minutes, from 150,000 L at hour 0.
fn calm() -> Vec<(f64, f64)> {
    let mut s = vec![(0.0, 150_000.0)];
    s.extend(steady(0.0, 150_000.0, 2.0, 5.0 / 60.0, 600.0));
    s
}

fn then(
    mut series: Vec<(f64, f64)>,
    more: impl FnOnce(f64, f64) -> Vec<(f64, f64)>,
) -> Vec<(f64, f64)> {
    let (h, q) = *series.last().unwrap();
    series.extend(more(h, q));
    series
}

const FIVE_MIN: f64 = 5.0 / 60.0;

/// Readings of one stock: (hour, litres).
type Series = Vec<(f64, f64)>;

#[test]
fn forecast_table_of_realistic_series() {
    // (what happens, readings (hour, litres), rate the forecast uses)
    let cases: Vec<(&str, Series, Option<f64>)> = vec![
        ("steady use, two hours", calm(), Some(600.0)),
        (
            "steady use, but only half an hour of it",
            calm().into_iter().take(7).collect(),
            None,
        ),
        (
            "the glitch of issue 14 with no history: 3.8 → 2.5 → 3.8 days in seconds",
            vec![(0.0, 114_000.0), (0.001, 75_000.0), (0.002, 114_000.0)],
            None,
        ),
        (
            "a disaster triples use: followed within the min span and a bit",
            then(calm(), |h, q| steady(h, q, 1.5, FIVE_MIN, 1_800.0)),
            Some(1_800.0),
        ),
        (
            "a glitch: one reading 40,000 L low, the next back on the pace",
            then(calm(), |h, q| {
                let mut s = vec![(h + FIVE_MIN, q - 40_000.0)];
                s.extend(steady(h + FIVE_MIN, q - 50.0, 1.0, FIVE_MIN, 600.0));
                s
            }),
            Some(600.0),
        ),
        (
            "a glitch offset held over two readings, then gone",
            then(calm(), |h, q| {
                let mut s = vec![
                    (h + FIVE_MIN, q - 40_000.0),
                    (h + 2.0 * FIVE_MIN, q - 40_100.0),
                ];
                s.extend(steady(h + 2.0 * FIVE_MIN, q - 100.0, 1.0, FIVE_MIN, 600.0));
                s
            }),
            Some(600.0),
        ),
        (
            "a truck loads out 20,000 L for mutual aid, use goes on",
            then(calm(), |h, q| {
                let mut s = vec![(h + FIVE_MIN, q - 20_050.0)];
                s.extend(steady(h + FIVE_MIN, q - 20_050.0, 1.0, FIVE_MIN, 600.0));
                s
            }),
            Some(600.0),
        ),
        (
            "a truck loads out of an idle stock",
            {
                let mut s = vec![(0.0, 150_000.0)];
                s.extend(steady(0.0, 150_000.0, 1.0, FIVE_MIN, 0.0));
                then(s, |h, q| {
                    let mut s = vec![(h + FIVE_MIN, q - 20_000.0)];
                    s.extend(steady(h + FIVE_MIN, q - 20_000.0, 1.0, FIVE_MIN, 0.0));
                    s
                })
            },
            None, // rate 0: not being consumed, no forecast
        ),
        (
            "a delivery of 50,000 L, use goes on",
            then(calm(), |h, q| {
                let mut s = vec![(h + FIVE_MIN, q + 50_000.0)];
                s.extend(steady(h + FIVE_MIN, q + 50_000.0, 0.5, FIVE_MIN, 600.0));
                s
            }),
            Some(600.0),
        ),
        (
            "readings every 3 h: averaged over the gaps",
            {
                let mut s = vec![(0.0, 150_000.0)];
                s.extend(steady(0.0, 150_000.0, 9.0, 3.0, 600.0));
                s
            },
            Some(600.0),
        ),
        (
            "a gateway silent 6 h, then back: the drop is averaged over the gap",
            then(calm(), |h, q| {
                let mut s = vec![(h + 6.0, q - 3_600.0)];
                s.extend(steady(h + 6.0, q - 3_600.0, 0.5, FIVE_MIN, 600.0));
                s
            }),
            Some(600.0),
        ),
        (
            "two readings 6 h apart: enough span, too few readings",
            vec![(0.0, 150_000.0), (6.0, 146_400.0)],
            None,
        ),
    ];
    for (what, series, want) in cases {
        let mut d = Drawdown::default();
        for &(h, qty) in &series {
            d.observe(at(h), qty, MIN_SPAN_H);
        }
        let rate = d.rate_per_h(MIN_SPAN_H);
        let stock = series.last().unwrap().1;
        let hours = rate.and_then(|r| hours_to_target(stock, TARGET_L, r));
        let want_hours = want.and_then(|r| hours_to_target(stock, TARGET_L, r));
        match (rate, want) {
            (Some(got), Some(want)) => assert!(
                (got - want).abs() < 1e-6 * want,
                "{what}: rate {got} L/h, want {want}"
            ),
            (Some(0.0), None) => {}
            (got, want) => assert_eq!(got, want, "{what}"),
        }
        match (hours, want_hours) {
            (Some(got), Some(want)) => {
                assert!(
                    (got - want).abs() < 1e-3,
                    "{what}: {got} h to target, want {want}"
                )
            }
            (got, want) => assert_eq!(got, want, "{what}: hours to target"),
        }
    }
}

#[test]
fn a_disaster_is_followed_within_about_the_min_span() {
    let mut d = Drawdown::default();
    for (h, q) in calm() {
        d.observe(at(h), q, MIN_SPAN_H);
    }
    let (h0, q0) = *calm().last().unwrap();
    // (hours of tripled use, lowest rate the forecast may show by then)
    let mut seen = Vec::new();
    for (h, q) in steady(h0, q0, 2.0, FIVE_MIN, 1_800.0) {
        d.observe(at(h), q, MIN_SPAN_H);
        seen.push((h - h0, d.rate_per_h(MIN_SPAN_H).unwrap()));
    }
    let rate_after = |hours: f64| seen.iter().find(|(h, _)| *h >= hours - 1e-9).unwrap().1;
    assert!(
        rate_after(0.5) > 900.0,
        "half a span in: {}",
        rate_after(0.5)
    );
    assert!(
        (rate_after(1.5) - 1_800.0).abs() < 1e-6,
        "{}",
        rate_after(1.5)
    );
}

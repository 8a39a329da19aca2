//! The demo plays the bureau and the shelters' site crews (docs/design.md#shelters):
//! when its scenario brings displaced people (`flood`, `earthquake`), at the influx's
//! start it sets a red warning level over those towns (which pre-activates their
//! schools and gyms) and activates their other shelters (hotels, community centres);
//! then a crew marks each step done a little before it falls due in the demo's
//! simulated time, leaving one step in [`LATE_EVERY`] late so the board shows an
//! overdue step and its alert. All of it goes through the HTTP API with the demo's
//! admin token (named `demo`), as an operator's would: the audit rows say `demo`.
//!
//! The level covers the towns, not their districts: a flood's displaced go to a
//! quarter of the towns, spread over all 16 districts, so red over the districts is
//! red over the city — every town judged against 5 days and critical, every school
//! and gym converting though nobody comes to most.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use device_sim::ShelteredTown;
use reserve::registry::{FacilityKind, Registry};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Why the demo's red level is in force (the board and the messages quote it).
pub(crate) const WARNING_REASON: &str = "演示：暴雨红色预警 / demo: red rainstorm warning";
const ACTIVATION_REASON: &str = "演示：安置转移群众 / demo: shelter the displaced";
const STEP_NOTE: &str = "演示组完成 / done by the demo crew";
/// A crew finishes a step once this share of its time (simulated) has passed.
const ON_TIME_SHARE: f64 = 0.8;
/// One step in this many is left late...
const LATE_EVERY: usize = 7;
/// ...and done this long after its due time. The API and the alert engine judge due
/// times on the wall clock, so a step late only in simulated time would never show.
const LATE_BY: Duration = Duration::from_secs(300);

/// What the simulator will do: when the displaced arrive, the towns they go to and
/// those towns' shelters (ids, registry order).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Influx {
    pub at_h: f64,
    pub towns: Vec<String>,
    pub shelters: Vec<String>,
}

impl Influx {
    /// `None` when the scenario brings nobody.
    pub(crate) fn of(registry: &Registry, sheltered: &[ShelteredTown]) -> Option<Influx> {
        let at_h = sheltered.first()?.at_h;
        let mut towns = Vec::new();
        let mut shelters = Vec::new();
        for t in sheltered.iter().filter_map(|s| registry.town_idx(&s.town)) {
            let town = registry.town(t);
            towns.push(town.id.to_string());
            shelters.extend(
                town.facilities
                    .iter()
                    .map(|&f| registry.facility(f))
                    .filter(|f| matches!(f.kind, FacilityKind::Shelter(_)))
                    .map(|f| f.id.to_string()),
            );
        }
        Some(Influx {
            at_h,
            towns,
            shelters,
        })
    }
}

/// The demo's own API, as its admin.
pub(crate) struct Bureau {
    pub client: reqwest::Client,
    /// `http://127.0.0.1:port`
    pub base: String,
    pub token: String,
    pub speed: f64,
    pub scenario: String,
}

/// A step a crew is to mark done.
#[derive(Debug, Clone, PartialEq)]
struct CrewStep {
    activation: i64,
    shelter: String,
    n: u64,
    started_at: DateTime<Utc>,
    due_at: DateTime<Utc>,
}

impl Bureau {
    /// Waits for the influx (simulated hour `at_h` of a simulator started at
    /// `sim_started`), answers it, then works the open activations' steps until done or
    /// `shutdown`.
    pub(crate) async fn run(
        self,
        influx: Influx,
        sim_started: Instant,
        shutdown: CancellationToken,
    ) {
        let wait =
            Duration::try_from_secs_f64(influx.at_h * 3600.0 / self.speed).unwrap_or_default();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until((sim_started + wait).into()) => {}
        }
        let steps = match self.respond(&influx).await {
            Ok(()) => self.open_steps().await,
            Err(error) => Err(error),
        };
        match steps {
            Ok(steps) => self.crew(steps, &shutdown).await,
            Err(error) => {
                tracing::warn!(message = "The demo's bureau could not answer the influx.", error = %format!("{error:#}"))
            }
        }
    }

    /// Red over the towns, then an activation of their shelters
    /// the level's pre-activation did not take.
    async fn respond(&self, influx: &Influx) -> anyhow::Result<()> {
        // A level's scope names at most 100 towns.
        for towns in influx.towns.chunks(100) {
            let body = json!({"level": "red", "scope": {"towns": towns}, "reason": WARNING_REASON});
            self.send("POST", "/api/v1/warning-level", Some(body))
                .await?;
        }
        let activating: BTreeSet<String> = self
            .open_activations()
            .await?
            .iter()
            .flat_map(|a| a["shelters"].as_array().cloned().unwrap_or_default())
            .filter_map(|s| s["id"].as_str().map(str::to_owned))
            .collect();
        let rest: Vec<&String> = influx
            .shelters
            .iter()
            .filter(|s| !activating.contains(*s))
            .collect();
        if !rest.is_empty() {
            let body = json!({"scope": {"shelters": rest}, "reason": ACTIVATION_REASON, "scenario": self.scenario});
            self.send("POST", "/api/v1/activations", Some(body)).await?;
        }
        println!(
            "{}  ⚠ displaced people arrive: the bureau (the demo) sets a red warning over the {} towns \
             taking them in and activates {} shelters; crews mark their steps \
             (GET {}/api/v1/activations)",
            chrono::Local::now().format("%H:%M:%S"),
            influx.towns.len(),
            activating.len() + rest.len(),
            self.base,
        );
        Ok(())
    }

    async fn open_activations(&self) -> anyhow::Result<Vec<Value>> {
        let list = self
            .send("GET", "/api/v1/activations?state=open", None)
            .await?;
        list.as_array()
            .cloned()
            .context("the activations list is not a list")
    }

    /// Every step of the open activations not done yet.
    async fn open_steps(&self) -> anyhow::Result<Vec<CrewStep>> {
        let mut steps = Vec::new();
        for a in self.open_activations().await? {
            let started_at = time(&a["started_at"])?;
            for s in a["shelters"].as_array().into_iter().flatten() {
                for step in s["steps"].as_array().into_iter().flatten() {
                    if step["state"] == "done" {
                        continue;
                    }
                    steps.push(CrewStep {
                        activation: a["id"].as_i64().context("an activation without id")?,
                        shelter: s["id"].as_str().unwrap_or_default().to_owned(),
                        n: step["n"].as_u64().context("a step without n")?,
                        started_at,
                        due_at: time(&step["due_at"])?,
                    });
                }
            }
        }
        Ok(steps)
    }

    /// Marks each step done when [`done_at`] says, in that order.
    async fn crew(&self, steps: Vec<CrewStep>, shutdown: &CancellationToken) {
        let mut plan: Vec<(DateTime<Utc>, CrewStep)> = steps
            .into_iter()
            .enumerate()
            .map(|(i, step)| (done_at(&step, i, self.speed), step))
            .collect();
        plan.sort_by_key(|(at, _)| *at);
        for (at, step) in plan {
            let wait = (at - Utc::now()).to_std().unwrap_or_default();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let path = format!("/api/v1/activations/{}/steps/{}", step.activation, step.n);
            let body = json!({"shelter": step.shelter, "note": STEP_NOTE});
            // Someone at the board may have marked it first, or closed the activation.
            if let Err(error) = self.send("POST", &path, Some(body)).await {
                tracing::info!(message = "The demo crew skipped a step.", error = %format!("{error:#}"));
            }
        }
    }

    /// One request to the demo's API; an error names the status and the answer.
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let request = match body {
            Some(body) => self.client.post(&url).json(&body),
            None => self.client.get(&url),
        };
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "{method} {path}: {status}: {answer}");
        Ok(answer)
    }
}

/// When the crew marks `step` (the `i`-th it was given) done: a little before its due
/// time in simulated time, or — one in [`LATE_EVERY`] — [`LATE_BY`] after it.
fn done_at(step: &CrewStep, i: usize, speed: f64) -> DateTime<Utc> {
    if i % LATE_EVERY == LATE_EVERY / 2 {
        return step.due_at + chrono::TimeDelta::from_std(LATE_BY).unwrap_or_default();
    }
    let within_s = (step.due_at - step.started_at).as_seconds_f64().max(0.0);
    let after = Duration::try_from_secs_f64(within_s * ON_TIME_SHARE / speed).unwrap_or_default();
    step.started_at + chrono::TimeDelta::from_std(after).unwrap_or_default()
}

fn time(v: &Value) -> anyhow::Result<DateTime<Utc>> {
    let text = v.as_str().context("a time that is not a string")?;
    Ok(DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("time {text:?}"))?
        .with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(within_min: i64) -> CrewStep {
        let started_at = DateTime::parse_from_rfc3339("2026-12-07T02:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        CrewStep {
            activation: 1,
            shelter: "js-gym".into(),
            n: 1,
            started_at,
            due_at: started_at + chrono::TimeDelta::minutes(within_min),
        }
    }

    /// At 720× a step due within 15 simulated minutes is done after 1 s; the late one
    /// five wall-clock minutes after its due time, so the board shows it overdue.
    #[test]
    fn crews_finish_a_little_early_in_simulated_time_and_now_and_then_late() {
        let s = step(15);
        assert_eq!(
            done_at(&s, 0, 720.0),
            s.started_at + chrono::TimeDelta::seconds(1)
        );
        assert_eq!(
            done_at(&s, 0, 1.0),
            s.started_at + chrono::TimeDelta::minutes(12)
        );
        let late = LATE_EVERY / 2;
        assert_eq!(
            done_at(&s, late, 720.0),
            s.due_at + chrono::TimeDelta::minutes(5)
        );
        let late_ones = (0..70)
            .filter(|&i| done_at(&s, i, 720.0) > s.due_at)
            .count();
        assert_eq!(late_ones, 10, "one in {LATE_EVERY}");
    }

    #[test]
    fn the_influx_names_the_displaced_towns_and_their_shelters() {
        let registry = crate::demo::demo_registry().unwrap();
        let town = |id: &str| ShelteredTown {
            town: id.into(),
            sheltered: 900,
            at_h: 2.0,
        };
        let with_shelter = registry
            .towns
            .iter()
            .find(|t| {
                t.facilities
                    .iter()
                    .any(|&f| matches!(registry.facility(f).kind, FacilityKind::Shelter(_)))
            })
            .unwrap();
        let influx = Influx::of(&registry, &[town(with_shelter.id.as_ref())]).unwrap();
        assert_eq!(influx.at_h, 2.0);
        assert_eq!(influx.towns, vec![with_shelter.id.to_string()]);
        assert!(!influx.shelters.is_empty());
        assert_eq!(
            Influx::of(&registry, &[]),
            None,
            "nobody displaced, nothing to do"
        );
    }
}

//! The scheduled stress test (常态化韧性体检, issue 17, docs/design.md#stress-test):
//! every `[stress_test] every` (or at its time of day) the configured scenarios are
//! played on one copy of the live ledger, each run is stored, and every district
//! contact with an email address gets a report of its district's towns, text and HTML
//! in their language with the lines as an XLSX attached, through the `[smtp]` channel.
//!
//! The schedule lives in the store (`stress_tests`): the runs, the report's summary and
//! the next due time are committed together before any mail goes out, so a restart
//! never sends a report twice and never skips one that fell due while it was down (it
//! runs at once). A mail that cannot be sent is retried a few times and then logged:
//! the report stays readable through the API.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use alerts::channel::Attachment;
use alerts::stress_report::{self, StressReport, StressReportLine};
use alerts::{EmailChannel, Notification};
use anyhow::Context as _;
use api::stress_test::{self as plan, StressRun, StressTestConfig};
use chrono::{DateTime, Days, FixedOffset, NaiveTime, TimeDelta, Utc};
use live::SharedLedger;
use reserve::Registry;
use reserve::registry::ContactScope;
use store::{AsyncStore, StressTestRow};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;

/// Pause before trying again when the store or a run failed.
const RETRY_AFTER: Duration = Duration::from_secs(60);
/// Attempts per report email; the SMTP server may be restarting.
const MAIL_ATTEMPTS: u32 = 3;
const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// The stress test, built and checked, not running yet.
#[derive(Debug)]
pub struct StressTest {
    config: StressTestConfig,
    ledger: SharedLedger,
    store: AsyncStore,
    /// `None` without `[smtp]`: reports are stored and shown, not mailed.
    email: Option<EmailChannel>,
    utc_offset: FixedOffset,
    subject_prefix: String,
}

impl StressTest {
    /// The stress test `[stress_test]` describes, with a store connection of its own;
    /// `None` without the section.
    pub fn build(config: &Config, ledger: &SharedLedger) -> anyhow::Result<Option<StressTest>> {
        let Some(stress_test) = &config.stress_test else {
            return Ok(None);
        };
        let store = store::Store::open(&config.store.path, store::StoreOptions::default())
            .with_context(|| {
                format!(
                    "open the store {} for the stress test",
                    config.store.path.display()
                )
            })?;
        let email = config
            .smtp
            .as_ref()
            .map(EmailChannel::new)
            .transpose()
            .context("stress test email")?;
        if email.is_none() {
            tracing::warn!(
                message = "The stress test has no [smtp] section: reports are kept, not mailed."
            );
        }
        Ok(Some(StressTest {
            config: stress_test.clone(),
            ledger: Arc::clone(ledger),
            store: AsyncStore::new(store),
            email,
            utc_offset: config.alerts.utc_offset,
            subject_prefix: config.alerts.subject_prefix.clone(),
        }))
    }

    pub fn spawn(self, tracker: &TaskTracker, shutdown: CancellationToken) {
        tracker.spawn(self.run(shutdown));
    }

    async fn run(self, shutdown: CancellationToken) {
        loop {
            let first_due = first_due(&self.config, Utc::now(), self.utc_offset);
            let next = match self.next(first_due).await {
                Ok(next) => next,
                Err(error) => {
                    tracing::warn!(message = "Cannot read the stress-test schedule; trying again.", %error);
                    if pause(RETRY_AFTER, &shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            tracing::info!(message = "Stress test scheduled.", due = %next.due);
            let wait = (next.due - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            if pause(wait, &shutdown).await {
                return;
            }
            if let Err(error) = self.run_once(&next).await {
                tracing::warn!(message = "The stress test failed; trying again.", error = %format!("{error:#}"));
                if pause(RETRY_AFTER, &shutdown).await {
                    return;
                }
            }
        }
    }

    /// The next stress test, scheduled at `first_due` if none is; one scheduled further
    /// ahead than this configuration would (the interval was shortened since) is
    /// brought to `first_due`, so a shortened interval counts from this start.
    async fn next(&self, first_due: DateTime<Utc>) -> Result<StressTestRow, store::StoreError> {
        let next = self
            .store
            .run(move |s| s.next_stress_test(first_due))
            .await?;
        // The furthest ahead the current configuration schedules anything.
        let horizon = match self.config.at {
            Some(_) => self.config.every.max(Duration::from_secs(24 * 3600)),
            None => self
                .config
                .every
                .max(self.config.first_after.unwrap_or_default()),
        };
        if next.due <= later(Utc::now(), horizon) {
            return Ok(next);
        }
        let id = next.id;
        self.store
            .run(move |s| s.reschedule_stress_test(id, first_due))
            .await?;
        Ok(StressTestRow {
            due: first_due,
            ..next
        })
    }

    /// Plays the scenarios, stores the runs with the next due time, then mails.
    async fn run_once(&self, next: &StressTestRow) -> anyhow::Result<()> {
        let ran = Utc::now();
        let live = self
            .ledger
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let config = self.config.clone();
        let runs = tokio::task::spawn_blocking(move || {
            plan::run(&live, &config, ran).map(|runs| (live, runs))
        })
        .await
        .context("stress test task")?
        .context("play the scenarios")?;
        let (live, runs) = runs;
        let runs = Arc::new(runs);
        let next_due = next_due(&self.config, next.due, ran);
        let stored = plan::stored_runs(&runs, ran).context("stress test runs")?;
        let (id, summary_runs) = (next.id, Arc::clone(&runs));
        self.store
            .run(move |s| {
                s.complete_stress_test(
                    id,
                    ran,
                    &stored,
                    |ids| plan::summary(id, ran, next_due, &summary_runs, ids).to_json(),
                    next_due,
                )
            })
            .await
            .context("store the stress test")?;
        tracing::info!(message = "Stress test ran.", scenarios = runs.len(), next_due = %next_due);
        self.mail_reports(live.registry(), &runs, ran).await;
        Ok(())
    }

    /// One report per district contact with an email address and district.
    async fn mail_reports(&self, registry: &Registry, runs: &[StressRun], ran: DateTime<Utc>) {
        let Some(email) = &self.email else {
            return;
        };
        let lines = plan::report_lines(runs);
        let scenarios: Vec<String> = runs.iter().map(|r| r.name.clone()).collect();
        for contact in &registry.contacts {
            let (ContactScope::Districts(districts), Some(address)) =
                (&contact.scope, &contact.email)
            else {
                continue;
            };
            for &d in districts {
                let in_district = |line: &&StressReportLine| {
                    registry
                        .town_idx(&line.town)
                        .is_some_and(|t| registry.town(t).district == d)
                };
                let report = StressReport {
                    district: registry.districts[d.index()].name.clone(),
                    ran,
                    utc_offset: self.utc_offset,
                    scenarios: scenarios.clone(),
                    towns: registry
                        .town_indices()
                        .filter(|&t| registry.town(t).district == d)
                        .count(),
                    lines: lines.iter().filter(in_district).cloned().collect(),
                    subject_prefix: self.subject_prefix.clone(),
                };
                let district = registry.districts[d.index()].id.to_string();
                if let Err(error) = send_report(email, &report, contact, address, &district).await {
                    tracing::warn!(message = "A stress-test report was not sent.", contact = %contact.name, %district, error = %format!("{error:#}"));
                }
            }
        }
    }
}

/// Renders and sends one district's report, a few attempts while the failure may pass.
async fn send_report(
    email: &EmailChannel,
    report: &StressReport,
    contact: &reserve::registry::Contact,
    address: &str,
    district: &str,
) -> anyhow::Result<()> {
    let mail = stress_report::render(report, contact.lang).context("render the report")?;
    let bytes = plan::report_xlsx(&report.lines).map_err(anyhow::Error::msg)?;
    let attachment = Attachment {
        filename: format!(
            "stress-test-{district}-{}.xlsx",
            report.ran.format("%Y%m%d")
        ),
        content_type: XLSX.to_owned(),
        bytes,
    };
    let notification = Notification {
        id: 0,
        contact: contact.name.clone(),
        recipient: address.to_owned(),
        subject: mail.subject,
        body: mail.text,
        html: Some(mail.html),
    };
    let mut attempt = 1;
    loop {
        match email.send_with_attachment(&notification, &attachment).await {
            Ok(()) => return Ok(()),
            Err(alerts::DeliveryError::Transient(error)) if attempt < MAIL_ATTEMPTS => {
                tracing::info!(message = "A stress-test report could not be sent yet; trying again.", contact = %contact.name, %error);
                tokio::time::sleep(Duration::from_secs(5 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Waits `wait` unless shut down first; true when shut down.
async fn pause(wait: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(wait) => false,
    }
}

/// When the first stress test is due, the first time the service runs with the
/// section: the next `at` in the local zone, or `first_after` (by default `every`)
/// from now.
fn first_due(config: &StressTestConfig, now: DateTime<Utc>, offset: FixedOffset) -> DateTime<Utc> {
    match config.at {
        Some(at) => next_time_of_day(at, now, offset),
        None => {
            let first = config.first_after.unwrap_or(config.every);
            later(now, first)
        }
    }
}

/// `at + by`, saturating: config checks bound durations to a year, this is the guard.
fn later(at: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(by)
        .ok()
        .and_then(|by| at.checked_add_signed(by))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The next `at` (local time in `offset`) strictly after `now`.
fn next_time_of_day(at: NaiveTime, now: DateTime<Utc>, offset: FixedOffset) -> DateTime<Utc> {
    let local = now.with_timezone(&offset);
    let today = local.date_naive().and_time(at);
    let candidate = if today > local.naive_local() {
        today
    } else {
        today.checked_add_days(Days::new(1)).unwrap_or(today)
    };
    (candidate - offset).and_utc()
}

/// The next due time after one due at `due` ran at `ran`: `every` later, skipping
/// whole intervals that passed while it was late (one run makes up for them).
fn next_due(config: &StressTestConfig, due: DateTime<Utc>, ran: DateTime<Utc>) -> DateTime<Utc> {
    let every_ms = i64::try_from(config.every.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    // Whole intervals from `due` to `ran`, then one more: the first due time after.
    let behind_ms = (ran - due).num_milliseconds().max(0);
    let intervals = behind_ms / every_ms + 1;
    intervals
        .checked_mul(every_ms)
        .and_then(|ms| due.checked_add_signed(TimeDelta::milliseconds(ms)))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_time_of_day_is_local_and_always_ahead() {
        let beijing = FixedOffset::east_opt(8 * 3600).unwrap();
        let six = NaiveTime::from_hms_opt(6, 0, 0).unwrap();
        // 21:00 UTC is 05:00 in Beijing: today's 06:00 local is an hour away.
        assert_eq!(
            next_time_of_day(six, utc("2026-12-06T21:00:00Z"), beijing),
            utc("2026-12-06T22:00:00Z")
        );
        // At 06:00 local exactly, the next is tomorrow's.
        assert_eq!(
            next_time_of_day(six, utc("2026-12-06T22:00:00Z"), beijing),
            utc("2026-12-07T22:00:00Z")
        );
    }

    #[test]
    fn a_late_run_does_not_shift_the_schedule_or_repeat() {
        let config = StressTestConfig {
            every: Duration::from_secs(7 * 24 * 3600),
            ..StressTestConfig::default()
        };
        let due = utc("2026-12-01T22:00:00Z");
        assert_eq!(
            next_due(&config, due, utc("2026-12-01T22:00:05Z")),
            utc("2026-12-08T22:00:00Z")
        );
        // Down for three weeks: one run now, the next on the same weekday and time.
        assert_eq!(
            next_due(&config, due, utc("2026-12-20T10:00:00Z")),
            utc("2026-12-22T22:00:00Z")
        );
    }
}

//! Stored what-if runs and the stress-test schedule (issue 17, 体检).
//!
//! A run keeps the scenario as asked and the outcome as the API answered it, both as
//! JSON written by the API: the store does not read inside them. Only the newest
//! [`MAX_SCENARIO_RUNS`] runs are kept, pruned in the transaction that adds one: an
//! outcome holds every town (a few hundred KiB for a large city), so a busy planner
//! must not grow the file without bound. The oldest go first and the newest row always
//! stays, so an id is never handed out twice.
//!
//! The schedule is one row of `stress_tests` with `ran` NULL: when the next stress
//! test is due. Completing a stress test stores its runs, marks its row and schedules
//! the next one in one transaction, so a restart at any point neither runs a test again
//! nor skips one.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};

use super::{Columns, FromRow, Limit, Millis, RowError, sqlite_error};
use crate::{Store, StoreError};

/// Runs kept; older ones are deleted as new ones are added.
pub const MAX_SCENARIO_RUNS: usize = 100;

/// `requested_by` of the runs the scheduled stress test makes.
pub const STRESS_TEST_REQUESTER: &str = "stress_test";

/// A what-if run to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewScenarioRun {
    pub at: DateTime<Utc>,
    /// The scenario's name, when it was given one.
    pub name: Option<String>,
    /// The name of the token that asked, or [`STRESS_TEST_REQUESTER`].
    pub requested_by: String,
    pub towns_below_target: u64,
    /// The request, as JSON.
    pub request: String,
    /// The outcome, as JSON.
    pub outcome: String,
}

/// A stored run.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioRunRow {
    pub id: i64,
    /// The stress test it ran in; `None` when asked through the API.
    pub stress_test: Option<i64>,
    pub run: NewScenarioRun,
}

/// A stored run without its JSON, for lists.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioRunSummary {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub name: Option<String>,
    pub stress_test: Option<i64>,
    pub towns_below_target: u64,
}

/// One scheduled stress test: the next one (`ran` is `None`) or one that ran.
#[derive(Debug, Clone, PartialEq)]
pub struct StressTestRow {
    pub id: i64,
    pub due: DateTime<Utc>,
    pub ran: Option<DateTime<Utc>>,
    /// The report's summary as JSON, once it ran.
    pub summary: Option<String>,
}

const RUN_COLUMNS: &str =
    "id, at, name, requested_by, stress_test, towns_below_target, request, outcome";

impl Store {
    /// Stores `run` (asked through the API) and returns its id.
    pub fn record_scenario_run(&mut self, run: &NewScenarioRun) -> Result<i64, StoreError> {
        let path = self.path().to_owned();
        let tx = self
            .conn_mut()
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error(&path, "start storing a scenario run"))?;
        let id = insert_run(&tx, run, None).map_err(sqlite_error(&path, "store a scenario run"))?;
        tx.commit()
            .map_err(sqlite_error(&path, "commit a scenario run"))?;
        Ok(id)
    }

    /// The run `id`, if it is still kept.
    pub fn scenario_run(&self, id: i64) -> Result<Option<ScenarioRunRow>, StoreError> {
        self.first_row(
            &format!("SELECT {RUN_COLUMNS} FROM scenario_runs WHERE id = ?1"),
            params![id],
            "read a scenario run",
        )
    }

    /// The newest runs first, at most `limit`.
    pub fn scenario_runs(&self, limit: usize) -> Result<Vec<ScenarioRunSummary>, StoreError> {
        self.rows(
            "SELECT id, at, name, stress_test, towns_below_target FROM scenario_runs
             ORDER BY id DESC LIMIT ?1",
            params![Limit(limit)],
            "list scenario runs",
        )
    }

    /// The next stress test; when none is scheduled yet (the first start with a
    /// `[stress_test]`), one is scheduled at `first_due`.
    pub fn next_stress_test(
        &mut self,
        first_due: DateTime<Utc>,
    ) -> Result<StressTestRow, StoreError> {
        let path = self.path().to_owned();
        let tx = self
            .conn_mut()
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error(
                &path,
                "start reading the stress-test schedule",
            ))?;
        let scheduled = |tx: &Transaction<'_>| {
            tx.query_row(
                "SELECT id, due FROM stress_tests WHERE ran IS NULL",
                [],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Millis>(1)?)),
            )
            .optional()
        };
        let next = match scheduled(&tx).map_err(sqlite_error(&path, "read the schedule"))? {
            Some((id, due)) => StressTestRow {
                id,
                due: due.0,
                ran: None,
                summary: None,
            },
            None => {
                tx.execute(
                    "INSERT INTO stress_tests (due) VALUES (?1)",
                    params![Millis(first_due)],
                )
                .map_err(sqlite_error(&path, "schedule the first stress test"))?;
                StressTestRow {
                    id: tx.last_insert_rowid(),
                    due: first_due,
                    ran: None,
                    summary: None,
                }
            }
        };
        tx.commit()
            .map_err(sqlite_error(&path, "commit the stress-test schedule"))?;
        Ok(next)
    }

    /// Moves the next stress test, `id`, to `due`: the interval was shortened in the
    /// configuration since it was scheduled.
    pub fn reschedule_stress_test(
        &mut self,
        id: i64,
        due: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let path = self.path().to_owned();
        self.conn()
            .execute(
                "UPDATE stress_tests SET due = ?2 WHERE id = ?1 AND ran IS NULL",
                params![id, Millis(due)],
            )
            .map_err(sqlite_error(&path, "reschedule the stress test"))?;
        Ok(())
    }

    /// Records that stress test `id` ran at `ran`: stores its `runs` (their ids are
    /// returned in the same order) and `summary`, and schedules the next one at
    /// `next_due`, all or nothing.
    pub fn complete_stress_test(
        &mut self,
        id: i64,
        ran: DateTime<Utc>,
        runs: &[NewScenarioRun],
        summary: impl FnOnce(&[i64]) -> String,
        next_due: DateTime<Utc>,
    ) -> Result<Vec<i64>, StoreError> {
        let path = self.path().to_owned();
        let tx = self
            .conn_mut()
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error(&path, "start recording a stress test"))?;
        let ids = runs
            .iter()
            .map(|run| insert_run(&tx, run, Some(id)))
            .collect::<Result<Vec<i64>, _>>()
            .map_err(sqlite_error(&path, "store a stress test's runs"))?;
        let summary = summary(&ids);
        tx.execute(
            "UPDATE stress_tests SET ran = ?2, summary = ?3 WHERE id = ?1 AND ran IS NULL",
            params![id, Millis(ran), summary],
        )
        .and_then(|_| {
            tx.execute(
                "INSERT INTO stress_tests (due) VALUES (?1)",
                params![Millis(next_due)],
            )
        })
        .map_err(sqlite_error(
            &path,
            "record a stress test and schedule the next",
        ))?;
        tx.commit()
            .map_err(sqlite_error(&path, "commit a stress test"))?;
        Ok(ids)
    }

    /// The stress test that ran last, if any has.
    pub fn latest_stress_test(&self) -> Result<Option<StressTestRow>, StoreError> {
        self.first_row(
            "SELECT id, due, ran, summary FROM stress_tests WHERE ran IS NOT NULL
             ORDER BY ran DESC, id DESC LIMIT 1",
            [],
            "read the latest stress test",
        )
    }
}

/// Inserts `run` and deletes what falls beyond the newest [`MAX_SCENARIO_RUNS`].
fn insert_run(
    tx: &Transaction<'_>,
    run: &NewScenarioRun,
    stress_test: Option<i64>,
) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO scenario_runs (at, name, requested_by, stress_test, towns_below_target,
                                    request, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        Millis(run.at),
        run.name,
        run.requested_by,
        stress_test,
        i64::try_from(run.towns_below_target).unwrap_or(i64::MAX),
        run.request,
        run.outcome,
    ])?;
    let id = tx.last_insert_rowid();
    tx.prepare_cached("DELETE FROM scenario_runs WHERE id <= ?1 - ?2")?
        .execute(params![id, Limit(MAX_SCENARIO_RUNS)])?;
    Ok(id)
}

impl FromRow for ScenarioRunRow {
    const TABLE: &'static str = "scenario_runs";
    const KEY: &'static [&'static str] = &["id"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        Ok(ScenarioRunRow {
            id: row.get("id")?,
            stress_test: row.get("stress_test")?,
            run: NewScenarioRun {
                at: row.get::<Millis>("at")?.0,
                name: row.get("name")?,
                requested_by: row.get("requested_by")?,
                towns_below_target: below_target(row)?,
                request: row.get("request")?,
                outcome: row.get("outcome")?,
            },
        })
    }
}

impl FromRow for ScenarioRunSummary {
    const TABLE: &'static str = "scenario_runs";
    const KEY: &'static [&'static str] = &["id"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        Ok(ScenarioRunSummary {
            id: row.get("id")?,
            at: row.get::<Millis>("at")?.0,
            name: row.get("name")?,
            stress_test: row.get("stress_test")?,
            towns_below_target: below_target(row)?,
        })
    }
}

fn below_target(row: &Columns<'_, '_>) -> Result<u64, RowError> {
    let n: i64 = row.get("towns_below_target")?;
    u64::try_from(n).map_err(|_| RowError::Corrupt(format!("bad towns_below_target {n}")))
}

impl FromRow for StressTestRow {
    const TABLE: &'static str = "stress_tests";
    const KEY: &'static [&'static str] = &["id"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        Ok(StressTestRow {
            id: row.get("id")?,
            due: row.get::<Millis>("due")?.0,
            ran: row.get::<Option<Millis>>("ran")?.map(|m| m.0),
            summary: row.get("summary")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreOptions;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db"), StoreOptions::default()).unwrap();
        (dir, store)
    }

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    fn run(n: i64) -> NewScenarioRun {
        NewScenarioRun {
            at: at(n * 1000),
            name: Some(format!("run {n}")),
            requested_by: "planner".into(),
            towns_below_target: 3,
            request: "{}".into(),
            outcome: format!("{{\"n\":{n}}}"),
        }
    }

    #[test]
    fn only_the_newest_runs_are_kept_and_no_id_comes_back() {
        let (_dir, mut store) = store();
        let ids: Vec<i64> = (1..=MAX_SCENARIO_RUNS as i64 + 5)
            .map(|n| store.record_scenario_run(&run(n)).unwrap())
            .collect();
        let newest = *ids.last().unwrap();
        assert!(
            store.scenario_run(ids[4]).unwrap().is_none(),
            "the oldest went"
        );
        let kept = store
            .scenario_run(ids[5])
            .unwrap()
            .expect("the 100th newest");
        assert_eq!(kept.run, run(6));
        let list = store.scenario_runs(1000).unwrap();
        assert_eq!(list.len(), MAX_SCENARIO_RUNS);
        assert_eq!(list[0].id, newest);
        let next = store.record_scenario_run(&run(0)).unwrap();
        assert_eq!(next, newest + 1, "ids only grow");
    }

    #[test]
    fn the_schedule_survives_a_reopen_and_a_completed_test_schedules_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let first = {
            let mut store = Store::open(&path, StoreOptions::default()).unwrap();
            store.next_stress_test(at(10_000)).unwrap()
        };
        assert_eq!(first.due, at(10_000));
        let mut store = Store::open(&path, StoreOptions::default()).unwrap();
        // Reopened later: the first due time stands, the later one offered is ignored.
        let again = store.next_stress_test(at(99_000)).unwrap();
        assert_eq!(again, first);
        assert_eq!(store.latest_stress_test().unwrap(), None);

        let ids = store
            .complete_stress_test(
                first.id,
                at(10_500),
                &[run(1), run(2)],
                |ids| format!("{ids:?}"),
                at(20_000),
            )
            .unwrap();
        let latest = store
            .latest_stress_test()
            .unwrap()
            .expect("the one that ran");
        assert_eq!(latest.ran, Some(at(10_500)));
        assert_eq!(latest.summary.as_deref(), Some(format!("{ids:?}").as_str()));
        for id in ids {
            let stored = store.scenario_run(id).unwrap().unwrap();
            assert_eq!(stored.stress_test, Some(first.id));
        }
        let next = store.next_stress_test(at(99_000)).unwrap();
        assert_eq!((next.due, next.ran), (at(20_000), None));
        store.reschedule_stress_test(next.id, at(15_000)).unwrap();
        assert_eq!(store.next_stress_test(at(99_000)).unwrap().due, at(15_000));
    }
}

//! The activation table (一表, docs/design.md#activation-table): activations of
//! shelters, the shelters each covers and their steps with due times. The API writes
//! them on its own connection, each change in one transaction with its audit entry and,
//! with `[influx]`, the `activation` lines it changes. Kept forever, like `audit`.

use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{Columns, FromRow, Millis, RowError, sqlite_error};
use crate::influx::line::{ActivationProgress, activation_line};
use crate::{NewAudit, Store, StoreError};

/// An activation to start. Its shelters and steps are copied from the registry when it
/// starts, so a later edit of the registry does not move its due times.
#[derive(Debug, Clone, PartialEq)]
pub struct NewActivation {
    /// The scope as the caller gave it (JSON).
    pub scope: String,
    pub reason: String,
    pub scenario: Option<String>,
    /// A token's name, or what started it (a warning level).
    pub started_by: String,
    pub started_at: DateTime<Utc>,
    pub shelters: Vec<ActivationShelter>,
}

/// A shelter of an activation, with its steps.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationShelter {
    pub shelter: String,
    /// Its town when the activation started.
    pub town: String,
    /// People, as the registry said then.
    pub capacity: u64,
    pub steps: Vec<ActivationStep>,
}

/// One step of a shelter's plan in an activation.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationStep {
    /// 1, 2, … in the plan's order.
    pub n: u32,
    pub name: String,
    /// The registry contact's name.
    pub contact: String,
    pub due_at: DateTime<Utc>,
    /// When it was marked done, by whom, with what note.
    pub done: Option<StepDone>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepDone {
    pub at: DateTime<Utc>,
    pub by: String,
    pub note: String,
}

/// An activation as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationRow {
    pub id: i64,
    pub activation: NewActivation,
    /// When it was closed and by whom; `None` while open.
    pub closed: Option<(DateTime<Utc>, String)>,
}

impl ActivationRow {
    pub fn is_open(&self) -> bool {
        self.closed.is_none()
    }

    /// The towns of its shelters, each once, in order.
    pub fn towns(&self) -> Vec<String> {
        let mut towns: Vec<String> = Vec::new();
        for s in &self.activation.shelters {
            if !towns.contains(&s.town) {
                towns.push(s.town.clone());
            }
        }
        towns
    }
}

/// Why an activation could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartRefused {
    /// The shelter is already in this open activation.
    AlreadyActivating { shelter: String, activation: i64 },
}

/// What marking a step done came to.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    Done(Box<ActivationRow>),
    UnknownActivation,
    /// The activation is closed: its steps are history.
    Closed,
    /// No such shelter in the activation, or no step `n` for it.
    UnknownStep,
    AlreadyDone(StepDone),
}

/// Which activations [`Store::activations`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationState {
    Open,
    Closed,
    All,
}

/// Where a change came from, for its audit entry.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub by: &'a str,
    /// `token`, or how else (a warning level).
    pub via: &'a str,
    pub remote: &'a str,
}

const ACTIVATION_COLUMNS: &str =
    "id, scope, reason, scenario, started_by, started_at, state, closed_at, closed_by";

impl Store {
    /// Starts `new` with its audit entry (`activation_start`, naming its towns), unless
    /// one of its shelters is in an open activation; returns it as stored.
    pub fn start_activation(
        &mut self,
        new: &NewActivation,
        origin: Origin<'_>,
    ) -> Result<Result<ActivationRow, StartRefused>, StoreError> {
        let path = self.path().to_owned();
        let influx = self.options().influx_queue;
        let tx = self
            .conn_mut()
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error(&path, "start an activation"))?;
        for s in &new.shelters {
            if let Some(activation) = open_activation_of(&tx, &path, &s.shelter)? {
                let shelter = s.shelter.clone();
                return Ok(Err(StartRefused::AlreadyActivating {
                    shelter,
                    activation,
                }));
            }
        }
        let id = insert_activation(&tx, &path, new)?;
        let row = ActivationRow {
            id,
            activation: new.clone(),
            closed: None,
        };
        let detail = format!(
            "activation {id}: {} shelters, {}: {}",
            new.shelters.len(),
            new.scope,
            new.reason
        );
        audit(
            &tx,
            &path,
            &row,
            origin,
            "activation_start",
            new.started_at,
            detail,
        )?;
        if influx {
            enqueue_progress(&tx, &path, &row, new.started_at)?;
        }
        tx.commit()
            .map_err(sqlite_error(&path, "commit an activation"))?;
        Ok(Ok(row))
    }

    /// Marks step `n` of `shelter` in activation `id` done, with its audit entry
    /// (`activation_step`).
    pub fn mark_activation_step(
        &mut self,
        id: i64,
        shelter: &str,
        n: u32,
        done: &StepDone,
        origin: Origin<'_>,
    ) -> Result<StepOutcome, StoreError> {
        let path = self.path().to_owned();
        let influx = self.options().influx_queue;
        let tx = self
            .conn_mut()
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error(&path, "start marking a step"))?;
        let Some(mut row) = load_activation(&tx, &path, id)? else {
            return Ok(StepOutcome::UnknownActivation);
        };
        if !row.is_open() {
            return Ok(StepOutcome::Closed);
        }
        let step = row
            .activation
            .shelters
            .iter_mut()
            .filter(|s| s.shelter == shelter)
            .flat_map(|s| s.steps.iter_mut())
            .find(|s| s.n == n);
        let Some(step) = step else {
            return Ok(StepOutcome::UnknownStep);
        };
        if let Some(before) = &step.done {
            return Ok(StepOutcome::AlreadyDone(before.clone()));
        }
        step.done = Some(done.clone());
        let detail = format!(
            "activation {id}: {shelter} step {n} ({}) done: {}",
            step.name, done.note
        );
        tx.execute(
            "UPDATE activation_steps SET done_at = ?4, done_by = ?5, note = ?6
             WHERE activation = ?1 AND shelter = ?2 AND n = ?3",
            params![id, shelter, n, Millis(done.at), done.by, done.note],
        )
        .map_err(sqlite_error(&path, "mark a step done"))?;
        audit(&tx, &path, &row, origin, "activation_step", done.at, detail)?;
        if influx {
            enqueue_progress(&tx, &path, &row, done.at)?;
        }
        tx.commit()
            .map_err(sqlite_error(&path, "commit a step done"))?;
        Ok(StepOutcome::Done(Box::new(row)))
    }

    /// Closes activation `id` at `at`, with its audit entry (`activation_close`).
    /// `Ok(None)` when there is no such activation; a closed one is returned as it is
    /// (`closed` says when it was).
    pub fn close_activation(
        &mut self,
        id: i64,
        at: DateTime<Utc>,
        origin: Origin<'_>,
    ) -> Result<Option<(ActivationRow, bool)>, StoreError> {
        let path = self.path().to_owned();
        let influx = self.options().influx_queue;
        let tx = self
            .conn_mut()
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error(&path, "start closing an activation"))?;
        let Some(mut row) = load_activation(&tx, &path, id)? else {
            return Ok(None);
        };
        if !row.is_open() {
            return Ok(Some((row, false)));
        }
        tx.execute(
            "UPDATE activations SET state = 'closed', closed_at = ?2, closed_by = ?3 WHERE id = ?1",
            params![id, Millis(at), origin.by],
        )
        .and_then(|_| {
            tx.execute(
                "UPDATE activation_shelters SET open = 0 WHERE activation = ?1",
                [id],
            )
        })
        .map_err(sqlite_error(&path, "close an activation"))?;
        row.closed = Some((at, origin.by.to_owned()));
        let detail = format!("activation {id} closed");
        audit(&tx, &path, &row, origin, "activation_close", at, detail)?;
        if influx {
            enqueue_progress(&tx, &path, &row, at)?;
        }
        tx.commit()
            .map_err(sqlite_error(&path, "commit closing an activation"))?;
        Ok(Some((row, true)))
    }

    /// Activation `id`, if there is one.
    pub fn activation(&self, id: i64) -> Result<Option<ActivationRow>, StoreError> {
        load_activation(self.conn(), self.path(), id)
    }

    /// Activations newest first, of `state`, at most `limit`.
    pub fn activations(
        &self,
        state: ActivationState,
        limit: usize,
    ) -> Result<Vec<ActivationRow>, StoreError> {
        let state = match state {
            ActivationState::Open => Some("open"),
            ActivationState::Closed => Some("closed"),
            ActivationState::All => None,
        };
        let heads: Vec<Head> = self.rows(
            &format!(
                "SELECT {ACTIVATION_COLUMNS} FROM activations
                 WHERE ?1 IS NULL OR state = ?1 ORDER BY id DESC LIMIT ?2"
            ),
            params![state, super::Limit(limit)],
            "list activations",
        )?;
        heads
            .into_iter()
            .map(|head| with_shelters(self.conn(), self.path(), head))
            .collect()
    }

    /// Writes every open activation's `activation` lines at `now` (so a step falling
    /// overdue shows), when the InfluxDB queue is on; returns how many.
    pub fn enqueue_open_activation_progress(
        &mut self,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        if !self.options().influx_queue {
            return Ok(0);
        }
        let open = self.activations(ActivationState::Open, usize::MAX >> 1)?;
        let path = self.path().to_owned();
        let tx = self
            .conn_mut()
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error(&path, "start writing activation progress"))?;
        let mut lines = 0;
        for row in &open {
            lines += enqueue_progress(&tx, &path, row, now)?;
        }
        tx.commit()
            .map_err(sqlite_error(&path, "commit activation progress"))?;
        Ok(lines)
    }
}

/// The open activation `shelter` is in, if any.
fn open_activation_of(
    conn: &Connection,
    path: &Path,
    shelter: &str,
) -> Result<Option<i64>, StoreError> {
    conn.query_row(
        "SELECT activation FROM activation_shelters WHERE shelter = ?1 AND open = 1",
        [shelter],
        |row| row.get(0),
    )
    .optional()
    .map_err(sqlite_error(path, "find a shelter's open activation"))
}

fn insert_activation(
    tx: &Transaction<'_>,
    path: &Path,
    new: &NewActivation,
) -> Result<i64, StoreError> {
    let error = |e| sqlite_error(path, "insert an activation")(e);
    tx.execute(
        "INSERT INTO activations (scope, reason, scenario, started_by, started_at, state)
         VALUES (?1, ?2, ?3, ?4, ?5, 'open')",
        params![
            new.scope,
            new.reason,
            new.scenario,
            new.started_by,
            Millis(new.started_at)
        ],
    )
    .map_err(&error)?;
    let id = tx.last_insert_rowid();
    let mut shelters = tx
        .prepare_cached(
            "INSERT INTO activation_shelters (activation, shelter, town, capacity, open)
             VALUES (?1, ?2, ?3, ?4, 1)",
        )
        .map_err(&error)?;
    let mut steps = tx
        .prepare_cached(
            "INSERT INTO activation_steps (activation, shelter, n, name, contact, due_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(&error)?;
    for s in &new.shelters {
        let capacity = i64::try_from(s.capacity).unwrap_or(i64::MAX);
        shelters
            .execute(params![id, s.shelter, s.town, capacity])
            .map_err(&error)?;
        for step in &s.steps {
            steps
                .execute(params![
                    id,
                    s.shelter,
                    step.n,
                    step.name,
                    step.contact,
                    Millis(step.due_at)
                ])
                .map_err(&error)?;
        }
    }
    Ok(id)
}

fn audit(
    tx: &Transaction<'_>,
    path: &Path,
    row: &ActivationRow,
    origin: Origin<'_>,
    action: &str,
    at: DateTime<Utc>,
    detail: String,
) -> Result<(), StoreError> {
    let entry = NewAudit {
        at,
        actor: origin.by.to_owned(),
        via: origin.via.to_owned(),
        action: action.to_owned(),
        towns: row.towns(),
        detail,
        remote: origin.remote.to_owned(),
        ..NewAudit::default()
    };
    super::audit::insert_audit(tx, path, &entry)?;
    Ok(())
}

/// One `activation` line per shelter of `row`, as it stands at `now`.
fn enqueue_progress(
    tx: &Transaction<'_>,
    path: &Path,
    row: &ActivationRow,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let mut lines = 0;
    for s in &row.activation.shelters {
        let progress = ActivationProgress {
            steps_done: s.steps.iter().filter(|st| st.done.is_some()).count() as u64,
            steps_overdue: s
                .steps
                .iter()
                .filter(|st| st.done.is_none() && st.due_at <= now)
                .count() as u64,
            steps_total: s.steps.len() as u64,
            capacity: s.capacity,
            open: row.is_open(),
        };
        let line = activation_line(row.id, &s.town, &s.shelter, &progress, now);
        crate::influx::queue::insert(tx, &line, Millis(now))
            .map_err(sqlite_error(path, "enqueue an activation line"))?;
        lines += 1;
    }
    Ok(lines)
}

fn load_activation(
    conn: &Connection,
    path: &Path,
    id: i64,
) -> Result<Option<ActivationRow>, StoreError> {
    let heads: Vec<Head> = rows_on(
        conn,
        path,
        &format!("SELECT {ACTIVATION_COLUMNS} FROM activations WHERE id = ?1"),
        [id],
        "read an activation",
    )?;
    heads
        .into_iter()
        .next()
        .map(|h| with_shelters(conn, path, h))
        .transpose()
}

/// Every row of `sql` on `conn` (inside a transaction, or the store's own connection).
fn rows_on<T: FromRow>(
    conn: &Connection,
    path: &Path,
    sql: &str,
    params: impl rusqlite::Params,
    action: &'static str,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    super::row::for_each_row(conn, path, sql, params, action, |row| {
        out.push(row);
        Ok::<_, StoreError>(())
    })?;
    Ok(out)
}

/// An activation's row without its shelters.
struct Head(ActivationRow);

fn with_shelters(conn: &Connection, path: &Path, head: Head) -> Result<ActivationRow, StoreError> {
    let mut row = head.0;
    let shelters: Vec<ShelterRow> = rows_on(
        conn,
        path,
        "SELECT activation, shelter, town, capacity FROM activation_shelters
         WHERE activation = ?1 ORDER BY rowid",
        [row.id],
        "read an activation's shelters",
    )?;
    let steps: Vec<StepRow> = rows_on(
        conn,
        path,
        "SELECT activation, shelter, n, name, contact, due_at, done_at, done_by, note
         FROM activation_steps WHERE activation = ?1 ORDER BY shelter, n",
        [row.id],
        "read an activation's steps",
    )?;
    row.activation.shelters = shelters
        .into_iter()
        .map(|s| {
            let mut s = s.0;
            s.steps = steps
                .iter()
                .filter(|st| st.0 == s.shelter)
                .map(|st| st.1.clone())
                .collect();
            s
        })
        .collect();
    Ok(row)
}

impl FromRow for Head {
    const TABLE: &'static str = "activations";
    const KEY: &'static [&'static str] = &["id"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        let closed = match (
            row.get::<Option<Millis>>("closed_at")?,
            row.get::<Option<String>>("closed_by")?,
        ) {
            (Some(at), Some(by)) => Some((at.0, by)),
            (None, None) => None,
            _ => return Err(RowError::Corrupt("closed without who closed it".into())),
        };
        let state: String = row.get("state")?;
        if (state == "open") != closed.is_none() {
            return Err(RowError::Corrupt(format!(
                "state {state:?} disagrees with closed_at"
            )));
        }
        Ok(Head(ActivationRow {
            id: row.get("id")?,
            activation: NewActivation {
                scope: row.get("scope")?,
                reason: row.get("reason")?,
                scenario: row.get("scenario")?,
                started_by: row.get("started_by")?,
                started_at: row.get::<Millis>("started_at")?.0,
                shelters: Vec::new(),
            },
            closed,
        }))
    }
}

struct ShelterRow(ActivationShelter);

impl FromRow for ShelterRow {
    const TABLE: &'static str = "activation_shelters";
    const KEY: &'static [&'static str] = &["activation", "shelter"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        Ok(ShelterRow(ActivationShelter {
            shelter: row.get("shelter")?,
            town: row.get("town")?,
            capacity: row.get::<super::row::Count>("capacity")?.0,
            steps: Vec::new(),
        }))
    }
}

struct StepRow(String, ActivationStep);

impl FromRow for StepRow {
    const TABLE: &'static str = "activation_steps";
    const KEY: &'static [&'static str] = &["activation", "shelter", "n"];

    fn from_row(row: &Columns<'_, '_>) -> Result<Self, RowError> {
        let done = match row.get::<Option<Millis>>("done_at")? {
            Some(at) => Some(StepDone {
                at: at.0,
                by: row.get::<Option<String>>("done_by")?.unwrap_or_default(),
                note: row.get::<Option<String>>("note")?.unwrap_or_default(),
            }),
            None => None,
        };
        Ok(StepRow(
            row.get("shelter")?,
            ActivationStep {
                n: row.get("n")?,
                name: row.get("name")?,
                contact: row.get("contact")?,
                due_at: row.get::<Millis>("due_at")?.0,
                done,
            },
        ))
    }
}

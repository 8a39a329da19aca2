//! The schema, as a list of migrations. `PRAGMA user_version` records how many have been
//! applied; opening a file applies the rest in one transaction, so a file is always at a
//! known version. Later tables (alerts, acks, silences, the notification outbox, the
//! InfluxDB queue) are appended as new entries; an entry, once released, never changes.
//!
//! Tables are `STRICT`, so a value of the wrong type cannot be stored and every decoding
//! problem left is one of meaning (bad JSON, an impossible time), reported with its key.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::open_error;
use crate::StoreError;

const MIGRATIONS: &[&str] = &[
    // 1: ingest. `readings` is keyed by (ts, facility): the key makes a redelivered
    // reading a duplicate, and putting time first makes inserts append near the end of
    // the table (readings arrive roughly in time order), so a batch dirties a few pages
    // instead of one per facility, and retention deletes a prefix. Measured on the
    // 2-core dev machine, batches of 100 over 1000 facilities: ~600,000 readings/s,
    // against ~60,000 with (facility, ts). The price: a facility's history is a scan of
    // the time range, which suits the recent hours a board shows; long history is
    // InfluxDB's job.
    "CREATE TABLE readings (
        ts INTEGER NOT NULL,        -- measured at, epoch ms
        facility TEXT NOT NULL,
        seq INTEGER,                -- the gateway's u64, stored as the same 64 bits
        received INTEGER NOT NULL,  -- received at by our clock, epoch ms
        body TEXT NOT NULL,         -- the observation as JSON, e.g. {\"stock\":{\"water\":12000.0}}
        PRIMARY KEY (ts, facility)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE facility_state (
        facility TEXT PRIMARY KEY NOT NULL,
        snapshot TEXT NOT NULL,     -- reserve::ledger::FacilitySnapshot as JSON
        updated INTEGER NOT NULL    -- epoch ms
    ) STRICT;

    CREATE TABLE sheltered (
        town TEXT PRIMARY KEY NOT NULL,
        sheltered INTEGER NOT NULL,
        updated INTEGER NOT NULL    -- epoch ms
    ) STRICT;

    CREATE TABLE rejects (
        id INTEGER PRIMARY KEY,     -- grows by one per reject; pruning deletes a prefix
        at INTEGER NOT NULL,        -- epoch ms
        topic TEXT NOT NULL,
        reason TEXT NOT NULL,
        detail TEXT NOT NULL,
        payload TEXT NOT NULL,      -- the payload's head, as text
        payload_len INTEGER NOT NULL -- bytes received
    ) STRICT;

    -- Totals per reason since the file was created: the rejects table forgets, these do not.
    CREATE TABLE reject_counts (
        reason TEXT PRIMARY KEY NOT NULL,
        n INTEGER NOT NULL
    ) STRICT;",
    // 2: the InfluxDB sink's disk-backed queue. Lines are enqueued in the same
    // transaction as the readings they describe, so what was acknowledged reaches
    // InfluxDB eventually even across a crash or an hour-long outage; the sink deletes
    // a prefix once InfluxDB accepted it. Ids give the replay order.
    "CREATE TABLE influx_queue (
        id INTEGER PRIMARY KEY,
        line TEXT NOT NULL,         -- one line of line protocol, no trailing newline
        enqueued INTEGER NOT NULL   -- epoch ms, for the sink's lag metric
    ) STRICT;",
    // 3: alerts, silences and the notification outbox (docs/design.md#alerts). An alert
    // row is one occurrence of a problem: while it is open (pending or firing) its key
    // (town, rule family, subject) is unique; once resolved it stays as history and the
    // next occurrence is a new row. The outbox holds every message to be sent: it is
    // written in the same transaction as the alert change that caused it, and its
    // dedup_key makes enqueuing the same message twice a no-op, so a restart neither
    // loses nor repeats a notification.
    "CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL,            -- town/family/subject, e.g. jingshan/reserve/water
        town TEXT NOT NULL,
        rule TEXT NOT NULL,           -- current rule id, e.g. reserve_below_target
        subject TEXT NOT NULL,        -- category or facility id; '' when none
        severity TEXT NOT NULL,       -- warning | critical
        state TEXT NOT NULL CHECK (state IN ('pending', 'firing', 'resolved')),
        detail TEXT NOT NULL,         -- JSON: the figures messages quote
        since INTEGER NOT NULL,       -- epoch ms: when the problem began
        created INTEGER NOT NULL,     -- epoch ms: first seen (start of `for`)
        fired_at INTEGER,
        resolved_at INTEGER,
        acked_by TEXT,
        acked_at INTEGER,
        ack_note TEXT,
        escalation INTEGER NOT NULL,  -- 0 town, 1 cluster, 2 district, 3 city contacts
        remind_at INTEGER,            -- next reminder while unacknowledged
        escalate_at INTEGER,          -- next escalation while unacknowledged
        notified_at INTEGER,          -- last notification enqueued
        notify_event TEXT,            -- event waiting for its town's group flush
        escalated_from INTEGER,       -- level before an escalation waiting for its flush
        notify_seq INTEGER NOT NULL,  -- notifications flushed so far (dedup keys)
        updated INTEGER NOT NULL
    ) STRICT;
    CREATE UNIQUE INDEX alerts_open_key ON alerts (key) WHERE state <> 'resolved';
    CREATE INDEX alerts_state ON alerts (state, id);
    -- What the engine resumes from: open alerts and resolutions not told yet.
    CREATE INDEX alerts_live ON alerts (id)
        WHERE state <> 'resolved' OR notify_event IS NOT NULL OR escalated_from IS NOT NULL;
    CREATE INDEX alerts_town ON alerts (town, id);

    CREATE TABLE silences (
        id INTEGER PRIMARY KEY,
        town TEXT,                    -- NULL matches any
        facility TEXT,
        rule TEXT,
        until INTEGER NOT NULL,       -- epoch ms
        created_by TEXT NOT NULL,
        comment TEXT NOT NULL,
        created INTEGER NOT NULL
    ) STRICT;

    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        dedup_key TEXT NOT NULL UNIQUE,
        town TEXT NOT NULL,
        alert_ids TEXT NOT NULL,      -- JSON array of alert ids the message covers
        event TEXT NOT NULL,          -- fired | raised | resolved | remind | escalate
        contact TEXT NOT NULL,
        channel TEXT NOT NULL,        -- email | sms | webhook
        recipient TEXT NOT NULL,      -- address, phone or URL
        subject TEXT NOT NULL,
        body TEXT NOT NULL,           -- text body, SMS text or webhook JSON
        html TEXT,                    -- email only
        state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed')),
        attempts INTEGER NOT NULL,
        next_attempt INTEGER NOT NULL,
        last_error TEXT,
        created INTEGER NOT NULL,
        sent_at INTEGER
    ) STRICT;
    CREATE INDEX outbox_due ON outbox (channel, next_attempt) WHERE state = 'pending';
    CREATE INDEX outbox_state ON outbox (state, id);
    CREATE INDEX outbox_town ON outbox (town, id);",
    // The ingest writer saves facility snapshots about once a second, not with every
    // batch; `replay_from` (epoch ms) is set while readings applied to the ledger are
    // not yet in a snapshot: the earliest `ts` among them. A start-up finding it
    // replays the readings stored from there.
    "CREATE TABLE ledger_meta (
        key TEXT PRIMARY KEY NOT NULL,
        value INTEGER NOT NULL
    ) STRICT;",
    // A notification waits while an older one to the same recipient is pending
    // (`Store::due_notifications`): this finds that older one without a scan.
    "CREATE INDEX outbox_pending_recipient ON outbox (channel, recipient, id)
        WHERE state = 'pending';",
    // Where each reading came from (issue 15): its gateway, or a count an officer
    // entered through the API, with the name of the token it was entered with. Every
    // reading stored before came from a gateway. ADD COLUMN with a constant default
    // rewrites no row, so the migration is quick whatever the history's size. The
    // partial index holds manual readings only (a few a day, where gateways send one a
    // minute): it finds a facility's latest hand count without a scan and costs
    // gateway inserts nothing.
    "ALTER TABLE readings ADD COLUMN source TEXT NOT NULL DEFAULT 'gateway'
        CHECK (source IN ('gateway', 'manual'));
    ALTER TABLE readings ADD COLUMN entered_by TEXT
        CHECK ((source = 'manual') = (entered_by IS NOT NULL));
    CREATE INDEX readings_manual ON readings (facility, ts) WHERE source = 'manual';",
    // The audit log: acknowledgements through signed links, SMS replies and tokens
    // (docs/design.md#acknowledging-from-a-phone). Only appended to, never pruned: it
    // grows by what people do, not by what gateways send. The index finds the last
    // message sent to a phone that replies "1".
    "CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,          -- epoch ms
        actor TEXT NOT NULL,          -- a contact's or a token's name
        via TEXT NOT NULL,            -- link | sms | token
        action TEXT NOT NULL,         -- ack
        alert_ids TEXT NOT NULL,      -- JSON array
        detail TEXT NOT NULL
    ) STRICT;
    CREATE INDEX outbox_recipient ON outbox (channel, recipient, id);",
    // Drills (issue 14, docs/design.md#drills): an exercise over a scope for a while.
    // Alerts raised in its scope while it runs name it in `alerts.drill`, so their
    // messages say they are a drill and their escalation stops at the drill's scope.
    // `ended` is set when an admin ends one early; the drill is over at the earlier of
    // `until` and `ended`. Kept forever, like the audit log: a few rows a month.
    "CREATE TABLE drills (
        id INTEGER PRIMARY KEY,
        scope TEXT NOT NULL,          -- city | district:<id> | cluster:<id> | towns:<id>,<id>
        started INTEGER NOT NULL,     -- epoch ms
        until INTEGER NOT NULL,       -- epoch ms: when it ends by itself
        ended INTEGER,                -- epoch ms: when it was ended early
        started_by TEXT NOT NULL,     -- a token's name
        ended_by TEXT,
        note TEXT NOT NULL
    ) STRICT;
    ALTER TABLE alerts ADD COLUMN drill INTEGER;  -- the drill it was raised in; NULL: real",
    // Transfers (issue 15): stock moved between facilities, as an officer recorded it.
    // The facilities' towns are kept with the row, so the list by town stays what it
    // was when the registry changes; the indexes list a town's sent and received
    // transfers newest first. Kept forever, like the audit log: a few rows a day.
    "CREATE TABLE transfers (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,          -- epoch ms: when it was recorded
        from_facility TEXT NOT NULL,
        from_town TEXT NOT NULL,
        to_facility TEXT NOT NULL,
        to_town TEXT NOT NULL,
        category TEXT NOT NULL,
        quantity REAL NOT NULL CHECK (quantity > 0 AND quantity <= 1e9), -- the API's bound
        note TEXT NOT NULL,
        recorded_by TEXT NOT NULL     -- a token's name
    ) STRICT;
    CREATE INDEX transfers_from_town ON transfers (from_town, at);
    CREATE INDEX transfers_to_town ON transfers (to_town, at);
    CREATE INDEX transfers_at ON transfers (at);",
    // The audit log covers every mutation (issue 15): where a request came from, and
    // the towns an action touched, so an officer can read their towns' entries.
    // `audit_towns` has one row per town an entry touched; a city-wide action (a
    // registry reload) has none and is for admins. The audit log now has its own
    // retention (`[store] audit_retention`), pruned by `at`.
    "ALTER TABLE audit ADD COLUMN remote TEXT NOT NULL DEFAULT '';  -- client address
    CREATE TABLE audit_towns (
        town TEXT NOT NULL,
        audit INTEGER NOT NULL,       -- audit.id
        PRIMARY KEY (town, audit)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX audit_towns_audit ON audit_towns (audit);
    CREATE INDEX audit_at ON audit (at);
    CREATE TRIGGER audit_towns_follow AFTER DELETE ON audit
    BEGIN DELETE FROM audit_towns WHERE audit = OLD.id; END;",
    // Stored what-if runs and the scheduled stress test (issue 17, 体检). A run keeps
    // its request and its outcome as JSON, as the API answered them; `stress_test`
    // names the scheduled report it ran in (NULL: asked through the API). Only the
    // newest runs are kept (`scenarios::MAX_SCENARIO_RUNS`, pruned as each is added):
    // an outcome holds every town. `stress_tests` is the schedule: the one row whose
    // `ran` is NULL is the next run, so a restart neither runs it again nor skips it;
    // a row that ran keeps the summary the board shows. A few rows a month, kept.
    "CREATE TABLE scenario_runs (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,          -- epoch ms: when it ran
        name TEXT,                    -- the scenario's name, when given
        requested_by TEXT NOT NULL,   -- a token's name, or 'stress_test'
        stress_test INTEGER,          -- stress_tests.id; NULL: asked through the API
        towns_below_target INTEGER NOT NULL,
        request TEXT NOT NULL,        -- JSON: the scenario as asked
        outcome TEXT NOT NULL         -- JSON: what the API answered
    ) STRICT;
    CREATE TABLE stress_tests (
        id INTEGER PRIMARY KEY,
        due INTEGER NOT NULL,         -- epoch ms: when it is to run
        ran INTEGER,                  -- epoch ms: when it ran; NULL: the next one
        summary TEXT                  -- JSON: the report's weakest towns, once it ran
    ) STRICT;
    CREATE UNIQUE INDEX stress_tests_one_next ON stress_tests ((ran IS NULL)) WHERE ran IS NULL;",
    // 12: the activation table (一表, issue 16): an activation of shelters, the shelters
    // it covers, and each shelter's steps with their due times. A shelter is in at most
    // one open activation: `activation_shelters.open` mirrors its activation's state so
    // a partial unique index can say so. Kept forever, like `audit`: a few rows an event.
    "CREATE TABLE activations (
        id INTEGER PRIMARY KEY,
        scope TEXT NOT NULL,          -- JSON: the scope as the caller gave it
        reason TEXT NOT NULL,
        scenario TEXT,
        started_by TEXT NOT NULL,     -- a token's name, or what started it (a warning level)
        started_at INTEGER NOT NULL,  -- epoch ms
        state TEXT NOT NULL CHECK (state IN ('open', 'closed')),
        closed_at INTEGER,            -- epoch ms
        closed_by TEXT
    ) STRICT;
    CREATE TABLE activation_shelters (
        activation INTEGER NOT NULL REFERENCES activations (id),
        shelter TEXT NOT NULL,        -- registry id
        town TEXT NOT NULL,           -- its town when the activation started
        capacity INTEGER NOT NULL,    -- people, as the registry said then
        open INTEGER NOT NULL,        -- 1 while the activation is open
        PRIMARY KEY (activation, shelter)
    ) STRICT;
    CREATE UNIQUE INDEX activation_shelters_one_open ON activation_shelters (shelter) WHERE open = 1;
    CREATE TABLE activation_steps (
        activation INTEGER NOT NULL REFERENCES activations (id),
        shelter TEXT NOT NULL,
        n INTEGER NOT NULL,           -- 1, 2, … in the plan's order
        name TEXT NOT NULL,
        contact TEXT NOT NULL,        -- the registry contact's name
        due_at INTEGER NOT NULL,      -- epoch ms: the activation's start + the step's `within`
        done_at INTEGER,
        done_by TEXT,
        note TEXT,
        PRIMARY KEY (activation, shelter, n)
    ) STRICT;",
    // 13: warning levels (预警等级, issue 16, docs/design.md#warning-levels): the history
    // of the levels an admin set over a scope. A row is in force from `starts_at` until
    // the earlier of `ends_at` (its own end; NULL: until ended) and `ended_at` (ended by
    // `none` for its scope, or by a new level for the same scope: `replaced_by`). The
    // level in force for a town is the highest of the rows in force covering it. Kept
    // forever, like the audit log: a few rows a season.
    "CREATE TABLE warning_levels (
        id INTEGER PRIMARY KEY,
        level TEXT NOT NULL CHECK (level IN ('blue', 'yellow', 'orange', 'red')),
        scope_kind TEXT NOT NULL CHECK (scope_kind IN ('city', 'district', 'cluster', 'towns')),
        scope_ids TEXT NOT NULL,      -- the district's, cluster's or towns' ids, comma-separated; '' for city
        reason TEXT NOT NULL,
        starts_at INTEGER NOT NULL,   -- epoch ms
        ends_at INTEGER,              -- epoch ms: when it ends by itself; NULL: until ended
        set_by TEXT NOT NULL,         -- a token's name
        set_at INTEGER NOT NULL,      -- epoch ms
        ended_at INTEGER,             -- epoch ms: when it was ended early or replaced
        ended_by TEXT,
        replaced_by INTEGER           -- warning_levels.id of the level that took its place
    ) STRICT;",
    // 14: an alert that fired while its town was catching up on a backlog of late
    // readings (docs/design.md#lifecycle): recorded at the readings' times, not told
    // unless it still held once the backlog was in.
    "ALTER TABLE alerts ADD COLUMN late INTEGER NOT NULL DEFAULT 0;  -- 1: fired during catch-up",
];

/// Brings the file to the newest schema this build knows. A file already up to date is
/// only read, so a reader can open the store while the writer holds a batch.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    if pending(conn, path)? == 0 {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(open_error(path, "start the schema migration"))?;
    // Read again under the write lock: another process may have migrated meanwhile.
    let applied = MIGRATIONS.len() - pending(&tx, path)?;
    for migration in &MIGRATIONS[applied..] {
        tx.execute_batch(migration)
            .map_err(open_error(path, "migrate the schema"))?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)
        .map_err(open_error(path, "record the schema version"))?;
    tx.commit()
        .map_err(open_error(path, "commit the schema migration"))
}

/// How many migrations the file lacks; an error when it is newer than this build.
fn pending(conn: &Connection, path: &Path) -> Result<usize, StoreError> {
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(open_error(path, "read the schema version"))?;
    let known = MIGRATIONS.len();
    match usize::try_from(found) {
        Ok(applied) if applied <= known => Ok(known - applied),
        _ => Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found,
            known: known as i64,
        }),
    }
}

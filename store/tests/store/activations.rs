//! The activation table's store (docs/design.md#activation-table): an activation with
//! its shelters and steps survives reopening the file, a shelter is in one open
//! activation at a time, and each change enqueues the `activation` lines Grafana draws
//! progress from (docs/design.md#influxdb-series), parsed back by InfluxDB's own parser.

use chrono::{DateTime, Duration, TimeZone, Utc};
use influxdb_line_protocol::{FieldValue, parse_lines};
use store::{
    ActivationShelter, ActivationState, ActivationStep, NewActivation, Origin, StartRefused,
    StepDone, StepOutcome, Store, StoreOptions,
};

fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 5, 0, 0).unwrap()
}

fn gym() -> NewActivation {
    let at = start_time();
    let step = |n: u32, name: &str, within_min: i64| ActivationStep {
        n,
        name: name.into(),
        contact: "desk@example.org".into(),
        due_at: at + Duration::minutes(within_min),
        done: None,
    };
    NewActivation {
        scope: r#"{"shelters":["js-gym"]}"#.into(),
        reason: "暴雨红色预警".into(),
        scenario: Some("flood".into()),
        started_by: "li-wei".into(),
        started_at: at,
        shelters: vec![ActivationShelter {
            shelter: "js-gym".into(),
            town: "jingshan".into(),
            capacity: 500,
            steps: vec![step(1, "通知运营方", 30), step(2, "开门", 120)],
        }],
    }
}

const ORIGIN: Origin<'static> = Origin {
    by: "li-wei",
    via: "token",
    remote: "192.0.2.7:51234",
};

/// `(activation, steps_done, steps_overdue, steps_total, capacity, open)` of each
/// queued `activation` line.
fn progress_lines(store: &Store) -> Vec<(String, i64, i64, i64, i64, i64)> {
    let lines = store.influx_queue_lines(100).unwrap();
    lines
        .iter()
        .filter(|l| l.starts_with("activation,"))
        .map(|l| {
            let parsed = parse_lines(l).next().unwrap().unwrap();
            let tags = parsed.series.tag_set.as_ref().unwrap();
            let tag = |k: &str| {
                tags.iter()
                    .find(|(key, _)| *key == k)
                    .map(|(_, v)| v.to_string())
                    .unwrap()
            };
            assert_eq!(tag("town"), "jingshan");
            assert_eq!(tag("shelter"), "js-gym");
            let field = |k: &str| match parsed
                .field_set
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v)
            {
                Some(FieldValue::I64(n)) => *n,
                other => panic!("{k}: {other:?} in {l}"),
            };
            (
                tag("activation"),
                field("steps_done"),
                field("steps_overdue"),
                field("steps_total"),
                field("capacity"),
                field("open"),
            )
        })
        .collect()
}

#[test]
fn an_activation_is_kept_with_its_steps_and_writes_its_progress() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stockpile.db");
    let options = StoreOptions {
        influx_queue: true,
        ..StoreOptions::default()
    };
    let mut store = Store::open(&path, options.clone()).unwrap();
    let row = store.start_activation(&gym(), ORIGIN).unwrap().unwrap();
    let id = row.id.to_string();

    let again = store.start_activation(&gym(), ORIGIN).unwrap();
    assert_eq!(
        again,
        Err(StartRefused::AlreadyActivating {
            shelter: "js-gym".into(),
            activation: row.id
        })
    );

    // Step 1 done 40 minutes in, ten minutes late: one done, none overdue yet.
    let done = StepDone {
        at: start_time() + Duration::minutes(40),
        by: "li-wei".into(),
        note: "已通知".into(),
    };
    let marked = store
        .mark_activation_step(row.id, "js-gym", 1, &done, ORIGIN)
        .unwrap();
    assert!(matches!(marked, StepOutcome::Done(_)), "{marked:?}");
    let twice = store
        .mark_activation_step(row.id, "js-gym", 1, &done, ORIGIN)
        .unwrap();
    assert_eq!(twice, StepOutcome::AlreadyDone(done.clone()));
    let missing = store
        .mark_activation_step(row.id, "js-gym", 9, &done, ORIGIN)
        .unwrap();
    assert_eq!(missing, StepOutcome::UnknownStep);

    // Reopened, as after a restart: the same activation, its step done.
    drop(store);
    let mut store = Store::open(&path, options).unwrap();
    let open = store.activations(ActivationState::Open, 10).unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].activation.shelters[0].steps[0].done, Some(done));
    assert_eq!(open[0].activation.reason, "暴雨红色预警");

    // Three hours in, step 2 (due at two hours) is overdue.
    let later = start_time() + Duration::hours(3);
    assert_eq!(store.enqueue_open_activation_progress(later).unwrap(), 1);
    let (closed, changed) = store
        .close_activation(row.id, later, ORIGIN)
        .unwrap()
        .unwrap();
    assert!(changed && !closed.is_open());
    assert_eq!(store.activations(ActivationState::Open, 10).unwrap(), []);
    // Closed, the shelter may be activated again.
    assert!(store.start_activation(&gym(), ORIGIN).unwrap().is_ok());

    let progress = progress_lines(&store);
    assert_eq!(
        progress[..4],
        [
            (id.clone(), 0, 0, 2, 500, 1), // started
            (id.clone(), 1, 0, 2, 500, 1), // step 1 done (late), step 2 not due yet
            (id.clone(), 1, 1, 2, 500, 1), // the minute's point: step 2 overdue
            (id.clone(), 1, 1, 2, 500, 0), // closed
        ]
    );
}

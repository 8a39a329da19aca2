//! Transfers (issue 15): recorded with their audit entry in one transaction, kept across
//! a reopen, listed by town (sent or received), since a time, newest first.

use chrono::{DateTime, Duration, TimeZone, Utc};
use store::{NewTransfer, Store, StoreOptions};

fn at(minute: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 6, 0, 0).unwrap() + Duration::minutes(minute)
}

fn transfer(minute: i64, from: (&str, &str), to: (&str, &str), quantity: f64) -> NewTransfer {
    NewTransfer {
        at: at(minute),
        from_facility: from.0.into(),
        from_town: from.1.into(),
        to_facility: to.0.into(),
        to_town: to.1.into(),
        category: "water".into(),
        quantity,
        note: "by truck 沪A-12345".into(),
        recorded_by: "li-wei".into(),
    }
}

#[test]
fn transfers_are_kept_and_listed_by_town_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let mut store = Store::open(&path, StoreOptions::default()).unwrap();
    let sent = [
        transfer(0, ("a-wh1", "a"), ("b-wh1", "b"), 500.0),
        transfer(10, ("b-wh1", "b"), ("c-wp1", "c"), 1200.5),
        transfer(20, ("c-wh1", "c"), ("a-wh1", "a"), 30.0),
    ];
    let ids: Vec<i64> = sent
        .iter()
        .map(|t| store.record_transfer(t, "").unwrap().id)
        .collect();
    drop(store);

    let store = Store::open(&path, StoreOptions::default()).unwrap();
    let all = store.transfers(None, None, 100).unwrap();
    let got: Vec<i64> = all.iter().map(|r| r.id).collect();
    assert_eq!(got, [ids[2], ids[1], ids[0]], "newest first");
    assert_eq!(all[1].transfer, sent[1], "stored as recorded");

    let of_a: Vec<i64> = store
        .transfers(Some("a"), None, 100)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(of_a, [ids[2], ids[0]], "received and sent by town a");
    let since: Vec<i64> = store
        .transfers(Some("b"), Some(at(5)), 100)
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(since, [ids[1]]);
    assert_eq!(store.transfers(None, None, 1).unwrap().len(), 1);
    assert!(store.transfers(Some("zz"), None, 100).unwrap().is_empty());

    let audit = store.audit(&all_audit()).unwrap();
    assert_eq!(audit.len(), 3);
    let entry = &audit[0].entry;
    assert_eq!(entry.action, "transfer");
    assert_eq!(entry.actor, "li-wei");
    assert_eq!(entry.via, "token");
    assert!(entry.detail.contains("c-wh1"), "{}", entry.detail);
    let sent = store::AuditFilter {
        towns: Some(vec!["c".to_owned()]),
        ..all_audit()
    };
    assert!(!store.audit(&sent).unwrap().is_empty());
}

#[test]
fn a_quantity_out_of_bounds_stores_neither_transfer_nor_audit_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("s.db"), StoreOptions::default()).unwrap();
    for quantity in [0.0, -1.0, f64::NAN, 2e9] {
        let bad = transfer(0, ("a-wh1", "a"), ("b-wh1", "b"), quantity);
        assert!(store.record_transfer(&bad, "").is_err(), "{quantity}");
    }
    assert!(store.transfers(None, None, 10).unwrap().is_empty());
    assert!(store.audit(&all_audit()).unwrap().is_empty());
}

fn all_audit() -> store::AuditFilter {
    store::AuditFilter {
        limit: 100,
        ..store::AuditFilter::default()
    }
}

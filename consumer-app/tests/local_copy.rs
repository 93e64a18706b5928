//! The local copy on its own: appends with duplicates and gaps, the key index, repair after a stop between
//! the segment append and the SQLite transaction, and full refresh (commit, abandon, crash mid-refresh).

mod common;

use common::{open_copy, records, tombstone};
use consumer_app::copy::KeyLookup;
use protocol::{CheckedBatch, RecordIter, TopicUid};

const UID: TopicUid = TopicUid(0xA1);

fn value_of(record: &[u8]) -> String {
    let view = RecordIter::new(record).next().unwrap().unwrap();
    String::from_utf8(view.value().to_vec()).unwrap()
}

#[test]
fn appends_drop_duplicates_and_refuse_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let copy = open_copy(dir.path());
    let batch = records(0..10, |offset| (format!("k{}", offset % 3), format!("v{offset}")));
    let mut seen = Vec::new();
    let summary = copy.append("prices", UID, &batch, |view| seen.push(view.offset())).unwrap();
    assert_eq!((summary.n_appended, summary.n_duplicates, summary.next_offset), (10, 0, 10));
    assert_eq!(seen, (0..10).collect::<Vec<_>>());

    // The broker resends 5..15 after a reconnect: 5..10 are dropped by offset.
    let overlap = records(5..15, |offset| (format!("k{}", offset % 3), format!("v{offset}")));
    let summary = copy.append("prices", UID, &overlap, |_| {}).unwrap();
    assert_eq!((summary.n_appended, summary.n_duplicates, summary.first_new_offset), (5, 5, 10));

    let gap = records(20..21, |_| ("k".into(), "v".into()));
    assert!(copy.append("prices", UID, &gap, |_| {}).is_err());
    let other_uid = records(15..16, |_| ("k".into(), "v".into()));
    assert!(copy.append("prices", TopicUid(0xB2), &other_uid, |_| {}).is_err());

    let page = copy.read_page("prices", None, 1000).unwrap().unwrap();
    let offsets: Vec<u64> = RecordIter::new(&page.records).map(|view| view.unwrap().offset()).collect();
    assert_eq!(offsets, (0..15).collect::<Vec<_>>());
    // k0 was last written at offset 12, k1 at 13, k2 at 14.
    assert_eq!(value_of(&copy.latest_by_key("prices", b"k0").unwrap().unwrap().live().unwrap()), "v12");
    assert_eq!(value_of(&copy.latest_by_key("prices", b"k2").unwrap().unwrap().live().unwrap()), "v14");
    assert!(copy.latest_by_key("prices", b"nope").unwrap().unwrap().live().is_none());
    assert!(copy.latest_by_key("absent", b"k0").unwrap().is_none());
}

#[test]
fn a_tombstone_hides_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let copy = open_copy(dir.path());
    copy.append("prices", UID, &records(0..2, |offset| (format!("k{offset}"), "v".into())), |_| {}).unwrap();
    copy.append("prices", UID, &tombstone(2, "k0"), |_| {}).unwrap();
    assert_eq!(copy.latest_by_key("prices", b"k0").unwrap().unwrap(), KeyLookup::Deleted { offset: 2 });
    assert_eq!(copy.latest_by_key("prices", b"never").unwrap().unwrap(), KeyLookup::Unknown);
    assert!(copy.latest_by_key("prices", b"k1").unwrap().unwrap().live().is_some());
    // The tombstone is still a record of the copy.
    assert!(copy.record_at("prices", 2).unwrap().unwrap().is_some());
}

#[test]
fn records_stored_but_not_indexed_are_indexed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let copy = open_copy(dir.path());
        copy.append("prices", UID, &records(0..5, |offset| (format!("k{offset}"), "old".into())), |_| {})
            .unwrap();
    }
    // What a crash between the segment append and the SQLite transaction leaves: records in the log that
    // app.sqlite does not know of.
    {
        let store =
            storage::Store::open(consumer_app::copy::store_dir(dir.path()), common::log_config()).unwrap();
        let log = store.topic("prices").unwrap();
        log.append_records(&records(5..8, |offset| (format!("k{}", offset - 5), "new".into()))).unwrap();
    }
    let copy = open_copy(dir.path());
    assert_eq!(copy.view("prices").unwrap().log.next_offset(), 8);
    assert_eq!(value_of(&copy.latest_by_key("prices", b"k0").unwrap().unwrap().live().unwrap()), "new");
    assert_eq!(value_of(&copy.latest_by_key("prices", b"k4").unwrap().unwrap().live().unwrap()), "old");
    let row = copy.db().topic("prices").unwrap().unwrap();
    assert_eq!(row.indexed_to, 8);
}

#[test]
fn refresh_is_invisible_until_commit() {
    let dir = tempfile::tempdir().unwrap();
    let copy = open_copy(dir.path());
    copy.append("prices", UID, &records(0..100, |offset| (format!("k{offset}"), "old".into())), |_| {})
        .unwrap();

    let new_uid = TopicUid(0xC3);
    let mut refresh = copy.begin_refresh("prices", new_uid, 50).unwrap();
    assert_eq!(refresh.handler_from, 0, "another history is new to the handlers");
    copy.append_refresh(
        &mut refresh,
        &records(50..120, |offset| (format!("k{offset}"), "new".into())),
        |_| {},
    )
    .unwrap();
    // Queries still see the old, complete copy.
    let view = copy.view("prices").unwrap();
    assert_eq!((view.log.uid(), view.log.log_start(), view.log.next_offset()), (UID, 0, 100));
    assert_eq!(value_of(&copy.latest_by_key("prices", b"k60").unwrap().unwrap().live().unwrap()), "old");
    assert!(copy.latest_by_key("prices", b"k110").unwrap().unwrap().live().is_none());

    copy.commit_refresh(refresh).unwrap();
    let view = copy.view("prices").unwrap();
    assert_eq!((view.log.uid(), view.log.log_start(), view.log.next_offset()), (new_uid, 50, 120));
    assert_eq!(value_of(&copy.latest_by_key("prices", b"k60").unwrap().unwrap().live().unwrap()), "new");
    assert_eq!(value_of(&copy.latest_by_key("prices", b"k110").unwrap().unwrap().live().unwrap()), "new");
    assert!(
        copy.latest_by_key("prices", b"k10").unwrap().unwrap().live().is_none(),
        "k10 is not in the new copy"
    );
    let row = copy.db().topic("prices").unwrap().unwrap();
    assert!(row.last_refresh_ms.is_some());
    assert!(copy.db().pending_refreshes().unwrap().is_empty());

    // The swap survives a restart.
    drop(view);
    drop(copy);
    let copy = open_copy(dir.path());
    let view = copy.view("prices").unwrap();
    assert_eq!((view.log.uid(), view.log.next_offset()), (new_uid, 120));
    assert_eq!(value_of(&copy.latest_by_key("prices", b"k60").unwrap().unwrap().live().unwrap()), "new");
}

#[test]
fn an_abandoned_refresh_leaves_the_old_copy_and_stays_pending() {
    let dir = tempfile::tempdir().unwrap();
    let copy = open_copy(dir.path());
    copy.append("prices", UID, &records(0..10, |offset| (format!("k{offset}"), "old".into())), |_| {})
        .unwrap();
    let mut refresh = copy.begin_refresh("prices", UID, 0).unwrap();
    assert_eq!(refresh.handler_from, 10, "the same history: handlers have seen up to the old end");
    copy.append_refresh(&mut refresh, &records(0..5, |offset| (format!("k{offset}"), "new".into())), |_| {})
        .unwrap();
    copy.abandon_refresh(refresh).unwrap();
    assert_eq!(copy.view("prices").unwrap().log.next_offset(), 10);
    assert_eq!(value_of(&copy.latest_by_key("prices", b"k3").unwrap().unwrap().live().unwrap()), "old");
    assert_eq!(copy.db().pending_refreshes().unwrap(), vec!["prices".to_string()]);
}

#[test]
fn a_crash_mid_refresh_leaves_the_old_copy() {
    let dir = tempfile::tempdir().unwrap();
    {
        let copy = open_copy(dir.path());
        copy.append("prices", UID, &records(0..10, |offset| (format!("k{offset}"), "old".into())), |_| {})
            .unwrap();
        let mut refresh = copy.begin_refresh("prices", TopicUid(0xD4), 0).unwrap();
        copy.append_refresh(
            &mut refresh,
            &records(0..30, |offset| (format!("k{offset}"), "new".into())),
            |_| {},
        )
        .unwrap();
        // A crash: nothing of the refresh is cleaned up by this process.
        std::mem::forget(refresh);
    }
    let copy = open_copy(dir.path());
    let view = copy.view("prices").unwrap();
    assert_eq!((view.log.uid(), view.log.next_offset()), (UID, 10));
    assert_eq!(value_of(&copy.latest_by_key("prices", b"k3").unwrap().unwrap().live().unwrap()), "old");
    assert!(copy.latest_by_key("prices", b"k20").unwrap().unwrap().live().is_none());
    assert_eq!(copy.db().pending_refreshes().unwrap(), vec!["prices".to_string()]);
    assert_eq!(copy.db().refreshes(1).unwrap()[0].outcome, "abandoned");
}

#[test]
fn a_refresh_can_create_a_topic() {
    let dir = tempfile::tempdir().unwrap();
    let copy = open_copy(dir.path());
    let mut refresh = copy.begin_refresh("fresh", UID, 0).unwrap();
    assert!(copy.view("fresh").is_none());
    copy.append_refresh(&mut refresh, &records(0..3, |offset| (format!("k{offset}"), "v".into())), |_| {})
        .unwrap();
    copy.commit_refresh(refresh).unwrap();
    assert_eq!(copy.view("fresh").unwrap().log.next_offset(), 3);
    // Live batches continue the refreshed copy.
    copy.append("fresh", UID, &records(3..5, |offset| (format!("k{offset}"), "v".into())), |_| {}).unwrap();
    assert_eq!(copy.view("fresh").unwrap().log.next_offset(), 5);
    assert!(copy.latest_by_key("fresh", b"k4").unwrap().unwrap().live().is_some());
}

#[test]
fn a_lost_app_database_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    {
        let copy = open_copy(dir.path());
        copy.append(
            "prices",
            UID,
            &records(0..50, |offset| (format!("k{}", offset % 10), format!("v{offset}"))),
            |_| {},
        )
        .unwrap();
    }
    for name in ["app.sqlite", "app.sqlite-wal", "app.sqlite-shm"] {
        let _ = std::fs::remove_file(dir.path().join(name));
    }
    let copy = open_copy(dir.path());
    assert_eq!(value_of(&copy.latest_by_key("prices", b"k3").unwrap().unwrap().live().unwrap()), "v43");
    let row = copy.db().topic("prices").unwrap().unwrap();
    assert_eq!((row.uid, row.indexed_to, row.handled_to), (UID, 50, 0));
}

#[test]
fn records_a_failed_index_left_out_are_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let copy = open_copy(dir.path());
    copy.append("prices", UID, &records(0..3, |offset| (format!("k{offset}"), "v".into())), |_| {}).unwrap();
    // Stored, but the index transaction never ran (as if it had failed).
    let batch = records(3..6, |offset| (format!("k{offset}"), "v".into()));
    let batch = CheckedBatch::from_records("prices", batch.into()).unwrap();
    copy.append_log("prices", UID, &[batch]).unwrap();
    assert!(copy.latest_by_key("prices", b"k4").unwrap().unwrap().live().is_none());
    copy.catch_up_index().unwrap();
    assert!(copy.latest_by_key("prices", b"k4").unwrap().unwrap().live().is_some());
    assert_eq!(copy.db().topic("prices").unwrap().unwrap().indexed_to, 6);
}

//! Epoch histories in the store: ROOT begins an epoch at every start, a copy adopts its upstream's history
//! unless it holds records the history says are gone, a refresh carries its history into the committed copy,
//! and every history survives a restart and the loss of `meta.sqlite`.

mod common;

use common::{append_n, open, tiny_config, uid};
use protocol::{Epoch, EpochHistory, NO_EPOCH};
use storage::Adopted;

fn history(entries: &[(u32, u64)]) -> EpochHistory {
    EpochHistory::new(entries.iter().map(|&(epoch, start_offset)| Epoch { epoch, start_offset }).collect())
        .unwrap()
}

#[test]
fn root_begins_an_epoch_at_each_start_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path(), tiny_config());
        let log = store.get_or_create_topic("t", uid(1)).unwrap();
        assert_eq!(log.epochs(), history(&[(0, 0)]));
        append_n(&log, 30, 10);
        assert_eq!(log.epoch_claim(), 0);
        let version = log.epochs_version();
        assert_eq!(store.begin_epoch(&log).unwrap(), history(&[(0, 0), (1, 30)]));
        assert_ne!(log.epochs_version(), version);
        append_n(&log, 5, 5);
        assert_eq!(log.epoch_claim(), 1);
    }
    let store = open(dir.path(), tiny_config());
    let log = store.topic("t").unwrap();
    assert_eq!(log.epochs(), history(&[(0, 0), (1, 30)]));
    // Restarting with nothing written in the current epoch replaces it rather than growing the history.
    store.begin_epoch(&log).unwrap();
    store.begin_epoch(&log).unwrap();
    assert_eq!(log.epochs(), history(&[(0, 0), (1, 30), (3, 35)]));
    drop(log);
    drop(store);

    std::fs::remove_file(dir.path().join("meta.sqlite")).unwrap();
    let store = open(dir.path(), tiny_config());
    assert_eq!(
        store.topic("t").unwrap().epochs(),
        history(&[(0, 0), (1, 30), (3, 35)]),
        "rebuilt from topic.json"
    );
}

#[test]
fn a_copy_adopts_a_history_it_agrees_with_and_refuses_one_it_diverged_from() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), tiny_config());
    let log = store.create_topic("t", uid(1), 0).unwrap();
    assert!(log.epochs().is_empty());
    assert_eq!(log.epoch_claim(), NO_EPOCH);
    assert_eq!(store.adopt_epochs(&log, history(&[(0, 0)])).unwrap(), Adopted::Stored);
    assert_eq!(store.adopt_epochs(&log, history(&[(0, 0)])).unwrap(), Adopted::Unchanged);
    append_n(&log, 40, 10);

    // ROOT restarted at 40: the copy agrees (it ends where epoch 0 ended).
    assert_eq!(store.adopt_epochs(&log, history(&[(0, 0), (1, 40)])).unwrap(), Adopted::Stored);
    append_n(&log, 10, 10);
    assert_eq!(log.epoch_claim(), 1);

    // ROOT lost its tail from 45 on and restarted: epoch 1 ended at 45, but the copy holds up to 50.
    let forked = history(&[(0, 0), (1, 40), (2, 45)]);
    assert_eq!(
        store.adopt_epochs(&log, forked.clone()).unwrap(),
        Adopted::Diverged { epoch: 1, next_offset: 50, at: 45 }
    );
    assert_eq!(log.epochs(), history(&[(0, 0), (1, 40)]), "a diverged copy keeps its own history");

    // The refresh that replaces it carries the new history into the committed copy.
    let replacement = store.begin_replace("t", uid(1), 0).unwrap();
    replacement.set_epochs(forked.clone());
    append_n(replacement.log(), 47, 10);
    let replaced = store.commit_replace(replacement).unwrap();
    assert_eq!(replaced.epochs(), forked);
    assert_eq!(replaced.epoch_claim(), 2);
    drop((log, replaced, store));

    let store = open(dir.path(), tiny_config());
    assert_eq!(store.topic("t").unwrap().epochs(), forked);
}

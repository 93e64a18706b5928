//! A full disk, made real without root: this test binary (its own process) lowers its file size limit
//! (`RLIMIT_FSIZE`) and ignores `SIGXFSZ`, so growing a segment past the limit fails with EFBIG exactly
//! where a full disk fails with ENOSPC. The append must fail with `Error::NoSpace`, without a crash, and
//! everything appended before must stay readable. It is the only test in this binary because the limit
//! applies to the whole process.

mod common;

use common::{check_records, key_for, open, read_all, small_config, uid, value_for};
use protocol::NewRecord;
use storage::{Error, FlushPolicy, LogConfig};

/// The file size limit while the disk is "full".
const LIMIT: u64 = 2 * 1024 * 1024;

/// Sets the soft file size limit, keeping the hard one.
fn set_file_size_limit(soft: libc::rlim_t) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain system calls with a valid pointer to a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit), 0);
        limit.rlim_cur = soft.min(limit.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
}

#[test]
fn a_full_disk_fails_the_append_cleanly_and_keeps_what_was_stored() {
    // SAFETY: ignoring a signal is async-signal-safe and affects only this test process.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 64 * 1024 * 1024,
        preallocate_chunk_bytes: 256 * 1024,
        ..small_config(FlushPolicy::Always)
    };
    let store = open(dir.path(), config.clone());
    let log = store.create_topic("t", uid(1), 0).unwrap();
    set_file_size_limit(LIMIT);

    let mut error = None;
    for _ in 0..10_000 {
        let first = log.next_offset();
        let keys: Vec<_> = (first..first + 100).map(key_for).collect();
        let values: Vec<_> = (first..first + 100).map(value_for).collect();
        let records: Vec<_> =
            keys.iter().zip(&values).map(|(key, value)| NewRecord::new(key, value)).collect();
        match log.append(&records) {
            Ok(outcome) => assert_eq!(outcome.first_offset, first),
            Err(failure) => {
                assert_eq!(log.next_offset(), first, "a refused append writes nothing");
                error = Some(failure);
                break;
            }
        }
    }
    let error = error.expect("the file size limit was reached");
    assert!(matches!(error, Error::NoSpace { .. }), "{error:?}");
    let stored = log.next_offset();
    assert!(stored > 10_000, "{stored} records fit under the limit");
    check_records(&read_all(&log), 0, stored);
    assert!(log.append(&[NewRecord::new(b"k", &[0u8; 200_000])]).unwrap_err().is_no_space());

    set_file_size_limit(libc::RLIM_INFINITY);
    common::append_n(&log, 1_000, 100);
    check_records(&read_all(&log), 0, stored + 1_000);
    drop(log);
    drop(store);
    let store = open(dir.path(), config);
    check_records(&read_all(&store.topic("t").unwrap()), 0, stored + 1_000);
}

//! Catching a node in the middle of compaction, for the kill -9 tests of the broker and consumer-app suites:
//! the `.compact` files of a topic (a rewritten group not yet switched in) and the moments a test kills at.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A compacted segment being written, and its inode (so a leftover is told from a new file of the same name).
pub type CompactFile = (PathBuf, u64);

/// When, in a compaction pass, a test kills the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// While a rewritten group's `.compact` file exists.
    MidWay,
    /// The moment a `.compact` file is gone again (renamed in, mostly).
    AfterRename,
    /// While a `.compact` file exists that is not the first one seen: a later group of a pass, with an
    /// earlier one switched in (or the first group of a later pass).
    LaterGroup,
}

/// The `.compact` files under a topic's directory (`topic_root`, holding its generation directories).
pub fn compact_files(topic_root: &Path) -> Vec<CompactFile> {
    let mut files = Vec::new();
    let Ok(generations) = std::fs::read_dir(topic_root) else { return files };
    for generation in generations.flatten() {
        let Ok(entries) = std::fs::read_dir(generation.path()) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|extension| extension == "compact")
                && let Ok(metadata) = std::fs::metadata(&path)
            {
                files.push((path, metadata.ino()));
            }
        }
    }
    files
}

/// Watches the topic under `topic_root` for at most `within` until `moment` comes, checking `alive` as it
/// goes; answers the `.compact` files seen then (the caller kills the node at once), or `None` if the moment
/// did not come. `first` keeps the first files seen across calls, for [`Moment::LaterGroup`]. Files are
/// looked for without sleeping once one is expected to come and go within milliseconds.
pub async fn wait_for_moment(
    topic_root: &Path,
    moment: Moment,
    first: &mut Vec<CompactFile>,
    within: Duration,
    mut alive: impl FnMut(),
) -> Option<Vec<CompactFile>> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let seen = compact_files(topic_root);
        if moment == Moment::LaterGroup && first.is_empty() {
            *first = seen;
        } else if seen.iter().any(|file| !first.contains(file)) {
            if moment == Moment::AfterRename {
                // The switch goes on (sync, index, deleting the replaced segments, SQLite) for a few
                // milliseconds after the rename: kill as close to it as possible.
                let gone = Instant::now() + within;
                while compact_files(topic_root).iter().any(|file| seen.contains(file)) {
                    assert!(Instant::now() < gone, "{seen:?} was never switched in");
                    tokio::task::yield_now().await;
                }
            }
            return Some(seen);
        }
        alive();
        if first.is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    None
}

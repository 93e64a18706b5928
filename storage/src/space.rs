//! Disk space: allocating a file's blocks with `posix_fallocate` (so a full disk is an ordinary
//! [`Error::NoSpace`] before any byte is written), and probing whether an append could allocate again after
//! one failed, without touching any segment. Knows nothing of logs or SQLite.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::Error;
use crate::paths::{remove_file_logged, space_probe_path};

/// How often an allocation interrupted by a signal is tried again.
const MAX_EINTR_RETRIES: usize = 16;

/// Allocates the blocks of `file` (at `path`, for errors) from `offset` for `len` bytes.
pub(crate) fn allocate(file: &File, path: &Path, offset: u64, len: u64) -> Result<(), Error> {
    let too_big = || Error::io("allocate disk space", path, std::io::Error::from_raw_os_error(libc::EFBIG));
    let offset = libc::off_t::try_from(offset).map_err(|_| too_big())?;
    let len = libc::off_t::try_from(len).map_err(|_| too_big())?;
    let mut result = 0;
    for _ in 0..MAX_EINTR_RETRIES {
        // SAFETY: plain system call on a file descriptor the caller owns for the duration of the call.
        result = unsafe { libc::posix_fallocate(file.as_raw_fd(), offset, len) };
        if result != libc::EINTR {
            break;
        }
    }
    if result != 0 {
        return Err(Error::io("allocate disk space", path, std::io::Error::from_raw_os_error(result)));
    }
    Ok(())
}

/// Whether `bytes` could be allocated in the data directory `root` right now: allocates them in a probe
/// file and removes it. [`Error::NoSpace`] while the disk is still full.
pub(crate) fn probe(root: &Path, bytes: u64) -> Result<(), Error> {
    let path = space_probe_path(root);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|source| Error::io("create the space probe", &path, source))?;
    let allocated = allocate(&file, &path, 0, bytes.max(1));
    drop(file);
    remove_file_logged(&path, "space probe done");
    allocated
}

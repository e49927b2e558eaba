//! One vswitchd per state directory: an exclusive `flock` on `STATE_DIR/lock`, held for the
//! life of the process (the kernel lets go when the process exits, even after `kill -9`, so
//! a stale file never blocks a start). The file holds the pid of the daemon that holds it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::ffi;

/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = "lock";

/// The held lock; dropping it (or exiting) releases it.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    path: PathBuf,
}

impl StateLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another vswitchd{} holds the state directory {}: stop it first, or give this one a state \
         directory (--state-dir) and a socket (--socket) of its own",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        dir.display()
    )]
    Held { dir: PathBuf, pid: Option<u32> },
    #[error("cannot lock the state directory ({}): {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// Takes `DIR/lock` for this process, or says which daemon holds it. Writes nothing else in
/// `dir` (which must exist).
///
/// # Errors
/// [`LockError::Held`] when another process holds the lock; [`LockError::Io`] when the file
/// cannot be opened or locked.
pub fn lock_state_dir(dir: &Path) -> Result<StateLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let io_err = |source| LockError::Io { path: path.clone(), source };
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(&path).map_err(io_err)?;
    if !ffi::flock_exclusive_nb(file.as_fd()).map_err(io_err)? {
        let mut text = String::new();
        let pid = file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
        return Err(LockError::Held { dir: dir.to_path_buf(), pid });
    }
    // Ours now: say who holds it.
    file.set_len(0).map_err(io_err)?;
    file.write_all(format!("{}\n", std::process::id()).as_bytes()).map_err(io_err)?;
    Ok(StateLock { _file: file, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_with_the_holders_pid_and_freed_on_drop() {
        let dir = std::env::temp_dir().join(format!("vswitch-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let held = lock_state_dir(&dir).unwrap();
        assert_eq!(held.path(), dir.join(LOCK_FILE));
        // Another open file description conflicts, even in the same process.
        match lock_state_dir(&dir) {
            Err(e @ LockError::Held { pid: Some(pid), .. }) => {
                assert_eq!(pid, std::process::id());
                let msg = e.to_string();
                assert!(msg.starts_with(&format!("another vswitchd (pid {pid}) holds the state directory {}", dir.display())), "{msg}");
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(held);
        let again = lock_state_dir(&dir).unwrap();
        drop(again);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! A one-shot timer with nanosecond resolution for the datapath's poll: epoll's own timeout is
//! in milliseconds, too coarse for releasing frames a link impairment delayed.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::ffi;

/// A `timerfd`: register [`Timer::raw_fd`] for readability; [`Timer::arm`] sets when it fires
/// (re-arming clears a past expiry, so it needs no read).
#[derive(Debug)]
pub struct Timer {
    fd: OwnedFd,
    /// The delay it was last armed with, and when (the caller's clock): not re-armed for the
    /// same deadline.
    armed_for: Option<Duration>,
}

impl Timer {
    /// # Errors
    /// When the kernel refuses a timerfd.
    pub fn new() -> io::Result<Timer> {
        Ok(Timer { fd: ffi::timerfd_create()?, armed_for: None })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Fires at `deadline` (on the caller's clock, which reads `now`); nothing when it is armed
    /// for that deadline already.
    ///
    /// # Errors
    /// When timerfd_settime fails.
    pub fn arm(&mut self, now: Duration, deadline: Duration) -> io::Result<()> {
        if self.armed_for == Some(deadline) {
            return Ok(());
        }
        ffi::timerfd_set(self.fd.as_fd(), deadline.saturating_sub(now).max(Duration::from_nanos(1)))?;
        self.armed_for = Some(deadline);
        Ok(())
    }
}

//! The only module with `unsafe`: TAP ioctls, network namespaces and rtnetlink.
//!
//! - [`netns`]: [`NetnsWorker`], the dedicated thread that enters container network
//!   namespaces and creates + configures TAP interfaces there ([`NetnsWorker::attach`]).
//! - [`userns`]: rootless mode: the helper process in a user namespace that runs the netns
//!   worker for a daemon without privileges ([`NetnsWorker::spawn_rootless`]).
//! - [`tap`]: `/dev/net/tun` (TUNSETIFF, vnet header, offloads, persistence).
//! - [`netlink`]: synchronous rtnetlink requests (link, address, route).
//! - [`lock`]: the state directory's lock (one vswitchd per `STATE_DIR`).
//! - [`pcap_filter`]: capture filters (libpcap's BPF), shared by the datapath threads.
//! - `ffi`: `struct ifreq` layouts and the raw syscall wrappers; every `unsafe` block is there
//!   (`pcap_filter` holds the one `unsafe impl`).

mod ffi;
pub mod lock;
pub mod log;
pub mod netlink;
pub mod netns;
pub mod packet;
pub mod pcap_filter;
pub mod tap;
pub mod timer;
pub mod userns;

#[cfg(test)]
mod tests;

pub use lock::{lock_state_dir, LockError, StateLock};
pub use netns::{current_netns_id, AttachSpec, Attached, NetnsRef, NetnsWorker, SysError};
pub use tap::{set_persist, Offloads, VNET_HDR_LEN};
pub use userns::{helper_main, RootlessOptions, HELPER_ARG};

/// The calling thread's kernel thread id (what `sched_setscheduler` and /proc/PID/task take).
pub fn current_tid() -> i32 {
    ffi::gettid()
}

/// Makes thread `tid` of this process `SCHED_FIFO` at `priority`, or with `None` puts it back
/// to the normal policy, keeping its nice value.
///
/// # Errors
/// EPERM without CAP_SYS_NICE (or an RLIMIT_RTPRIO that allows it); ESRCH for a thread gone.
pub fn set_thread_realtime(tid: i32, priority: Option<i32>) -> std::io::Result<()> {
    ffi::set_thread_fifo(tid, priority)
}

/// Gives a socket receive and send buffers of `bytes` each: past the `net.core.*mem_max` limits
/// where the process may (`SO_RCVBUFFORCE`, CAP_NET_ADMIN), else as large as they allow. A
/// tunnel socket fed by a fast sender overflows the kernel's default of ~200 KiB.
///
/// # Errors
/// When even the plain options fail.
pub fn set_socket_buffers(fd: std::os::fd::BorrowedFd<'_>, bytes: usize) -> std::io::Result<()> {
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for (force, plain, name) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, "rmem_max"), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, "wmem_max")] {
        if let Err(e) = ffi::set_sockopt_int(fd, force, size) {
            // Without CAP_NET_ADMIN (rootless) the kernel caps the size at net.core.*mem_max.
            tracing::warn!(error = %e, bytes, "socket buffers capped at net.core.{name} (raising past it needs CAP_NET_ADMIN)");
            ffi::set_sockopt_int(fd, plain, size)?;
        }
    }
    Ok(())
}

/// Switches read readiness of `fd` in the epoll instance `epoll` off or back on, where mio
/// registered it for `Interest::READABLE` under `token` (same event bits: edge-triggered
/// EPOLLIN | EPOLLRDHUP). Switched back on, epoll reports the fd at once if it is readable, so
/// nothing that arrived meanwhile goes unseen.
///
/// # Errors
/// When the fd is not (or no longer) registered there.
pub fn epoll_watch_readable(epoll: &impl std::os::fd::AsRawFd, fd: &impl std::os::fd::AsFd, token: usize, on: bool) -> std::io::Result<()> {
    let events = if on { libc::EPOLLET | libc::EPOLLIN | libc::EPOLLRDHUP } else { libc::EPOLLET };
    ffi::epoll_mod(epoll.as_raw_fd(), fd.as_fd(), events as u32, token as u64)
}

/// Sets the calling thread's nice value (-20 to 19; below 0 needs CAP_SYS_NICE or RLIMIT_NICE).
///
/// # Errors
/// When the kernel refuses it (EACCES: no privilege to go below 0).
pub fn set_thread_nice(nice: i32) -> std::io::Result<()> {
    ffi::set_thread_nice(nice)
}

/// Raises the process's soft limit of open files to its hard limit: every container holds one
/// TAP fd, so the usual soft limit of 1 024 would stop attaches near 1 000 containers.
///
/// # Errors
/// When the limits cannot be read or set.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    ffi::raise_nofile()
}

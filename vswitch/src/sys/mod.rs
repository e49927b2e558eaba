//! The only module with `unsafe`: TAP ioctls, network namespaces and rtnetlink.
//!
//! - [`netns`]: [`NetnsWorker`], the dedicated thread that enters container network
//!   namespaces and creates + configures TAP interfaces there ([`NetnsWorker::attach`]).
//! - [`tap`]: `/dev/net/tun` (TUNSETIFF, vnet header, offloads, persistence).
//! - [`netlink`]: synchronous rtnetlink requests (link, address, route).
//! - `ffi`: `struct ifreq` layouts and the raw syscall wrappers; every `unsafe` block is there.

mod ffi;
pub mod netlink;
pub mod netns;
pub mod tap;

#[cfg(test)]
mod tests;

pub use netns::{current_netns_id, AttachSpec, Attached, NetnsRef, NetnsWorker, SysError};
pub use tap::{set_persist, Offloads, VNET_HDR_LEN};

/// Gives a socket receive and send buffers of `bytes` each: past the `net.core.*mem_max` limits
/// where the process may (`SO_RCVBUFFORCE`, CAP_NET_ADMIN), else as large as they allow. A
/// tunnel socket fed by a fast sender overflows the kernel's default of ~200 KiB.
///
/// # Errors
/// When even the plain options fail.
pub fn set_socket_buffers(fd: std::os::fd::BorrowedFd<'_>, bytes: usize) -> std::io::Result<()> {
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for (force, plain) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)] {
        if ffi::set_sockopt_int(fd, force, size).is_err() {
            ffi::set_sockopt_int(fd, plain, size)?;
        }
    }
    Ok(())
}

/// Raises the process's soft limit of open files to its hard limit: every container holds one
/// TAP fd, so the usual soft limit of 1 024 would stop attaches near 1 000 containers.
///
/// # Errors
/// When the limits cannot be read or set.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    ffi::raise_nofile()
}

//! Raw kernel interfaces: `struct ifreq` layouts and thin, typed wrappers around the
//! `ioctl`/`setns`/`fcntl` calls the rest of `sys` needs. Every `unsafe` block of the
//! TAP and netns code lives here.
//!
//! The ioctl request numbers come from `libc` (`TUNSETIFF`, `TUNSETOFFLOAD`, ...), which
//! encodes them correctly for each architecture.

use std::ffi::{c_char, c_int, c_short, c_ulong};
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Bytes of `struct ifreq` after the name: the `ifr_ifru` union.
const IFRU_LEN: usize = size_of::<libc::ifreq>() - libc::IFNAMSIZ;

/// `struct ifreq` viewed through its `short ifr_flags` member (TUNSETIFF, TUNGETIFF).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct IfReqFlags {
    pub name: [c_char; libc::IFNAMSIZ],
    pub flags: c_short,
    _pad: [u8; IFRU_LEN - size_of::<c_short>()],
}

/// `struct ifreq` viewed through its `int ifr_ifindex` member (SIOCGIFINDEX).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct IfReqIndex {
    pub name: [c_char; libc::IFNAMSIZ],
    pub ifindex: c_int,
    _pad: [u8; IFRU_LEN - size_of::<c_int>()],
}

// The kernel copies `sizeof(struct ifreq)` bytes in and out; our views must be exactly as big.
const _: () = assert!(size_of::<IfReqFlags>() == size_of::<libc::ifreq>());
const _: () = assert!(size_of::<IfReqIndex>() == size_of::<libc::ifreq>());

/// `name` as a NUL-terminated `ifr_name`. The caller has validated it (1..=15 bytes, no NUL).
fn ifr_name(name: &str) -> [c_char; libc::IFNAMSIZ] {
    debug_assert!(!name.is_empty() && name.len() < libc::IFNAMSIZ && !name.contains('\0'));
    let mut out = [0 as c_char; libc::IFNAMSIZ];
    for (dst, src) in out.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
        *dst = src as c_char;
    }
    out
}

impl IfReqFlags {
    pub fn new(name: &str, flags: c_int) -> Self {
        IfReqFlags {
            name: ifr_name(name),
            // ifr_flags is a C short; IFF_TUN_EXCL (0x8000) is its sign bit, which is fine.
            flags: flags as c_short,
            _pad: [0; IFRU_LEN - size_of::<c_short>()],
        }
    }
}

impl IfReqIndex {
    pub fn new(name: &str) -> Self {
        IfReqIndex {
            name: ifr_name(name),
            ifindex: 0,
            _pad: [0; IFRU_LEN - size_of::<c_int>()],
        }
    }
}

fn check(ret: c_int) -> io::Result<c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `ioctl(fd, TUNSETIFF, &ifr)`: attach a /dev/net/tun file to a (new) TUN/TAP device.
pub(crate) fn tun_set_iff(fd: BorrowedFd<'_>, ifr: &mut IfReqFlags) -> io::Result<()> {
    // SAFETY: fd is a valid open descriptor for the duration of the call (BorrowedFd), and
    // TUNSETIFF reads and writes exactly one `struct ifreq`; `ifr` is a live, exclusively
    // borrowed struct of that size and layout.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, ifr as *mut IfReqFlags) };
    check(ret).map(drop)
}

/// An ioctl whose argument is a pointer to an `int` the kernel reads (TUNSETVNETHDRSZ,
/// TUNSETVNETLE).
pub(crate) fn ioctl_write_int(
    fd: BorrowedFd<'_>,
    req: libc::Ioctl,
    value: c_int,
) -> io::Result<()> {
    // SAFETY: fd is valid for the call; the request reads one `int` through the pointer,
    // which points at a live local.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), req, &value as *const c_int) };
    check(ret).map(drop)
}

/// An ioctl whose argument is passed by value as an `unsigned long` (TUNSETOFFLOAD,
/// TUNSETPERSIST).
pub(crate) fn ioctl_value(fd: BorrowedFd<'_>, req: libc::Ioctl, value: c_ulong) -> io::Result<()> {
    // SAFETY: fd is valid for the call; the argument is a plain integer, so the kernel
    // dereferences no user memory.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), req, value) };
    check(ret).map(drop)
}

/// `ioctl(sock, SIOCGIFINDEX, &ifr)`: the ifindex of `name` in the network namespace the
/// socket `fd` belongs to (any socket works, netlink included).
pub(crate) fn if_index(fd: BorrowedFd<'_>, name: &str) -> io::Result<u32> {
    let mut ifr = IfReqIndex::new(name);
    // libc types SIOCGIFINDEX as c_ulong everywhere while `Ioctl` is c_int on musl.
    #[allow(clippy::useless_conversion)]
    let req = libc::Ioctl::try_from(libc::SIOCGIFINDEX)
        .map_err(|_| io::Error::from(io::ErrorKind::Unsupported))?;
    // SAFETY: fd is valid for the call; SIOCGIFINDEX reads and writes one `struct ifreq`,
    // and `ifr` is a live local of exactly that size.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut ifr as *mut IfReqIndex) };
    check(ret)?;
    u32::try_from(ifr.ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// `ioctl(fd, NS_GET_NSTYPE)`: the CLONE_NEW* type of a namespace file.
pub(crate) fn ns_get_nstype(fd: BorrowedFd<'_>) -> io::Result<c_int> {
    // SAFETY: fd is valid for the call; NS_GET_NSTYPE takes no argument and returns the
    // namespace type as the ioctl result.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::NS_GET_NSTYPE) };
    check(ret)
}

/// `setns(fd, CLONE_NEWNET)` for the calling thread.
pub(crate) fn setns_net(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns only reads the descriptor number, which is valid for the call; it
    // changes the calling thread's network namespace and touches no Rust-visible memory.
    let ret = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    check(ret).map(drop)
}

/// `fcntl(fd, F_GETFL)`.
#[cfg(test)]
pub(crate) fn get_fl(fd: BorrowedFd<'_>) -> io::Result<c_int> {
    // SAFETY: fd is valid for the call; F_GETFL takes no argument.
    let ret = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    check(ret)
}

/// `setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, timeout)`.
pub(crate) fn set_rcvtimeo(fd: BorrowedFd<'_>, timeout: std::time::Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        // < 1_000_000, fits every suseconds_t.
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: fd is valid for the call; the option value points at a live `timeval` and the
    // length passed is its exact size.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    check(ret).map(drop)
}

/// `setsockopt(fd, SOL_SOCKET, opt, value)` for an integer option.
pub(crate) fn set_sockopt_int(fd: BorrowedFd<'_>, opt: c_int, value: c_int) -> io::Result<()> {
    // SAFETY: fd is valid for the call; the option value points at a live c_int and the
    // length passed is its exact size.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            &value as *const c_int as *const libc::c_void,
            size_of::<c_int>() as libc::socklen_t,
        )
    };
    check(ret).map(drop)
}

/// Raises the soft limit of open files to the hard limit; returns the new soft limit.
pub(crate) fn raise_nofile() -> io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one `rlimit` through the pointer, which points at a live local.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit reads one `rlimit` through the pointer, which points at a live local.
    check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    Ok(lim.rlim_cur)
}

/// The effective user id of the process.
#[cfg(test)]
pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

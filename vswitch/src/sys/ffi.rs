//! Raw kernel interfaces: `struct ifreq` layouts and thin, typed wrappers around the
//! `ioctl`/`setns`/`fcntl` calls the rest of `sys` needs. Every `unsafe` block of the
//! TAP and netns code lives here.
//!
//! The ioctl request numbers come from `libc` (`TUNSETIFF`, `TUNSETOFFLOAD`, ...), which
//! encodes them correctly for each architecture.

use std::ffi::{c_char, c_int, c_short, c_ulong};
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

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
        IfReqIndex { name: ifr_name(name), ifindex: 0, _pad: [0; IFRU_LEN - size_of::<c_int>()] }
    }
}

fn check(ret: c_int) -> io::Result<c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `epoll_ctl(epfd, EPOLL_CTL_MOD, fd, {events, data})`.
pub(crate) fn epoll_mod(epfd: c_int, fd: BorrowedFd<'_>, events: u32, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: `ev` is a valid epoll_event the call only reads; a stale `epfd` gets EBADF.
    check(unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_MOD, fd.as_raw_fd(), &mut ev) }).map(drop)
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
pub(crate) fn ioctl_write_int(fd: BorrowedFd<'_>, req: libc::Ioctl, value: c_int) -> io::Result<()> {
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
    let req = libc::Ioctl::try_from(libc::SIOCGIFINDEX).map_err(|_| io::Error::from(io::ErrorKind::Unsupported))?;
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

/// `fstatfs(fd).f_type`: the magic number of the filesystem the file lives on (namespace
/// files: `NSFS_MAGIC`).
pub(crate) fn fstatfs_type(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: an all-zero `statfs` is a valid value of this plain C struct.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fd is valid for the call; fstatfs writes one `struct statfs` through the
    // pointer, which points at a live, exclusively borrowed local of that type.
    check(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut buf) })?;
    // f_type is a signed word on some targets; the magic numbers are small positive values.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    Ok(buf.f_type as u64)
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

/// `setpriority(PRIO_PROCESS, gettid(), nice)`: the calling thread's nice value (each Linux
/// thread has its own).
pub(crate) fn set_thread_nice(nice: c_int) -> io::Result<()> {
    // SAFETY: gettid and setpriority take and return plain integers.
    check(unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) }).map(drop)
}

/// The calling thread's kernel id.
pub(crate) fn gettid() -> i32 {
    // SAFETY: gettid takes nothing and cannot fail.
    unsafe { libc::gettid() }
}

/// `sched_setscheduler(tid, ...)`: thread `tid` becomes `SCHED_FIFO` at `priority`, or with
/// `None` goes back to `SCHED_OTHER` (its nice value is kept).
pub(crate) fn set_thread_fifo(tid: i32, priority: Option<c_int>) -> io::Result<()> {
    let (policy, prio) = match priority {
        Some(p) => (libc::SCHED_FIFO, p),
        None => (libc::SCHED_OTHER, 0),
    };
    let param = libc::sched_param { sched_priority: prio };
    // SAFETY: the pointer is to a live local `sched_param`, which the kernel only reads.
    check(unsafe { libc::sched_setscheduler(tid, policy, &param) }).map(drop)
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

/// `flock(fd, LOCK_EX | LOCK_NB)`: true when this descriptor now holds the lock, false when
/// another open file description holds it.
pub(crate) fn flock_exclusive_nb(fd: BorrowedFd<'_>) -> io::Result<bool> {
    loop {
        // SAFETY: flock only reads the descriptor number, which is valid for the call
        // (BorrowedFd), and an integer operation; it touches no Rust-visible memory.
        let ret = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        match check(ret) {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// The effective user id of the process.
pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The effective group id of the process.
pub(crate) fn getegid() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}

/// The parent's pid (in the caller's pid namespace; 0 when the parent is outside it).
pub(crate) fn getppid() -> u32 {
    // SAFETY: getppid has no preconditions and cannot fail.
    let pid = unsafe { libc::getppid() };
    u32::try_from(pid).unwrap_or(0)
}

/// `unshare(flags)` for the calling process (CLONE_NEWUSER needs a single-threaded caller).
pub(crate) fn unshare(flags: c_int) -> io::Result<()> {
    // SAFETY: unshare takes only an integer and touches no Rust-visible memory.
    let ret = unsafe { libc::unshare(flags) };
    check(ret).map(drop)
}

/// `setns(fd, CLONE_NEWUSER)`: join a user namespace (the caller must be single-threaded).
pub(crate) fn setns_user(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: setns only reads the descriptor number, valid for the call; it changes the
    // calling process's credentials and touches no Rust-visible memory.
    let ret = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWUSER) };
    check(ret).map(drop)
}

/// An ioctl on a namespace file that returns a new descriptor (NS_GET_USERNS,
/// NS_GET_PARENT); the descriptor is O_CLOEXEC.
fn ns_ioctl_fd(fd: BorrowedFd<'_>, req: libc::Ioctl) -> io::Result<OwnedFd> {
    // SAFETY: fd is valid for the call; these requests take no argument and return a new
    // file descriptor as the result.
    let ret = check(unsafe { libc::ioctl(fd.as_raw_fd(), req) })?;
    // SAFETY: on success the kernel returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret) })
}

/// `ioctl(ns_fd, NS_GET_USERNS)`: the user namespace that owns a namespace.
pub(crate) fn ns_get_userns(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    ns_ioctl_fd(fd, libc::NS_GET_USERNS)
}

/// `ioctl(userns_fd, NS_GET_PARENT)`: the parent of a user namespace (EPERM when it lies
/// outside the caller's own user namespace).
pub(crate) fn ns_get_parent(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    ns_ioctl_fd(fd, libc::NS_GET_PARENT)
}

/// `prctl(PR_SET_PDEATHSIG, sig)`: the kernel sends `sig` when the thread that forked the
/// caller exits. Async-signal-safe (used between fork and exec).
pub(crate) fn set_pdeathsig(sig: c_int) -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a plain integer; the unused arguments are zero.
    let ret = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as c_ulong, 0 as c_ulong, 0 as c_ulong, 0 as c_ulong) };
    check(ret).map(drop)
}

/// Clears FD_CLOEXEC on a raw descriptor so that it survives exec. Async-signal-safe (used
/// between fork and exec, where only the number is at hand).
pub(crate) fn clear_cloexec_raw(fd: c_int) -> io::Result<()> {
    // SAFETY: fcntl on an integer descriptor touches no Rust-visible memory; a bad number
    // fails with EBADF.
    let flags = check(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: as above; F_SETFD takes an integer.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) }).map(drop)
}

/// Takes ownership of an inherited descriptor given by number, after checking that it is an
/// open socket, and marks it close-on-exec again.
pub(crate) fn adopt_inherited_socket(fd: c_int) -> io::Result<OwnedFd> {
    if fd < 3 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("fd {fd} is a standard stream")));
    }
    // SAFETY: an all-zero `stat` is a valid value of the plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one `stat` through the pointer, which points at a live local; a
    // closed descriptor fails with EBADF.
    check(unsafe { libc::fstat(fd, &mut st) })?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("fd {fd} is not a socket")));
    }
    // SAFETY: fcntl on an integer descriptor touches no Rust-visible memory.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
    // SAFETY: the descriptor is open (fstat succeeded), was inherited for this purpose only,
    // and nothing else in the process refers to it, so ownership is ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)`.
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as c_int; 2];
    // SAFETY: socketpair writes two ints through the pointer, which points at a live array
    // of two.
    check(unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) })?;
    // SAFETY: on success both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// At most this many descriptors are accepted with one message.
pub(crate) const MAX_FDS: usize = 4;
/// Control buffer for [`MAX_FDS`] descriptors, as u64 words for `cmsghdr` alignment.
const CMSG_WORDS: usize = 8;
const _: () = assert!(
    // CMSG_SPACE(MAX_FDS * sizeof(int)): header (16 on 64-bit, 12 on 32-bit) + 16 bytes.
    CMSG_WORDS * 8 >= size_of::<libc::cmsghdr>() + MAX_FDS * size_of::<c_int>() + 8
);

/// Sends one message (`MSG_NOSIGNAL`), with `fd` attached as SCM_RIGHTS when given.
pub(crate) fn send_msg(sock: BorrowedFd<'_>, data: &[u8], fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    let mut cbuf = [0u64; CMSG_WORDS];
    // SAFETY: an all-zero msghdr (null pointers, zero lengths) is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        let raw = fd.as_raw_fd();
        // SAFETY: CMSG_SPACE is pure arithmetic.
        let space = unsafe { libc::CMSG_SPACE(size_of::<c_int>() as u32) } as usize;
        debug_assert!(space <= size_of::<[u64; CMSG_WORDS]>());
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `cbuf`, zeroed, aligned for cmsghdr and at least
        // `space` bytes long, so CMSG_FIRSTHDR returns a pointer to its start, and the header
        // and CMSG_DATA (one int) lie inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<c_int>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut c_int, raw);
        }
    }
    loop {
        // SAFETY: `msg` points at `iov` (over `data`) and `cbuf`, all alive for the call;
        // sendmsg only reads them. `fd`, if any, is a valid descriptor for the call.
        let ret = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        match check(ret as c_int) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// One received message: its length (0 at end of stream), the descriptors that came with it
/// (close-on-exec), and whether it was longer than the buffer.
#[derive(Debug)]
pub(crate) struct Received {
    pub len: usize,
    pub fds: Vec<OwnedFd>,
    pub truncated: bool,
}

/// Receives one message into `buf`, taking ownership of any SCM_RIGHTS descriptors.
pub(crate) fn recv_msg(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
    let mut cbuf = [0u64; CMSG_WORDS];
    // SAFETY: an all-zero msghdr is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = size_of::<[u64; CMSG_WORDS]>() as _;
    let n = loop {
        // SAFETY: `msg` points at `iov` (over `buf`, exclusively borrowed) and `cbuf`, both
        // alive for the call and of the lengths given; the kernel writes at most that much.
        let ret = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        match check(ret as c_int) {
            Ok(_) => break ret as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    let mut fds = Vec::new();
    // SAFETY: after recvmsg, msg_control/msg_controllen describe the control messages the
    // kernel wrote into `cbuf`; CMSG_FIRSTHDR/NXTHDR stay within msg_controllen, and each
    // SCM_RIGHTS payload holds (cmsg_len - CMSG_LEN(0)) / sizeof(int) descriptors that this
    // process now owns (nothing else refers to them).
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg) as *const c_int;
                let bytes = ((*cmsg).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                for i in 0..bytes / size_of::<c_int>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let truncated = msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0;
    Ok(Received { len: n, fds, truncated })
}

/// Ignores SIGINT in the calling process (a terminal's Ctrl-C goes to the whole process
/// group; the helper must outlive it long enough to finish a request and see its socket
/// close).
pub(crate) fn ignore_sigint() -> io::Result<()> {
    // SAFETY: installing SIG_IGN runs no handler code; libc::signal has no other effect.
    let prev = unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    if prev == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A non-blocking, close-on-exec `timerfd` on CLOCK_MONOTONIC (the clock `Instant` reads).
pub(crate) fn timerfd_create() -> io::Result<OwnedFd> {
    // SAFETY: no pointers; the return value is checked before it is used as an fd.
    let fd = check(unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC) })?;
    // SAFETY: the kernel just gave us this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Arms a timerfd to fire once, `after` from now (a zero duration disarms it, as the kernel
/// reads it; callers give at least 1 ns to fire at once).
pub(crate) fn timerfd_set(fd: BorrowedFd<'_>, after: std::time::Duration) -> io::Result<()> {
    let value = libc::timespec { tv_sec: after.as_secs() as libc::time_t, tv_nsec: after.subsec_nanos() as libc::c_long };
    let spec = libc::itimerspec { it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 }, it_value: value };
    // SAFETY: fd is valid for the call; `spec` is a live itimerspec and the old value is not
    // asked for (null).
    check(unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) }).map(drop)
}

/// `socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL))`.
pub(crate) fn packet_socket() -> io::Result<OwnedFd> {
    let proto = c_int::from((libc::ETH_P_ALL as u16).to_be());
    // SAFETY: socket takes no pointers; a non-negative result is a new descriptor we own.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, proto) };
    let fd = check(fd)?;
    // SAFETY: `fd` was just returned by socket() and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `setsockopt(fd, SOL_PACKET, opt, value)` for an integer option.
pub(crate) fn set_packet_opt_int(fd: BorrowedFd<'_>, opt: c_int, value: c_int) -> io::Result<()> {
    // SAFETY: fd is valid for the call; the option value points at a live c_int and the
    // length passed is its exact size.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            opt,
            &value as *const c_int as *const libc::c_void,
            size_of::<c_int>() as libc::socklen_t,
        )
    };
    check(ret).map(drop)
}

/// Binds a packet socket to the interface `ifindex` (all protocols).
pub(crate) fn packet_bind(fd: BorrowedFd<'_>, ifindex: u32) -> io::Result<()> {
    // SAFETY: an all-zero sockaddr_ll is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = c_int::try_from(ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: fd is valid; the address points at a live sockaddr_ll and the length is its size.
    let ret = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    check(ret).map(drop)
}

/// `PACKET_ADD_MEMBERSHIP` with `PACKET_MR_PROMISC` on `ifindex`: the interface is promiscuous
/// for as long as the socket is open (the kernel counts, so other users are unaffected).
pub(crate) fn packet_promisc(fd: BorrowedFd<'_>, ifindex: u32) -> io::Result<()> {
    // SAFETY: an all-zero packet_mreq is a valid value.
    let mut mr: libc::packet_mreq = unsafe { std::mem::zeroed() };
    mr.mr_ifindex = c_int::try_from(ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    mr.mr_type = libc::PACKET_MR_PROMISC as u16;
    // SAFETY: fd is valid; the option value points at a live packet_mreq of the length given.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            &mr as *const libc::packet_mreq as *const libc::c_void,
            size_of::<libc::packet_mreq>() as libc::socklen_t,
        )
    };
    check(ret).map(drop)
}

/// What one `recvmsg` on a packet socket returned.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PacketRecv {
    /// Bytes written into the two buffers together.
    pub len: usize,
    /// The 802.1Q TCI the kernel took off the frame (`PACKET_AUXDATA`), if it had a tag.
    pub vlan_tci: Option<u16>,
    /// The frame was longer than the buffers.
    pub truncated: bool,
}

/// Receives one frame from a packet socket into `head` then `rest` (scatter), with its
/// `PACKET_AUXDATA`. `Err(WouldBlock)` when nothing is queued.
pub(crate) fn packet_recv(fd: BorrowedFd<'_>, head: &mut [u8], rest: &mut [u8]) -> io::Result<PacketRecv> {
    let mut iov = [
        libc::iovec { iov_base: head.as_mut_ptr() as *mut libc::c_void, iov_len: head.len() },
        libc::iovec { iov_base: rest.as_mut_ptr() as *mut libc::c_void, iov_len: rest.len() },
    ];
    let mut cbuf = [0u64; 8];
    // SAFETY: an all-zero msghdr is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = 2;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = size_of::<[u64; 8]>() as _;
    let n = loop {
        // SAFETY: `msg` points at `iov` (over `head` and `rest`, exclusively borrowed) and
        // `cbuf`, all alive for the call and of the lengths given; the kernel writes no more.
        let ret = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_TRUNC) };
        if ret >= 0 {
            break ret as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut vlan_tci = None;
    // SAFETY: after recvmsg, msg_control/msg_controllen describe the control messages the
    // kernel wrote into `cbuf`; CMSG_FIRSTHDR/NXTHDR stay within msg_controllen, and a
    // PACKET_AUXDATA payload is one `tpacket_auxdata`, read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_PACKET
                && (*cmsg).cmsg_type == libc::PACKET_AUXDATA
                && (*cmsg).cmsg_len as usize >= libc::CMSG_LEN(size_of::<libc::tpacket_auxdata>() as u32) as usize
            {
                let aux: libc::tpacket_auxdata = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::tpacket_auxdata);
                if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                    vlan_tci = Some(aux.tp_vlan_tci);
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    let room = head.len() + rest.len();
    Ok(PacketRecv { len: n.min(room), vlan_tci, truncated: n > room || msg.msg_flags & libc::MSG_TRUNC != 0 })
}

//! TAP devices through `/dev/net/tun`.
//!
//! A TAP created here is *not* persistent: it exists exactly as long as its queue fd is open,
//! so closing (dropping) the fd is how a port is detached. [`set_persist`] changes that.

use std::ffi::{c_int, c_ulong};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use super::ffi;
use super::netns::SysError;

/// Size of the virtio-net header prepended to every frame when `vnet_hdr` is on: the 12-byte
/// `struct virtio_net_hdr_v1` (= `virtio_net_hdr_mrg_rxbuf`: flags, gso_type, hdr_len,
/// gso_size, csum_start, csum_offset, num_buffers), little-endian (TUNSETVNETLE is set).
pub const VNET_HDR_LEN: usize = 12;

/// Offloads the kernel accepted for a TAP queue.
///
/// With `csum`, frames the kernel writes to the TAP may carry `VIRTIO_NET_HDR_F_NEEDS_CSUM`
/// (partial checksum); with `tso4`/`tso6`/`uso` they may be GSO super-frames of up to 64 KiB
/// that the reader has to segment (or forward as GSO to another vnet_hdr TAP).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Frames carry a [`VNET_HDR_LEN`]-byte virtio-net header in both directions.
    pub vnet_hdr: bool,
    /// TUN_F_CSUM: checksum offload.
    pub csum: bool,
    /// TUN_F_TSO4: TCPv4 segmentation offload.
    pub tso4: bool,
    /// TUN_F_TSO6: TCPv6 segmentation offload.
    pub tso6: bool,
    /// TUN_F_USO4 | TUN_F_USO6: UDP segmentation offload (Linux >= 6.2).
    pub uso: bool,
}

impl Offloads {
    /// Names of the enabled offloads, e.g. `["vnet_hdr", "csum", "tso4", "tso6"]`.
    pub fn names(&self) -> Vec<String> {
        [(self.vnet_hdr, "vnet_hdr"), (self.csum, "csum"), (self.tso4, "tso4"), (self.tso6, "tso6"), (self.uso, "uso")]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| name.to_string())
            .collect()
    }

    fn from_tun_flags(flags: c_ulong) -> Offloads {
        let has = |f: std::ffi::c_uint| flags & c_ulong::from(f) != 0;
        Offloads {
            vnet_hdr: true,
            csum: has(libc::TUN_F_CSUM),
            tso4: has(libc::TUN_F_TSO4),
            tso6: has(libc::TUN_F_TSO6),
            uso: has(libc::TUN_F_USO4),
        }
    }
}

/// A configured TAP queue (before netlink setup).
#[derive(Debug)]
pub struct Tap {
    /// The queue fd (O_RDWR | O_NONBLOCK | O_CLOEXEC).
    pub fd: OwnedFd,
    /// What the kernel accepted.
    pub offloads: Offloads,
    /// [`VNET_HDR_LEN`] when `offloads.vnet_hdr`, else 0.
    pub vnet_hdr_len: usize,
}

/// Open `/dev/net/tun` (O_RDWR | O_NONBLOCK | O_CLOEXEC).
///
/// The file is bound to the network namespace of the *calling thread at open time*: the TAP
/// that [`create`] later makes on it appears in that namespace, wherever the thread is then.
pub fn open_tun() -> io::Result<OwnedFd> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK) // std adds O_CLOEXEC
        .open("/dev/net/tun")?;
    Ok(OwnedFd::from(file))
}

/// Turn an open `/dev/net/tun` file into a new, non-persistent TAP named `name` (which must
/// not exist yet: IFF_TUN_EXCL), with IFF_NO_PI, and with IFF_VNET_HDR plus the offloads the
/// kernel accepts when `vnet_hdr` is `Some(uso)` (UDP segmentation only with `uso`). `name`
/// must already be validated ([`super::netns::validate_ifname`]).
pub fn create(fd: OwnedFd, name: &str, vnet_hdr: Option<bool>) -> Result<Tap, SysError> {
    open(fd, name, vnet_hdr, true)
}

/// Like [`create`], but with `exclusive` false an existing persistent TAP of that name (left
/// by an earlier run of the daemon) is opened instead of refused; a missing one is created.
pub fn open(fd: OwnedFd, name: &str, vnet_hdr: Option<bool>, exclusive: bool) -> Result<Tap, SysError> {
    open_queue(fd, name, vnet_hdr, exclusive, false)
}

/// Like [`open`]; with `multi_queue` the TAP is (or is opened as) an IFF_MULTI_QUEUE device and
/// `fd` becomes one more of its queues (the first call makes it, with `exclusive`).
pub fn open_queue(fd: OwnedFd, name: &str, vnet_hdr: Option<bool>, exclusive: bool, multi_queue: bool) -> Result<Tap, SysError> {
    let uso = vnet_hdr == Some(true);
    let vnet_hdr = vnet_hdr.is_some();
    let mut flags: c_int = libc::IFF_TAP | libc::IFF_NO_PI;
    if multi_queue {
        flags |= libc::IFF_MULTI_QUEUE;
    }
    if exclusive {
        flags |= libc::IFF_TUN_EXCL;
    }
    if vnet_hdr {
        flags |= libc::IFF_VNET_HDR;
    }
    let mut ifr = ffi::IfReqFlags::new(name, flags);
    ffi::tun_set_iff(fd.as_fd(), &mut ifr).map_err(|e| match e.raw_os_error() {
        Some(libc::EBUSY | libc::EEXIST) => SysError::Exists(name.to_string()),
        Some(libc::EPERM | libc::EACCES) => SysError::PermissionDenied(format!("creating TAP {name:?} (TUNSETIFF)")),
        _ => SysError::Io { op: "create TAP (TUNSETIFF)", source: e },
    })?;
    if !vnet_hdr {
        return Ok(Tap { fd, offloads: Offloads::default(), vnet_hdr_len: 0 });
    }

    ffi::ioctl_write_int(fd.as_fd(), libc::TUNSETVNETHDRSZ, VNET_HDR_LEN as c_int)
        .map_err(|e| SysError::Io { op: "set vnet header size (TUNSETVNETHDRSZ)", source: e })?;
    // virtio 1.0 headers are little-endian; make that explicit (a no-op on LE hosts).
    ffi::ioctl_write_int(fd.as_fd(), libc::TUNSETVNETLE, 1)
        .map_err(|e| SysError::Io { op: "set vnet header endianness (TUNSETVNETLE)", source: e })?;
    let accepted = set_best_offload(&fd, uso)?;
    Ok(Tap { fd, offloads: Offloads::from_tun_flags(accepted), vnet_hdr_len: VNET_HDR_LEN })
}

/// TUNSETOFFLOAD with the richest flag set the kernel takes; returns the flags that stuck.
/// Older kernels answer EINVAL to unknown bits, so fall back step by step.
fn set_best_offload(fd: &OwnedFd, with_uso: bool) -> Result<c_ulong, SysError> {
    let csum = c_ulong::from(libc::TUN_F_CSUM);
    let tso = csum | c_ulong::from(libc::TUN_F_TSO4 | libc::TUN_F_TSO6);
    let uso = if with_uso { tso | c_ulong::from(libc::TUN_F_USO4 | libc::TUN_F_USO6) } else { tso };
    for flags in [uso, tso, csum, 0] {
        match ffi::ioctl_value(fd.as_fd(), libc::TUNSETOFFLOAD, flags) {
            Ok(()) => return Ok(flags),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && flags != 0 => continue,
            Err(e) => return Err(SysError::Io { op: "set offloads (TUNSETOFFLOAD)", source: e }),
        }
    }
    Ok(0)
}

/// Make the TAP behind `fd` persistent (it survives closing the fd) or not.
pub fn set_persist(fd: impl AsFd, persist: bool) -> io::Result<()> {
    ffi::ioctl_value(fd.as_fd(), libc::TUNSETPERSIST, c_ulong::from(persist))
}

//! Interface ports: an existing interface of vswitchd's own namespace (a veth end, a VM's
//! TAP, a NIC) read and written through an `AF_PACKET` socket.
//!
//! The socket is bound to the interface's index, makes it promiscuous for as long as it is
//! open (`PACKET_ADD_MEMBERSHIP`), skips what we send ourselves (`PACKET_IGNORE_OUTGOING`),
//! reports the 802.1Q tag the kernel took off a frame (`PACKET_AUXDATA`) and carries a
//! virtio-net header (`PACKET_VNET_HDR`) both ways, so TCP super-frames pass unsegmented where
//! the interface has offloads (the kernel segments in software where it has not). The header
//! is the 10-byte `struct virtio_net_hdr`; [`PacketSocket::recv`] scatters it so that the
//! datapath sees the same 12-byte layout as on its TAPs. Closing the socket leaves the
//! interface as it was (promiscuity is counted by the kernel and dropped with the socket).

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::fd::{AsFd, OwnedFd};

use super::ffi;
use super::netns::{validate_ifname, SysError};

/// Bytes of `struct virtio_net_hdr` on a packet socket (no `num_buffers`).
pub const PACKET_VNET_LEN: usize = 10;
/// The datapath's virtio header length (the TAPs' `virtio_net_hdr_v1`).
const DP_VNET_LEN: usize = super::VNET_HDR_LEN;

/// An open interface port.
#[derive(Debug)]
pub struct PacketSocket {
    file: File,
    /// The interface's index when it was opened.
    pub ifindex: u32,
}

/// What [`PacketSocket::recv`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Length in the buffer: the 12-byte virtio header, then the frame.
    pub len: usize,
    /// The 802.1Q TCI the kernel took off the frame, if it carried a tag.
    pub vlan_tci: Option<u16>,
    /// The frame did not fit the buffer (it is cut).
    pub truncated: bool,
}

/// The index of `ifname` in vswitchd's namespace, or `None` when there is no such interface.
///
/// # Errors
/// A bad name, or when no socket can be opened to ask.
pub fn ifindex(ifname: &str) -> Result<Option<u32>, SysError> {
    validate_ifname(ifname)?;
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|source| SysError::Io { op: "open a socket", source })?;
    match ffi::if_index(probe.as_fd(), ifname) {
        Ok(i) => Ok(Some(i)),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(source) => Err(SysError::Io { op: "find interface (SIOCGIFINDEX)", source }),
    }
}

impl PacketSocket {
    /// Opens the interface port on `ifname` (see the module docs).
    ///
    /// # Errors
    /// No such interface ([`SysError::NoInterface`]), no CAP_NET_RAW, or a socket option the
    /// kernel refuses.
    pub fn open(ifname: &str) -> Result<PacketSocket, SysError> {
        validate_ifname(ifname)?;
        let fd: OwnedFd = ffi::packet_socket().map_err(|e| match e.raw_os_error() {
            Some(libc::EPERM | libc::EACCES) => SysError::PermissionDenied(format!("opening a packet socket for {ifname:?} (CAP_NET_RAW)")),
            _ => SysError::Io { op: "open packet socket", source: e },
        })?;
        let ifindex = match ffi::if_index(fd.as_fd(), ifname) {
            Ok(i) => i,
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Err(SysError::NoInterface(ifname.to_string())),
            Err(source) => return Err(SysError::Io { op: "find interface (SIOCGIFINDEX)", source }),
        };
        let opt =
            |op: &'static str, opt: libc::c_int| ffi::set_packet_opt_int(fd.as_fd(), opt, 1).map_err(|source| SysError::Io { op, source });
        opt("set PACKET_VNET_HDR", libc::PACKET_VNET_HDR)?;
        opt("set PACKET_AUXDATA", libc::PACKET_AUXDATA)?;
        opt("set PACKET_IGNORE_OUTGOING", libc::PACKET_IGNORE_OUTGOING)?;
        ffi::packet_bind(fd.as_fd(), ifindex).map_err(|e| match e.raw_os_error() {
            Some(libc::ENODEV | libc::ENXIO) => SysError::NoInterface(ifname.to_string()),
            _ => SysError::Io { op: "bind packet socket", source: e },
        })?;
        ffi::packet_promisc(fd.as_fd(), ifindex).map_err(|source| SysError::Io { op: "make the interface promiscuous", source })?;
        // A fast LAN peer overflows the default ~200 KiB before a batch is read.
        let _ = super::set_socket_buffers(fd.as_fd(), 4 << 20);
        Ok(PacketSocket { file: File::from(fd), ifindex })
    }

    /// The socket as a file (for epoll and sharing with the datapath).
    pub fn into_file(self) -> File {
        self.file
    }
}

/// Reads one frame from the packet socket `file` into `buf` as the datapath lays out a vnet
/// TAP read: a 12-byte virtio header (`num_buffers` zero), then the frame. `Ok(None)` when
/// nothing is queued.
///
/// # Errors
/// What `recvmsg` reports other than EAGAIN (the interface went away: ENETDOWN, ENXIO).
pub fn recv(file: &File, buf: &mut [u8]) -> io::Result<Option<Received>> {
    if buf.len() < DP_VNET_LEN {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let (head, rest) = buf.split_at_mut(DP_VNET_LEN);
    let (vh, num_buffers) = head.split_at_mut(PACKET_VNET_LEN);
    // The kernel fills the 10-byte header, then the frame from byte 12 on.
    match ffi::packet_recv(file.as_fd(), vh, rest) {
        Ok(r) => {
            num_buffers.fill(0);
            let frame_len = r.len.saturating_sub(PACKET_VNET_LEN);
            Ok(Some(Received { len: DP_VNET_LEN + frame_len, vlan_tci: r.vlan_tci, truncated: r.truncated || r.len < PACKET_VNET_LEN }))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// Offsets in the virtio header: `flags`, `hdr_len`, `csum_start`.
const VH_FLAGS: usize = 0;
const VH_HDR_LEN: usize = 2;
const VH_CSUM_START: usize = 6;
const F_NEEDS_CSUM: u8 = 1;

/// Writes one frame to the packet socket `file`: `buf` is the frame after a virtio header of
/// `hdr` bytes (0 or 12, the datapath's layouts). With `tag`, an 802.1Q header (TPID 0x8100,
/// the 16-bit TCI given) goes in after the MAC addresses, and the header's checksum and header
/// offsets move with it. `false` when the kernel did not take it all (queue full, link down).
pub fn send(file: &File, buf: &[u8], hdr: usize, tag: Option<u16>) -> bool {
    let mut vh = [0u8; PACKET_VNET_LEN];
    if hdr >= PACKET_VNET_LEN {
        vh.copy_from_slice(&buf[..PACKET_VNET_LEN]);
    }
    let Some(frame) = buf.get(hdr..).filter(|f| f.len() >= 14) else { return false };
    let written = match tag {
        None => (&*file).write_vectored(&[IoSlice::new(&vh), IoSlice::new(frame)]),
        Some(tci) => {
            if vh[VH_FLAGS] & F_NEEDS_CSUM != 0 {
                shift_le16(&mut vh, VH_CSUM_START, 4);
            }
            if vh[VH_HDR_LEN] != 0 || vh[VH_HDR_LEN + 1] != 0 {
                shift_le16(&mut vh, VH_HDR_LEN, 4);
            }
            let t = tci.to_be_bytes();
            let qtag = [0x81, 0x00, t[0], t[1]];
            (&*file).write_vectored(&[IoSlice::new(&vh), IoSlice::new(&frame[..12]), IoSlice::new(&qtag), IoSlice::new(&frame[12..])])
        }
    };
    let want = PACKET_VNET_LEN + frame.len() + if tag.is_some() { 4 } else { 0 };
    matches!(written, Ok(n) if n == want)
}

fn shift_le16(b: &mut [u8], at: usize, by: u16) {
    let v = u16::from_le_bytes([b[at], b[at + 1]]).saturating_add(by);
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;

    use super::*;

    /// A datagram socket pair stands in for the packet socket: `send` writes one datagram.
    fn pair() -> (File, UnixDatagram) {
        let (a, b) = UnixDatagram::pair().unwrap();
        (File::from(OwnedFd::from(a)), b)
    }

    fn frame() -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        f.extend_from_slice(&[0x45; 40]);
        f
    }

    #[test]
    fn untagged_send_drops_num_buffers() {
        let (file, peer) = pair();
        let mut buf = vec![1, 0, 54, 0, 0x5a, 0x05, 34, 0, 16, 0, 0xee, 0xee];
        buf.extend_from_slice(&frame());
        assert!(send(&file, &buf, 12, None));
        let mut got = vec![0u8; 200];
        let n = peer.recv(&mut got).unwrap();
        // The 10-byte header (no num_buffers), then the frame as it was.
        assert_eq!(&got[..10], &buf[..10]);
        assert_eq!(&got[10..n], &buf[12..]);
    }

    #[test]
    fn tagged_send_inserts_8021q_and_moves_offsets() {
        let (file, peer) = pair();
        // NEEDS_CSUM, TCPv4 GSO, hdr_len 54, gso_size 1370, csum_start 34, csum_offset 16.
        let mut buf = vec![1, 1, 54, 0, 0x5a, 0x05, 34, 0, 16, 0, 0, 0];
        buf.extend_from_slice(&frame());
        assert!(send(&file, &buf, 12, Some(0x6064)));
        let mut got = vec![0u8; 200];
        let n = peer.recv(&mut got).unwrap();
        assert_eq!(&got[..2], &[1, 1]);
        assert_eq!(u16::from_le_bytes([got[2], got[3]]), 58, "hdr_len moves with the tag");
        assert_eq!(u16::from_le_bytes([got[4], got[5]]), 1370, "gso_size unchanged");
        assert_eq!(u16::from_le_bytes([got[6], got[7]]), 38, "csum_start moves with the tag");
        assert_eq!(u16::from_le_bytes([got[8], got[9]]), 16, "csum_offset is relative to csum_start");
        let f = &got[10..n];
        assert_eq!(&f[..12], &frame()[..12]);
        assert_eq!(&f[12..16], &[0x81, 0x00, 0x60, 0x64], "TPID and TCI");
        assert_eq!(&f[16..], &frame()[12..]);
        // Without a virtio header (a frame from the tunnel): a zeroed one goes in front.
        assert!(send(&file, &frame(), 0, Some(100)));
        let n = peer.recv(&mut got).unwrap();
        assert_eq!(&got[..10], &[0; 10]);
        assert_eq!(n, 10 + frame().len() + 4);
        // A runt is refused, not sent.
        assert!(!send(&file, &[0u8; 20], 12, None));
    }
}

//! Software TCP segmentation and coalescing for virtio-net frames, without I/O.
//!
//! A TAP opened with `IFF_VNET_HDR` and TSO hands the reader TCP super-frames of up to 64 KiB
//! (`gso_type` TCPV4/TCPV6, `gso_size` = the MSS) with a partial checksum (`NEEDS_CSUM`).
//! The tunnel carries ordinary Ethernet frames of at most the network's MTU, so such a frame
//! is cut here into the segments the container's NIC would have sent: [`TcpSegmenter`].
//! [`finish_csum`] completes a partial checksum of a single frame. [`Coalescer`] does the
//! reverse on receive: consecutive in-order segments of one flow become one super-frame for a
//! TAP with a vnet header. Nothing here allocates or panics, whatever the bytes.

use smoltcp::wire::{Ipv4Packet, Ipv6Packet, TcpPacket, TcpSeqNumber};

/// `virtio_net_hdr.flags`: the transport checksum is partial (`csum_start`, `csum_offset`).
pub const F_NEEDS_CSUM: u8 = 1;
/// `virtio_net_hdr.flags`: the checksum was already verified (receive side).
pub const F_DATA_VALID: u8 = 2;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_TCPV6: u8 = 4;
/// Bit of `gso_type`: the flow uses ECN (CWR only on the first segment).
pub const GSO_ECN: u8 = 0x80;

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_VLAN: u16 = 0x8100;
const PROTO_TCP: u8 = 6;
/// TCP flags byte: CWR, PSH and FIN.
const TCP_CWR: u8 = 0x80;
const TCP_PSH: u8 = 0x08;
const TCP_FIN: u8 = 0x01;
/// The largest IP packet a super-frame may hold (the IPv4 total length is 16 bits).
const MAX_IP_LEN: usize = 65535;

/// [`VnetHdr::untag`] on the header at the start of `b` (unchanged when `b` is too short).
pub fn untag_vnet_offsets(b: &mut [u8], by: u16) {
    if let Some(mut vh) = VnetHdr::parse(b) {
        vh.untag(by);
        vh.write(b);
    }
}

/// The 12-byte little-endian `virtio_net_hdr_v1` in front of each frame on a vnet TAP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub const LEN: usize = 12;

    /// Reads the header at the start of `b`; `None` when `b` is shorter than a header.
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b = b.get(..Self::LEN)?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    /// Writes the header (`num_buffers` 0) to `b[..12]`; `false` when `b` is too short.
    pub fn write(&self, b: &mut [u8]) -> bool {
        let Some(b) = b.get_mut(..Self::LEN) else { return false };
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].fill(0);
        true
    }

    /// Moves the offsets into the frame (`csum_start` when the checksum is partial, `hdr_len`
    /// when set) back by `by` bytes, for a frame that lost an 802.1Q tag in front of them.
    pub fn untag(&mut self, by: u16) {
        if self.flags & F_NEEDS_CSUM != 0 {
            self.csum_start = self.csum_start.saturating_sub(by);
        }
        if self.hdr_len != 0 {
            self.hdr_len = self.hdr_len.saturating_sub(by);
        }
    }

    /// A TCP super-frame (ECN bit aside).
    pub fn is_tcp_gso(&self) -> bool {
        matches!(self.gso_type & !GSO_ECN, GSO_TCPV4 | GSO_TCPV6)
    }
}

/// Why a frame could not be segmented or checksummed: the datapath counts it as a drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("frame shorter than its headers")]
    Truncated,
    #[error("not a TCP packet of the kind gso_type names")]
    NotTcp,
    #[error("GSO type {0:#x} is not TCP")]
    Unsupported(u8),
    #[error("gso_size 0")]
    BadGsoSize,
    #[error("IP length does not match the frame")]
    BadLength,
    #[error("checksum offsets outside the frame")]
    BadChecksumOffset,
}

/// One's-complement sum of `data` (big-endian 16-bit words, an odd last byte padded with
/// zero) added to `acc`, not folded.
fn sum(mut acc: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        // Add the two 32-bit halves: the carries land in the upper half of acc.
        acc += w >> 32;
        acc += w & 0xffff_ffff;
    }
    let mut rest = chunks.remainder();
    while rest.len() >= 2 {
        acc += u64::from(u16::from_be_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let [last] = rest {
        acc += u64::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Completes the partial checksum of `frame` (virtio `NEEDS_CSUM`): the one's-complement sum
/// of `frame[csum_start..]` (whose checksum field holds the pseudo-header sum) is stored,
/// complemented, at `csum_start + csum_offset`.
pub fn finish_csum(frame: &mut [u8], csum_start: usize, csum_offset: usize) -> Result<(), SegmentError> {
    let at = csum_start.checked_add(csum_offset).ok_or(SegmentError::BadChecksumOffset)?;
    if at.checked_add(2).is_none_or(|end| end > frame.len()) {
        return Err(SegmentError::BadChecksumOffset);
    }
    let mut c = !fold(sum(0, &frame[csum_start..]));
    // UDP sends a computed 0 as 0xffff (0 means "no checksum"); TCP never sees the difference.
    if c == 0 {
        c = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Where the headers of an Ethernet/IP/TCP frame are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    /// Offset of the IP header.
    l3: usize,
    /// Offset of the TCP header.
    l4: usize,
    /// Offset of the TCP payload (= length of all headers).
    payload: usize,
    /// End of the IP packet (padding after it is not part of it).
    end: usize,
    v6: bool,
}

/// Parses Ethernet (one VLAN tag at most), IPv4 (options allowed, not a fragment) or IPv6
/// (no extension header) and TCP.
fn tcp_layout(frame: &[u8]) -> Result<Layout, SegmentError> {
    let ethertype_at = |i: usize| frame.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let mut l3 = ETH_HLEN;
    let mut ethertype = ethertype_at(12).ok_or(SegmentError::Truncated)?;
    if ethertype == ETHERTYPE_VLAN {
        ethertype = ethertype_at(16).ok_or(SegmentError::Truncated)?;
        l3 += 4;
    }
    let ip = frame.get(l3..).ok_or(SegmentError::Truncated)?;
    let (l4, end, v6) = match ethertype {
        ETHERTYPE_IPV4 => {
            let p = Ipv4Packet::new_checked(ip).map_err(|_| SegmentError::Truncated)?;
            // smoltcp's length check lets a version other than 4 and an IHL under 5 through.
            if p.version() != 4 || p.header_len() < 20 {
                return Err(SegmentError::NotTcp);
            }
            if u8::from(p.next_header()) != PROTO_TCP || p.more_frags() || p.frag_offset() != 0 {
                return Err(SegmentError::NotTcp);
            }
            (l3 + usize::from(p.header_len()), l3 + usize::from(p.total_len()), false)
        }
        ETHERTYPE_IPV6 => {
            let p = Ipv6Packet::new_checked(ip).map_err(|_| SegmentError::Truncated)?;
            if p.version() != 6 || u8::from(p.next_header()) != PROTO_TCP {
                return Err(SegmentError::NotTcp);
            }
            (l3 + 40, l3 + 40 + usize::from(p.payload_len()), true)
        }
        _ => return Err(SegmentError::NotTcp),
    };
    if end > frame.len() {
        return Err(SegmentError::BadLength);
    }
    let tcp = TcpPacket::new_checked(&frame[l4..end]).map_err(|_| SegmentError::Truncated)?;
    let payload = l4 + usize::from(tcp.header_len());
    if payload > end {
        return Err(SegmentError::Truncated);
    }
    Ok(Layout { l3, l4, payload, end, v6 })
}

/// Leaves the TCP checksum of `frame` (Ethernet, IPv4/IPv6, TCP) to its receiver: puts the
/// pseudo-header sum in the checksum field and returns the vnet header that says so
/// (`NEEDS_CSUM`); with `gso_size`, the header also makes the frame a TSO super-frame of
/// segments of that many payload bytes.
pub fn offload_tcp(frame: &mut [u8], gso_size: Option<u16>) -> Result<VnetHdr, SegmentError> {
    let lay = tcp_layout(frame)?;
    let pseudo = fold(pseudo_sum(frame, &lay, lay.end - lay.l4));
    frame[lay.l4 + 16..lay.l4 + 18].copy_from_slice(&pseudo.to_be_bytes());
    let mut hdr = VnetHdr { flags: F_NEEDS_CSUM, csum_start: lay.l4 as u16, csum_offset: 16, ..VnetHdr::default() };
    if let Some(size) = gso_size {
        hdr.gso_type = if lay.v6 { GSO_TCPV6 } else { GSO_TCPV4 };
        hdr.hdr_len = lay.payload as u16;
        hdr.gso_size = size;
    }
    Ok(hdr)
}

/// One's-complement sum of the TCP pseudo-header of `frame` for a TCP length of `tcp_len`.
fn pseudo_sum(frame: &[u8], lay: &Layout, tcp_len: usize) -> u64 {
    let addrs = if lay.v6 { &frame[lay.l3 + 8..lay.l3 + 40] } else { &frame[lay.l3 + 12..lay.l3 + 20] };
    sum(0, addrs) + u64::from(PROTO_TCP) + tcp_len as u64
}

/// Cuts a TCP super-frame into segments of at most `gso_size` payload bytes, each a complete
/// frame: the same Ethernet and IP headers with their lengths (and the IPv4 id, one more per
/// segment, and header checksum) set, the TCP sequence number advanced, FIN and PSH only on
/// the last segment, CWR only on the first, and the TCP checksum computed. The super-frame's
/// own checksum fields (partial or not) are ignored.
#[derive(Debug)]
pub struct TcpSegmenter<'a> {
    frame: &'a [u8],
    lay: Layout,
    mss: usize,
    /// Offset in `frame` of the next segment's payload.
    next: usize,
    index: u16,
    seq: i32,
    ip_id: u16,
    tcp_flags: u8,
}

impl<'a> TcpSegmenter<'a> {
    /// Checks `frame` against its vnet header `hdr` (which must name TCP GSO).
    ///
    /// # Errors
    /// A GSO type other than TCPv4/TCPv6, an IP version that does not match it, `gso_size`
    /// 0, or headers and lengths that do not add up.
    pub fn new(hdr: &VnetHdr, frame: &'a [u8]) -> Result<Self, SegmentError> {
        let kind = hdr.gso_type & !GSO_ECN;
        if !matches!(kind, GSO_TCPV4 | GSO_TCPV6) {
            return Err(SegmentError::Unsupported(hdr.gso_type));
        }
        if hdr.gso_size == 0 {
            return Err(SegmentError::BadGsoSize);
        }
        let lay = tcp_layout(frame)?;
        if lay.v6 != (kind == GSO_TCPV6) {
            return Err(SegmentError::NotTcp);
        }
        if lay.end - lay.l3 > MAX_IP_LEN {
            return Err(SegmentError::BadLength);
        }
        let tcp = TcpPacket::new_unchecked(&frame[lay.l4..lay.end]);
        let ip_id = if lay.v6 { 0 } else { Ipv4Packet::new_unchecked(&frame[lay.l3..lay.end]).ident() };
        Ok(TcpSegmenter {
            frame,
            lay,
            mss: usize::from(hdr.gso_size),
            next: lay.payload,
            index: 0,
            seq: tcp.seq_number().0,
            ip_id,
            tcp_flags: frame[lay.l4 + 13],
        })
    }

    /// How many segments the frame makes (one for a frame without payload).
    pub fn count(&self) -> usize {
        (self.lay.end - self.lay.payload).div_ceil(self.mss).max(1)
    }

    /// The length of the longest segment: every segment but the last has this length.
    pub fn max_len(&self) -> usize {
        self.lay.payload + self.mss.min(self.lay.end - self.lay.payload)
    }

    /// Writes the next segment to the start of `out` and returns its length; `None` when
    /// every segment was written, or when `out` is shorter than that segment.
    pub fn next_into(&mut self, out: &mut [u8]) -> Option<usize> {
        let lay = self.lay;
        let first = self.index == 0;
        if self.next >= lay.end && !(first && lay.payload == lay.end) {
            return None;
        }
        let n = self.mss.min(lay.end - self.next);
        let len = lay.payload + n;
        let out = out.get_mut(..len)?;
        out[..lay.payload].copy_from_slice(&self.frame[..lay.payload]);
        out[lay.payload..].copy_from_slice(&self.frame[self.next..self.next + n]);
        let last = self.next + n >= lay.end;
        let offset = (self.next - lay.payload) as i32;
        self.next += n;
        self.index = self.index.wrapping_add(1);
        if lay.v6 {
            Ipv6Packet::new_unchecked(&mut out[lay.l3..]).set_payload_len((len - lay.l3 - 40) as u16);
        } else {
            let mut ip = Ipv4Packet::new_unchecked(&mut out[lay.l3..lay.l4]);
            ip.set_total_len((len - lay.l3) as u16);
            ip.set_ident(self.ip_id.wrapping_add(self.index.wrapping_sub(1)));
            ip.fill_checksum();
        }
        let mut flags = self.tcp_flags;
        if !last {
            flags &= !(TCP_FIN | TCP_PSH);
        }
        if !first {
            flags &= !TCP_CWR;
        }
        out[lay.l4 + 13] = flags;
        let mut tcp = TcpPacket::new_unchecked(&mut out[lay.l4..]);
        tcp.set_seq_number(TcpSeqNumber(self.seq.wrapping_add(offset)));
        tcp.set_checksum(0);
        let c = !fold(sum(pseudo_sum(out, &lay, len - lay.l4), &out[lay.l4..]));
        out[lay.l4 + 16..lay.l4 + 18].copy_from_slice(&c.to_be_bytes());
        Some(len)
    }
}

/// The key of a TCP flow plus what must match for two segments to be merged: everything in
/// the headers but the lengths, IPv4 id and checksums, sequence number and (PSH) flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seg {
    lay: Layout,
    seq: u32,
    /// TCP payload length.
    len: usize,
    flags: u8,
}

/// Largest TCP payload a coalesced frame may carry, so that its IP packet stays within 64 KiB.
const COALESCE_MAX_IP: usize = 65535 - 128;

/// Merges consecutive in-order TCP segments of one flow into one super-frame for a TAP with a
/// vnet header: the first segment's headers (total length, and the PSH flag of the last
/// segment) followed by every segment's payload, `gso_size` = the first segment's payload
/// length, checksum left partial (`NEEDS_CSUM`) for the receiving kernel.
///
/// Use: [`Coalescer::start`] with a first segment, then [`Coalescer::try_append`] for each
/// following one, then [`Coalescer::finish`].
#[derive(Debug)]
pub struct Coalescer {
    first: Option<Seg>,
    /// Sequence number the next segment must carry.
    next_seq: u32,
    /// TCP payload bytes so far.
    payload: usize,
    segments: usize,
    psh: bool,
}

impl Coalescer {
    /// A new super-frame starting with `frame`, if it is a TCP segment with payload and a
    /// valid checksum that could take more after it (only ACK, PSH and ECE set).
    pub fn start(frame: &[u8]) -> Option<Coalescer> {
        let s = segment_info(frame)?;
        Some(Coalescer {
            first: Some(s),
            next_seq: s.seq.wrapping_add(s.len as u32),
            payload: s.len,
            segments: 1,
            psh: s.flags & TCP_PSH != 0,
        })
    }

    /// Takes `frame` into the super-frame if it continues it: the same flow and headers, the
    /// next sequence number, a payload no longer than the first one's, and room left (a
    /// shorter segment, or PSH, ends the super-frame). `first_frame` is the frame given to
    /// [`Coalescer::start`]. Returns the payload range of `frame`, to be placed after the
    /// payloads taken so far, or `None` (nothing changed).
    pub fn try_append(&mut self, first_frame: &[u8], frame: &[u8]) -> Option<std::ops::Range<usize>> {
        let f = self.first?;
        if self.psh || !self.payload.is_multiple_of(f.len) || self.payload / f.len != self.segments {
            return None;
        }
        let s = segment_info(frame)?;
        let fits = s.lay == Layout { end: f.lay.payload + s.len, ..f.lay }
            && s.seq == self.next_seq
            && s.len <= f.len
            && f.lay.payload - f.lay.l3 + self.payload + s.len <= COALESCE_MAX_IP
            && same_headers(first_frame, frame, &f.lay);
        if !fits {
            return None;
        }
        self.next_seq = s.seq.wrapping_add(s.len as u32);
        self.payload += s.len;
        self.segments += 1;
        self.psh |= s.flags & TCP_PSH != 0;
        Some(s.lay.payload..s.lay.payload + s.len)
    }

    /// How many segments were merged.
    pub fn segments(&self) -> usize {
        self.segments
    }

    /// Rewrites the first segment's headers in `head` (the first frame's bytes up to its
    /// payload, or longer) for the merged frame and returns its vnet header; a single segment
    /// is left as it is (header without GSO, `DATA_VALID` not claimed).
    pub fn finish(&self, head: &mut [u8]) -> VnetHdr {
        let Some(f) = self.first else { return VnetHdr::default() };
        if self.segments == 1 || head.len() < f.lay.payload {
            return VnetHdr::default();
        }
        let lay = f.lay;
        let ip_len = lay.payload - lay.l3 + self.payload;
        let tcp_len = lay.payload - lay.l4 + self.payload;
        if lay.v6 {
            Ipv6Packet::new_unchecked(&mut head[lay.l3..lay.l3 + 40]).set_payload_len((ip_len - 40) as u16);
        } else {
            let mut ip = Ipv4Packet::new_unchecked(&mut head[lay.l3..lay.l4]);
            ip.set_total_len(ip_len as u16);
            ip.fill_checksum();
        }
        if self.psh {
            head[lay.l4 + 13] |= TCP_PSH;
        }
        // Partial checksum: the pseudo-header sum, not complemented, in the checksum field.
        let pseudo = fold(pseudo_sum(head, &lay, tcp_len));
        head[lay.l4 + 16..lay.l4 + 18].copy_from_slice(&pseudo.to_be_bytes());
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if lay.v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: lay.payload as u16,
            gso_size: f.len as u16,
            csum_start: lay.l4 as u16,
            csum_offset: 16,
        }
    }
}

/// A TCP segment with payload and only ACK/PSH (and ECE) set, with valid lengths.
fn segment_info(frame: &[u8]) -> Option<Seg> {
    let lay = tcp_layout(frame).ok()?;
    let len = lay.end - lay.payload;
    let flags = frame[lay.l4 + 13];
    // Only ACK (0x10), PSH (0x08) and ECE (0x40): no SYN, FIN, RST, URG or CWR.
    if len == 0 || flags & !(0x10 | TCP_PSH | 0x40) != 0 || flags & 0x10 == 0 {
        return None;
    }
    if !lay.v6 {
        // DF set, as every TSO flow has: the merged frame is resegmented with new ids.
        let ip = Ipv4Packet::new_unchecked(&frame[lay.l3..lay.l4]);
        if !ip.dont_frag() {
            return None;
        }
    }
    // As GRO does: only segments whose checksum holds are merged (the merged frame's is left
    // to the receiver, which then trusts it).
    if fold(sum(pseudo_sum(frame, &lay, lay.end - lay.l4), &frame[lay.l4..lay.end])) != 0xffff {
        return None;
    }
    let seq = TcpPacket::new_unchecked(&frame[lay.l4..lay.end]).seq_number().0 as u32;
    Some(Seg { lay, seq, len, flags })
}

/// The headers of two segments agree except for the fields a segmentation changes.
fn same_headers(a: &[u8], b: &[u8], lay: &Layout) -> bool {
    let (a, b) = (&a[..lay.payload], &b[..lay.payload]);
    // Ethernet (and VLAN tag).
    if a[..lay.l3] != b[..lay.l3] {
        return false;
    }
    let ip_same = if lay.v6 {
        // Version/class/flow label, then next header, hop limit and addresses (not length).
        a[lay.l3..lay.l3 + 4] == b[lay.l3..lay.l3 + 4] && a[lay.l3 + 6..lay.l4] == b[lay.l3 + 6..lay.l4]
    } else {
        // Version/IHL/TOS; flags, TTL, protocol; addresses and options (not length, id, checksum).
        a[lay.l3..lay.l3 + 2] == b[lay.l3..lay.l3 + 2]
            && a[lay.l3 + 6..lay.l3 + 10] == b[lay.l3 + 6..lay.l3 + 10]
            && a[lay.l3 + 12..lay.l4] == b[lay.l3 + 12..lay.l4]
    };
    // TCP: ports; ack, data offset, window; options (e.g. timestamps) — not seq, flags or checksum.
    let t = lay.l4;
    ip_same
        && a[t..t + 4] == b[t..t + 4]
        && a[t + 8..t + 13] == b[t + 8..t + 13]
        && a[t + 14..t + 16] == b[t + 14..t + 16]
        && a[t + 18..] == b[t + 18..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use smoltcp::wire::IpAddress;

    const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

    /// An Ethernet + IPv4/IPv6 + TCP (with a 12-byte timestamp option) frame carrying
    /// `payload`, with a partial checksum as a TSO sender leaves it.
    fn tcp_frame(v6: bool, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let tcp_hlen = 32;
        let ip_hlen = if v6 { 40 } else { 20 };
        let mut f = vec![0u8; ETH_HLEN + ip_hlen + tcp_hlen + payload.len()];
        f[..6].copy_from_slice(&MAC_B);
        f[6..12].copy_from_slice(&MAC_A);
        f[12..14].copy_from_slice(&(if v6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 }).to_be_bytes());
        let l3 = ETH_HLEN;
        let ip_len = ip_hlen + tcp_hlen + payload.len();
        if v6 {
            f[l3] = 0x60;
            f[l3 + 4..l3 + 6].copy_from_slice(&((tcp_hlen + payload.len()) as u16).to_be_bytes());
            f[l3 + 6] = PROTO_TCP;
            f[l3 + 7] = 64;
            f[l3 + 8..l3 + 24].copy_from_slice(&"fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
            f[l3 + 24..l3 + 40].copy_from_slice(&"fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        } else {
            f[l3] = 0x45;
            f[l3 + 2..l3 + 4].copy_from_slice(&(ip_len as u16).to_be_bytes());
            f[l3 + 4..l3 + 6].copy_from_slice(&0xfff0u16.to_be_bytes());
            f[l3 + 6] = 0x40; // DF
            f[l3 + 8] = 64;
            f[l3 + 9] = PROTO_TCP;
            f[l3 + 12..l3 + 16].copy_from_slice(&[10, 0, 0, 1]);
            f[l3 + 16..l3 + 20].copy_from_slice(&[10, 0, 0, 2]);
            Ipv4Packet::new_unchecked(&mut f[l3..l3 + 20]).fill_checksum();
        }
        let t = l3 + ip_hlen;
        f[t..t + 2].copy_from_slice(&40000u16.to_be_bytes());
        f[t + 2..t + 4].copy_from_slice(&5201u16.to_be_bytes());
        f[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
        f[t + 8..t + 12].copy_from_slice(&7u32.to_be_bytes());
        f[t + 12] = 8 << 4;
        f[t + 13] = flags;
        f[t + 14..t + 16].copy_from_slice(&502u16.to_be_bytes());
        f[t + 20..t + 32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        f[t + 32..].copy_from_slice(payload);
        offload_tcp(&mut f, None).unwrap();
        f
    }

    fn addrs(seg: &[u8], v6: bool) -> (IpAddress, IpAddress) {
        if v6 {
            let p = Ipv6Packet::new_checked(&seg[ETH_HLEN..]).unwrap();
            (IpAddress::Ipv6(p.src_addr()), IpAddress::Ipv6(p.dst_addr()))
        } else {
            let p = Ipv4Packet::new_checked(&seg[ETH_HLEN..]).unwrap();
            (IpAddress::Ipv4(p.src_addr()), IpAddress::Ipv4(p.dst_addr()))
        }
    }

    /// (seq, flags, payload) of a segment whose lengths and checksums smoltcp finds valid.
    fn check_segment(seg: &[u8], v6: bool) -> (u32, u8, Vec<u8>) {
        let (src, dst) = addrs(seg, v6);
        let tcp_bytes = if v6 {
            let p = Ipv6Packet::new_checked(&seg[ETH_HLEN..]).unwrap();
            assert_eq!(ETH_HLEN + 40 + usize::from(p.payload_len()), seg.len());
            &seg[ETH_HLEN + 40..]
        } else {
            let p = Ipv4Packet::new_checked(&seg[ETH_HLEN..]).unwrap();
            assert!(p.verify_checksum(), "IPv4 header checksum");
            assert_eq!(ETH_HLEN + usize::from(p.total_len()), seg.len());
            &seg[ETH_HLEN + 20..]
        };
        let tcp = TcpPacket::new_checked(tcp_bytes).unwrap();
        assert!(tcp.verify_checksum(&src, &dst), "TCP checksum");
        (tcp.seq_number().0 as u32, tcp_bytes[13], tcp.payload().to_vec())
    }

    #[test]
    fn offloaded_checksum_completes_to_a_valid_one() {
        for v6 in [false, true] {
            let mut f = tcp_frame(v6, 1000, TCP_PSH | 0x10, b"hello, partial checksum");
            let hdr = offload_tcp(&mut f, Some(1400)).unwrap();
            assert_eq!((hdr.flags, hdr.gso_size, hdr.csum_offset), (F_NEEDS_CSUM, 1400, 16));
            assert_eq!(hdr.gso_type, if v6 { GSO_TCPV6 } else { GSO_TCPV4 });
            assert_eq!(usize::from(hdr.hdr_len), usize::from(hdr.csum_start) + 32);
            // What the receiver's offload does: complete the sum from csum_start.
            finish_csum(&mut f, usize::from(hdr.csum_start), usize::from(hdr.csum_offset)).unwrap();
            check_segment(&f, v6);
            let plain = offload_tcp(&mut f, None).unwrap();
            assert_eq!((plain.gso_type, plain.gso_size, plain.hdr_len), (GSO_NONE, 0, 0));
        }
        assert!(offload_tcp(&mut [0u8; 30], None).is_err(), "not a TCP frame");
    }

    fn segment_all(hdr: &VnetHdr, frame: &[u8]) -> Result<Vec<Vec<u8>>, SegmentError> {
        let mut s = TcpSegmenter::new(hdr, frame)?;
        let mut out = vec![0u8; 65536];
        let mut segs = Vec::new();
        let (count, max) = (s.count(), s.max_len());
        while let Some(n) = s.next_into(&mut out) {
            assert!(n <= max);
            segs.push(out[..n].to_vec());
        }
        assert_eq!(segs.len(), count);
        Ok(segs)
    }

    fn gso(v6: bool, mss: u16) -> VnetHdr {
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: 66,
            gso_size: mss,
            csum_start: 34,
            csum_offset: 16,
        }
    }

    #[test]
    fn vnet_header_round_trip() {
        let h = VnetHdr { flags: 1, gso_type: GSO_TCPV4 | GSO_ECN, hdr_len: 66, gso_size: 1370, csum_start: 34, csum_offset: 16 };
        let mut b = [0xffu8; 12];
        assert!(h.write(&mut b));
        assert_eq!(b, [1, 0x81, 66, 0, 0x5a, 5, 34, 0, 16, 0, 0, 0]);
        assert_eq!(VnetHdr::parse(&b), Some(h));
        assert!(h.is_tcp_gso());
        assert_eq!(VnetHdr::parse(&b[..11]), None);
        assert!(!h.write(&mut [0u8; 4]));
    }

    #[test]
    fn segments_ipv4_super_frame() {
        let payload: Vec<u8> = (0..4000u32).map(|i| (i * 7) as u8).collect();
        let frame = tcp_frame(false, 0xffff_fc00, 0x18 | TCP_FIN | TCP_CWR, &payload);
        let segs = segment_all(&gso(false, 1370), &frame).unwrap();
        assert_eq!(segs.len(), 3);
        let mut got = Vec::new();
        for (k, s) in segs.iter().enumerate() {
            let (seq, flags, p) = check_segment(s, false);
            assert_eq!(seq, 0xffff_fc00u32.wrapping_add(1370 * k as u32), "sequence wraps");
            let last = k == 2;
            assert_eq!(flags & (TCP_FIN | TCP_PSH) != 0, last, "FIN/PSH only on the last");
            assert_eq!(flags & TCP_CWR != 0, k == 0, "CWR only on the first");
            assert_eq!(flags & 0x10, 0x10, "ACK on all");
            let id = Ipv4Packet::new_checked(&s[ETH_HLEN..]).unwrap().ident();
            assert_eq!(id, 0xfff0u16.wrapping_add(k as u16));
            assert_eq!(s[..ETH_HLEN], frame[..ETH_HLEN]);
            assert_eq!(p.len(), if last { 4000 - 2 * 1370 } else { 1370 });
            got.extend(p);
        }
        assert_eq!(got, payload);
    }

    #[test]
    fn segments_ipv6_super_frame() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i * 13) as u8).collect();
        let frame = tcp_frame(true, 5, 0x18, &payload);
        let segs = segment_all(&gso(true, 1000), &frame).unwrap();
        assert_eq!(segs.len(), 3);
        let got: Vec<u8> = segs.iter().flat_map(|s| check_segment(s, true).2).collect();
        assert_eq!(got, payload);
    }

    #[test]
    fn frame_within_mss_is_one_segment_and_header_only_works() {
        let frame = tcp_frame(false, 1, 0x18, b"hello");
        let segs = segment_all(&gso(false, 1370), &frame).unwrap();
        assert_eq!(segs.len(), 1);
        assert_eq!(check_segment(&segs[0], false).2, b"hello");
        let empty = tcp_frame(false, 1, 0x11, b"");
        let segs = segment_all(&gso(false, 1370), &empty).unwrap();
        assert_eq!(segs.len(), 1);
        assert_eq!(check_segment(&segs[0], false).1, 0x11);
    }

    #[test]
    fn bad_super_frames_are_errors() {
        let frame = tcp_frame(false, 1, 0x18, &[0u8; 3000]);
        assert_eq!(segment_all(&gso(false, 0), &frame).unwrap_err(), SegmentError::BadGsoSize);
        assert_eq!(segment_all(&gso(true, 1000), &frame).unwrap_err(), SegmentError::NotTcp);
        let udp = VnetHdr { gso_type: 5, ..gso(false, 1000) };
        assert_eq!(segment_all(&udp, &frame).unwrap_err(), SegmentError::Unsupported(5));
        // IP total length beyond the frame.
        let short = segment_all(&gso(false, 1000), &frame[..2000]).unwrap_err();
        assert!(matches!(short, SegmentError::BadLength | SegmentError::Truncated), "{short:?}");
        for cut in [0, 10, 20, 40, 60] {
            assert!(segment_all(&gso(false, 1000), &frame[..cut]).is_err(), "cut at {cut}");
        }
        // A TCP data offset pointing past the packet.
        let mut bad = tcp_frame(false, 1, 0x18, b"");
        bad[ETH_HLEN + 20 + 12] = 15 << 4;
        assert!(segment_all(&gso(false, 1000), &bad).is_err());
        // An IPv4 header length under 20 bytes (found by the proptest below), a wrong version.
        let mut short_ihl = frame.clone();
        short_ihl[ETH_HLEN] = 0x72;
        assert!(segment_all(&gso(false, 1), &short_ihl).is_err());
        let mut v5 = frame.clone();
        v5[ETH_HLEN] = 0x55;
        assert!(segment_all(&gso(false, 1000), &v5).is_err());
        // Not TCP.
        let mut udp_pkt = frame.clone();
        udp_pkt[ETH_HLEN + 9] = 17;
        assert_eq!(segment_all(&gso(false, 1000), &udp_pkt).unwrap_err(), SegmentError::NotTcp);
        // A buffer too small for a segment ends the iteration instead of panicking.
        let mut s = TcpSegmenter::new(&gso(false, 1000), &frame).unwrap();
        assert_eq!(s.next_into(&mut [0u8; 100]), None);
    }

    #[test]
    fn finish_csum_completes_partial_checksum() {
        let mut f = tcp_frame(false, 9, 0x18, b"some bytes, odd length");
        finish_csum(&mut f, 34, 16).unwrap();
        check_segment(&f, false);
        assert_eq!(finish_csum(&mut f, 34, 60000), Err(SegmentError::BadChecksumOffset));
        assert_eq!(finish_csum(&mut f, usize::MAX, 16), Err(SegmentError::BadChecksumOffset));
    }

    /// Coalesces `segs` the way the datapath does; returns (vnet header, merged frame).
    fn coalesce(segs: &[Vec<u8>]) -> Vec<(VnetHdr, Vec<u8>)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < segs.len() {
            let Some(mut c) = Coalescer::start(&segs[i]) else {
                out.push((VnetHdr::default(), segs[i].clone()));
                i += 1;
                continue;
            };
            let mut merged = segs[i].clone();
            let mut j = i + 1;
            while let Some(r) = segs.get(j).and_then(|s| c.try_append(&segs[i], s)) {
                merged.extend_from_slice(&segs[j][r]);
                j += 1;
            }
            let h = c.finish(&mut merged);
            out.push((h, merged));
            i = j;
        }
        out
    }

    #[test]
    fn coalesced_segments_resegment_to_the_same_segments() {
        let payload: Vec<u8> = (0..6000u32).map(|i| (i * 3) as u8).collect();
        for v6 in [false, true] {
            let frame = tcp_frame(v6, 77, 0x18, &payload);
            let segs = segment_all(&gso(v6, 1370), &frame).unwrap();
            let merged = coalesce(&segs);
            assert_eq!(merged.len(), 1, "one flow, in order: one super-frame");
            let (h, m) = &merged[0];
            assert_eq!((h.gso_type, h.gso_size, h.flags), (if v6 { GSO_TCPV6 } else { GSO_TCPV4 }, 1370, F_NEEDS_CSUM));
            // What the container's kernel would do with it: complete the checksum, or segment it.
            let mut full = m.clone();
            finish_csum(&mut full, usize::from(h.csum_start), usize::from(h.csum_offset)).unwrap();
            let (_, flags, p) = check_segment(&full, v6);
            assert_eq!(p, payload);
            assert_eq!(flags & TCP_PSH, TCP_PSH);
            let again = segment_all(h, m).unwrap();
            assert_eq!(again.len(), segs.len());
            assert_eq!(again, segs, "the same segments, IPv4 ids included");
        }
    }

    #[test]
    fn coalescing_stops_at_gaps_other_flows_and_odd_segments() {
        let seg = |seq: u32, flags: u8, n: usize| {
            let mut f = tcp_frame(false, seq, flags, &vec![1u8; n]);
            finish_csum(&mut f, 34, 16).unwrap();
            f
        };
        let mut other_port = tcp_frame(false, 300, 0x10, &[1u8; 100]);
        other_port[ETH_HLEN + 20] ^= 1;
        finish_csum(&mut other_port, 34, 16).unwrap();
        let mut bad_csum = seg(0, 0x10, 100);
        bad_csum[60] ^= 0x40;
        assert!(Coalescer::start(&bad_csum).is_none(), "a segment with a wrong checksum is never merged");
        let segs = vec![
            seg(0, 0x10, 100),
            seg(100, 0x10, 100),
            seg(250, 0x10, 100), // gap
            other_port,          // another flow
            seg(400, 0x10, 100),
            seg(500, 0x10, 50), // shorter: ends the super-frame
            seg(550, 0x10, 100),
            seg(650, 0x11, 100), // FIN: never merged
            seg(750, 0x18, 100),
            seg(850, 0x10, 100), // after PSH: a new one
        ];
        let merged = coalesce(&segs);
        let counts: Vec<usize> =
            merged.iter().map(|(h, m)| if h.gso_type == 0 { 1 } else { (m.len() - 66).div_ceil(usize::from(h.gso_size)) }).collect();
        assert_eq!(counts, [2, 1, 1, 2, 1, 1, 1, 1]);
        assert_eq!(merged.iter().map(|(_, m)| m.len() - 66).sum::<usize>(), 950);
    }

    proptest! {
        #[test]
        fn segments_reassemble_to_the_payload(
            v6 in any::<bool>(),
            mss in 1u16..3000,
            len in 0usize..20000,
            seq in any::<u32>(),
            fin in any::<bool>(),
        ) {
            let payload: Vec<u8> = (0..len).map(|i| (i as u32).wrapping_mul(2654435761) as u8 ^ (i >> 8) as u8).collect();
            let frame = tcp_frame(v6, seq, 0x18 | if fin { TCP_FIN } else { 0 }, &payload);
            let segs = segment_all(&gso(v6, mss), &frame).unwrap();
            prop_assert_eq!(segs.len(), len.div_ceil(usize::from(mss)).max(1));
            let mut got = Vec::new();
            let mut expect_seq = seq;
            for (k, s) in segs.iter().enumerate() {
                let (sq, flags, p) = check_segment(s, v6);
                prop_assert_eq!(sq, expect_seq);
                prop_assert!(p.len() <= usize::from(mss));
                prop_assert_eq!(flags & TCP_FIN != 0, fin && k + 1 == segs.len());
                expect_seq = expect_seq.wrapping_add(p.len() as u32);
                got.extend(p);
            }
            prop_assert_eq!(got, payload);
        }

        #[test]
        fn damaged_frames_never_panic(
            v6 in any::<bool>(),
            len in 0usize..5000,
            mss in any::<u16>(),
            gso_type in prop_oneof![Just(GSO_TCPV4), Just(GSO_TCPV6), Just(GSO_TCPV4 | GSO_ECN), any::<u8>()],
            damage in proptest::collection::vec((0usize..120, any::<u8>()), 0..6),
            cut in any::<proptest::sample::Index>(),
        ) {
            // A valid super-frame with a few header bytes changed and possibly cut short: the
            // segmenter and coalescer see lengths and offsets that do not add up.
            let mut frame = tcp_frame(v6, 1, 0x18, &vec![0x5a; len]);
            for (at, b) in damage {
                if let Some(x) = frame.get_mut(at) { *x = b; }
            }
            let keep = cut.index(frame.len() + 1);
            if keep % 3 == 0 { frame.truncate(keep); }
            let hdr = VnetHdr { flags: F_NEEDS_CSUM, gso_type, hdr_len: 0, gso_size: mss, csum_start: 34, csum_offset: 16 };
            if let Ok(mut s) = TcpSegmenter::new(&hdr, &frame) {
                let mut out = vec![0u8; s.max_len()];
                let mut n = 0;
                while let Some(k) = s.next_into(&mut out) {
                    prop_assert!(k <= s.max_len());
                    n += 1;
                }
                prop_assert_eq!(n, s.count());
            }
            let mut copy = frame.clone();
            let _ = finish_csum(&mut copy, 34, 16);
            let whole = tcp_frame(v6, 1, 0x10, &[1u8; 100]);
            if let Some(mut c) = Coalescer::start(&whole) {
                let _ = c.try_append(&whole, &frame);
                let mut head = whole.clone();
                let _ = c.finish(&mut head);
            }
            if let Some(mut c) = Coalescer::start(&frame) {
                let _ = c.try_append(&frame, &whole);
                let _ = c.finish(&mut copy);
            }
        }

        #[test]
        fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), gso_type in any::<u8>(), mss in any::<u16>(), start in any::<u16>(), off in any::<u16>()) {
            let hdr = VnetHdr { flags: F_NEEDS_CSUM, gso_type, hdr_len: 0, gso_size: mss, csum_start: start, csum_offset: off };
            if let Ok(mut s) = TcpSegmenter::new(&hdr, &bytes) {
                let mut out = vec![0u8; 70000];
                let mut n = 0;
                while s.next_into(&mut out).is_some() { n += 1; prop_assert!(n <= 70000); }
            }
            let mut b = bytes.clone();
            let _ = finish_csum(&mut b, usize::from(start), usize::from(off));
            if let Some(mut c) = Coalescer::start(&bytes) {
                let _ = c.try_append(&bytes, &bytes);
                let _ = c.finish(&mut b);
            }
        }
    }
}

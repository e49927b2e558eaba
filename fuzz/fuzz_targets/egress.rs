//! Egress end to end with the host side in memory: a container's IPv4 packets (TCP, UDP, ICMP,
//! to the loopback-mapped gateway and to outside addresses) go through the policy and smoltcp
//! into "host sockets" that are socketpairs the target holds (no connect, nothing leaves the
//! process), and what the fuzzer makes the host send comes back through smoltcp as packets for
//! the container; time moves, flows idle out and are swept. Never a panic; every packet handed
//! back for the container is a well-formed slice of its buffer.
//!
//! Input: a sequence of operations, each `op, len, bytes[len]`:
//!   op % 4 == 0  a packet from the container (protocol, destination and ports from the first
//!                bytes, the rest fuzzed), through `feed`
//!   op % 4 == 1  the host writes `bytes` on one of its ends (or closes it), then the readiness
//!                mio reports is dispatched through `event`
//!   op % 4 == 2  time moves by `op` ms: `poll` and `sweep`
//!   op % 4 == 3  the packets for the container are taken and their buffers given back
#![no_main]

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mio::net::{TcpStream, UdpSocket};
use vswitch::datapath::egress::{Egress, HostNet, Limits, NetConfig, Out, HEADROOM};
use vswitch::gateway::Gateway;
use vswitch::{Mac, PortId};

/// The host ends of every "connection" egress made.
#[derive(Default)]
struct Ends {
    streams: Vec<UnixStream>,
    datagrams: Vec<UnixDatagram>,
}

/// Socketpairs in place of host sockets.
#[derive(Clone, Default)]
struct PairHost(Arc<Mutex<Ends>>);

impl HostNet for PairHost {
    fn connect_tcp(&mut self, _to: SocketAddrV4) -> std::io::Result<TcpStream> {
        let (ours, theirs) = UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        theirs.set_nonblocking(true)?;
        self.0.lock().unwrap().streams.push(theirs);
        // SAFETY: the fd was just taken from a socket this function owns; read, write and
        // shutdown work on any stream socket (the stand-in answers `tcp_established` itself).
        Ok(TcpStream::from_std(unsafe { std::net::TcpStream::from_raw_fd(ours.into_raw_fd()) }))
    }

    fn tcp_established(&self, _s: &TcpStream) -> std::io::Result<bool> {
        Ok(true)
    }

    fn connect_udp(&mut self, _to: SocketAddrV4) -> std::io::Result<UdpSocket> {
        let (ours, theirs) = UnixDatagram::pair()?;
        ours.set_nonblocking(true)?;
        theirs.set_nonblocking(true)?;
        self.0.lock().unwrap().datagrams.push(theirs);
        // SAFETY: as above; send and recv work on any connected datagram socket.
        Ok(UdpSocket::from_std(unsafe { std::net::UdpSocket::from_raw_fd(ours.into_raw_fd()) }))
    }

    fn connect_ping(&mut self, _to: Ipv4Addr) -> std::io::Result<socket2::Socket> {
        let (ours, theirs) = UnixDatagram::pair()?;
        ours.set_nonblocking(true)?;
        theirs.set_nonblocking(true)?;
        self.0.lock().unwrap().datagrams.push(theirs);
        Ok(socket2::Socket::from(OwnedFd::from(ours)))
    }

    fn is_local(&self, ip: Ipv4Addr) -> bool {
        ip == Ipv4Addr::new(192, 0, 2, 1)
    }
}

const GW_PORT: PortId = PortId(0);
const PORT: PortId = PortId(1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 2);

/// An IPv4 packet from the container: header from `b` (protocol and destination steered to
/// what egress serves), the rest of `b` as its payload.
fn packet(b: &[u8]) -> Vec<u8> {
    let at = |i: usize| b.get(i).copied().unwrap_or(0);
    let proto = [6u8, 17, 1, 6][usize::from(at(0) & 3)];
    let dst = match at(1) & 3 {
        0 => [10, 89, 0, 1],  // the gateway: the host's loopback
        1 => [192, 0, 2, 1],  // "one of the host's addresses"
        2 => [198, 51, 100, at(2)],
        _ => [at(2), at(3), at(4), at(5)],
    };
    let payload = b.get(2..).unwrap_or_default();
    let total = (20 + payload.len()) as u16;
    let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&CLIENT.octets());
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

/// Every packet for a container goes to our one container, as IPv4 addressed to it, its
/// header length and total length inside the buffer.
fn check(out: &[Out]) {
    for o in out {
        assert_eq!((o.to, o.gw_port), (PORT, GW_PORT));
        let ip = &o.buf[HEADROOM..];
        assert!(ip.len() >= 20 && ip[0] >> 4 == 4, "not IPv4: {:?}", &ip[..ip.len().min(20)]);
        assert_eq!(ip[16..20], CLIENT.octets());
        assert!(usize::from(u16::from_be_bytes([ip[2], ip[3]])) <= ip.len());
        assert!(usize::from(ip[0] & 0xf) * 4 <= ip.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let mut poll = mio::Poll::new().expect("epoll");
    let mut events = mio::Events::with_capacity(64);
    let host = PairHost::default();
    let ends = host.0.clone();
    let limits = Limits { max_flows: 8, idle: Duration::from_secs(5) };
    let mut e = Egress::new(limits, 7).with_host(Box::new(host));
    let gw = Gateway { ip: Ipv4Addr::new(10, 89, 0, 1), mac: Mac([2, 0x56, 0, 0, 0, 1]), ip6: None };
    let cfg = NetConfig { gw, subnet: "10.89.0.0/24".parse().unwrap(), mtu: 1500, egress: true, host_loopback: vec![(1, 65535)], vnet: data.first().is_some_and(|b| b & 0x80 != 0) };
    let mut now = Duration::from_secs(1);
    e.set_network(GW_PORT, cfg, now);
    e.add_client(PORT, GW_PORT, CLIENT, Mac([2, 0x42, 10, 89, 0, 2]));
    let mut out = Vec::new();
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        match op % 4 {
            0 => e.feed(poll.registry(), now, GW_PORT, PORT, &packet(bytes)),
            1 => {
                {
                    let mut ends = ends.lock().unwrap();
                    let pick = usize::from(op / 4);
                    let (ns, nd) = (ends.streams.len(), ends.datagrams.len());
                    if ns + nd > 0 {
                        let i = pick % (ns + nd);
                        if i < ns {
                            if bytes.first() == Some(&0) {
                                let _ = ends.streams[i].shutdown(std::net::Shutdown::Both);
                            } else {
                                let _ = ends.streams[i].write(bytes);
                            }
                        } else {
                            let _ = ends.datagrams[i - ns].send(bytes);
                        }
                    }
                }
                if poll.poll(&mut events, Some(Duration::ZERO)).is_ok() {
                    for ev in events.iter() {
                        e.event(poll.registry(), now, ev.token(), ev.is_readable());
                    }
                }
            }
            2 => {
                now += Duration::from_millis(u64::from(*op));
                e.poll(now);
                e.sweep(now);
            }
            _ => {
                e.take_out(&mut out);
                check(&out);
                for o in out.drain(..) {
                    e.recycle(o.gw_port, o.buf);
                }
            }
        }
    }
    e.poll(now);
    e.take_out(&mut out);
    check(&out);
    e.forget_port(PORT);
});

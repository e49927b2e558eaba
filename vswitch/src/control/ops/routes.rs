//! The host's routed subnets (from /proc/net/route and /proc/net/ipv6_route), so that a
//! subnet chosen from the address pools never collides with a VPN or LAN route.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Every routed subnet of the daemon's namespace (default routes included; the pool logic
/// ignores /0). Unreadable files give an empty list: the choice then only avoids our own
/// networks.
pub fn routed() -> Vec<IpNet> {
    let mut out = parse_v4(&std::fs::read_to_string("/proc/net/route").unwrap_or_default());
    out.extend(parse_v6(&std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default()));
    out
}

/// `/proc/net/route`: destination and mask are little-endian hex.
fn parse_v4(text: &str) -> Vec<IpNet> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            let prefix = mask.count_ones() as u8;
            let net = Ipv4Net::new(Ipv4Addr::from(dest.swap_bytes()), prefix).ok()?;
            Some(IpNet::V4(net.trunc()))
        })
        .collect()
}

/// `/proc/net/ipv6_route`: destination (32 hex digits) and prefix length (hex) first.
fn parse_v6(text: &str) -> Vec<IpNet> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u128::from_str_radix(f.first()?, 16).ok()?;
            let prefix = u8::from_str_radix(f.get(1)?, 16).ok()?;
            let net = Ipv6Net::new(Ipv6Addr::from(dest), prefix).ok()?;
            (!net.addr().is_unicast_link_local()).then_some(IpNet::V6(net.trunc()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let v4 = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                  tun0\t0000080A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let nets: Vec<String> = parse_v4(v4).iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["0.0.0.0/0", "192.0.2.0/24", "10.8.0.0/16"]);
        let v6 = "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth0\n\
                  fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001 eth0\n";
        let nets: Vec<String> = parse_v6(v6).iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["fd00::/64"]);
        assert!(parse_v4("garbage\nmore garbage here\n").is_empty());
    }
}

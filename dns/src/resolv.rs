//! The host's resolvers, from resolv.conf text.

use std::net::IpAddr;

/// The `nameserver` addresses of a resolv.conf, in order, without duplicates. Comments (`#`,
/// `;`), other options and unparsable lines are ignored, and so are scoped IPv6 addresses
/// (`fe80::1%eth0`): without the scope they cannot be reached from the daemon's sockets.
/// A loopback resolver (systemd-resolved's 127.0.0.53) is returned like any other: it is the
/// caller that knows whether it can reach it.
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_ascii_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) else {
            continue;
        };
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_in_order_and_garbage_ignored() {
        let text = "# generated\n\
                    search example.com\n\
                    nameserver 10.0.0.2\n\
                    nameserver\t2001:db8::53 # v6\n\
                    nameserver fe80::1%eth0\n\
                    nameserver not-an-ip\n\
                    ;nameserver 10.9.9.9\n\
                    nameserver 10.0.0.2\n\
                    \x00\u{fffd}garbage nameserver 1.1.1.1\n\
                    options ndots:5\n\
                      nameserver 192.0.2.1  \n\
                    nameserver 192.0.2.2 extra words\n";
        let got = parse_resolv_conf(text);
        let want: Vec<IpAddr> = ["10.0.0.2", "2001:db8::53", "192.0.2.1", "192.0.2.2"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(got, want);
        assert!(parse_resolv_conf("").is_empty());
        assert!(parse_resolv_conf("nameserver").is_empty());
    }
}

//! Syntax of what requests name: endpoints, aliases, SRV records, keys, upstreams.

use std::net::SocketAddr;

use crate::api::{ApiError, ErrorCode};

/// Names: 1-64 characters of `[A-Za-z0-9_.-]`, starting with a letter or digit, with no empty
/// DNS label (`a..b`, `a.`), since every name is also looked up in DNS.
///
/// # Errors
/// `invalid_name`, saying what a name may be.
pub fn check_name(name: &str, what: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        && name.split('.').all(|label| !label.is_empty());
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidName,
            format!(
                "{what} name {name:?} must be 1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit, \
                 without empty labels ('..' or a trailing '.')"
            ),
        ))
    }
}

/// `_service._proto:PORT[:PRIORITY[:WEIGHT]]`.
///
/// # Errors
/// `invalid_request` with the expected syntax.
pub fn parse_srv(s: &str) -> Result<::dns::Srv, ApiError> {
    let bad = || {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("SRV {s:?} must look like _service._proto:PORT[:PRIORITY[:WEIGHT]], e.g. _http._tcp:80"),
        )
    };
    let mut parts = s.split(':');
    let service = parts.next().ok_or_else(bad)?;
    let labels: Vec<&str> = service.split('.').collect();
    let label_ok =
        |l: &str| l.len() > 1 && l.len() <= 63 && l.starts_with('_') && l[1..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if labels.len() != 2 || !labels.iter().all(|l| label_ok(l)) {
        return Err(bad());
    }
    let mut num = |default: Option<u16>| match parts.next() {
        Some(p) => p.parse::<u16>().map_err(|_| bad()),
        None => default.ok_or_else(bad),
    };
    let port = num(None)?;
    let priority = num(Some(0))?;
    let weight = num(Some(0))?;
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(::dns::Srv { service: service.to_string(), port, priority, weight })
}

/// The endpoint name an attach gets without one: the namespace file's name, or `pid-PID`.
pub fn default_endpoint_name(netns: &str) -> String {
    let p = std::path::Path::new(netns);
    match p.file_name().and_then(|f| f.to_str()) {
        // /proc/PID/ns/net names every namespace "net": use the PID instead.
        Some("net") => p
            .parent()
            .and_then(|d| d.parent())
            .and_then(|d| d.file_name())
            .and_then(|f| f.to_str())
            .map(|pid| format!("pid-{pid}"))
            .unwrap_or_else(|| "net".to_string()),
        Some(f) => f.to_string(),
        None => String::new(),
    }
}

/// How a peer's port is named in `port ls` and `fdb show`: `peer:` and its key's first
/// characters.
pub(super) fn peer_port_name(key: &str) -> String {
    format!("peer:{}", key.get(..8).unwrap_or(key))
}

/// Standard base64, as `wg` prints keys.
pub fn b64(key: &[u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// A 32-byte key in standard or URL-safe base64.
///
/// # Errors
/// `invalid_request` when it is not one.
pub fn parse_key(s: &str) -> Result<[u8; 32], ApiError> {
    use base64::Engine as _;
    let bad = || ApiError::new(ErrorCode::InvalidRequest, format!("{s:?} is not a 32-byte key in base64"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(s))
        .map_err(|_| bad())?;
    bytes.try_into().map_err(|_| bad())
}

/// Parses an upstream: `IP` (port 53) or `IP:PORT` / `[IPv6]:PORT`.
///
/// # Errors
/// A message naming the bad value.
pub fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    s.parse::<SocketAddr>().map_err(|_| format!("upstream {s:?} is not IP or IP:PORT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("c1", "x").is_ok());
        assert!(check_name("web.prod-1_a", "x").is_ok());
        for bad in ["", "-a", "a b", "a/b", "a..b", "a.", &"x".repeat(65)] {
            assert_eq!(check_name(bad, "x").unwrap_err().error.code, ErrorCode::InvalidName, "{bad}");
        }
    }

    #[test]
    fn default_names() {
        assert_eq!(default_endpoint_name("/run/netns/c1"), "c1");
        assert_eq!(default_endpoint_name("/proc/42/ns/net"), "pid-42");
    }

    #[test]
    fn srv_syntax() {
        let s = parse_srv("_http._tcp:80").unwrap();
        assert_eq!((s.service.as_str(), s.port, s.priority, s.weight), ("_http._tcp", 80, 0, 0));
        let s = parse_srv("_ldap._udp:389:10:5").unwrap();
        assert_eq!((s.port, s.priority, s.weight), (389, 10, 5));
        for bad in ["http._tcp:80", "_http:80", "_http._tcp", "_http._tcp:99999", "_http._tcp:80:1:2:3", "_h ttp._tcp:1"] {
            assert!(parse_srv(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upstream_syntax() {
        assert_eq!(parse_upstream("127.0.0.53").unwrap(), "127.0.0.53:53".parse().unwrap());
        assert_eq!(parse_upstream("127.0.0.1:5300").unwrap(), "127.0.0.1:5300".parse().unwrap());
        assert_eq!(parse_upstream("::1").unwrap(), "[::1]:53".parse().unwrap());
        assert!(parse_upstream("resolver.example").is_err());
    }

    #[test]
    fn keys() {
        let k = [7u8; 32];
        assert_eq!(parse_key(&b64(&k)).unwrap(), k);
        assert!(parse_key("short").is_err());
    }
}

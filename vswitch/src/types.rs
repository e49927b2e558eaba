//! Small value types shared by the cores, the API and the daemon.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// True for group addresses (multicast and broadcast): the I/G bit of the first octet.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    pub const fn is_zero(&self) -> bool {
        matches!(self.0, [0, 0, 0, 0, 0, 0])
    }

    /// A locally administered unicast MAC derived from `seed` (stable for the same seed).
    pub fn local_from(seed: u64) -> Mac {
        let b = seed.to_be_bytes();
        Mac([0x02, 0x56, b[4], b[5], b[6], b[7]])
    }

    /// Reads the MAC at `bytes[at..at + 6]`.
    ///
    /// # Panics
    /// If `bytes` is shorter than `at + 6`; callers check the frame length first.
    pub fn from_slice(bytes: &[u8], at: usize) -> Mac {
        let mut m = [0u8; 6];
        m.copy_from_slice(&bytes[at..at + 6]);
        Mac(m)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The error for a MAC address that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex octets like 02:42:ac:11:00:02")]
pub struct MacParseError(pub String);

impl FromStr for Mac {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut out {
            let p = parts.next().ok_or_else(err)?;
            if p.is_empty() || p.len() > 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(Mac(out))
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A switch port: a container TAP, a network's gateway, later a tunnel peer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct PortId(pub u32);

/// A network (a broadcast domain). Frames never cross from one network to another.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct NetworkId(pub u32);

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_and_print_round_trip() {
        let m: Mac = "02:42:AC:11:00:02".parse().unwrap();
        assert_eq!(m.0, [0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        assert_eq!(m.to_string(), "02:42:ac:11:00:02");
        assert!("02:42:ac:11:00".parse::<Mac>().is_err());
        assert!("02:42:ac:11:00:02:03".parse::<Mac>().is_err());
        assert!("02:42:ac:11:00:zz".parse::<Mac>().is_err());
        assert!("".parse::<Mac>().is_err());
    }

    #[test]
    fn multicast_bit() {
        assert!(Mac::BROADCAST.is_multicast());
        assert!(Mac([0x01, 0, 0x5e, 0, 0, 1]).is_multicast());
        assert!(!Mac([0x02, 0, 0, 0, 0, 1]).is_multicast());
    }
}

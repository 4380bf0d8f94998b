//! IPv4 prefixes (`203.0.113.0/24`), parsed strictly.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 prefix whose host bits are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Prefix {
    addr: Ipv4Addr,
    len: u8,
}

/// Why a prefix did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// Text is not `a.b.c.d/len`.
    #[error("expected a.b.c.d/len, got {0:?}")]
    Syntax(String),
    /// Host bits set.
    #[error("prefix {0:?} has host bits set")]
    HostBits(String),
}

impl Ipv4Prefix {
    /// A prefix from an address and a length; refuses host bits and lengths over 32.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self, PrefixError> {
        if len > 32 {
            return Err(PrefixError::Syntax(format!("{addr}/{len}")));
        }
        if u32::from(addr) & !mask(len) != 0 {
            return Err(PrefixError::HostBits(format!("{addr}/{len}")));
        }
        Ok(Ipv4Prefix { addr, len })
    }
    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }
    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }
    /// Whether `ip` lies inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.len) == u32::from(self.addr)
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

impl FromStr for Ipv4Prefix {
    type Err = PrefixError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| PrefixError::Syntax(s.to_owned()))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| PrefixError::Syntax(s.to_owned()))?;
        let len: u8 = l.parse().map_err(|_| PrefixError::Syntax(s.to_owned()))?;
        Ipv4Prefix::new(addr, len)
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Serialize for Ipv4Prefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Prefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_contain() {
        let p: Ipv4Prefix = "203.0.113.0/24".parse().unwrap();
        assert!(p.contains(Ipv4Addr::new(203, 0, 113, 10)));
        assert!(!p.contains(Ipv4Addr::new(203, 0, 114, 10)));
        assert!("203.0.113.1/24".parse::<Ipv4Prefix>().is_err());
        assert!("203.0.113.0/33".parse::<Ipv4Prefix>().is_err());
        assert!("nonsense".parse::<Ipv4Prefix>().is_err());
        let all: Ipv4Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::BROADCAST));
    }
}

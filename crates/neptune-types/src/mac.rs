use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::DomainError;

/// An Ethernet MAC address of a virtual interface (unicast).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A locally administered unicast address derived from `seed`.
    ///
    /// Deterministic, so the same design always gets the same MACs; callers
    /// vary `seed` on collision.
    pub fn local_from_seed(seed: u64) -> Self {
        // SplitMix64 finaliser: spreads nearby seeds over the whole space.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let b = z.to_be_bytes();
        // Set "locally administered", clear "multicast".
        MacAddr([(b[2] | 0x02) & 0xFE, b[3], b[4], b[5], b[6], b[7]])
    }

    pub fn is_locally_administered(self) -> bool {
        self.0[0] & 0x02 != 0
    }

    pub fn is_multicast(self) -> bool {
        self.0[0] & 0x01 != 0
    }
}

impl FromStr for MacAddr {
    type Err = DomainError;

    /// Six hex pairs separated by `:` or `-` (case-insensitive), unicast only.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || DomainError::MacSyntax {
            value: s.to_owned(),
        };
        let text = s.trim();
        let mut out = [0u8; 6];
        let sep = if text.contains('-') { '-' } else { ':' };
        let mut parts = text.split(sep);
        for byte in &mut out {
            let part = parts.next().ok_or_else(syntax)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(syntax());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| syntax())?;
        }
        if parts.next().is_some() {
            return Err(syntax());
        }
        let mac = MacAddr(out);
        if mac.is_multicast() {
            return Err(DomainError::MacMulticast {
                value: mac.to_string(),
            });
        }
        Ok(mac)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02X}:{:02X}:{:02X}:{:02X}:{:02X}:{:02X}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_paper_macs() {
        let mac: MacAddr = "1E:87:3F:D6:E7:8D".parse().unwrap();
        assert_eq!(mac.0, [0x1E, 0x87, 0x3F, 0xD6, 0xE7, 0x8D]);
        assert_eq!(mac.to_string(), "1E:87:3F:D6:E7:8D");
        assert_eq!(
            "2e-90-eb-bb-89-4c".parse::<MacAddr>().unwrap().to_string(),
            "2E:90:EB:BB:89:4C"
        );
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "",
            "1E:87:3F:D6:E7",
            "1E:87:3F:D6:E7:8D:00",
            "1E:87:3F:D6:E7:8G",
            "1E873FD6E78D",
            "1E:87:3F:D6:E7:8",
        ] {
            assert!(
                matches!(bad.parse::<MacAddr>(), Err(DomainError::MacSyntax { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            "01:00:5E:00:00:01".parse::<MacAddr>(),
            Err(DomainError::MacMulticast { .. })
        ));
    }

    proptest! {
        #[test]
        fn generated_are_local_unicast(seed: u64) {
            let mac = MacAddr::local_from_seed(seed);
            prop_assert!(mac.is_locally_administered());
            prop_assert!(!mac.is_multicast());
            prop_assert_eq!(mac.to_string().parse::<MacAddr>().unwrap(), mac);
        }
    }
}

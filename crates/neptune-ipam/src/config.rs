//! The address configuration of a Service Switching domain: the private
//! pools every VI's links are numbered from (unique across the whole domain,
//! because a VI keeps its private addresses when it migrates), and each
//! datacenter's public pools of Home Addresses.

use std::fmt;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::DatacenterName;

/// How a point-to-point link (two end points, no gateway) is numbered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PointToPoint {
    /// A /31 (RFC 3021): both addresses usable, half the space of a /30.
    /// Linux, the BSDs and every router Neptune targets accept it.
    #[default]
    Slash31,
    /// A /30: network and broadcast addresses kept unused, for guests that
    /// predate RFC 3021.
    Slash30,
}

impl PointToPoint {
    /// The prefix length of a point-to-point subnet.
    pub fn prefix_len(self) -> u8 {
        match self {
            PointToPoint::Slash31 => 31,
            PointToPoint::Slash30 => 30,
        }
    }
}

/// One datacenter and its public pools of Home Addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatacenterConfig {
    pub name: DatacenterName,
    /// Public prefixes routed to the datacenter's Edge Service Switch. Of a
    /// pool of /30 or wider, the first and last address (network and
    /// broadcast of the public subnet) are never handed out.
    pub home_pools: Vec<Ipv4Net>,
}

/// The address configuration of a Service Switching domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainConfig {
    /// Private prefixes for VI blocks, tried in this order on ties.
    pub private_pools: Vec<Ipv4Net>,
    pub datacenters: Vec<DatacenterConfig>,
    /// Prefixes inside the pools that Neptune must never hand out (routers,
    /// the Edge Service Switches' own addresses, ranges used elsewhere).
    #[serde(default)]
    pub reserved: Vec<Ipv4Net>,
    #[serde(default)]
    pub point_to_point: PointToPoint,
}

/// What a pool is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PoolKind {
    /// A private pool of the domain.
    Private,
    /// A pool of Home Addresses of one datacenter.
    Home { datacenter: DatacenterName },
}

/// A pool named by its prefix and purpose, for messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRef {
    pub prefix: Ipv4Net,
    #[serde(flatten)]
    pub kind: PoolKind,
}

impl fmt::Display for PoolRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            PoolKind::Private => write!(f, "private pool {}", self.prefix),
            PoolKind::Home { datacenter } => {
                write!(f, "home pool {} of datacenter {datacenter}", self.prefix)
            }
        }
    }
}

/// Why a [`DomainConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error("the domain has no private pool")]
    NoPrivatePool,
    #[error("pool {given} has host bits set; did you mean {network}?")]
    HostBits { given: Ipv4Net, network: Ipv4Net },
    #[error("{first} overlaps {second}")]
    Overlap { first: PoolRef, second: PoolRef },
    #[error("datacenter {0} is configured twice")]
    DuplicateDatacenter(DatacenterName),
    #[error("reserved prefix {0} is not inside any pool")]
    ReservedOutsidePools(Ipv4Net),
    #[error("reserved prefixes {first} and {second} overlap")]
    ReservedOverlap { first: Ipv4Net, second: Ipv4Net },
}

impl DomainConfig {
    /// A domain with one private pool and one datacenter named `home`.
    pub fn simple(private_pool: Ipv4Net, datacenter: DatacenterName, home_pool: Ipv4Net) -> Self {
        Self {
            private_pools: vec![private_pool],
            datacenters: vec![DatacenterConfig {
                name: datacenter,
                home_pools: vec![home_pool],
            }],
            reserved: Vec::new(),
            point_to_point: PointToPoint::default(),
        }
    }

    /// Every pool with its purpose, private pools first, in configuration order.
    pub fn pools(&self) -> Vec<PoolRef> {
        let private = self.private_pools.iter().map(|&prefix| PoolRef {
            prefix,
            kind: PoolKind::Private,
        });
        let home = self.datacenters.iter().flat_map(|dc| {
            dc.home_pools.iter().map(|&prefix| PoolRef {
                prefix,
                kind: PoolKind::Home {
                    datacenter: dc.name.clone(),
                },
            })
        });
        private.chain(home).collect()
    }

    /// Checks the configuration: at least one private pool, prefixes
    /// without host bits, no two pools overlapping (private and public
    /// alike), datacenters named once, reservations inside pools.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.private_pools.is_empty() {
            return Err(ConfigError::NoPrivatePool);
        }
        let pools = self.pools();
        for pool in &pools {
            check_network(pool.prefix)?;
        }
        for (i, first) in pools.iter().enumerate() {
            for second in &pools[i + 1..] {
                if overlaps(first.prefix, second.prefix) {
                    return Err(ConfigError::Overlap {
                        first: first.clone(),
                        second: second.clone(),
                    });
                }
            }
        }
        for (i, dc) in self.datacenters.iter().enumerate() {
            if self.datacenters[..i]
                .iter()
                .any(|other| other.name == dc.name)
            {
                return Err(ConfigError::DuplicateDatacenter(dc.name.clone()));
            }
        }
        for (i, &reserved) in self.reserved.iter().enumerate() {
            check_network(reserved)?;
            if !pools.iter().any(|p| p.prefix.contains(&reserved)) {
                return Err(ConfigError::ReservedOutsidePools(reserved));
            }
            if let Some(&other) = self.reserved[..i].iter().find(|&&o| overlaps(o, reserved)) {
                return Err(ConfigError::ReservedOverlap {
                    first: other,
                    second: reserved,
                });
            }
        }
        Ok(())
    }
}

fn check_network(prefix: Ipv4Net) -> Result<(), ConfigError> {
    if prefix.trunc() == prefix {
        Ok(())
    } else {
        Err(ConfigError::HostBits {
            given: prefix,
            network: prefix.trunc(),
        })
    }
}

/// Whether two prefixes share an address (for CIDR blocks: one contains the other).
pub(crate) fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn dc(name: &str, pools: &[&str]) -> DatacenterConfig {
        DatacenterConfig {
            name: DatacenterName::new(name).unwrap(),
            home_pools: pools.iter().map(|p| net(p)).collect(),
        }
    }

    fn config(private: &[&str], dcs: Vec<DatacenterConfig>) -> DomainConfig {
        DomainConfig {
            private_pools: private.iter().map(|p| net(p)).collect(),
            datacenters: dcs,
            reserved: Vec::new(),
            point_to_point: PointToPoint::Slash31,
        }
    }

    #[test]
    fn a_sound_domain_validates() {
        let c = config(
            &["10.0.0.0/8", "172.16.0.0/12"],
            vec![
                dc("napoli", &["192.0.2.0/24"]),
                dc("roma", &["198.51.100.0/24"]),
            ],
        );
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.pools().len(), 4);
    }

    #[test]
    fn overlapping_pools_are_refused_naming_both() {
        let c = config(&["10.0.0.0/8"], vec![dc("napoli", &["10.1.0.0/16"])]);
        let err = c.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "private pool 10.0.0.0/8 overlaps home pool 10.1.0.0/16 of datacenter napoli"
        );
        let c = config(
            &["10.0.0.0/8"],
            vec![
                dc("napoli", &["192.0.2.0/24"]),
                dc("roma", &["192.0.2.128/25"]),
            ],
        );
        assert!(matches!(c.validate(), Err(ConfigError::Overlap { .. })));
        let c = config(&["10.0.0.0/8", "10.0.0.0/8"], vec![]);
        assert!(matches!(c.validate(), Err(ConfigError::Overlap { .. })));
    }

    #[test]
    fn other_mistakes_are_refused() {
        assert_eq!(
            config(&[], vec![]).validate(),
            Err(ConfigError::NoPrivatePool)
        );
        let err = config(&["10.0.0.1/8"], vec![]).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "pool 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?"
        );
        let c = config(&["10.0.0.0/8"], vec![dc("a", &[]), dc("a", &[])]);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::DuplicateDatacenter(_))
        ));
        let mut c = config(&["10.0.0.0/8"], vec![]);
        c.reserved = vec![net("11.0.0.0/24")];
        assert_eq!(
            c.validate(),
            Err(ConfigError::ReservedOutsidePools(net("11.0.0.0/24")))
        );
        c.reserved = vec![net("10.0.0.0/24"), net("10.0.0.128/25")];
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ReservedOverlap { .. })
        ));
    }
}

//! The switch's table: Mobility Binding Table, visitors and generations.
//!
//! Pure: every update is a function of (table, request) that either refuses
//! or returns the new table; persisting and applying happen elsewhere.
//!
//! Generations order the updates of one home address. The highest generation
//! seen for an address is remembered even after a delete, so a late update
//! from an older move (A -> B arriving after B -> C) is refused instead of
//! resurrecting a binding to B.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::prefix::Ipv4Prefix;

/// Largest tunnel key (VXLAN carries 24 bits).
pub const MAX_TUNNEL_KEY: u32 = 0x00FF_FFFF;

/// One MBT entry: packets for the home address are tunnelled to `care_of`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MobilityBinding {
    /// Care-of Address: the foreign Edge Service Switch.
    pub care_of: Ipv4Addr,
    /// The Virtual Infrastructure this address belongs to.
    pub vi: String,
    /// Tunnel key (VXLAN network identifier; not carried by RFC 2003).
    pub key: u32,
    /// Orders updates of this home address.
    pub generation: u64,
}

/// A home address hosted in this datacenter, delivered to a local port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Visitor {
    /// Interface towards the host (or the VM) that now carries the address.
    pub port: String,
    /// Optional next hop on that port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<Ipv4Addr>,
    /// The Virtual Infrastructure this address belongs to.
    pub vi: String,
    /// Tunnel key the home switch uses for this VI.
    #[serde(default)]
    pub key: u32,
    /// Orders updates of this address.
    pub generation: u64,
    /// Reverse tunnelling (RFC 3024 style): packets from this address are
    /// tunnelled to its home switch (this care-of address, a peer) instead of
    /// leaving directly, for providers that drop foreign sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse_tunnel: Option<Ipv4Addr>,
}

/// Generation of a removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removal {
    /// The generation that removed the entry (or the highest one seen).
    pub generation: u64,
}

/// The persisted table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchTable {
    /// The Mobility Binding Table: Home Address -> binding.
    #[serde(default)]
    pub bindings: BTreeMap<Ipv4Addr, MobilityBinding>,
    /// Addresses hosted here.
    #[serde(default)]
    pub visitors: BTreeMap<Ipv4Addr, Visitor>,
    /// Highest generation seen for addresses whose binding was removed.
    #[serde(default)]
    pub removed_bindings: BTreeMap<Ipv4Addr, Removal>,
    /// Highest generation seen for addresses whose visitor entry was removed.
    #[serde(default)]
    pub removed_visitors: BTreeMap<Ipv4Addr, Removal>,
}

/// What the data plane should do with packets for one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forwarding {
    /// Tunnel to a foreign switch.
    Tunnel {
        /// The foreign switch.
        care_of: Ipv4Addr,
        /// Tunnel key.
        key: u32,
    },
    /// Deliver on a local port.
    Local {
        /// Interface.
        port: String,
        /// Next hop.
        via: Option<Ipv4Addr>,
        /// Tunnel the address's own packets to its home switch (and key).
        reverse: Option<(Ipv4Addr, u32)>,
    },
    /// Nothing of ours (a home prefix's blackhole covers it).
    Absent,
}

/// Why an update was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The update is older than what the table holds.
    #[error("generation {got} of {addr} is older than the current {current}")]
    StaleGeneration {
        /// Address.
        addr: Ipv4Addr,
        /// Generation of the update.
        got: u64,
        /// Generation in the table.
        current: u64,
    },
    /// Same generation, different content.
    #[error("generation {generation} of {addr} was already used for a different update")]
    GenerationReused {
        /// Address.
        addr: Ipv4Addr,
        /// Generation.
        generation: u64,
    },
    /// The home address is not in a home prefix of this switch.
    #[error("{0} is not inside a home prefix of this switch")]
    NotHome(Ipv4Addr),
    /// The care-of address is not a peer.
    #[error("care-of address {0} is not a peer of this switch")]
    NotPeer(Ipv4Addr),
    /// A field is out of range.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Field name.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// Outcome of an accepted update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The table changed.
    Changed,
    /// The same update had been applied before (idempotent repeat).
    Unchanged,
}

/// Static facts an update is checked against.
#[derive(Debug, Clone)]
pub struct Policy<'a> {
    /// Home prefixes.
    pub home_prefixes: &'a [Ipv4Prefix],
    /// Peer switches.
    pub peers: &'a [Ipv4Addr],
}

/// Interface names the kernel accepts (and nothing that could confuse a path).
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn check_vi(vi: &str) -> Result<(), Refusal> {
    if vi.is_empty() || vi.len() > 128 || vi.chars().any(char::is_control) {
        return Err(Refusal::Invalid {
            field: "vi",
            reason: "1 to 128 printable characters".into(),
        });
    }
    Ok(())
}

fn check_key(key: u32) -> Result<(), Refusal> {
    if key > MAX_TUNNEL_KEY {
        return Err(Refusal::Invalid {
            field: "key",
            reason: format!("at most {MAX_TUNNEL_KEY}"),
        });
    }
    Ok(())
}

/// Generation check shared by bindings and visitors.
fn order<T: PartialEq>(
    addr: Ipv4Addr,
    generation: u64,
    current: Option<&T>,
    current_generation: Option<u64>,
    new: Option<&T>,
) -> Result<Option<Outcome>, Refusal> {
    let Some(cur) = current_generation else {
        return Ok(None);
    };
    if generation < cur {
        return Err(Refusal::StaleGeneration {
            addr,
            got: generation,
            current: cur,
        });
    }
    if generation == cur {
        return if current == new {
            Ok(Some(Outcome::Unchanged))
        } else if new.is_none() {
            // Removing at the generation of the entry itself is the normal
            // way to end a binding.
            Ok(None)
        } else {
            Err(Refusal::GenerationReused { addr, generation })
        };
    }
    Ok(None)
}

impl SwitchTable {
    /// What packets for `addr` should do now. A binding wins over a visitor
    /// entry (the address left this datacenter).
    pub fn forwarding(&self, addr: Ipv4Addr) -> Forwarding {
        if let Some(b) = self.bindings.get(&addr) {
            return Forwarding::Tunnel {
                care_of: b.care_of,
                key: b.key,
            };
        }
        if let Some(v) = self.visitors.get(&addr) {
            return Forwarding::Local {
                port: v.port.clone(),
                via: v.via,
                reverse: v.reverse_tunnel.map(|home| (home, v.key)),
            };
        }
        Forwarding::Absent
    }

    /// Every address the table knows, present or removed.
    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        let mut all: Vec<Ipv4Addr> = self
            .bindings
            .keys()
            .chain(self.visitors.keys())
            .chain(self.removed_bindings.keys())
            .chain(self.removed_visitors.keys())
            .copied()
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }

    fn binding_generation(&self, addr: Ipv4Addr) -> Option<u64> {
        self.bindings
            .get(&addr)
            .map(|b| b.generation)
            .or_else(|| self.removed_bindings.get(&addr).map(|r| r.generation))
    }

    fn visitor_generation(&self, addr: Ipv4Addr) -> Option<u64> {
        self.visitors
            .get(&addr)
            .map(|v| v.generation)
            .or_else(|| self.removed_visitors.get(&addr).map(|r| r.generation))
    }

    /// Installs or replaces a binding.
    pub fn put_binding(
        &mut self,
        policy: &Policy<'_>,
        home: Ipv4Addr,
        binding: MobilityBinding,
    ) -> Result<Outcome, Refusal> {
        if !policy.home_prefixes.iter().any(|p| p.contains(home)) {
            return Err(Refusal::NotHome(home));
        }
        if !policy.peers.contains(&binding.care_of) {
            return Err(Refusal::NotPeer(binding.care_of));
        }
        check_vi(&binding.vi)?;
        check_key(binding.key)?;
        if let Some(o) = order(
            home,
            binding.generation,
            self.bindings.get(&home),
            self.binding_generation(home),
            Some(&binding),
        )? {
            return Ok(o);
        }
        self.removed_bindings.remove(&home);
        self.bindings.insert(home, binding);
        Ok(Outcome::Changed)
    }

    /// Removes a binding (the VI came home, or left the domain).
    pub fn delete_binding(&mut self, home: Ipv4Addr, generation: u64) -> Result<Outcome, Refusal> {
        let current = self.binding_generation(home);
        if let Some(cur) = current {
            if generation < cur {
                return Err(Refusal::StaleGeneration {
                    addr: home,
                    got: generation,
                    current: cur,
                });
            }
        }
        let existed = self.bindings.remove(&home).is_some();
        let highest = current.unwrap_or(0).max(generation);
        self.removed_bindings.insert(
            home,
            Removal {
                generation: highest,
            },
        );
        Ok(if existed {
            Outcome::Changed
        } else {
            Outcome::Unchanged
        })
    }

    /// Installs or replaces a visitor.
    pub fn put_visitor(
        &mut self,
        policy: &Policy<'_>,
        addr: Ipv4Addr,
        visitor: Visitor,
    ) -> Result<Outcome, Refusal> {
        if let Some(home) = visitor.reverse_tunnel {
            if !policy.peers.contains(&home) {
                return Err(Refusal::NotPeer(home));
            }
        }
        if !valid_ifname(&visitor.port) {
            return Err(Refusal::Invalid {
                field: "port",
                reason: "an interface name".into(),
            });
        }
        check_vi(&visitor.vi)?;
        check_key(visitor.key)?;
        if let Some(o) = order(
            addr,
            visitor.generation,
            self.visitors.get(&addr),
            self.visitor_generation(addr),
            Some(&visitor),
        )? {
            return Ok(o);
        }
        self.removed_visitors.remove(&addr);
        self.visitors.insert(addr, visitor);
        Ok(Outcome::Changed)
    }

    /// Removes a visitor (its VI left this datacenter).
    pub fn delete_visitor(&mut self, addr: Ipv4Addr, generation: u64) -> Result<Outcome, Refusal> {
        let current = self.visitor_generation(addr);
        if let Some(cur) = current {
            if generation < cur {
                return Err(Refusal::StaleGeneration {
                    addr,
                    got: generation,
                    current: cur,
                });
            }
        }
        let existed = self.visitors.remove(&addr).is_some();
        let highest = current.unwrap_or(0).max(generation);
        self.removed_visitors.insert(
            addr,
            Removal {
                generation: highest,
            },
        );
        Ok(if existed {
            Outcome::Changed
        } else {
            Outcome::Unchanged
        })
    }

    /// Loads a table; a missing file is an empty table.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing the switch table {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SwitchTable::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Persists atomically: write a temporary file, fsync it, rename it over
    /// the old one, fsync the directory.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = dir.join(format!(
            ".{}.tmp",
            file_name.unwrap_or_else(|| "table".into())
        ));
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_parts() -> (Vec<Ipv4Prefix>, Vec<Ipv4Addr>) {
        (
            vec!["203.0.113.0/24".parse().unwrap()],
            vec![Ipv4Addr::new(198, 18, 2, 2), Ipv4Addr::new(198, 18, 3, 2)],
        )
    }

    fn b(care_of: [u8; 4], generation: u64) -> MobilityBinding {
        MobilityBinding {
            care_of: care_of.into(),
            vi: "vi-1".into(),
            key: 7,
            generation,
        }
    }

    const H: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

    #[test]
    fn moves_a_b_c_never_leave_a_binding_to_b() {
        let (p, peers) = policy_parts();
        let pol = Policy {
            home_prefixes: &p,
            peers: &peers,
        };
        let mut t = SwitchTable::default();
        assert_eq!(
            t.put_binding(&pol, H, b([198, 18, 2, 2], 1)),
            Ok(Outcome::Changed)
        );
        assert_eq!(
            t.put_binding(&pol, H, b([198, 18, 2, 2], 1)),
            Ok(Outcome::Unchanged)
        );
        assert_eq!(
            t.put_binding(&pol, H, b([198, 18, 3, 2], 2)),
            Ok(Outcome::Changed)
        );
        // The late update of the first move is refused.
        assert!(matches!(
            t.put_binding(&pol, H, b([198, 18, 2, 2], 1)),
            Err(Refusal::StaleGeneration { .. })
        ));
        assert!(matches!(
            t.put_binding(&pol, H, b([198, 18, 2, 2], 2)),
            Err(Refusal::GenerationReused { .. })
        ));
        assert_eq!(
            t.forwarding(H),
            Forwarding::Tunnel {
                care_of: Ipv4Addr::new(198, 18, 3, 2),
                key: 7
            }
        );
        // Home again.
        assert_eq!(t.delete_binding(H, 3), Ok(Outcome::Changed));
        assert_eq!(t.delete_binding(H, 3), Ok(Outcome::Unchanged));
        assert!(t.put_binding(&pol, H, b([198, 18, 3, 2], 2)).is_err());
        assert!(t.delete_binding(H, 2).is_err());
        assert_eq!(t.forwarding(H), Forwarding::Absent);
        assert_eq!(
            t.put_binding(&pol, H, b([198, 18, 2, 2], 4)),
            Ok(Outcome::Changed)
        );
    }

    #[test]
    fn refuses_foreign_addresses_and_non_peers() {
        let (p, peers) = policy_parts();
        let pol = Policy {
            home_prefixes: &p,
            peers: &peers,
        };
        let mut t = SwitchTable::default();
        assert_eq!(
            t.put_binding(&pol, Ipv4Addr::new(192, 0, 2, 1), b([198, 18, 2, 2], 1)),
            Err(Refusal::NotHome(Ipv4Addr::new(192, 0, 2, 1)))
        );
        assert_eq!(
            t.put_binding(&pol, H, b([6, 6, 6, 6], 1)),
            Err(Refusal::NotPeer(Ipv4Addr::new(6, 6, 6, 6)))
        );
        let mut bad_key = b([198, 18, 2, 2], 1);
        bad_key.key = MAX_TUNNEL_KEY + 1;
        assert!(t.put_binding(&pol, H, bad_key).is_err());
        assert!(t.bindings.is_empty());
    }

    #[test]
    fn binding_wins_over_visitor_and_persists() {
        let (p, peers) = policy_parts();
        let pol = Policy {
            home_prefixes: &p,
            peers: &peers,
        };
        let mut t = SwitchTable::default();
        let v = Visitor {
            port: "vm0".into(),
            via: None,
            vi: "vi-1".into(),
            key: 7,
            generation: 1,
            reverse_tunnel: None,
        };
        assert_eq!(t.put_visitor(&pol, H, v.clone()), Ok(Outcome::Changed));
        assert_eq!(
            t.forwarding(H),
            Forwarding::Local {
                port: "vm0".into(),
                via: None,
                reverse: None
            }
        );
        let mut rev = v.clone();
        rev.generation = 2;
        rev.reverse_tunnel = Some(Ipv4Addr::new(6, 6, 6, 6));
        assert!(matches!(
            t.put_visitor(&pol, H, rev.clone()),
            Err(Refusal::NotPeer(_))
        ));
        rev.reverse_tunnel = Some(Ipv4Addr::new(198, 18, 2, 2));
        assert_eq!(t.put_visitor(&pol, H, rev), Ok(Outcome::Changed));
        assert_eq!(
            t.forwarding(H),
            Forwarding::Local {
                port: "vm0".into(),
                via: None,
                reverse: Some((Ipv4Addr::new(198, 18, 2, 2), 7))
            }
        );
        t.put_binding(&pol, H, b([198, 18, 2, 2], 2)).unwrap();
        assert!(matches!(t.forwarding(H), Forwarding::Tunnel { .. }));
        let mut bad = v.clone();
        bad.port = "../etc".into();
        bad.generation = 5;
        assert!(t.put_visitor(&pol, H, bad).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("table.json");
        t.save(&path).unwrap();
        assert_eq!(SwitchTable::load(&path).unwrap(), t);
        assert_eq!(
            SwitchTable::load(&dir.path().join("none")).unwrap(),
            SwitchTable::default()
        );
    }
}

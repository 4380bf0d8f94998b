//! The simulated data plane: records what it was told, moves no packets.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use super::{DataPlane, DataPlaneError, DataPlaneStats};
use crate::state::{Forwarding, SwitchTable};

/// Records the forwarding of every address it was asked to apply.
#[derive(Debug, Default)]
pub struct SimulatedPlane {
    applied: Mutex<BTreeMap<Ipv4Addr, Forwarding>>,
}

impl SimulatedPlane {
    /// What the plane would do for each address.
    pub fn applied(&self) -> BTreeMap<Ipv4Addr, Forwarding> {
        self.applied.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

impl DataPlane for SimulatedPlane {
    fn kind(&self) -> &'static str {
        "simulated"
    }

    fn apply(&self, table: &SwitchTable, addrs: &[Ipv4Addr]) -> Result<(), DataPlaneError> {
        let mut applied = self.applied.lock().map_err(|_| DataPlaneError::Poisoned)?;
        for addr in addrs {
            match table.forwarding(*addr) {
                Forwarding::Absent => applied.remove(addr),
                f => applied.insert(*addr, f),
            };
        }
        Ok(())
    }

    fn stats(&self) -> DataPlaneStats {
        let applied = self.applied();
        let tunnels = applied
            .values()
            .filter(|f| matches!(f, Forwarding::Tunnel { .. }))
            .count();
        let local = applied.len() - tunnels;
        let mut s = DataPlaneStats {
            kind: "simulated",
            ..DataPlaneStats::default()
        };
        s.counters
            .insert("tunnel_routes", u64::try_from(tunnels).unwrap_or(u64::MAX));
        s.counters
            .insert("local_routes", u64::try_from(local).unwrap_or(u64::MAX));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Visitor;

    #[test]
    fn records_and_forgets() {
        let plane = SimulatedPlane::default();
        let mut t = SwitchTable::default();
        let a = Ipv4Addr::new(203, 0, 113, 10);
        let policy = crate::state::Policy {
            home_prefixes: &[],
            peers: &[],
        };
        t.put_visitor(
            &policy,
            a,
            Visitor {
                port: "vm0".into(),
                via: None,
                vi: "v".into(),
                key: 1,
                generation: 1,
                reverse_tunnel: None,
            },
        )
        .unwrap();
        plane.apply(&t, &[a]).unwrap();
        assert_eq!(plane.stats().counters["local_routes"], 1);
        t.delete_visitor(a, 2).unwrap();
        plane.apply(&t, &[a]).unwrap();
        assert!(plane.applied().is_empty());
    }
}

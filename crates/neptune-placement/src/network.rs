//! Routing of virtual-link traffic over the physical network.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

use crate::error::PlacementError;
use crate::model::{PhysicalNetwork, Problem};

/// One physical link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PhysicalLink {
    /// The direct link between hosts `a < b` of a full mesh.
    HostPair {
        /// Lower host index.
        a: usize,
        /// Higher host index.
        b: usize,
    },
    /// A host's uplink to its switch.
    HostUplink(usize),
    /// A switch's link to its parent.
    SwitchUplink(usize),
}

/// The network prepared for routing.
#[derive(Debug, Clone)]
pub(crate) struct Router<'a> {
    net: &'a PhysicalNetwork,
    depth: Vec<u32>,
}

impl<'a> Router<'a> {
    pub(crate) fn new(p: &'a Problem) -> Result<Self, PlacementError> {
        let mut depth = Vec::new();
        if let PhysicalNetwork::Tree(t) = &p.network {
            if t.host_uplinks.len() != p.inventory.hosts.len() {
                return Err(PlacementError::Invalid(format!(
                    "the network has {} host uplinks for {} hosts",
                    t.host_uplinks.len(),
                    p.inventory.hosts.len()
                )));
            }
            let ns = t.switches.len();
            if let Some(u) = t.host_uplinks.iter().find(|u| u.switch >= ns) {
                return Err(PlacementError::Invalid(format!(
                    "a host uplink goes to switch {}, but there are {ns} switches",
                    u.switch
                )));
            }
            let roots = t.switches.iter().filter(|s| s.parent.is_none()).count();
            if ns > 0 && roots != 1 {
                return Err(PlacementError::Invalid(format!(
                    "the switch tree must have exactly one root, it has {roots}"
                )));
            }
            depth = vec![0; ns];
            for s in 0..ns {
                let mut d = 0u32;
                let mut cur = s;
                while let Some(par) = t.switches[cur].parent {
                    if par >= ns || d as usize > ns {
                        return Err(PlacementError::Invalid(format!(
                            "switch {} has a bad parent chain (out of range or a cycle)",
                            t.switches[s].name
                        )));
                    }
                    cur = par;
                    d += 1;
                }
                depth[s] = d;
            }
        }
        Ok(Self {
            net: &p.network,
            depth,
        })
    }

    /// Physical links carrying traffic from host `a` to host `b`.
    pub(crate) fn route(&self, a: usize, b: usize, out: &mut Vec<PhysicalLink>) {
        out.clear();
        if a == b {
            return;
        }
        match self.net {
            PhysicalNetwork::Unlimited => {}
            PhysicalNetwork::FullMesh { .. } => {
                out.push(PhysicalLink::HostPair {
                    a: a.min(b),
                    b: a.max(b),
                });
            }
            PhysicalNetwork::Tree(t) => {
                out.push(PhysicalLink::HostUplink(a));
                out.push(PhysicalLink::HostUplink(b));
                let (mut x, mut y) = (t.host_uplinks[a].switch, t.host_uplinks[b].switch);
                while x != y {
                    if self.depth[x] >= self.depth[y] {
                        out.push(PhysicalLink::SwitchUplink(x));
                        x = t.switches[x].parent.unwrap_or(x);
                    } else {
                        out.push(PhysicalLink::SwitchUplink(y));
                        y = t.switches[y].parent.unwrap_or(y);
                    }
                }
            }
        }
    }

    /// (capacity, load already there).
    pub(crate) fn capacity(&self, l: PhysicalLink) -> (u64, u64) {
        match (self.net, l) {
            (PhysicalNetwork::FullMesh { bandwidth }, PhysicalLink::HostPair { .. }) => {
                (*bandwidth, 0)
            }
            (PhysicalNetwork::Tree(t), PhysicalLink::HostUplink(h)) => {
                (t.host_uplinks[h].capacity, t.host_uplinks[h].load)
            }
            (PhysicalNetwork::Tree(t), PhysicalLink::SwitchUplink(s)) => {
                (t.switches[s].uplink_capacity, t.switches[s].uplink_load)
            }
            _ => (u64::MAX, 0),
        }
    }

    /// Links with load already on them before this VI (tree only).
    pub(crate) fn preloaded(&self) -> Vec<PhysicalLink> {
        match self.net {
            PhysicalNetwork::Tree(t) => t
                .host_uplinks
                .iter()
                .enumerate()
                .filter(|(_, u)| u.load > 0)
                .map(|(h, _)| PhysicalLink::HostUplink(h))
                .chain(
                    t.switches
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.uplink_load > 0)
                        .map(|(s, _)| PhysicalLink::SwitchUplink(s)),
                )
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The bandwidth of every host pair when the network is a full mesh.
    pub(crate) fn mesh_bandwidth(&self) -> Option<u64> {
        match self.net {
            PhysicalNetwork::FullMesh { bandwidth } => Some(*bandwidth),
            _ => None,
        }
    }

    pub(crate) fn is_unlimited(&self) -> bool {
        matches!(self.net, PhysicalNetwork::Unlimited)
    }
}

/// Loads of the host pairs of a full mesh, from traffic `(a, b, w)` between
/// hosts `a != b` of `hosts`: `emit(a, b, load)` with `a < b`, in order,
/// for the pairs that carry traffic. Each pair's link is its own, so the loads are summed
/// per lower host in a dense array instead of a hash map keyed by link
/// (which was most of the time of evaluating a large placement).
pub(crate) fn mesh_loads(
    hosts: usize,
    traffic: impl Iterator<Item = (usize, usize, u64)> + Clone,
    mut emit: impl FnMut(usize, usize, u64),
) {
    let mut start = vec![0usize; hosts + 1];
    for (a, b, _) in traffic.clone() {
        start[a.min(b) + 1] += 1;
    }
    for h in 0..hosts {
        start[h + 1] += start[h];
    }
    let mut fill = start.clone();
    let mut far = vec![(0usize, 0u64); start[hosts]];
    for (a, b, w) in traffic {
        let lo = a.min(b);
        far[fill[lo]] = (a.max(b), w);
        fill[lo] += 1;
    }
    let mut acc = vec![0u64; hosts];
    let mut touched: Vec<usize> = Vec::new();
    for a in 0..hosts {
        touched.clear();
        for &(b, w) in &far[start[a]..start[a + 1]] {
            if acc[b] == 0 {
                touched.push(b);
            }
            acc[b] = acc[b].saturating_add(w);
        }
        touched.sort_unstable();
        for &b in &touched {
            if acc[b] > 0 {
                emit(a, b, acc[b]);
            }
            acc[b] = 0;
        }
    }
}

/// A multiply-rotate hash for link keys (a few small integers). The standard
/// SipHash resists collision attacks that cannot happen here (the keys are
/// host and switch indices) and cost a sixth of a large solve.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LinkHasher(u64);

impl Hasher for LinkHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Loads of physical links under an assignment, kept incrementally, with the
/// total overload (sum over links of load above capacity).
#[derive(Debug, Clone)]
pub(crate) struct Loads<'a> {
    router: &'a Router<'a>,
    pub(crate) load: HashMap<PhysicalLink, u64, BuildHasherDefault<LinkHasher>>,
    pub(crate) overload: u64,
    scratch: Vec<PhysicalLink>,
}

impl<'a> Loads<'a> {
    pub(crate) fn new(router: &'a Router<'a>) -> Self {
        let mut s = Self {
            router,
            load: HashMap::default(),
            overload: 0,
            scratch: Vec::new(),
        };
        for l in router.preloaded() {
            let (_, pre) = router.capacity(l);
            s.change(l, pre, true);
        }
        s
    }

    fn change(&mut self, l: PhysicalLink, w: u64, plus: bool) {
        let (cap, _) = self.router.capacity(l);
        let e = self.load.entry(l).or_insert(0);
        let before = e.saturating_sub(cap);
        *e = if plus {
            e.saturating_add(w)
        } else {
            e.saturating_sub(w)
        };
        let after = e.saturating_sub(cap);
        self.overload = self.overload.saturating_sub(before).saturating_add(after);
    }

    /// Adds (or removes) traffic `w` between hosts `a` and `b`.
    pub(crate) fn traffic(&mut self, a: usize, b: usize, w: u64, plus: bool) {
        if a == b || self.router.is_unlimited() {
            return;
        }
        let mut links = std::mem::take(&mut self.scratch);
        self.router.route(a, b, &mut links);
        for &l in &links {
            self.change(l, w, plus);
        }
        self.scratch = links;
    }
}

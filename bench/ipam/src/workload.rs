//! The benchmark's VIs: seeded, 10 to 50 interfaces each, on a mix of
//! point-to-point links and LANs, with one entry point.

use neptune_ipam::{EndPoint, EntryPointRequest, Gateway, LinkRequest, ViId, ViRequest};
use neptune_types::{InterfaceName, LinkId, NodeId};

/// SplitMix64: small, seeded, good enough to draw a workload.
#[derive(Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

/// A VI as link sizes (end points per link).
#[derive(Debug, Clone)]
pub(crate) struct Vi {
    pub(crate) links: Vec<usize>,
}

/// Prefix length of a link of `n` end points (point-to-point: /31).
fn link_len(n: usize) -> u8 {
    if n <= 2 {
        return 31;
    }
    (0..=29u8)
        .rev()
        .find(|&l| (1u64 << (32 - l)) - 2 >= n as u64)
        .unwrap_or(0)
}

impl Vi {
    /// 10 to 50 interfaces; 60% of links point-to-point, the others LANs of 3 to 12.
    pub(crate) fn random(rng: &mut Rng) -> Self {
        let mut left = rng.range(10, 50);
        let mut links = Vec::new();
        while left > 0 {
            let n = if left <= 3 {
                left
            } else if rng.next() % 10 < 6 {
                2
            } else {
                rng.range(3, left.min(12))
            };
            links.push(n);
            left -= n;
        }
        Vi { links }
    }

    pub(crate) fn interfaces(&self) -> usize {
        self.links.iter().sum()
    }

    /// Addresses of the VI's link subnets.
    pub(crate) fn subnet_addresses(&self) -> u64 {
        self.links.iter().map(|&n| 1u64 << (32 - link_len(n))).sum()
    }

    /// Prefix length of the VI's block, as the planner sizes it.
    pub(crate) fn block_len(&self) -> u8 {
        let total = self.subnet_addresses();
        let bits = 64 - (total - 1).leading_zeros();
        32u8.saturating_sub(bits as u8)
    }

    pub(crate) fn request(&self, vi: ViId) -> anyhow::Result<ViRequest> {
        let eth0 = InterfaceName::new("eth0")?;
        let mut links = Vec::with_capacity(self.links.len());
        let mut node = 0;
        for (l, &n) in self.links.iter().enumerate() {
            let mut end_points = Vec::with_capacity(n);
            for _ in 0..n {
                end_points.push(EndPoint {
                    node: NodeId::new(format!("n{node}"))?,
                    interface: eth0.clone(),
                    address: None,
                });
                node += 1;
            }
            links.push(LinkRequest {
                link: LinkId::new(format!("l{l}"))?,
                end_points,
                subnet: None,
                gateway: Gateway::None,
            });
        }
        let entry_points = vec![EntryPointRequest {
            node: NodeId::new("n0")?,
            interface: InterfaceName::new("eth9")?,
            home_address: None,
        }];
        Ok(ViRequest {
            vi,
            home: None,
            links,
            entry_points,
        })
    }
}

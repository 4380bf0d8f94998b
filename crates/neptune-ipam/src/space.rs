//! The free space of one pool, kept as a buddy system over CIDR blocks.
//!
//! A pool is a binary tree of prefixes: each prefix of length `l` has two
//! halves of length `l + 1`. Three structures describe a state:
//!
//! - `owned`: the allocated blocks, by first address;
//! - `covers`: for every prefix that strictly contains an allocated block,
//!   the number of allocated blocks under it (the "split" nodes of the tree);
//! - `free`: the maximal free blocks, one ordered set per prefix length; a
//!   free block is maximal when its parent is not wholly free.
//!
//! A prefix is free exactly when it has no `covers` entry, is not owned,
//! and no ancestor is owned: a check of at most 32 lookups. Allocation takes
//! the smallest maximal free block that fits (lowest address first) and
//! splits it down, putting the unused halves back on the free lists;
//! release merges a block with its buddy as long as the buddy is a maximal
//! free block. Because every allocation is a CIDR block, the free space is
//! always a set of CIDR blocks and the buddy system wastes nothing: the
//! only fragmentation left is that of the order of allocations and releases,
//! which best fit keeps small (see `bench/ipam`).
//!
//! `owned` + `covers` is also the row model a store keeps (see
//! [`crate::StoreRow`]): inserting an owned row fails on any row at the same
//! prefix, and inserting a cover row fails on an owned row at that prefix,
//! which is exactly "the block is free".

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::Owner;

/// First address of a block as an integer, and its prefix length.
pub(crate) type Block = (u32, u8);

pub(crate) fn to_net((start, len): Block) -> Ipv4Net {
    // `len` is at most 32 everywhere a Block is built.
    Ipv4Net::new_assert(Ipv4Addr::from(start), len)
}

pub(crate) fn from_net(net: Ipv4Net) -> Block {
    (u32::from(net.network()), net.prefix_len())
}

/// Addresses in a block of prefix length `len`.
pub(crate) fn size(len: u8) -> u64 {
    1u64 << (32 - u32::from(len))
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

/// The prefix of length `len` that contains `start`.
fn ancestor(start: u32, len: u8) -> Block {
    (start & mask(len), len)
}

fn buddy((start, len): Block) -> Block {
    (start ^ (1u32 << (32 - u32::from(len))), len)
}

pub(crate) fn block_overlaps((a, alen): Block, (b, blen): Block) -> bool {
    let len = alen.min(blen);
    a & mask(len) == b & mask(len)
}

fn key((start, len): Block) -> u64 {
    (u64::from(start) << 8) | u64::from(len)
}

#[derive(Debug, Clone)]
pub(crate) struct PoolSpace {
    root: Block,
    owned: BTreeMap<u32, (u8, Owner)>,
    covers: BTreeMap<u64, u32>,
    free: Vec<BTreeSet<u32>>,
    used: u64,
}

impl PoolSpace {
    pub(crate) fn new(net: Ipv4Net) -> Self {
        let root = from_net(net.trunc());
        let mut free = vec![BTreeSet::new(); 33];
        free[usize::from(root.1)].insert(root.0);
        Self {
            root,
            owned: BTreeMap::new(),
            covers: BTreeMap::new(),
            free,
            used: 0,
        }
    }

    pub(crate) fn contains(&self, block: Block) -> bool {
        block.1 >= self.root.1 && ancestor(block.0, self.root.1) == self.root
    }

    pub(crate) fn total(&self) -> u64 {
        size(self.root.1)
    }

    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    pub(crate) fn free(&self) -> u64 {
        self.total() - self.used
    }

    /// The largest free block (lowest address among equals).
    pub(crate) fn largest_free(&self) -> Option<Block> {
        (self.root.1..=32).find_map(|len| {
            self.free[usize::from(len)]
                .first()
                .map(|&start| (start, len))
        })
    }

    /// How many maximal free blocks there are.
    pub(crate) fn free_blocks(&self) -> usize {
        self.free.iter().map(BTreeSet::len).sum()
    }

    /// The maximal free blocks, largest first.
    pub(crate) fn free_list(&self) -> Vec<Block> {
        (self.root.1..=32)
            .flat_map(|len| self.free[usize::from(len)].iter().map(move |&s| (s, len)))
            .collect()
    }

    /// The allocated blocks in address order.
    pub(crate) fn owned(&self) -> impl Iterator<Item = (Block, &Owner)> + '_ {
        self.owned
            .iter()
            .map(|(&start, (len, owner))| ((start, *len), owner))
    }

    /// `Ok` when `block` (inside this pool) is free, else an allocated block
    /// that overlaps it and its owner.
    pub(crate) fn check_free(&self, block: Block) -> Result<(), (Block, &Owner)> {
        for len in self.root.1..=block.1 {
            let anc = ancestor(block.0, len);
            if let Some((owned_len, owner)) = self.owned.get(&anc.0) {
                if *owned_len == len {
                    return Err((anc, owner));
                }
            }
        }
        if self.covers.contains_key(&key(block)) {
            let last = block.0 | !mask(block.1);
            if let Some((&start, (len, owner))) = self.owned.range(block.0..=last).next() {
                return Err(((start, *len), owner));
            }
        }
        Ok(())
    }

    /// The maximal free block that contains the free `block`.
    fn maximal_free(&self, block: Block) -> Option<Block> {
        (self.root.1..=block.1)
            .rev()
            .map(|len| ancestor(block.0, len))
            .find(|anc| self.free[usize::from(anc.1)].contains(&anc.0))
    }

    /// Marks the free `block` as owned by `owner`. The caller has checked
    /// with [`Self::check_free`]; a block that is not free is refused.
    pub(crate) fn allocate(&mut self, block: Block, owner: Owner) -> Result<(), ()> {
        if !self.contains(block) || self.check_free(block).is_err() {
            return Err(());
        }
        let container = self.maximal_free(block).ok_or(())?;
        self.free[usize::from(container.1)].remove(&container.0);
        for len in container.1 + 1..=block.1 {
            let (start, len) = buddy(ancestor(block.0, len));
            self.free[usize::from(len)].insert(start);
        }
        for len in self.root.1..block.1 {
            *self.covers.entry(key(ancestor(block.0, len))).or_insert(0) += 1;
        }
        self.owned.insert(block.0, (block.1, owner));
        self.used += size(block.1);
        Ok(())
    }

    /// Frees the allocated `block`, merging it with free buddies. Returns
    /// its owner, or `None` (and changes nothing) when it is not allocated.
    pub(crate) fn release(&mut self, block: Block) -> Option<Owner> {
        match self.owned.get(&block.0) {
            Some((len, _)) if *len == block.1 => {}
            _ => return None,
        }
        let (_, owner) = self.owned.remove(&block.0)?;
        for len in self.root.1..block.1 {
            let k = key(ancestor(block.0, len));
            if let Some(count) = self.covers.get_mut(&k) {
                *count -= 1;
                if *count == 0 {
                    self.covers.remove(&k);
                }
            }
        }
        let mut current = block;
        while current.1 > self.root.1 {
            let b = buddy(current);
            if !self.free[usize::from(b.1)].remove(&b.0) {
                break;
            }
            current = ancestor(current.0, current.1 - 1);
        }
        self.free[usize::from(current.1)].insert(current.0);
        self.used -= size(block.1);
        Some(owner)
    }

    /// Best fit: the smallest maximal free block that can hold a block of
    /// length `len` while avoiding the blocks in `avoid` (tentative
    /// allocations of the plan being built); inside it, the lowest place.
    /// Returns the block and the length of the free block it came from.
    pub(crate) fn best_fit(&self, len: u8, avoid: &[Block]) -> Option<(Block, u8)> {
        if len < self.root.1 || len > 32 {
            return None;
        }
        for level in (self.root.1..=len).rev() {
            for &start in &self.free[usize::from(level)] {
                if let Some(found) = fit_avoiding((start, level), len, avoid) {
                    return Some((found, level));
                }
            }
        }
        None
    }
}

/// The lowest block of length `len` inside `within` that overlaps nothing in `avoid`.
fn fit_avoiding(within: Block, len: u8, avoid: &[Block]) -> Option<Block> {
    if !avoid.iter().any(|&a| block_overlaps(a, within)) {
        return Some((within.0, len));
    }
    if within.1 >= len {
        return None;
    }
    let low = (within.0, within.1 + 1);
    fit_avoiding(low, len, avoid).or_else(|| fit_avoiding(buddy(low), len, avoid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ViId;

    fn owner(name: &str) -> Owner {
        Owner::Reserved {
            note: name.to_owned(),
        }
    }

    fn b(s: &str) -> Block {
        from_net(s.parse().unwrap())
    }

    #[test]
    fn allocation_splits_and_release_merges() {
        let mut space = PoolSpace::new("10.0.0.0/24".parse().unwrap());
        assert_eq!(space.best_fit(26, &[]), Some((b("10.0.0.0/26"), 24)));
        space.allocate(b("10.0.0.0/26"), owner("a")).unwrap();
        assert_eq!(
            space.free_list(),
            vec![b("10.0.0.128/25"), b("10.0.0.64/26")]
        );
        assert_eq!(space.used(), 64);
        // Best fit takes the /26 hole, not a piece of the /25.
        assert_eq!(space.best_fit(27, &[]), Some((b("10.0.0.64/27"), 26)));
        space.allocate(b("10.0.0.64/27"), owner("b")).unwrap();
        assert!(space.check_free(b("10.0.0.0/25")).is_err());
        assert!(space.check_free(b("10.0.0.0/28")).is_err());
        assert_eq!(space.check_free(b("10.0.0.96/27")), Ok(()));
        assert!(space.allocate(b("10.0.0.0/28"), owner("c")).is_err());
        assert_eq!(space.release(b("10.0.0.0/26")), Some(owner("a")));
        assert_eq!(space.release(b("10.0.0.0/26")), None);
        assert_eq!(space.release(b("10.0.0.64/27")), Some(owner("b")));
        assert_eq!(space.free_list(), vec![b("10.0.0.0/24")]);
        assert_eq!(space.used(), 0);
        assert!(space.covers.is_empty());
    }

    #[test]
    fn conflicts_name_the_holder() {
        let mut space = PoolSpace::new("10.0.0.0/16".parse().unwrap());
        let vi = Owner::Block {
            vi: ViId::new("web").unwrap(),
        };
        space.allocate(b("10.0.4.0/24"), vi.clone()).unwrap();
        assert_eq!(
            space.check_free(b("10.0.0.0/16")),
            Err((b("10.0.4.0/24"), &vi))
        );
        assert_eq!(
            space.check_free(b("10.0.4.7/32")),
            Err((b("10.0.4.0/24"), &vi))
        );
    }

    #[test]
    fn best_fit_avoids_tentative_blocks() {
        let space = PoolSpace::new("10.0.0.0/24".parse().unwrap());
        let avoid = [b("10.0.0.0/32"), b("10.0.0.128/26")];
        assert_eq!(space.best_fit(26, &avoid), Some((b("10.0.0.64/26"), 24)));
        assert_eq!(space.best_fit(25, &avoid), None);
        assert_eq!(space.best_fit(32, &avoid), Some((b("10.0.0.1/32"), 24)));
    }
}

//! The allocations of a domain: what the planner reads (a snapshot) and
//! what a committed plan writes.
//!
//! The Manager keeps allocations in its store. It loads them into an
//! [`Allocations`] snapshot, calls [`crate::plan`] (which changes nothing),
//! shows the plan to an admin, and commits the plan's flat list of
//! [`Allocation`]s in one transaction. [`Allocations::commit`] is the
//! in-memory reference of that commit, and [`Plan::store_rows`] gives the
//! rows that make the store refuse a losing plan with nothing but a
//! `UNIQUE (pool, prefix)` constraint (see [`StoreRow`]).

use std::collections::BTreeMap;
use std::fmt;

use ipnet::Ipv4Net;
use neptune_types::{InterfaceName, LinkId, NodeId};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::space::{from_net, size, to_net, PoolSpace};
use crate::{ConfigError, DomainConfig, Plan, PoolKind, PoolRef, ViId};

/// Who holds an allocated block.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Owner {
    /// Kept out of use by the domain's configuration.
    Reserved { note: String },
    /// The block of a VI that its automatically numbered links live in.
    Block { vi: ViId },
    /// A link subnet of a VI pinned by the user (or implied by pinned
    /// addresses), held apart from the VI's block.
    LinkSubnet { vi: ViId, link: LinkId },
    /// The Home Address of an entry point of a VI.
    HomeAddress {
        vi: ViId,
        node: NodeId,
        interface: InterfaceName,
    },
}

impl Owner {
    /// The VI that holds the block, if a VI does.
    pub fn vi(&self) -> Option<&ViId> {
        match self {
            Owner::Reserved { .. } => None,
            Owner::Block { vi } | Owner::LinkSubnet { vi, .. } | Owner::HomeAddress { vi, .. } => {
                Some(vi)
            }
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Reserved { note } => write!(f, "a reservation ({note})"),
            Owner::Block { vi } => write!(f, "the address block of VI {vi}"),
            Owner::LinkSubnet { vi, link } => write!(f, "link {link} of VI {vi}"),
            Owner::HomeAddress {
                vi,
                node,
                interface,
            } => {
                write!(
                    f,
                    "the Home Address of entry point {node}/{interface} of VI {vi}"
                )
            }
        }
    }
}

/// One allocated block: the row a store keeps for it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Allocation {
    /// The pool the block comes from (pools never overlap, so the prefix names it).
    pub pool: Ipv4Net,
    pub prefix: Ipv4Net,
    pub owner: Owner,
}

impl Allocation {
    /// The prefixes of `pool` that strictly contain this block, largest first.
    pub fn covering_prefixes(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        let start = u32::from(self.prefix.network());
        (self.pool.prefix_len()..self.prefix.prefix_len()).map(move |len| {
            // `len` < 32 here, so the mask shift is in range.
            let masked = start & (u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0));
            to_net((masked, len))
        })
    }
}

/// A row of the store's allocation table, `UNIQUE (pool, prefix)`.
///
/// Committing an [`Allocation`] inserts one `Owned` row for its prefix and
/// one `Covers` row for every prefix of the pool that contains it:
///
/// - the `Owned` row is a plain `INSERT`: it fails if any row, owned or
///   covering, has that prefix (the block, or something inside it, is taken);
/// - a `Covers` row is `INSERT .. ON CONFLICT (pool, prefix) DO UPDATE SET
///   count = count + 1 WHERE kind = 'covers'`: it fails (zero rows) when
///   the prefix is owned (a block around it is taken).
///
/// Two CIDR blocks overlap exactly when one contains the other, so these two
/// rules refuse every overlapping commit, whichever snapshot the plans were
/// computed from, and two plans never both win. Releasing a VI deletes its
/// `Owned` rows and decrements (deleting at zero) their `Covers` rows.
/// [`Allocations::commit`] implements exactly these rules in memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoreRow {
    Owned {
        pool: Ipv4Net,
        prefix: Ipv4Net,
        owner: Owner,
    },
    Covers {
        pool: Ipv4Net,
        prefix: Ipv4Net,
    },
}

impl Plan {
    /// The rows a store inserts to commit this plan (see [`StoreRow`]).
    pub fn store_rows(&self) -> Vec<StoreRow> {
        let mut rows = Vec::new();
        for a in &self.allocations {
            rows.extend(a.covering_prefixes().map(|prefix| StoreRow::Covers {
                pool: a.pool,
                prefix,
            }));
            rows.push(StoreRow::Owned {
                pool: a.pool,
                prefix: a.prefix,
                owner: a.owner.clone(),
            });
        }
        rows
    }
}

/// Why a plan (or a stored allocation) could not be committed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommitError {
    #[error("VI {0} already holds addresses")]
    AlreadyCommitted(ViId),
    #[error("{prefix} is not inside pool {pool} of this domain")]
    NotInPool { pool: Ipv4Net, prefix: Ipv4Net },
    #[error("{prefix} for {owner} conflicts with {held} held by {held_by}; plan again")]
    Conflict {
        prefix: Ipv4Net,
        owner: Box<Owner>,
        held: Ipv4Net,
        held_by: Box<Owner>,
    },
    #[error("the plan is for VI {plan} but allocates {prefix} for {owner}")]
    ForeignOwner {
        plan: ViId,
        prefix: Ipv4Net,
        owner: Owner,
    },
}

/// Why a VI's addresses could not be released.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReleaseError {
    #[error("VI {0} holds no addresses")]
    UnknownVi(ViId),
}

/// How much of a pool is in use, for the Manager's API and UI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolUsage {
    #[serde(flatten)]
    pub pool: PoolRef,
    /// Addresses in the pool.
    pub total: u64,
    /// Addresses in allocated blocks (VI blocks count whole).
    pub used: u64,
    pub free: u64,
    /// The largest block still free, if any.
    pub largest_free: Option<Ipv4Net>,
    /// How many maximal free blocks the free space is cut into.
    pub free_blocks: usize,
}

impl PoolUsage {
    /// External fragmentation: the share of free space outside the largest
    /// free block (0 when the free space is one block or none).
    pub fn fragmentation(&self) -> f64 {
        match self.largest_free {
            Some(largest) if self.free > 0 => {
                1.0 - size(largest.prefix_len()) as f64 / self.free as f64
            }
            _ => 0.0,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct PoolState {
    pub(crate) pool: PoolRef,
    pub(crate) space: PoolSpace,
}

/// The allocations of a Service Switching domain at one moment: a snapshot
/// to plan from, and the in-memory reference of the store's commit.
#[derive(Debug, Clone)]
pub struct Allocations {
    config: DomainConfig,
    pools: Vec<PoolState>,
    vis: BTreeMap<ViId, Vec<Allocation>>,
}

impl Allocations {
    /// An empty domain (only the configured reservations are held). Of each
    /// home pool of /30 or wider, the network and broadcast addresses are
    /// reserved too.
    pub fn new(config: DomainConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut pools: Vec<PoolState> = config
            .pools()
            .into_iter()
            .map(|pool| PoolState {
                space: PoolSpace::new(pool.prefix),
                pool,
            })
            .collect();
        let mut reserved: Vec<(Ipv4Net, &str)> = config
            .reserved
            .iter()
            .map(|&r| (r, "configuration"))
            .collect();
        let mut edges = Vec::new();
        for state in &pools {
            let net = state.pool.prefix;
            if matches!(state.pool.kind, PoolKind::Home { .. }) && net.prefix_len() <= 30 {
                edges.push((
                    Ipv4Net::from(net.network()),
                    "network address of the home pool",
                ));
                edges.push((
                    Ipv4Net::from(net.broadcast()),
                    "broadcast address of the home pool",
                ));
            }
        }
        for (edge, note) in edges {
            if !config.reserved.iter().any(|r| r.contains(&edge)) {
                reserved.push((edge, note));
            }
        }
        for (prefix, note) in reserved {
            let owner = Owner::Reserved {
                note: note.to_owned(),
            };
            // Validation put every reservation inside a pool, without overlaps.
            if let Some(state) = pools.iter_mut().find(|s| s.pool.prefix.contains(&prefix)) {
                let _ = state.space.allocate(from_net(prefix), owner);
            }
        }
        Ok(Self {
            config,
            pools,
            vis: BTreeMap::new(),
        })
    }

    /// Rebuilds a snapshot from stored allocations.
    pub fn restore(
        config: DomainConfig,
        stored: impl IntoIterator<Item = Allocation>,
    ) -> Result<Self, RestoreError> {
        let mut this = Self::new(config)?;
        for allocation in stored {
            if matches!(allocation.owner, Owner::Reserved { .. }) {
                continue;
            }
            this.check(std::slice::from_ref(&allocation))?;
            this.apply(allocation);
        }
        Ok(this)
    }

    pub fn config(&self) -> &DomainConfig {
        &self.config
    }

    pub(crate) fn pools(&self) -> &[PoolState] {
        &self.pools
    }

    /// Whether `vi` holds addresses.
    pub fn holds(&self, vi: &ViId) -> bool {
        self.vis.contains_key(vi)
    }

    /// The allocations of `vi`, in commit order.
    pub fn of_vi(&self, vi: &ViId) -> &[Allocation] {
        self.vis.get(vi).map(Vec::as_slice).unwrap_or(&[])
    }

    /// How many VIs hold addresses.
    pub fn vi_count(&self) -> usize {
        self.vis.len()
    }

    /// Every allocated block (reservations included), pool by pool, in address order.
    pub fn iter(&self) -> impl Iterator<Item = Allocation> + '_ {
        self.pools.iter().flat_map(|state| {
            state.space.owned().map(move |(block, owner)| Allocation {
                pool: state.pool.prefix,
                prefix: to_net(block),
                owner: owner.clone(),
            })
        })
    }

    /// The free space: every maximal free block with its pool, pool by
    /// pool, largest block first.
    pub fn free_blocks(&self) -> impl Iterator<Item = (Ipv4Net, Ipv4Net)> + '_ {
        self.pools.iter().flat_map(|state| {
            state
                .space
                .free_list()
                .into_iter()
                .map(move |b| (state.pool.prefix, to_net(b)))
        })
    }

    /// Use of every pool, in configuration order.
    pub fn utilisation(&self) -> Vec<PoolUsage> {
        self.pools
            .iter()
            .map(|state| PoolUsage {
                pool: state.pool.clone(),
                total: state.space.total(),
                used: state.space.used(),
                free: state.space.free(),
                largest_free: state.space.largest_free().map(to_net),
                free_blocks: state.space.free_blocks(),
            })
            .collect()
    }

    fn pool_index(&self, pool: Ipv4Net) -> Option<usize> {
        self.pools.iter().position(|s| s.pool.prefix == pool)
    }

    /// Commits `plan`: all of its allocations or none. Fails when the VI
    /// already holds addresses or when any block overlaps one held now
    /// (another plan from the same snapshot won); the caller plans again.
    pub fn commit(&mut self, plan: &Plan) -> Result<(), CommitError> {
        if self.holds(&plan.vi) {
            return Err(CommitError::AlreadyCommitted(plan.vi.clone()));
        }
        if let Some(a) = plan
            .allocations
            .iter()
            .find(|a| a.owner.vi() != Some(&plan.vi))
        {
            return Err(CommitError::ForeignOwner {
                plan: plan.vi.clone(),
                prefix: a.prefix,
                owner: a.owner.clone(),
            });
        }
        self.check(&plan.allocations)?;
        for allocation in &plan.allocations {
            self.apply(allocation.clone());
        }
        if plan.allocations.is_empty() {
            // A VI without links or entry points still counts as committed.
            self.vis.entry(plan.vi.clone()).or_default();
        }
        Ok(())
    }

    fn check(&self, allocations: &[Allocation]) -> Result<(), CommitError> {
        for (i, a) in allocations.iter().enumerate() {
            let index = self
                .pool_index(a.pool)
                .filter(|&i| self.pools[i].space.contains(from_net(a.prefix)))
                .ok_or(CommitError::NotInPool {
                    pool: a.pool,
                    prefix: a.prefix,
                })?;
            if let Err((held, held_by)) = self.pools[index].space.check_free(from_net(a.prefix)) {
                return Err(CommitError::Conflict {
                    prefix: a.prefix,
                    owner: Box::new(a.owner.clone()),
                    held: to_net(held),
                    held_by: Box::new(held_by.clone()),
                });
            }
            if let Some(other) = allocations[..i]
                .iter()
                .find(|o| crate::config::overlaps(o.prefix, a.prefix))
            {
                return Err(CommitError::Conflict {
                    prefix: a.prefix,
                    owner: Box::new(a.owner.clone()),
                    held: other.prefix,
                    held_by: Box::new(other.owner.clone()),
                });
            }
        }
        Ok(())
    }

    /// Applies a checked allocation.
    fn apply(&mut self, allocation: Allocation) {
        if let Some(index) = self.pool_index(allocation.pool) {
            let block = from_net(allocation.prefix);
            if self.pools[index]
                .space
                .allocate(block, allocation.owner.clone())
                .is_ok()
            {
                if let Some(vi) = allocation.owner.vi() {
                    self.vis.entry(vi.clone()).or_default().push(allocation);
                }
            }
        }
    }

    /// Releases every address `vi` holds (on terminate) and returns the
    /// released allocations, so a store can delete the same rows.
    pub fn release(&mut self, vi: &ViId) -> Result<Vec<Allocation>, ReleaseError> {
        let allocations = self
            .vis
            .remove(vi)
            .ok_or_else(|| ReleaseError::UnknownVi(vi.clone()))?;
        for a in &allocations {
            if let Some(index) = self.pool_index(a.pool) {
                self.pools[index].space.release(from_net(a.prefix));
            }
        }
        Ok(allocations)
    }
}

/// Why stored allocations could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RestoreError {
    #[error("the domain configuration is invalid")]
    Config(#[from] ConfigError),
    #[error("the stored allocations are inconsistent")]
    Inconsistent(#[from] CommitError),
}

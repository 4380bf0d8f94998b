//! Address planning across a Service Switching domain.
//!
//! NEPTUNE-IaaS assigns "subnets to links and IP addresses to their
//! end-points" and ensures "non overlapping of address spaces used by
//! different infrastructures" (paper, section 2.3). Because a VI keeps its
//! private addresses when it migrates to another datacenter, private
//! addresses are unique across the whole domain, not per datacenter; its
//! Home Addresses come from the public pools of the datacenter it is first
//! deployed in and are kept for the VI's life.
//!
//! The crate is pure. Its shape follows the Manager's use:
//!
//! 1. load the stored allocations into an [`Allocations`] snapshot
//!    ([`Allocations::restore`]);
//! 2. [`plan`] a VI against it: a [`Plan`] that changes nothing and can be
//!    shown to an admin;
//! 3. commit the plan's flat list of [`Allocation`]s in one transaction;
//!    the store refuses a plan that overlaps anything committed since the
//!    snapshot (rows and constraints in [`StoreRow`]; the in-memory
//!    reference is [`Allocations::commit`]), and the Manager plans again;
//! 4. on terminate, [`Allocations::release`] (the store deletes the rows).
//!
//! Free space is a buddy system over CIDR blocks with best fit (module
//! `space`); [`Allocations::utilisation`] reports each pool's use.

pub use ipnet;

mod allocations;
mod config;
mod names;
mod plan;
mod request;
mod space;
mod topology;

pub use allocations::{
    Allocation, Allocations, CommitError, Owner, PoolUsage, ReleaseError, RestoreError, StoreRow,
};
pub use config::{ConfigError, DatacenterConfig, DomainConfig, PointToPoint, PoolKind, PoolRef};
pub use names::{DatacenterName, NameError, ViId, MAX_NAME_LEN};
pub use plan::{
    plan, EntryPointPlan, InterfacePlan, LargestFree, LinkPlan, Plan, PlanError, MAX_PIN_LEN,
};
pub use request::{EndPoint, EntryPointRequest, Gateway, InterfaceRef, LinkRequest, ViRequest};

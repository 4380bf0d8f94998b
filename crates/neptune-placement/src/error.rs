//! Errors of the placement engine.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A resource that can run out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resource {
    /// VM slots of a host.
    VmSlots,
    /// Virtual CPUs.
    Vcpu,
    /// Memory (MiB).
    RamMib,
    /// Disk (GiB).
    DiskGib,
    /// Distinct hosts (anti-affinity).
    DistinctHosts,
    /// Bandwidth of a physical link.
    Bandwidth,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::VmSlots => "VM slots",
            Self::Vcpu => "vCPU",
            Self::RamMib => "RAM (MiB)",
            Self::DiskGib => "disk (GiB)",
            Self::DistinctHosts => "distinct hosts",
            Self::Bandwidth => "bandwidth",
        })
    }
}

/// Why the engine could not place a VI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The input refers to something that does not exist or is malformed.
    #[error("invalid placement input: {0}")]
    Invalid(String),
    /// Not enough of `resource` at `location`.
    #[error(
        "nothing fits: {resource} ran out at {location} (needed {need}, available {available})"
    )]
    NothingFits {
        /// The resource that ran out.
        resource: Resource,
        /// Where: a host, a datacenter, the inventory, a node.
        location: String,
        /// How much was needed.
        need: u64,
        /// How much there was.
        available: u64,
    },
}

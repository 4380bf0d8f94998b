//! Neptune's shared vocabulary: typed identifiers (of topology elements and
//! of the Manager's resources), units as types, MAC
//! addresses, write-only secrets and the domain error.
//!
//! Pure: no I/O, no clock, no randomness. Everything here is small, `Copy`
//! where it can be, and validated at construction so that a value of one of
//! these types is always well formed.

mod error;
mod ids;
mod mac;
mod resource;
mod secret;
mod units;

pub use error::DomainError;
pub use ids::{InterfaceName, LinkId, NodeId, TopologyId, MAX_ID_LEN};
pub use mac::MacAddr;
pub use resource::{DatacenterId, HostId, JobId, SshKeyId, TemplateId, TokenId, UserId, ViId};
pub use secret::Secret;
pub use units::{parse_decimal, Mbps, Mhz, Mib};

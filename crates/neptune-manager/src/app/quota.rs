//! Quotas: what a user's VIs take (VMs, vCPUs, RAM, public and private
//! addresses) against the user's quota, checked at request and at accept.

use neptune_api as api;
use neptune_lifecycle::ViState;
use neptune_store::{Quota, ViRecord};

use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// States in which a VI counts against its owner's quota.
fn counts_against_quota(s: ViState) -> bool {
    !matches!(
        s,
        ViState::Defined | ViState::Rejected | ViState::Terminated
    )
}

/// Refuses when `vi` together with the owner's other committed VIs exceeds the quota.
pub async fn check_quota(state: &AppState, vi: &ViRecord) -> ApiResult<()> {
    let owner = state.store.user(vi.owner_id).await?;
    let others = state.store.list_vis(Some(vi.owner_id)).await?;
    let pools = &state.config.private_pools;
    let mut used = Usage::default();
    for other in others
        .iter()
        .filter(|o| o.id != vi.id && counts_against_quota(o.state))
    {
        // A design that cannot be planned takes no address.
        let private = state.views.private_addresses(other, pools)?.unwrap_or(0);
        used = used.plus(&state.views.summary(other)?, private);
    }
    // This VI's design must be plannable to count: say why it is not.
    let private = state
        .views
        .private_addresses(vi, pools)?
        .map_err(ApiError::Conflict)?;
    used = used.plus(&state.views.summary(vi)?, private);
    match used.over(&owner.quota) {
        Some((what, u, q)) => Err(ApiError::QuotaExceeded(format!(
            "this would bring {} to {u} {what}; the quota is {q}",
            owner.name
        ))),
        None => Ok(()),
    }
}

/// Resources summed over VIs. Every sum saturates, and a quota is at most
/// `i64::MAX`, so no design can wrap a sum below its quota.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Usage {
    vms: u64,
    vcpus: u64,
    ram_mib: u64,
    public_addresses: u64,
    private_addresses: u64,
}

impl Usage {
    fn plus(self, s: &api::ViSummary, private_addresses: u64) -> Usage {
        let n = |x: usize| u64::try_from(x).unwrap_or(u64::MAX);
        Usage {
            vms: self.vms.saturating_add(n(s.nodes)),
            vcpus: self.vcpus.saturating_add(s.vcpus),
            ram_mib: self.ram_mib.saturating_add(s.ram_mib),
            public_addresses: self.public_addresses.saturating_add(n(s.entry_points)),
            private_addresses: self.private_addresses.saturating_add(private_addresses),
        }
    }

    /// The first resource over its quota: its name, the usage, the quota.
    fn over(&self, q: &Quota) -> Option<(&'static str, u64, i64)> {
        [
            ("VMs", self.vms, q.vms),
            ("vCPUs", self.vcpus, q.vcpus),
            ("MiB of RAM", self.ram_mib, q.ram_mib),
            (
                "public addresses",
                self.public_addresses,
                q.public_addresses,
            ),
            (
                "private addresses",
                self.private_addresses,
                q.private_addresses,
            ),
        ]
        .into_iter()
        // A negative quota allows nothing.
        .find(|(_, used, quota)| u64::try_from(*quota).map_or(true, |q| *used > q))
    }
}

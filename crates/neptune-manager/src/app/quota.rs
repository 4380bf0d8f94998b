//! Quotas: what a user's VIs take (VMs, vCPUs, RAM, public and private
//! addresses) against the user's quota, checked at request and at accept.
//! What each VI takes is recorded in the store when it is requested and
//! accepted, and summed there for the VIs that count (requested and beyond:
//! not defined, rejected or terminated), so a check reads no other design.
//! The same sums, with the design quota's, say what a user holds
//! ([`holdings`]).

use neptune_api as api;
use neptune_store::{Quota, ViRecord, ViUsage};
use neptune_types::{UserId, ViId};

use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// What `vi`'s design takes of its owner's quota, private addresses aside.
fn design_usage(state: &AppState, vi: &ViRecord) -> ApiResult<ViUsage> {
    let summary = state.views.summary(vi)?;
    let n = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
    let count = |x: usize| i64::try_from(x).unwrap_or(i64::MAX);
    Ok(ViUsage {
        vms: count(summary.nodes),
        vcpus: n(summary.vcpus),
        ram_mib: n(summary.ram_mib),
        public_addresses: count(summary.entry_points),
        private_addresses: 0,
    })
}

/// What `vi` takes of its owner's quota, from its design (and its
/// committed address plan once it has one); `Err` says why its design
/// cannot be planned.
fn usage_of(state: &AppState, vi: &ViRecord) -> ApiResult<Result<ViUsage, String>> {
    let design = design_usage(state, vi)?;
    let private = state
        .views
        .private_addresses(vi, &state.config.private_pools)?;
    Ok(private.map(|p| ViUsage {
        private_addresses: i64::try_from(p).unwrap_or(i64::MAX),
        ..design
    }))
}

/// Refuses when `vi` together with the owner's other committed VIs exceeds
/// the quota; else what `vi` takes, to record with the change that makes
/// it count (a request). The others' usage is summed in the store from what each
/// recorded; one that recorded nothing yet (a VI requested by an older
/// version) is computed and recorded now.
pub async fn check_quota(state: &AppState, vi: &ViRecord) -> ApiResult<ViUsage> {
    let owner = state.store.user(vi.owner_id).await?;
    let mut used = committed(state, vi.owner_id, vi.id).await?;
    // This VI's design must be plannable to count: say why it is not.
    let this = usage_of(state, vi)?.map_err(ApiError::Conflict)?;
    used = used.plus(this);
    match used.over(&owner.quota) {
        Some((what, u, q)) => Err(ApiError::QuotaExceeded(format!(
            "this would bring {} to {u} {what}; the quota is {q}",
            owner.name
        ))),
        None => Ok(this),
    }
}

/// What the VIs of `owner` that count (but `except`) take together, from
/// what each recorded; one that recorded nothing yet (a VI requested by
/// an older version) is computed and recorded now.
async fn committed(state: &AppState, owner: UserId, except: ViId) -> ApiResult<Usage> {
    let (recorded, missing) = state.store.quota_usage(owner, except).await?;
    let mut used = Usage::from(recorded);
    for id in missing {
        let other = state.store.vi(id).await?;
        // A design that cannot be planned takes no address.
        let usage = match usage_of(state, &other)? {
            Ok(u) => u,
            Err(_) => design_usage(state, &other)?,
        };
        state.store.set_vi_usage(id, &usage).await?;
        used = used.plus(usage);
    }
    Ok(used)
}

/// What `user` holds of their quota now, counted as the checks count it:
/// the committed VIs' recorded usage and the design quota's VIs and text.
pub async fn holdings(state: &AppState, user: UserId) -> ApiResult<api::QuotaUsage> {
    let used = committed(state, user, ViId::nil()).await?;
    let designs = state.store.design_holdings(user).await?;
    let n = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
    Ok(api::QuotaUsage {
        vms: n(used.vms),
        vcpus: n(used.vcpus),
        ram_mib: n(used.ram_mib),
        public_addresses: n(used.public_addresses),
        designs: designs.designs,
        // Rounded up, as the design quota's refusal says it.
        design_mib: designs.bytes.saturating_add((1 << 20) - 1) >> 20,
        design_bytes: designs.bytes,
        private_addresses: n(used.private_addresses),
    })
}

/// What `vi` takes of its owner's quota once accepted with address plan
/// `plan`: recorded with the acceptance.
pub fn accepted_usage(
    state: &AppState,
    vi: &ViRecord,
    plan: &neptune_ipam::Plan,
) -> ApiResult<ViUsage> {
    Ok(ViUsage {
        private_addresses: i64::try_from(plan.private_addresses()).unwrap_or(i64::MAX),
        ..design_usage(state, vi)?
    })
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

impl From<ViUsage> for Usage {
    fn from(u: ViUsage) -> Usage {
        Usage::default().plus(u)
    }
}

impl Usage {
    fn plus(self, u: ViUsage) -> Usage {
        let n = |x: i64| u64::try_from(x).unwrap_or(0);
        Usage {
            vms: self.vms.saturating_add(n(u.vms)),
            vcpus: self.vcpus.saturating_add(n(u.vcpus)),
            ram_mib: self.ram_mib.saturating_add(n(u.ram_mib)),
            public_addresses: self.public_addresses.saturating_add(n(u.public_addresses)),
            private_addresses: self
                .private_addresses
                .saturating_add(n(u.private_addresses)),
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

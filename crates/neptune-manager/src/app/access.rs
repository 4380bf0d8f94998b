//! Who may see and change what: a user sees and changes only their own VIs
//! (another user's are "not found", so their existence does not leak);
//! administrators see all. The one place these rules are written.

use neptune_store::{JobRecord, ViRecord};
use neptune_types::UserId;
use neptune_types::{JobId, ViId};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// Whether the caller may see a VI of `owner`: its owner and administrators.
pub fn may_see(caller: &Caller, owner: UserId) -> bool {
    owner == caller.user.id || caller.is_admin()
}

/// The VI if the caller may see it; someone else's VI is "not found".
pub async fn visible(state: &AppState, caller: &Caller, id: ViId) -> ApiResult<ViRecord> {
    let vi = state.store.vi(id).await?;
    if !may_see(caller, vi.owner_id) {
        return Err(ApiError::NotFound("VI"));
    }
    Ok(vi)
}

/// The job if the caller may see its VI; another user's is "not found".
pub async fn visible_job(state: &AppState, caller: &Caller, id: JobId) -> ApiResult<JobRecord> {
    let job = state.store.job(id).await?;
    let vi = state.store.vi(job.vi_id).await?;
    if !may_see(caller, vi.owner_id) {
        return Err(ApiError::NotFound("job"));
    }
    Ok(job)
}

/// Refuses anyone but the VI's owner (an administrator included: designs
/// and requests are the tenant's own acts).
pub fn require_owner(caller: &Caller, vi: &ViRecord) -> ApiResult<()> {
    if vi.owner_id == caller.user.id {
        Ok(())
    } else {
        Err(ApiError::Forbidden("only the VI's owner may do this"))
    }
}

/// Whose VIs a caller lists: their own, or all of them (`None`) for an
/// administrator.
pub fn listed_owner(caller: &Caller) -> Option<UserId> {
    (!caller.is_admin()).then_some(caller.user.id)
}

//! Placement of a VI on hosts and of its addresses in the domain's pools,
//! as the application needs it: the home datacenter, the address plan
//! against what is stored, and [`Placing`], the one loop that plans on a
//! snapshot and commits with the store's checks (accept and resume).

use neptune_types::HostId;
use neptune_types::{DatacenterId, ViId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use neptune_store::{
    AddressRow, DatacenterRecord, HostRecord, HostUsage, Reservation, StoreError, Transition,
    ViRecord, VmRecord,
};
use neptune_topology::Topology;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::plan::{place, PlacementPlan, PlanError};
use crate::wiring::Wiring;
use crate::AppState;

/// One planning lock per datacenter: plans in different datacenters take
/// different hosts, and run at once; in one datacenter they would only
/// race for the same room and plan again. The lock is held while a
/// placement is planned, and the room it takes is then held in memory
/// ([`HeldRoom`]) until its commit to the store is over: the next plan in
/// the datacenter counts it as taken, without waiting for that commit
/// (tens of milliseconds behind the database's other writes). Addresses
/// are planned from the pools of the whole domain, so planning them takes
/// one lock for all datacenters, the [`AddressBook`]'s, held only while a
/// plan is made and reserved in it: the commit runs after, outside it.
#[derive(Debug, Default)]
pub struct Planning {
    datacenters: std::sync::Mutex<HashMap<DatacenterId, Arc<tokio::sync::Mutex<()>>>>,
    addresses: tokio::sync::Mutex<AddressBook>,
    room: std::sync::Mutex<PendingRoom>,
}

/// Room planned for VIs whose commit is under way, by reservation.
#[derive(Debug, Default)]
struct PendingRoom {
    next: u64,
    held: HashMap<u64, (DatacenterId, Vec<(HostId, HostUsage)>)>,
}

/// What the plans being committed in a datacenter take of its hosts.
#[derive(Debug, Default)]
pub struct Pending {
    by_host: HashMap<HostId, HostUsage>,
    /// VMs in all: how many more hosts a plan may need to read to find
    /// the room they leave.
    vms: usize,
}

impl Pending {
    /// `hosts` as they will be once the pending commits are done.
    fn apply(&self, hosts: &mut [HostRecord]) {
        for h in hosts {
            if let Some(u) = self.by_host.get(&h.id) {
                h.used += *u;
            }
        }
    }
}

/// Room of a datacenter's hosts held for a plan until its commit is over
/// (either way): dropping it gives the room back to the next plans, which
/// then see it taken in the store, or free.
#[derive(Debug)]
pub struct HeldRoom {
    planning: Arc<Planning>,
    token: u64,
}

impl Drop for HeldRoom {
    fn drop(&mut self) {
        self.planning.room().held.remove(&self.token);
    }
}

/// Reload the [`AddressBook`] from the store when it is older than this.
const ADDRESSES_FRESH_FOR: Duration = Duration::from_secs(5);

/// The domain's address allocations as this Manager last read them, kept
/// between accepts: reading and indexing every allocated prefix of the
/// domain for each accept costs time linear in the domain's VIs, inside
/// the domain-wide lock.
///
/// A kept copy may lack what other Managers allocated since, or still hold
/// what was released. Neither can commit a wrong plan, since the store
/// refuses a prefix that overlaps one it holds ([`StoreError::AddressTaken`]):
/// a plan refused so, or one that finds the pools full, is made again
/// from a fresh read. The copy gains this Manager's own commits as they
/// happen, and is read again after [`ADDRESSES_FRESH_FOR`] or when the
/// datacenters change.
#[derive(Debug, Default)]
pub struct AddressBook {
    kept: Option<Kept>,
    /// Plans reserved in the kept copy and not yet known to be committed
    /// to the store or dropped: a copy read afresh holds them too, so a
    /// plan made meanwhile cannot take their addresses.
    reserved: HashMap<u64, neptune_ipam::Plan>,
    next_reservation: u64,
}

#[derive(Debug)]
struct Kept {
    domain: neptune_ipam::DomainConfig,
    snapshot: neptune_ipam::Allocations,
    read_at: Instant,
}

impl AddressBook {
    /// The address plan of `topo` as VI `vi` homed in `home` (changes
    /// nothing; commit it with [`AddressBook::committed`]).
    pub async fn plan(
        &mut self,
        state: &AppState,
        vi: ViId,
        topo: &Topology,
        home: &str,
    ) -> ApiResult<neptune_ipam::Plan> {
        let datacenters = state.store.list_datacenters().await?;
        let domain = crate::plan::domain(&state.config.private_pools, &datacenters)
            .map_err(|e| ApiError::Conflict(e.to_string()))?;
        let fresh = match &self.kept {
            Some(k) if k.domain == domain && k.read_at.elapsed() < ADDRESSES_FRESH_FOR => false,
            _ => {
                self.read(state, domain.clone()).await?;
                true
            }
        };
        let planned = self.planned(vi, topo, home);
        match planned {
            Err(_) if !fresh => {
                // Perhaps only the kept copy is full: what was released
                // since may make room.
                self.read(state, domain).await?;
                self.planned(vi, topo, home)
            }
            other => other,
        }
    }

    fn planned(&self, vi: ViId, topo: &Topology, home: &str) -> ApiResult<neptune_ipam::Plan> {
        let kept = self
            .kept
            .as_ref()
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no address snapshot")))?;
        crate::plan::addresses(&kept.snapshot, vi, topo, home)
            .map_err(|e| ApiError::Conflict(e.for_tenant()))
    }

    async fn read(
        &mut self,
        state: &AppState,
        domain: neptune_ipam::DomainConfig,
    ) -> ApiResult<()> {
        self.kept = None;
        let stored = state.store.owned_addresses().await?;
        let mut snapshot = crate::plan::snapshot(domain.clone(), &stored)
            .map_err(|e| ApiError::Internal(e.into()))?;
        for plan in self.reserved.values() {
            // One committed since is in the store already: refused here,
            // it is held all the same.
            let _ = snapshot.commit(plan);
        }
        self.kept = Some(Kept {
            domain,
            snapshot,
            read_at: Instant::now(),
        });
        Ok(())
    }

    /// Holds `plan`'s addresses in the kept copy until it is committed to
    /// the store or dropped (see [`Reserved`]), so that the book's lock
    /// need not be held while it is committed.
    pub fn reserve(&mut self, planning: &Arc<Planning>, plan: &neptune_ipam::Plan) -> Reserved {
        let token = self.next_reservation;
        self.next_reservation += 1;
        if let Some(kept) = &mut self.kept {
            if kept.snapshot.commit(plan).is_err() {
                self.kept = None;
            }
        }
        self.reserved.insert(token, plan.clone());
        Reserved {
            planning: planning.clone(),
            token,
            settled: false,
        }
    }

    /// Reservation `token` was committed to the store (the kept copy holds
    /// it already), or dropped: then the next plan is made from a fresh
    /// read, which holds what is still reserved.
    fn settle(&mut self, token: u64, committed: bool) {
        self.reserved.remove(&token);
        if !committed {
            self.kept = None;
        }
    }
}

/// Addresses reserved in the [`AddressBook`] for a plan being committed:
/// [`Reserved::committed`] once the store holds them; dropped otherwise
/// (a refused commit, an error on the way), which gives them back.
#[derive(Debug)]
pub struct Reserved {
    planning: Arc<Planning>,
    token: u64,
    settled: bool,
}

impl Reserved {
    /// The store holds the plan now.
    pub async fn committed(mut self) {
        self.settled = true;
        self.planning.addresses().await.settle(self.token, true);
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let token = self.token;
        if let Ok(mut book) = self.planning.addresses.try_lock() {
            book.settle(token, false);
            return;
        }
        // Held by a plan under way: settled as soon as it is done.
        let planning = self.planning.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { planning.addresses().await.settle(token, false) });
        }
    }
}

impl Planning {
    fn room(&self) -> std::sync::MutexGuard<'_, PendingRoom> {
        self.room
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The room held in `datacenter` by plans being committed.
    pub fn pending(&self, datacenter: DatacenterId) -> Pending {
        let mut out = Pending::default();
        for (dc, vms) in self.room().held.values() {
            if *dc != datacenter {
                continue;
            }
            for (host, u) in vms {
                *out.by_host.entry(*host).or_default() += *u;
            }
            out.vms += vms.len();
        }
        out
    }

    /// Holds the room `vms` take in `datacenter` until the guard drops.
    fn hold(self: &Arc<Self>, datacenter: DatacenterId, vms: &[VmRecord]) -> HeldRoom {
        let taken = vms.iter().map(|v| (v.host_id, v.usage())).collect();
        let mut room = self.room();
        let token = room.next;
        room.next += 1;
        room.held.insert(token, (datacenter, taken));
        HeldRoom {
            planning: self.clone(),
            token,
        }
    }

    async fn lock(&self, datacenter: DatacenterId) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut all = self
                .datacenters
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            all.entry(datacenter).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// The domain's address book, locked from planning a VI's addresses to
    /// committing them.
    pub async fn addresses(&self) -> tokio::sync::MutexGuard<'_, AddressBook> {
        self.addresses.lock().await
    }

    /// Drops the kept copy of the domain's addresses once it is stale (a
    /// plan made now would read them again first): after a burst of
    /// accepts it holds every VI's allocations, and would otherwise stay
    /// until the next accept, however long the domain stays quiet. A book
    /// in use is left alone.
    pub fn forget_stale_addresses(&self) {
        if let Ok(mut book) = self.addresses.try_lock() {
            if book
                .kept
                .as_ref()
                .is_some_and(|k| k.read_at.elapsed() >= ADDRESSES_FRESH_FOR)
            {
                book.kept = None;
            }
        }
    }
}

/// Plans a commit refused for want of room or addresses this many times.
const ATTEMPTS: u32 = 5;

/// What is placed: a VI's design in a datacenter, automatically or by an
/// administrator's manual map, with the MACs its design pins.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub vi: &'a ViRecord,
    pub topo: &'a Topology,
    pub dc: &'a DatacenterRecord,
    pub manual: Option<&'a HashMap<String, String>>,
    pub pins: &'a [AddressRow],
}

/// Placing a VI: plan on a snapshot of the hosts, commit with the store's
/// capacity and address checks, and plan again when another Manager took
/// the room or an address in between. Accept and resume both run it:
///
/// ```text
/// let mut placing = Placing::start(state, caller, target);
/// let committed = loop {
///     let (plan, hosts) = placing.plan().await?;
///     let reservation = ...;           // what the plan reserves
///     if let Some(vi) = placing.commit(&change, &reservation).await? {
///         break vi;
///     }
/// };
/// ```
#[derive(Debug)]
pub struct Placing<'a> {
    state: &'a AppState,
    caller: &'a Caller,
    target: Target<'a>,
    attempt: u32,
    /// The room of the last plan, until its commit is over. This Manager
    /// plans one VI at a time per datacenter, counting the room of the
    /// plans still being committed; Managers sharing a database are kept
    /// apart by its constraints.
    room: Option<HeldRoom>,
}

impl<'a> Placing<'a> {
    pub fn start(state: &'a AppState, caller: &'a Caller, target: Target<'a>) -> Placing<'a> {
        Placing {
            state,
            caller,
            target,
            attempt: 0,
            room: None,
        }
    }

    /// A placement on the hosts as they are now, less the room of the
    /// plans being committed, refused when it does not fit their uplinks.
    pub async fn plan(&mut self) -> ApiResult<(PlacementPlan, Vec<HostRecord>)> {
        self.attempt += 1;
        self.room = None;
        let t = self.target;
        let planning = &self.state.planning;
        let _planning = planning.lock(t.dc.id).await;
        // Taken before the hosts are read: a commit that ends between the
        // two is counted twice (a plan a little worse), never not at all.
        let pending = planning.pending(t.dc.id);
        let (plan, hosts) =
            plan_placement(self.state, t.vi.id, t.topo, t.dc, t.manual, &pending).await?;
        require_admissible(&plan)?;
        self.room = Some(planning.hold(t.dc.id, &plan.records));
        Ok((plan, hosts))
    }

    /// Commits `reservation` with the VI's move to `change`: the VI as
    /// stored, or `None` when the room or an address was taken meanwhile
    /// and planning again may succeed.
    pub async fn commit(
        &mut self,
        change: &Transition,
        reservation: &Reservation,
    ) -> ApiResult<Option<ViRecord>> {
        let t = self.target;
        let again = self.attempt < ATTEMPTS;
        let stored = self
            .state
            .store
            .transition_with_placement(t.vi.id, t.vi.state, change, reservation)
            .await;
        // Committed (the store counts the room now) or refused (it is free).
        self.room = None;
        match stored {
            Ok(vi) => Ok(Some(vi)),
            // An administrator's map is not planned again: it is theirs.
            Err(StoreError::NoRoom { .. }) if again && t.manual.is_none() => Ok(None),
            // A pinned MAC is not planned: planning again will not free it.
            Err(StoreError::AddressTaken { prefix })
                if t.pins.iter().any(|p| p.prefix == prefix) =>
            {
                Err(mac_taken(self.state, self.caller, &prefix).await)
            }
            Err(StoreError::AddressTaken { .. }) if again => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Hosts read for an automatic placement of a VI of `nodes` VMs: enough
/// for [`crate::plan::candidates`]' shortlist in all but odd cases.
fn roomiest_limit(nodes: usize) -> i64 {
    i64::try_from(nodes.saturating_mul(4).max(4 * crate::plan::MIN_CANDIDATES)).unwrap_or(i64::MAX)
}

/// A placement of `topo` in `dc` on the hosts as they are now, and the
/// hosts it read. An automatic placement reads only the datacenter's
/// roomiest hosts ([`Store::roomiest_hosts`]: the cost of a plan follows
/// the VI's size, not the datacenter's); should they not take the VI,
/// and for an administrator's map, every host of the datacenter.
///
/// [`Store::roomiest_hosts`]: neptune_store::Store::roomiest_hosts
pub async fn plan_placement(
    state: &AppState,
    vi: ViId,
    topo: &Topology,
    dc: &DatacenterRecord,
    manual: Option<&HashMap<String, String>>,
    pending: &Pending,
) -> ApiResult<(PlacementPlan, Vec<HostRecord>)> {
    if manual.is_none() {
        // Pending plans may fill some of the roomiest hosts: read as many
        // more as they have VMs.
        let limit = roomiest_limit(topo.nodes.len())
            .saturating_add(i64::try_from(pending.vms).unwrap_or(i64::MAX));
        let mut few = state.store.roomiest_hosts(dc.id, limit).await?;
        pending.apply(&mut few);
        if !few.is_empty() {
            if let Ok(plan) = place(vi, topo, dc, &few, None, seed(vi)) {
                if plan.view.admissible {
                    return Ok((plan, few));
                }
            }
        }
    }
    let mut hosts = state.store.hosts_in(dc.id).await?;
    pending.apply(&mut hosts);
    let plan = place(vi, topo, dc, &hosts, manual, seed(vi)).map_err(plan_error)?;
    Ok((plan, hosts))
}

/// The address plan of `topo` against the stored allocations (changes nothing).
pub async fn plan_addresses(
    state: &AppState,
    vi: ViId,
    topo: &Topology,
    home: &str,
) -> ApiResult<neptune_ipam::Plan> {
    let datacenters = state.store.list_datacenters().await?;
    let domain = crate::plan::domain(&state.config.private_pools, &datacenters)
        .map_err(|e| ApiError::Conflict(e.to_string()))?;
    let stored = state.store.owned_addresses().await?;
    let snapshot =
        crate::plan::snapshot(domain, &stored).map_err(|e| ApiError::Internal(e.into()))?;
    crate::plan::addresses(&snapshot, vi, topo, home)
        .map_err(|e| ApiError::Conflict(e.for_tenant()))
}

/// The home datacenter named in the request, or the first one.
pub async fn home_datacenter(state: &AppState, name: Option<&str>) -> ApiResult<DatacenterRecord> {
    match name {
        Some(name) => Ok((*state.views.datacenter(state.store.as_ref(), name).await?).clone()),
        None => state
            .store
            .list_datacenters()
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                ApiError::Conflict("no datacenter is registered to host the VI".to_owned())
            }),
    }
}

pub fn plan_error(err: PlanError) -> ApiError {
    match err {
        PlanError::Manual(_) => ApiError::InvalidRequest(err.to_string()),
        other => ApiError::Conflict(other.to_string()),
    }
}

/// Refuses a placement whose traffic between hosts would exceed a host's
/// uplink (the store would refuse its commit anyway; this says why).
pub fn require_admissible(plan: &PlacementPlan) -> ApiResult<()> {
    if plan.view.admissible {
        Ok(())
    } else {
        Err(ApiError::Conflict(format!(
            "no placement fits the hosts' uplinks: the VI's links between hosts need {} Mbit/s \
             and a host's uplink has less left (see the plan)",
            plan.view.cut_mbps
        )))
    }
}

/// A placement seed that is stable for a VI, so its plan preview and its
/// acceptance agree when nothing changed in between.
pub fn seed(vi: ViId) -> u64 {
    vi.uuid().as_u64_pair().0
}

/// How the links of a VI placed as `vms` are wired across `hosts`, its
/// addresses planned as `addresses`.
pub async fn wiring(
    state: &AppState,
    topo: &Topology,
    addresses: &neptune_ipam::Plan,
    vms: &[VmRecord],
    hosts: &[HostRecord],
) -> ApiResult<Wiring> {
    let mut host_of: HashMap<&str, Vec<HostId>> = HashMap::new();
    for v in vms {
        host_of
            .entry(v.node_id.as_str())
            .or_default()
            .push(v.host_id);
    }
    let placed: Vec<_> = hosts
        .iter()
        .filter(|h| vms.iter().any(|v| v.host_id == h.id))
        .cloned()
        .collect();
    let endpoints = crate::wiring::tunnel_endpoints(&placed).await;
    Wiring::new(
        topo,
        addresses,
        &state.config.private_pools,
        &host_of,
        hosts,
        &endpoints,
    )
    .map_err(|e| ApiError::Conflict(e.to_string()))
}

/// The public gateway of datacenter `dc`, which entry points route through.
pub fn gateway_of(dc: &DatacenterRecord) -> ApiResult<Option<std::net::Ipv4Addr>> {
    crate::plan::public_gateway(dc).map_err(|e| ApiError::Conflict(e.to_string()))
}

/// The address-table rows that hold the MACs pinned in `topo`; a pin in
/// Neptune's own range is refused.
pub fn pinned_mac_rows(topo: &Topology) -> ApiResult<Vec<AddressRow>> {
    crate::seed::pinned_macs(topo)
        .into_iter()
        .map(|(mac, at)| {
            if crate::seed::is_neptunes(mac) {
                return Err(ApiError::InvalidRequest(format!(
                    "{at} pins MAC {mac}, in the range Neptune allocates from (02:4E:...): leave it out and Neptune chooses one"
                )));
            }
            Ok(AddressRow {
                pool: crate::seed::MAC_POOL.to_owned(),
                prefix: crate::seed::mac_text(mac),
                owner: Some(format!("\"{at}\"")),
            })
        })
        .collect()
}

/// The refusal of a pinned MAC that another VI holds: it names the VI to
/// its owner (and administrators), and no other tenant's.
async fn mac_taken(state: &AppState, caller: &Caller, mac: &str) -> ApiError {
    let holder = match state.store.owned_addresses().await {
        Ok(rows) => rows
            .into_iter()
            .find(|r| r.pool == crate::seed::MAC_POOL && r.prefix == mac)
            .and_then(|r| r.vi_id),
        Err(e) => return e.into(),
    };
    let named = match holder {
        Some(id) => match state.store.vi(id).await {
            Ok(v) if caller.is_admin() || v.owner_id == caller.user.id => {
                format!("VI {:?} ({})", v.name, v.id)
            }
            _ => "another tenant's VI".to_owned(),
        },
        None => "another VI".to_owned(),
    };
    ApiError::Conflict(format!(
        "MAC {mac} is pinned in the design and {named} holds it"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use neptune_store::HostState;
    use uuid::Uuid;

    fn host(dc: DatacenterId) -> HostRecord {
        HostRecord {
            id: Uuid::new_v4().into(),
            datacenter_id: dc,
            name: "h".into(),
            agent_url: String::new(),
            cpus: 16,
            ram_mib: 65536,
            disk_mib: 1 << 20,
            vm_slots: 8,
            uplink_mbps: 1000,
            state: HostState::Ready,
            last_seen: 0,
            used: HostUsage {
                vcpus: 1,
                ..HostUsage::default()
            },
        }
    }

    fn vm(host: HostId, vcpus: i64) -> VmRecord {
        VmRecord {
            vi_id: Uuid::new_v4().into(),
            node_id: "n".into(),
            host_id: host,
            vcpus,
            ram_mib: 512,
            disk_mib: 1024,
            uplink_mbps: 10,
        }
    }

    #[test]
    fn held_room_counts_in_its_datacenter_until_dropped() {
        let planning = Arc::new(Planning::default());
        let (dc, other) = (Uuid::new_v4().into(), Uuid::new_v4().into());
        let (a, b) = (host(dc), host(dc));
        let first = planning.hold(dc, &[vm(a.id, 2), vm(a.id, 3)]);
        let second = planning.hold(dc, &[vm(b.id, 4)]);
        let _elsewhere = planning.hold(other, &[vm(a.id, 8)]);
        let pending = planning.pending(dc);
        assert_eq!(pending.vms, 3);
        let mut hosts = vec![a.clone(), b.clone()];
        pending.apply(&mut hosts);
        assert_eq!(
            hosts[0].used,
            HostUsage {
                vcpus: 6,
                ram_mib: 1024,
                disk_mib: 2048,
                slots: 2,
                uplink_mbps: 20,
            }
        );
        assert_eq!((hosts[1].used.vcpus, hosts[1].used.slots), (5, 1));
        // A commit over (either way) gives its room back.
        drop(first);
        let mut hosts = vec![a.clone()];
        planning.pending(dc).apply(&mut hosts);
        assert_eq!(hosts[0].used, a.used);
        drop(second);
        assert_eq!(planning.pending(dc).vms, 0);
        assert_eq!(planning.pending(other).vms, 1);
    }

    #[tokio::test]
    async fn a_stale_copy_of_the_addresses_is_dropped_a_fresh_one_kept() {
        let planning = Planning::default();
        let domain = crate::plan::domain(&["10.0.0.0/8".parse().unwrap()], &[]).unwrap();
        let kept = |age: Duration| Kept {
            domain: domain.clone(),
            snapshot: crate::plan::snapshot(domain.clone(), &[]).unwrap(),
            read_at: Instant::now() - age,
        };
        planning.addresses().await.kept = Some(kept(Duration::ZERO));
        planning.forget_stale_addresses();
        assert!(planning.addresses().await.kept.is_some());
        planning.addresses().await.kept = Some(kept(ADDRESSES_FRESH_FOR));
        // In use: left alone.
        {
            let _book = planning.addresses().await;
            planning.forget_stale_addresses();
        }
        assert!(planning.addresses().await.kept.is_some());
        planning.forget_stale_addresses();
        assert!(planning.addresses().await.kept.is_none());
    }
}

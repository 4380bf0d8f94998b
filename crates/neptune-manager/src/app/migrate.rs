//! Migration (paper, Section 3): a VI moved to another datacenter of the
//! Service Switching domain, keeping every private address and Home
//! Address. A running VI moves live, VM by VM; a suspended VI is resumed
//! there ("future reallocation"). Administrators move a VI at once; its
//! owner asks, and an administrator grants (migrating it) or refuses the
//! request, after seeing the plan.
//!
//! A live migration is one durable job:
//!
//! 1. the target hosts are reserved with the job (beside the slots the VMs
//!    hold, until the move is committed);
//! 2. the source hosts' link networks flood to the target hosts too, and
//!    the target switch delivers the VI's Home Addresses (visitors);
//! 3. every VM moves live, its disk copied ([`Step::MoveVm`]), the entry
//!    points after the others; its links'
//!    segments span both datacenters meanwhile, as they span hosts; the
//!    moment a VM runs in the target, the home switch binds its Home
//!    Addresses to the target switch's Care-of Address (or unbinds them
//!    when the VI comes home);
//! 4. the switch it left stops delivering them;
//! 5. the VMs take their target slots and free their old ones, and the VI
//!    is located in its new datacenter.
//!
//! Any failure undoes the finished steps, last first: VMs that moved move
//! back, the bindings and visitors are put back as they were.

use neptune_types::HostId;
use neptune_types::{DatacenterId, ViId};
use std::collections::HashMap;

use neptune_api as api;
use neptune_lifecycle::{Event, ViState};
use neptune_store::{
    DatacenterRecord, MigrationRequestRecord, Reservation, StoreError, Transition, ViRecord,
    VmRecord,
};

use super::access::visible;
use super::placement::{gateway_of, plan_error, seed, wiring, Placing, Target};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::jobs::{self, JobKind, Step};
use crate::switching::{home_addresses, tunnel_key};
use crate::{now_ms, AppState};

/// Where a VI is and may go.
struct Course {
    home: DatacenterId,
    from: DatacenterId,
    to: DatacenterRecord,
}

/// Checks that `vi` may move to the datacenter named `to`.
async fn course(state: &AppState, vi: &ViRecord, to: &str) -> ApiResult<Course> {
    // A running VI moves live; a suspended one is resumed there.
    if vi.state != ViState::Suspended && vi.state.next(Event::Migrate).is_err() {
        return Err(ApiError::Conflict(format!(
            "cannot migrate a VI that is {}: only a running or suspended VI can be migrated",
            vi.state
        )));
    }
    let home = vi.home_datacenter_id.ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "running VI {} has no home datacenter",
            vi.id
        ))
    })?;
    let from = vi.location_id.unwrap_or(home);
    let to = state.store.datacenter_by_name(to).await?;
    if to.id == from {
        return Err(ApiError::Conflict(format!(
            "the VI is in datacenter {} already",
            to.name
        )));
    }
    Ok(Course { home, from, to })
}

/// Moves a running or suspended VI to another datacenter (an
/// administrator), or asks for it (its owner: the request waits for an
/// administrator, and the VI is answered unchanged).
pub async fn migrate(
    state: &AppState,
    caller: &Caller,
    id: ViId,
    req: api::MigrateRequest,
) -> ApiResult<ViRecord> {
    let vi = visible(state, caller, id).await?;
    let course = course(state, &vi, &req.to).await?;
    if !caller.is_admin() {
        if req.placement.is_some() {
            return Err(ApiError::Forbidden("only administrators place VMs by hand"));
        }
        let request = MigrationRequestRecord {
            vi_id: vi.id,
            datacenter_id: course.to.id,
            requested_by: caller.user.id,
            requested_at: now_ms(),
        };
        return match state.store.request_migration(&request).await {
            Ok(()) => Ok(state.store.vi(vi.id).await?),
            Err(StoreError::Duplicate { .. }) => Err(ApiError::Conflict(
                "a request to move this VI waits for an administrator already".to_owned(),
            )),
            Err(e) => Err(e.into()),
        };
    }
    let manual: Option<HashMap<String, String>> = req.placement.map(|m| m.into_iter().collect());
    let moved = if vi.state == ViState::Suspended {
        super::suspend::resume_in(state, caller, &vi, Some(&course.to), manual.as_ref()).await?
    } else {
        live(state, caller, &vi, &course, manual.as_ref()).await?
    };
    state.store.delete_migration_request(vi.id).await?;
    Ok(moved)
}

/// Ends a waiting request: its owner takes it back, or an administrator
/// refuses it.
pub async fn cancel_request(state: &AppState, caller: &Caller, id: ViId) -> ApiResult<()> {
    let vi = visible(state, caller, id).await?;
    if state.store.delete_migration_request(vi.id).await? {
        Ok(())
    } else {
        Err(ApiError::NotFound("migration request"))
    }
}

/// Every waiting request (administrators), oldest first.
pub async fn requests(state: &AppState, caller: &Caller) -> ApiResult<Vec<MigrationRequestRecord>> {
    caller.require_admin()?;
    Ok(state.store.migration_requests().await?)
}

/// What moving the VI to `to` would do now; nothing is changed. For
/// administrators and the owner.
pub async fn preview(
    state: &AppState,
    caller: &Caller,
    id: ViId,
    to: &str,
) -> ApiResult<(api::MigrationPlan, String)> {
    let vi = visible(state, caller, id).await?;
    let course = course(state, &vi, to).await?;
    let topo = super::design::design_of(&vi)?;
    let hosts = state.store.list_hosts().await?;
    let plan = crate::plan::place(vi.id, &topo, &course.to, &hosts, None, seed(vi.id))
        .map_err(plan_error)?;
    let addresses = crate::plan::committed(&vi)?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("VI {} has no address plan", vi.id)))?;
    let split_mbps = topo
        .links
        .iter()
        .filter(|l| {
            let mut nodes: Vec<&str> = l.endpoints.iter().map(|e| e.node.as_str()).collect();
            nodes.sort_unstable();
            nodes.dedup();
            nodes.len() > 1
        })
        .map(|l| l.bandwidth.0)
        .sum();
    let copy_mib = topo.nodes.iter().map(|n| n.ram.0 + n.disk.0).sum();
    let bound_addresses = if course.to.id == course.home {
        Vec::new()
    } else {
        addresses
            .entry_points
            .iter()
            .map(|e| e.home_address.to_string())
            .collect()
    };
    let from = state
        .store
        .list_datacenters()
        .await?
        .into_iter()
        .find(|d| d.id == course.from)
        .map(|d| d.name)
        .unwrap_or_default();
    Ok((
        api::MigrationPlan {
            from,
            plan: api::Plan {
                addresses: crate::plan::address_view(&addresses),
                ..plan.view
            },
            split_mbps,
            copy_mib,
            bound_addresses,
        },
        course.to.name,
    ))
}

/// The steps that make a VI's Home Addresses follow it from datacenter
/// `from` to `to`: delivered there, routed there from home, no longer
/// delivered where it was; and the VI located there.
pub(super) fn follow(
    vi: &ViRecord,
    home: DatacenterId,
    from: DatacenterId,
    to: DatacenterId,
) -> ApiResult<Vec<Step>> {
    let addresses = home_addresses(vi).map_err(ApiError::Internal)?;
    let key = tunnel_key(vi.id);
    let located = |dc: DatacenterId| (dc != home).then_some(dc);
    Ok(addresses
        .iter()
        .map(|&address| Step::Visit {
            datacenter: to,
            address,
            key,
        })
        .chain(addresses.iter().map(|&address| Step::Route {
            address,
            home,
            to,
            from,
            key,
        }))
        .chain(addresses.iter().map(|&address| Step::Unvisit {
            datacenter: from,
            address,
            key,
        }))
        .chain([Step::Locate {
            to: located(to),
            from: located(from),
        }])
        .collect())
}

/// What a live migration is planned from.
struct Plan<'a> {
    vi: &'a ViRecord,
    topo: &'a neptune_topology::Topology,
    course: &'a Course,
    /// Where the VMs are.
    here: &'a [VmRecord],
    /// Where they go.
    there: &'a [VmRecord],
    /// The links wired over both sides.
    wired: &'a crate::wiring::Wiring,
    /// The VMs as their hosts run them, by name.
    running: &'a HashMap<String, neptune_hypervisor::VmSpec>,
    guests: jobs::GuestConfig<'a>,
}

/// The steps of a live migration (see the module's list). Pure.
fn steps(p: &Plan<'_>) -> ApiResult<Vec<Step>> {
    let (vi, topo, course) = (p.vi, p.topo, p.course);
    // Each source host's link networks reach the target hosts too.
    let mut joins: std::collections::BTreeMap<HostId, Vec<neptune_hypervisor::NetworkJoin>> =
        std::collections::BTreeMap::new();
    for vm in p.here {
        let Some(node) = topo.nodes.iter().find(|n| n.id.as_str() == vm.node_id) else {
            continue;
        };
        for nic in jobs::nics(vi.id, topo, node, vm.host_id, p.wired, p.guests.addresses) {
            let networks = joins.entry(vm.host_id).or_default();
            if nic.segment.is_some() && !networks.iter().any(|j| j.network == nic.network) {
                networks.push(neptune_hypervisor::NetworkJoin {
                    network: nic.network,
                    segment: nic.segment,
                });
            }
        }
    }
    let joins = joins
        .into_iter()
        .filter(|(_, networks)| !networks.is_empty())
        .map(|(host, networks)| Step::JoinSegments { host, networks });
    let mut moves = Vec::new();
    for node in &topo.nodes {
        let id = node.id.as_str();
        let (Some(src), Some(dst)) = (
            p.here.iter().find(|v| v.node_id == id),
            p.there.iter().find(|v| v.node_id == id),
        ) else {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "node {id} is not placed on both sides"
            )));
        };
        let name = jobs::vm_name(vi.id, id);
        let back = p.running.get(&name).cloned().ok_or_else(|| {
            ApiError::Conflict(format!(
                "VM {name} (node {id}) is not on its host: the VI needs an operator"
            ))
        })?;
        let homes = p
            .guests
            .addresses
            .entry_points
            .iter()
            .filter(|e| e.node.as_str() == id)
            .map(|e| jobs::HomeRoute {
                address: e.home_address,
                home: course.home,
                key: tunnel_key(vi.id),
            })
            .collect();
        moves.push(Step::MoveVm {
            homes,
            from: src.host_id,
            to: dst.host_id,
            spec: jobs::vm_spec(vi.id, topo, node, dst.host_id, p.wired, p.guests),
            back,
        });
    }
    // Entry points last, a batch of their own (see Step::MoveVm).
    moves.sort_by_key(|s| matches!(s, Step::MoveVm { homes, .. } if !homes.is_empty()));
    let mut follow = follow(vi, course.home, course.from, course.to.id)?;
    // Of `follow`, the visits come first and the routes (which each VM's
    // move did for its own addresses already, the moment it ran in the
    // target: these confirm them, and wait for a switch that did not
    // answer) and removals after the moves; committing the moves locates
    // the VI.
    follow.retain(|s| !matches!(s, Step::Locate { .. }));
    let visits = follow
        .iter()
        .take_while(|s| matches!(s, Step::Visit { .. }))
        .count();
    let after: Vec<Step> = follow.split_off(visits);
    Ok([Step::HoldMoves]
        .into_iter()
        .chain(joins)
        .chain(follow)
        .chain(moves)
        .chain(after)
        .chain([Step::CommitMoves {
            location: (course.to.id != course.home).then_some(course.to.id),
        }])
        .collect())
}

/// Starts the live migration of a running VI (see the module's steps).
async fn live(
    state: &AppState,
    caller: &Caller,
    vi: &ViRecord,
    course: &Course,
    manual: Option<&HashMap<String, String>>,
) -> ApiResult<ViRecord> {
    let topo = super::design::design_of(vi)?;
    let addresses = crate::plan::committed(vi)?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("VI {} has no address plan", vi.id)))?;
    let keys = super::deploy::owner_keys(state, vi.owner_id).await?;
    let home_dc = state
        .store
        .list_datacenters()
        .await?
        .into_iter()
        .find(|d| d.id == course.home)
        .ok_or(ApiError::NotFound("datacenter"))?;
    // Guests keep the configuration they were given at home: nothing
    // inside a VM changes when it moves.
    let public_gateway = gateway_of(&home_dc)?;
    let vms = state.store.vms(vi.id).await?;
    let running = super::suspend::running_specs(state, &vms).await?;
    let mut here_hosts: Vec<HostId> = vms.iter().map(|v| v.host_id).collect();
    here_hosts.sort_unstable();
    here_hosts.dedup();
    let target = Target {
        vi,
        topo: &topo,
        dc: &course.to,
        manual,
        pins: &[],
    };
    let mut placing = Placing::start(state, caller, target);
    let (migrating, job) = loop {
        let (plan, mut hosts) = placing.plan().await?;
        // While the VI is split, each link spans the hosts of both sides
        // (the plan read the target datacenter's).
        hosts.extend(state.store.hosts_by_id(&here_hosts).await?);
        let both: Vec<_> = vms.iter().chain(&plan.records).cloned().collect();
        let wired = wiring(state, &topo, &addresses, &both, &hosts).await?;
        let steps = steps(&Plan {
            vi,
            topo: &topo,
            course,
            here: &vms,
            there: &plan.records,
            wired: &wired,
            running: &running,
            guests: jobs::GuestConfig {
                addresses: &addresses,
                ssh_keys: &keys,
                public_gateway,
            },
        })?;
        let job = state
            .jobs
            .new_job(vi.id, JobKind::Migrate, &steps)
            .map_err(ApiError::Internal)?;
        let change = Transition {
            to: vi.state.next(Event::Migrate)?,
            actor: caller.user.id,
            at: now_ms(),
            reject_reason: None,
            home_datacenter_id: None,
            usage: None,
        };
        let reservation = Reservation {
            moves: plan.records,
            job: Some(job.clone()),
            ..Default::default()
        };
        if let Some(migrating) = placing.commit(&change, &reservation).await? {
            break (migrating, job);
        }
    };
    drop(placing);
    state.jobs.spawn(job.id);
    Ok(migrating)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use neptune_types::UserId;
    use std::collections::HashMap;
    use std::net::IpAddr;
    use uuid::Uuid;

    use neptune_store::{DatacenterRecord, HostRecord, HostState, HostUsage};

    use super::*;
    use crate::jobs::HomeRoute;

    const SHOP: &str = include_str!("../../../neptune-topology/testdata/web-with-links.xml");

    fn dc(name: &str, pool: &str) -> DatacenterRecord {
        DatacenterRecord {
            public_gateway: None,
            id: Uuid::new_v4().into(),
            name: name.into(),
            created_at: 0,
            home_pools: vec![pool.into()],
        }
    }

    fn host(dc: &DatacenterRecord, name: &str, ip: &str) -> HostRecord {
        HostRecord {
            id: Uuid::new_v4().into(),
            datacenter_id: dc.id,
            name: name.into(),
            agent_url: format!("http://{ip}:7070"),
            cpus: 8,
            ram_mib: 8192,
            disk_mib: 1 << 20,
            vm_slots: 8,
            uplink_mbps: 0,
            state: HostState::Ready,
            last_seen: 0,
            used: HostUsage::default(),
        }
    }

    fn slot(vi: ViId, node: &str, host: &HostRecord) -> VmRecord {
        VmRecord {
            vi_id: vi,
            node_id: node.into(),
            host_id: host.id,
            vcpus: 1,
            ram_mib: 512,
            disk_mib: 1024,
            uplink_mbps: 0,
        }
    }

    /// The shop (gw in front of web1 and web2 on one LAN) moves from napoli
    /// (all on one host) to roma (gw and web1 on one host, web2 on
    /// another): the source host floods the LAN to both roma hosts first,
    /// roma delivers the Home Address before any VM moves, gw's move
    /// carries its Home Address (routed from home, napoli, as soon as gw
    /// runs in roma) and no other move does, the route is confirmed and
    /// napoli stops delivering it after every move, and the moves are
    /// committed last, locating the VI in roma. Undone, a move goes back
    /// and routes back.
    #[test]
    fn a_live_migration_is_planned_in_order() {
        let napoli = dc("napoli", "192.0.2.0/24");
        let roma = dc("roma", "198.51.100.0/24");
        let pools = ["10.0.0.0/8".parse().unwrap()];
        let domain = crate::plan::domain(&pools, &[napoli.clone(), roma.clone()]).unwrap();
        let snapshot = crate::plan::snapshot(domain, &[]).unwrap();
        let topo = neptune_topology::from_xml(SHOP).unwrap();
        let vi_id = ViId::from(Uuid::new_v4());
        let addresses = crate::plan::addresses(&snapshot, vi_id, &topo, "napoli").unwrap();
        let vi = ViRecord {
            id: vi_id,
            owner_id: UserId::from(Uuid::new_v4()),
            name: "shop".into(),
            state: ViState::Running,
            design_xml: SHOP.into(),
            home_datacenter_id: Some(napoli.id),
            reject_reason: None,
            version: 1,
            created_at: 0,
            updated_at: 0,
            address_plan: Some(serde_json::to_string(&addresses).unwrap()),
            location_id: None,
        };
        let n1 = host(&napoli, "n1", "10.9.1.1");
        let (r1, r2) = (host(&roma, "r1", "10.9.2.1"), host(&roma, "r2", "10.9.2.2"));
        let here: Vec<VmRecord> = ["gw", "web1", "web2"]
            .iter()
            .map(|n| slot(vi_id, n, &n1))
            .collect();
        let there = vec![
            slot(vi_id, "gw", &r1),
            slot(vi_id, "web1", &r1),
            slot(vi_id, "web2", &r2),
        ];
        let hosts = [n1.clone(), r1.clone(), r2.clone()];
        let endpoints: HashMap<HostId, IpAddr> = hosts
            .iter()
            .map(|h| (h.id, h.agent_url[7..15].parse().unwrap()))
            .collect();
        let mut host_of: HashMap<&str, Vec<HostId>> = HashMap::new();
        for v in here.iter().chain(&there) {
            host_of
                .entry(v.node_id.as_str())
                .or_default()
                .push(v.host_id);
        }
        let wired =
            crate::wiring::Wiring::new(&topo, &addresses, &pools, &host_of, &hosts, &endpoints)
                .unwrap();
        let running: HashMap<String, neptune_hypervisor::VmSpec> = topo
            .nodes
            .iter()
            .map(|n| {
                let spec = jobs::vm_spec(
                    vi_id,
                    &topo,
                    n,
                    n1.id,
                    &wired,
                    jobs::GuestConfig {
                        addresses: &addresses,
                        ssh_keys: &[],
                        public_gateway: None,
                    },
                );
                (spec.name.clone(), spec)
            })
            .collect();
        let course = Course {
            home: napoli.id,
            from: napoli.id,
            to: roma.clone(),
        };
        let planned = steps(&Plan {
            vi: &vi,
            topo: &topo,
            course: &course,
            here: &here,
            there: &there,
            wired: &wired,
            running: &running,
            guests: jobs::GuestConfig {
                addresses: &addresses,
                ssh_keys: &[],
                public_gateway: None,
            },
        })
        .unwrap();
        let home: std::net::Ipv4Addr = "192.0.2.10".parse().unwrap();
        let kinds: Vec<String> = planned
            .iter()
            .map(|s| s.name().split(' ').next().unwrap().to_owned())
            .collect();
        assert_eq!(
            kinds,
            ["reserve", "widen", "deliver", "move", "move", "move", "route", "stop", "commit"],
            "{planned:#?}"
        );
        match &planned[1] {
            Step::JoinSegments { host, networks } => {
                assert_eq!(*host, n1.id);
                let peers = &networks[0].segment.as_ref().unwrap().peers;
                let ips: Vec<String> = peers.iter().map(|p| p.ip().to_string()).collect();
                assert_eq!(ips, ["10.9.2.1", "10.9.2.2"], "both roma hosts");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(planned[2],
            Step::Visit { datacenter, address, .. } if datacenter == roma.id && address == home));
        let homes: Vec<(String, Vec<HomeRoute>)> = planned[3..6]
            .iter()
            .map(|s| match s {
                Step::MoveVm { spec, homes, .. } => (spec.name.clone(), homes.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        // The entry point last, alone: the others move together first.
        assert!(homes[2].0.ends_with("-gw"), "{homes:?}");
        assert_eq!(jobs::batch_end(&planned, 3), 5, "the two backends together");
        assert_eq!(jobs::batch_end(&planned, 5), 6, "the gateway alone");
        for (name, routes) in &homes {
            if name.ends_with("-gw") {
                assert_eq!(
                    routes,
                    &[HomeRoute {
                        address: home,
                        home: napoli.id,
                        key: tunnel_key(vi_id),
                    }]
                );
            } else {
                assert!(routes.is_empty(), "{name} has no Home Address");
            }
        }
        assert!(matches!(planned[6],
            Step::Route { address, home: h, to, from, .. }
                if address == home && h == napoli.id && to == roma.id && from == napoli.id));
        assert!(matches!(planned[7],
            Step::Unvisit { datacenter, address, .. } if datacenter == napoli.id && address == home));
        assert_eq!(
            planned[8],
            Step::CommitMoves {
                location: Some(roma.id)
            }
        );
        // Undone, the gateway's move goes back to n1 and routes home.
        let gw = planned[3..6]
            .iter()
            .find(|s| matches!(s, Step::MoveVm { spec, .. } if spec.name.ends_with("-gw")))
            .unwrap();
        match gw.undo().unwrap() {
            Step::MoveVm {
                to, homes, spec, ..
            } => {
                assert_eq!(to, n1.id);
                assert_eq!(homes.len(), 1, "routed back with it");
                assert_eq!(spec, running[&jobs::vm_name(vi_id, "gw")]);
            }
            other => panic!("{other:?}"),
        }
    }
}

//! Service Switching from the Manager's side: what each datacenter's Edge
//! Service Switch must hold for the VIs the store knows, and the signed
//! calls that put it there.
//!
//! A Home Address of a VI is a **visitor** at the switch of the datacenter
//! its VMs run in (its *location*), and, while that is not its home
//! datacenter, **bound** at the home switch to the location switch's
//! Care-of Address. Every update takes a fresh generation from the store's
//! per-address counter ([`neptune_store::Store::next_generation`]), so no
//! update can ever be older than one already applied, whichever Manager or
//! job sends it. A switch that does not answer is an
//! [`SwitchError::Unreachable`], which jobs wait out as they wait for a
//! host; a datacenter without a registered switch is skipped (its VIs are
//! reachable only inside it), and drift repair ([`repair`]) fills it in
//! once one is registered.

use neptune_types::{DatacenterId, ViId};
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use neptune_lifecycle::ViState;
use neptune_store::{Store, SwitchRecord, ViRecord};
use neptune_switch::auth::SwitchKey;
use neptune_switch::client::{ControlClient, Reply};
use neptune_switch::state::{MobilityBinding, SwitchTable, Visitor};
use serde::Deserialize;

/// Why a switch could not be driven.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("the switch of datacenter {datacenter} at {url} does not answer")]
    Unreachable {
        datacenter: DatacenterId,
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the switch of datacenter {datacenter} refused {what} ({status} {code}): {message}")]
    Refused {
        datacenter: DatacenterId,
        what: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("the switch's key")]
    Key(#[from] neptune_switch::auth::KeyFileError),
    #[error("the switch URL {0:?} is not http://IP:PORT")]
    Url(String),
    #[error("the switch of datacenter {datacenter} answered a state that does not parse")]
    State {
        datacenter: DatacenterId,
        #[source]
        source: serde_json::Error,
    },
    #[error("the store")]
    Store(#[from] neptune_store::StoreError),
}

/// The control address of a switch URL: `http://IP:PORT` (a trailing `/`
/// allowed). Names are refused: the Manager signs for one address, and a
/// name that resolves elsewhere later would send its updates there.
pub fn control_address(url: &str) -> Result<SocketAddr, SwitchError> {
    url.strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| SwitchError::Url(url.to_owned()))
}

/// The key a switch shares with the Manager, read from its file at each
/// use: a key rotated on disk is picked up without a restart.
pub fn key_of(switch: &SwitchRecord) -> Result<SwitchKey, SwitchError> {
    Ok(SwitchKey::from_file(Path::new(&switch.key_file))?)
}

fn client(switch: &SwitchRecord) -> Result<ControlClient, SwitchError> {
    Ok(ControlClient::new(
        control_address(&switch.url)?,
        key_of(switch)?,
    ))
}

/// What `GET /v1/state` answers, as far as the Manager reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct SwitchState {
    pub name: String,
    pub care_of: Ipv4Addr,
    #[serde(default)]
    pub home_prefixes: Vec<String>,
    #[serde(default)]
    pub peers: Vec<Ipv4Addr>,
    pub table: SwitchTable,
}

/// One signed call, off the runtime's threads (the client blocks). A
/// refused signature is signed again once, a second later: a switch that
/// started within the second refuses requests signed in it.
async fn call(
    switch: &SwitchRecord,
    method: &'static str,
    target: String,
    body: String,
) -> Result<Reply, SwitchError> {
    let mut reply = call_once(switch, method, target.clone(), body.clone()).await?;
    if reply.status == 401 {
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        reply = call_once(switch, method, target, body).await?;
    }
    Ok(reply)
}

async fn call_once(
    switch: &SwitchRecord,
    method: &'static str,
    target: String,
    body: String,
) -> Result<Reply, SwitchError> {
    let client = client(switch)?;
    let url = switch.url.clone();
    let datacenter = switch.datacenter_id;
    let reply = tokio::task::spawn_blocking(move || client.call(method, &target, &body))
        .await
        .map_err(|e| SwitchError::Unreachable {
            datacenter,
            url: url.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
    reply.map_err(|source| SwitchError::Unreachable {
        datacenter,
        url,
        source,
    })
}

fn refused(switch: &SwitchRecord, what: &str, reply: &Reply) -> SwitchError {
    let (code, message) = match reply.error() {
        Some(e) => (e.code, e.message),
        None => (String::new(), reply.body.chars().take(200).collect()),
    };
    SwitchError::Refused {
        datacenter: switch.datacenter_id,
        what: what.to_owned(),
        status: reply.status,
        code,
        message,
    }
}

/// The switch's configuration and table.
pub async fn state(switch: &SwitchRecord) -> Result<SwitchState, SwitchError> {
    let reply = call(switch, "GET", "/v1/state".to_owned(), String::new()).await?;
    if reply.status != 200 {
        return Err(refused(switch, "reading its state", &reply));
    }
    serde_json::from_str(&reply.body).map_err(|source| SwitchError::State {
        datacenter: switch.datacenter_id,
        source,
    })
}

/// An entry of a switch's table for one address, as the Manager wants it
/// (the generation is taken when it is sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Deliver the address here, on the switch's port.
    Visit { vi: String, key: u32 },
    /// Stop delivering it here.
    Unvisit,
    /// Tunnel it to the switch at `care_of` (sent to its home switch).
    Bind {
        care_of: Ipv4Addr,
        vi: String,
        key: u32,
    },
    /// Stop tunnelling it (it is home, or gone).
    Unbind,
}

impl Change {
    fn describe(&self, address: Ipv4Addr) -> String {
        match self {
            Change::Visit { .. } => format!("visitor {address}"),
            Change::Unvisit => format!("the removal of visitor {address}"),
            Change::Bind { care_of, .. } => format!("binding {address} -> {care_of}"),
            Change::Unbind => format!("the removal of binding {address}"),
        }
    }

    /// The generation the switch holds for this address's entry of the
    /// same table, if any.
    fn current(&self, table: &SwitchTable, address: Ipv4Addr) -> u64 {
        match self {
            Change::Visit { .. } | Change::Unvisit => table
                .visitors
                .get(&address)
                .map(|v| v.generation)
                .or_else(|| table.removed_visitors.get(&address).map(|r| r.generation)),
            Change::Bind { .. } | Change::Unbind => table
                .bindings
                .get(&address)
                .map(|b| b.generation)
                .or_else(|| table.removed_bindings.get(&address).map(|r| r.generation)),
        }
        .unwrap_or(0)
    }
}

/// The tunnel key of a VI's addresses: 24 bits of its id. It labels the
/// VI's traffic between switches (the VXLAN-GPE VNI); two VIs sharing one
/// changes nothing in delivery, which is by address.
pub fn tunnel_key(vi: ViId) -> u32 {
    let b = vi.uuid().into_bytes();
    u32::from_be_bytes([0, b[0], b[1], b[2]])
}

/// Sends `change` of `address` to `switch`, with a generation newer than
/// any the store gave before and than the one the switch holds (a switch
/// restored from an old table, or a store restored from an old backup, is
/// caught up with). A visitor whose port is not there yet is kept by the
/// switch, which applies it once the port appears: that is done too.
pub async fn apply(
    store: &dyn Store,
    switch: &SwitchRecord,
    address: Ipv4Addr,
    change: &Change,
) -> Result<(), SwitchError> {
    let ready = prepare(store, switch, address, change.clone()).await?;
    send(store, &ready).await
}

/// An update made ready ahead of its time: its switch found and its
/// generation taken, so that sending it is one call. A moving VM's
/// binding is prepared before the move, and sent the moment its guest
/// resumes.
#[derive(Debug, Clone)]
pub struct Prepared {
    switch: SwitchRecord,
    address: Ipv4Addr,
    change: Change,
    generation: u64,
}

/// `change` of `address` at `switch`, with a fresh generation.
pub async fn prepare(
    store: &dyn Store,
    switch: &SwitchRecord,
    address: Ipv4Addr,
    change: Change,
) -> Result<Prepared, SwitchError> {
    let generation = store.next_generation(&address.to_string(), 0).await?;
    Ok(Prepared {
        switch: switch.clone(),
        address,
        change,
        generation: u64::try_from(generation).unwrap_or(0).max(1),
    })
}

/// Sends a prepared update. A switch that holds a newer generation for
/// the entry (another update came between, or the switch's table was
/// restored) gets the update again with one above it, twice at most.
pub async fn send(store: &dyn Store, ready: &Prepared) -> Result<(), SwitchError> {
    let Prepared {
        switch,
        address,
        change,
        ..
    } = ready;
    let address = *address;
    let mut generation = ready.generation;
    let mut tries = 0;
    loop {
        tries += 1;
        let (method, target, body) = match change {
            Change::Visit { vi, key } => {
                let visitor = Visitor {
                    port: switch.port.clone(),
                    via: switch.via.as_deref().and_then(|v| v.parse().ok()),
                    vi: vi.clone(),
                    key: *key,
                    generation,
                    reverse_tunnel: None,
                };
                (
                    "PUT",
                    format!("/v1/visitors/{address}"),
                    serde_json::to_string(&visitor).unwrap_or_default(),
                )
            }
            Change::Unvisit => (
                "DELETE",
                format!("/v1/visitors/{address}?generation={generation}"),
                String::new(),
            ),
            Change::Bind { care_of, vi, key } => {
                let binding = MobilityBinding {
                    care_of: *care_of,
                    vi: vi.clone(),
                    key: *key,
                    generation,
                };
                (
                    "PUT",
                    format!("/v1/bindings/{address}"),
                    serde_json::to_string(&binding).unwrap_or_default(),
                )
            }
            Change::Unbind => (
                "DELETE",
                format!("/v1/bindings/{address}?generation={generation}"),
                String::new(),
            ),
        };
        let reply = call(switch, method, target, body).await?;
        match (reply.status, reply.code().as_deref()) {
            (200, _) => return Ok(()),
            (503, Some(neptune_switch::api::codes::DATA_PLANE_PENDING)) => {
                tracing::warn!(datacenter = %switch.datacenter_id, %address,
                    "the switch keeps the update but cannot apply it yet (its port is missing?); it retries");
                return Ok(());
            }
            (409, Some(neptune_switch::api::codes::STALE_GENERATION)) if tries < 3 => {
                let held = state(switch).await?;
                let above = i64::try_from(change.current(&held.table, address)).unwrap_or(i64::MAX);
                let next = store.next_generation(&address.to_string(), above).await?;
                generation = u64::try_from(next).unwrap_or(0).max(1);
            }
            _ => return Err(refused(switch, &change.describe(address), &reply)),
        }
    }
}

/// The Home Addresses of a VI's entry points, from its committed plan.
pub fn home_addresses(vi: &ViRecord) -> anyhow::Result<Vec<Ipv4Addr>> {
    Ok(crate::plan::committed(vi)?
        .map(|plan| plan.entry_points.iter().map(|e| e.home_address).collect())
        .unwrap_or_default())
}

/// What every switch should hold, by datacenter: visitors and bindings by
/// address. Only VIs at rest (running or suspended) are counted: a job in
/// progress is moving their entries itself.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Desired {
    pub visitors: HashMap<DatacenterId, BTreeMap<Ipv4Addr, (String, u32)>>,
    pub bindings: HashMap<DatacenterId, BTreeMap<Ipv4Addr, (DatacenterId, String, u32)>>,
    /// Addresses of VIs at rest: any entry for them the above do not
    /// name is removed.
    pub managed: BTreeMap<Ipv4Addr, ViId>,
}

/// The switch entries the store implies for `vis`.
pub fn desired(vis: &[ViRecord]) -> anyhow::Result<Desired> {
    let mut out = Desired::default();
    for vi in vis
        .iter()
        .filter(|v| matches!(v.state, ViState::Running | ViState::Suspended))
    {
        let Some(home) = vi.home_datacenter_id else {
            continue;
        };
        let location = vi.location_id.unwrap_or(home);
        let (name, key) = (vi.id.to_string(), tunnel_key(vi.id));
        for address in home_addresses(vi)? {
            out.managed.insert(address, vi.id);
            out.visitors
                .entry(location)
                .or_default()
                .insert(address, (name.clone(), key));
            if location != home {
                out.bindings
                    .entry(home)
                    .or_default()
                    .insert(address, (location, name.clone(), key));
            }
        }
    }
    Ok(out)
}

/// What one round of drift repair did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Repaired {
    /// Entries put back or corrected.
    pub applied: usize,
    /// Entries removed (of VIs gone, or where they no longer belong).
    pub removed: usize,
    /// Switches that could not be read or written this round.
    pub unreachable: usize,
}

/// Compares every registered switch's table with what the store implies,
/// and re-applies the difference. Entries of VIs the store does not hold
/// at rest are left alone, except those of terminated VIs, which go.
pub async fn repair(store: &dyn Store) -> anyhow::Result<Repaired> {
    let switches = store.switches().await?;
    if switches.is_empty() {
        return Ok(Repaired::default());
    }
    let vis = store.list_vis(None).await?;
    let want = desired(&vis)?;
    let care_of: HashMap<DatacenterId, Ipv4Addr> = switches
        .iter()
        .filter_map(|s| Some((s.datacenter_id, s.care_of.parse().ok()?)))
        .collect();
    let terminated: HashMap<String, bool> = vis
        .iter()
        .map(|v| (v.id.to_string(), v.state == ViState::Terminated))
        .collect();
    let mut done = Repaired::default();
    for switch in &switches {
        match repair_one(store, switch, &want, &care_of, &terminated).await {
            Ok((applied, removed)) => {
                done.applied += applied;
                done.removed += removed;
            }
            Err(err) => {
                done.unreachable += 1;
                tracing::warn!(datacenter = %switch.datacenter_id, error = format!("{:#}", anyhow::Error::from(err)),
                    "switch drift repair");
            }
        }
    }
    Ok(done)
}

async fn repair_one(
    store: &dyn Store,
    switch: &SwitchRecord,
    want: &Desired,
    care_of: &HashMap<DatacenterId, Ipv4Addr>,
    terminated: &HashMap<String, bool>,
) -> Result<(usize, usize), SwitchError> {
    let dc = switch.datacenter_id;
    let held = state(switch).await?.table;
    let empty = BTreeMap::new();
    let visitors = want.visitors.get(&dc).unwrap_or(&empty);
    let empty_b = BTreeMap::new();
    let bindings = want.bindings.get(&dc).unwrap_or(&empty_b);
    let via: Option<Ipv4Addr> = switch.via.as_deref().and_then(|v| v.parse().ok());
    let (mut applied, mut removed) = (0, 0);
    for (address, (vi, key)) in visitors {
        let same = held
            .visitors
            .get(address)
            .is_some_and(|v| v.port == switch.port && v.via == via && &v.vi == vi && v.key == *key);
        if !same {
            let change = Change::Visit {
                vi: vi.clone(),
                key: *key,
            };
            apply(store, switch, *address, &change).await?;
            applied += 1;
        }
    }
    for (address, (location, vi, key)) in bindings {
        let Some(to) = care_of.get(location) else {
            continue;
        };
        let same = held
            .bindings
            .get(address)
            .is_some_and(|b| b.care_of == *to && &b.vi == vi && b.key == *key);
        if !same {
            let change = Change::Bind {
                care_of: *to,
                vi: vi.clone(),
                key: *key,
            };
            apply(store, switch, *address, &change).await?;
            applied += 1;
        }
    }
    // Entries that do not belong: of a VI at rest elsewhere, or of a VI
    // that ended.
    let gone = |address: &Ipv4Addr, vi: &str| {
        want.managed.contains_key(address) || terminated.get(vi).copied().unwrap_or(false)
    };
    for (address, v) in &held.visitors {
        if !visitors.contains_key(address) && gone(address, &v.vi) {
            apply(store, switch, *address, &Change::Unvisit).await?;
            removed += 1;
        }
    }
    for (address, b) in &held.bindings {
        if !bindings.contains_key(address) && gone(address, &b.vi) {
            apply(store, switch, *address, &Change::Unbind).await?;
            removed += 1;
        }
    }
    Ok((applied, removed))
}

/// Keeps every switch in line with the store, every `every`. Runs until
/// its task is dropped.
pub async fn supervise(store: std::sync::Arc<dyn Store>, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match repair(store.as_ref()).await {
            Ok(r) if r.applied + r.removed > 0 => {
                tracing::info!(
                    applied = r.applied,
                    removed = r.removed,
                    "switch drift repaired"
                );
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = format!("{err:#}"), "switch drift repair"),
        }
    }
}

/// The key file as the registration names it, made absolute against the
/// Manager's working directory (a relative path would change meaning if
/// the Manager were started elsewhere).
pub fn absolute_key_file(path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    if p.is_absolute() {
        p
    } else {
        std::env::current_dir().map_or(p.clone(), |d| d.join(p))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use uuid::Uuid;

    #[test]
    fn control_addresses_are_literal() {
        assert_eq!(
            control_address("http://192.0.2.10:7400/").unwrap(),
            "192.0.2.10:7400".parse::<SocketAddr>().unwrap()
        );
        for bad in [
            "192.0.2.10:7400",
            "https://192.0.2.10:7400",
            "http://ess-a:7400",
            "http://192.0.2.10",
        ] {
            assert!(control_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tunnel_keys_fit_24_bits() {
        for _ in 0..100 {
            assert!(tunnel_key(Uuid::new_v4().into()) <= neptune_switch::state::MAX_TUNNEL_KEY);
        }
    }
}

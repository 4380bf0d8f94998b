//! Views derived from immutable inputs, computed once: a VI's summary at a
//! version, a job's step names. Reads of VI lists and quota checks then
//! parse nothing.
//!
//! Memory is bounded by what is kept, not by how many: a summary is a few
//! integers whatever the design's size, and step names are weighed in
//! bytes. A design's full form is never kept here parsed (it takes several
//! times its XML's bytes), only serialised: its JSON form, weighed in
//! bytes, and a VI's detail, kept in [`cache`], which is bounded in bytes
//! too.

pub(crate) mod cache;

use neptune_types::{DatacenterId, HostId, JobId, UserId, ViId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use neptune_api as api;
use neptune_store::{DatacenterRecord, JobRecord, ViRecord};

use crate::error::ApiResult;
use crate::jobs::Step;

/// Summaries kept before the map is emptied (about 120 bytes each).
const MAX_SUMMARIES: usize = 1 << 16;
/// Bytes of step names kept before the map is emptied.
const MAX_STEP_NAME_BYTES: usize = 16 << 20;
/// Bytes of designs' JSON forms kept before the map is emptied.
const MAX_DESIGN_BYTES: usize = 8 << 20;

#[derive(Debug, Default)]
pub struct Views {
    /// Each VI's summary: one entry per VI, its last version's (a VI's
    /// every change makes a version; kept by version, a thousand VIs
    /// deployed and terminated left six entries each).
    summaries: Weighed<ViId, Derived<api::ViSummary>>,
    /// Private addresses each design would take (see `plan::private_demand`).
    demands: Weighed<ViId, Derived<Result<u64, String>>>,
    steps: Weighed<JobId, Arc<Vec<String>>>,
    /// Each VI's design in its JSON form as a detail shows it, serialised:
    /// one detail after another of a deploying VI parses the same XML
    /// otherwise.
    designs: Weighed<ViId, Derived<Box<serde_json::value::RawValue>>>,
    /// VI details as sent, each valid at one store revision of its VI.
    pub(crate) details: cache::Bodies<ViId, i64>,
    /// VI lists as sent, by owner (`None`: all VIs, for administrators).
    pub(crate) lists: cache::Bodies<Option<UserId>, neptune_store::ViListStamp>,
    pub(crate) users: cache::NameMap<UserId>,
    pub(crate) datacenters: cache::NameMap<DatacenterId>,
    pub(crate) hosts: cache::NameMap<HostId>,
    /// Datacenters by name. The store never changes nor deletes one, so
    /// an entry never goes stale; an unknown name is read from the store.
    datacenter_records: Weighed<String, Arc<DatacenterRecord>>,
    /// Views derived from a design, counted for the tests.
    #[cfg(test)]
    derivations: std::sync::atomic::AtomicUsize,
}

/// A view of a VI's design, and what it was derived from. A VI's version
/// changes with its every change, its design far more rarely (only while
/// defined): a view made at another version still holds when the design
/// has the same digest, and the XML is not parsed again (a VI accepted,
/// deploying and running was parsed three times over for its detail).
#[derive(Debug, Clone)]
struct Derived<V> {
    version: i64,
    design: DesignDigest,
    value: V,
}

/// The first 128 bits of the SHA-256 of a design's XML: no tenant can make
/// two designs that share it.
type DesignDigest = [u8; 16];

fn design_digest(xml: &str) -> DesignDigest {
    use sha2::{Digest as _, Sha256};
    let full = Sha256::digest(xml.as_bytes());
    let mut digest = DesignDigest::default();
    digest.copy_from_slice(&full[..16]);
    digest
}

impl<V: Clone> Weighed<ViId, Derived<V>> {
    /// The view of `vi`'s design: kept if it was derived from the same
    /// design, else made by `make` (from the design, whose weight `weigh`
    /// tells) and kept under `max`.
    fn derived(
        &self,
        vi: &ViRecord,
        max: usize,
        weigh: impl Fn(&V) -> usize,
        make: impl FnOnce() -> ApiResult<V>,
    ) -> ApiResult<V> {
        let kept = self.get(&vi.id);
        if let Some(k) = &kept {
            if k.version == vi.version {
                return Ok(k.value.clone());
            }
        }
        let design = design_digest(&vi.design_xml);
        let value = match kept {
            Some(k) if k.design == design => k.value,
            _ => make()?,
        };
        let weight = weigh(&value);
        let entry = Derived {
            version: vi.version,
            design,
            value,
        };
        Ok(self.remember(vi.id, entry, weight, max).value)
    }
}

/// Values by key with a total weight; emptied when a value would take it
/// over its bound (the values are cheap to derive again).
#[derive(Debug)]
struct Weighed<K, V>(Mutex<(WeighedMap<K, V>, usize)>);

/// Each value with its weight.
type WeighedMap<K, V> = HashMap<K, (V, usize)>;

impl<K, V> Default for Weighed<K, V> {
    fn default() -> Self {
        Weighed(Mutex::new((HashMap::new(), 0)))
    }
}

impl<K: std::hash::Hash + Eq, V: Clone> Weighed<K, V> {
    fn get(&self, key: &K) -> Option<V> {
        self.0.lock().ok()?.0.get(key).map(|(v, _)| v.clone())
    }

    fn remember(&self, key: K, value: V, weight: usize, max: usize) -> V {
        if let Ok(mut kept) = self.0.lock() {
            let (map, total) = &mut *kept;
            if let Some((_, old)) = map.remove(&key) {
                *total -= old;
            }
            if *total + weight > max {
                map.clear();
                *total = 0;
            }
            if weight <= max {
                map.insert(key, (value.clone(), weight));
                *total += weight;
            }
        }
        value
    }

    fn forget(&self, key: &K) {
        if let Ok(mut kept) = self.0.lock() {
            let (map, total) = &mut *kept;
            if let Some((_, weight)) = map.remove(key) {
                *total -= weight;
                shrink_if_sparse(map);
            }
        }
    }

    #[cfg(test)]
    fn weight(&self) -> (usize, usize) {
        let kept = self.0.lock().unwrap();
        (kept.0.len(), kept.1)
    }
}

/// Gives back the table of a map that a burst grew and removals have
/// since mostly emptied: a map never shrinks by itself, so the designs and
/// step names of a thousand VIs deployed at once held their table after
/// every one was terminated. Halving at a quarter full keeps the shrinking
/// rare (a map must lose three quarters of its entries again).
pub(crate) fn shrink_if_sparse<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 64 && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

impl Views {
    /// The datacenter named `name` (one store read the first time).
    pub(crate) async fn datacenter(
        &self,
        store: &dyn neptune_store::Store,
        name: &str,
    ) -> ApiResult<Arc<DatacenterRecord>> {
        if let Some(dc) = self.datacenter_records.get(&name.to_owned()) {
            return Ok(dc);
        }
        let dc = Arc::new(store.datacenter_by_name(name).await?);
        Ok(self
            .datacenter_records
            .remember(name.to_owned(), dc, 1, MAX_SUMMARIES))
    }

    /// The summary of `vi`'s design.
    pub(crate) fn summary(&self, vi: &ViRecord) -> ApiResult<api::ViSummary> {
        self.summaries.derived(
            vi,
            MAX_SUMMARIES,
            |_| 1,
            || {
                self.count_derivation();
                Ok(crate::app::design::summary(&crate::app::design::design_of(
                    vi,
                )?))
            },
        )
    }

    #[cfg(test)]
    fn count_derivation(&self) {
        self.derivations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    #[cfg(not(test))]
    fn count_derivation(&self) {}

    /// The design of `vi` in its JSON form (OS passwords hidden), as its
    /// detail shows it. A terminated VI's is not kept, and its entry goes:
    /// a shrinking domain gives the memory back.
    pub(crate) fn design_json(&self, vi: &ViRecord) -> ApiResult<Box<serde_json::value::RawValue>> {
        let make = || {
            self.count_derivation();
            serde_json::value::to_raw_value(&crate::app::design::design_of(vi)?)
                .map_err(|e| crate::error::ApiError::Internal(e.into()))
        };
        if vi.state == neptune_lifecycle::ViState::Terminated {
            self.designs.forget(&vi.id);
            return make();
        }
        self.designs
            .derived(vi, MAX_DESIGN_BYTES, |json| json.get().len(), make)
    }

    /// The private addresses `vi` takes: its committed plan's, or else
    /// what its design would take (an `Err` says why it cannot be planned).
    pub(crate) fn private_addresses(
        &self,
        vi: &ViRecord,
        pools: &[neptune_ipam::ipnet::Ipv4Net],
    ) -> ApiResult<Result<u64, String>> {
        if let Some(plan) = crate::plan::committed(vi)? {
            return Ok(Ok(plan.private_addresses()));
        }
        self.demands.derived(
            vi,
            MAX_SUMMARIES,
            |_| 1,
            || {
                self.count_derivation();
                let topo = crate::app::design::design_of(vi)?;
                Ok(crate::plan::private_demand(pools, vi.id, &topo).map_err(|e| e.for_tenant()))
            },
        )
    }

    /// Drops what VI `id`'s design would take of the private pools: once
    /// it is accepted, its committed plan says what it takes.
    pub(crate) fn forget_demand(&self, id: ViId) {
        self.demands.forget(&id);
    }

    /// Drops the names kept of job `id`'s steps.
    pub(crate) fn forget_step_names(&self, id: JobId) {
        self.steps.forget(&id);
    }

    /// The names of a job's steps (a job's steps never change).
    pub(crate) fn step_names(&self, job: &JobRecord) -> ApiResult<Arc<Vec<String>>> {
        if let Some(v) = self.steps.get(&job.id) {
            return Ok(v);
        }
        let steps: Vec<Step> = job.decode_steps()?;
        let names: Vec<String> = steps.iter().map(Step::name).collect();
        let weight = names.iter().map(|n| n.len() + 24).sum::<usize>() + 64;
        Ok(self
            .steps
            .remember(job.id, Arc::new(names), weight, MAX_STEP_NAME_BYTES))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighed_maps_stay_under_their_bound() {
        let w = Weighed::<u32, u32>::default();
        for k in 0..100 {
            w.remember(k, k, 10, 95);
            assert!(w.weight().1 <= 95);
        }
        // The latest value is always kept; a value heavier than the bound never is.
        assert_eq!(w.get(&99), Some(99));
        w.remember(1000, 1, 96, 95);
        assert_eq!(w.get(&1000), None);
        assert!(w.weight().1 <= 95);
    }

    #[test]
    fn a_map_mostly_forgotten_gives_its_table_back() {
        let w = Weighed::<u32, u32>::default();
        for k in 0..1000 {
            w.remember(k, k, 1, 10_000);
        }
        let grown = w.0.lock().unwrap().0.capacity();
        assert!(grown >= 1000);
        for k in 0..990 {
            w.forget(&k);
        }
        let (len, capacity) = {
            let kept = w.0.lock().unwrap();
            (kept.0.len(), kept.0.capacity())
        };
        assert!(capacity <= 64, "{capacity} of {grown} kept");
        assert_eq!(len, 10);
        assert_eq!(w.get(&995), Some(995));
    }

    #[test]
    fn a_value_replaced_or_forgotten_gives_its_weight_back() {
        let w = Weighed::<u32, u32>::default();
        w.remember(1, 1, 30, 100);
        w.remember(2, 2, 30, 100);
        // Replaced: counted once, at its new weight.
        w.remember(1, 10, 40, 100);
        assert_eq!(w.weight(), (2, 70));
        w.forget(&2);
        assert_eq!(w.weight(), (1, 40));
        assert_eq!(w.get(&2), None);
        // Room for another now, without emptying the map.
        w.remember(3, 3, 60, 100);
        assert_eq!((w.get(&1), w.weight()), (Some(10), (2, 100)));
        w.forget(&99);
        assert_eq!(w.weight(), (2, 100));
    }

    fn vi(xml: &str, version: i64) -> ViRecord {
        ViRecord {
            id: ViId::from(uuid::Uuid::from_u128(7)),
            owner_id: UserId::from(uuid::Uuid::from_u128(1)),
            name: "v".into(),
            state: neptune_lifecycle::ViState::Defined,
            design_xml: xml.into(),
            home_datacenter_id: None,
            reject_reason: None,
            version,
            created_at: 0,
            updated_at: 0,
            address_plan: None,
            location_id: None,
        }
    }

    #[test]
    fn a_vi_keeps_one_summary_and_one_demand_its_last_versions() {
        let views = Views::default();
        let pools = ["10.0.0.0/8".parse().unwrap()];
        let small = include_str!("../../../neptune-topology/testdata/web-with-links.xml");
        let json = |s: api::ViSummary| serde_json::to_value(s).unwrap();
        let one = json(views.summary(&vi(small, 1)).unwrap());
        let demand = views.private_addresses(&vi(small, 1), &pools).unwrap();
        for version in 2..50 {
            assert_eq!(json(views.summary(&vi(small, version)).unwrap()), one);
            assert_eq!(
                views
                    .private_addresses(&vi(small, version), &pools)
                    .unwrap(),
                demand
            );
        }
        assert_eq!(views.summaries.weight().0, 1);
        assert_eq!(views.demands.weight().0, 1);
        let derived = |v: &Views| v.derivations.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            derived(&views),
            2,
            "the same design is parsed once per view"
        );
        // A new version's design is read, not the old one's summary kept.
        let fig3 = include_str!("../../../neptune-topology/testdata/fig3.xml");
        let other = json(views.summary(&vi(fig3, 50)).unwrap());
        assert_ne!(other, one);
        assert_eq!(json(views.summary(&vi(fig3, 50)).unwrap()), other);
        assert_eq!(views.summaries.weight().0, 1);
        assert_eq!(derived(&views), 3);
        // And the first design again at a later version: its summary
        // again, not the second design's.
        assert_eq!(json(views.summary(&vi(small, 51)).unwrap()), one);
        assert_eq!(derived(&views), 4);
        // Accepted, its plan says what it takes: the demand goes.
        views.forget_demand(vi(small, 50).id);
        assert_eq!(views.demands.weight().0, 0);
    }
}

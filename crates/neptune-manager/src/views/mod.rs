//! Views derived from immutable inputs, computed once: a VI's summary at a
//! version, a job's step names. Reads of VI lists and quota checks then
//! parse nothing.
//!
//! Memory is bounded by what is kept, not by how many: a summary is a few
//! integers whatever the design's size, and step names are weighed in
//! bytes. A live VI's parsed design is kept at its version (weighed by its
//! XML's size, 32 MiB in all), since its detail is built again at every
//! change of its state and jobs; a terminated VI's is dropped. The detail
//! itself is kept, serialised, in [`cache`], which is bounded in bytes too.

pub(crate) mod cache;

use neptune_types::{DatacenterId, HostId, JobId, UserId, ViId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use neptune_api as api;
use neptune_store::{DatacenterRecord, JobRecord, ViRecord};

use crate::error::ApiResult;
use crate::jobs::Step;

/// Summaries kept before the map is emptied (about 100 bytes each).
const MAX_SUMMARIES: usize = 1 << 16;
/// Bytes of step names kept before the map is emptied.
const MAX_STEP_NAME_BYTES: usize = 16 << 20;
/// Parsed designs kept, weighed as their XML's bytes times
/// [`DESIGN_WEIGHT`], before the map is emptied.
const MAX_DESIGN_BYTES: usize = 32 << 20;
/// About what a parsed design takes in memory, per byte of its XML.
const DESIGN_WEIGHT: usize = 4;

#[derive(Debug, Default)]
pub struct Views {
    summaries: Weighed<(ViId, i64), api::ViSummary>,
    /// Private addresses each design would take (see `plan::private_demand`).
    demands: Weighed<(ViId, i64), Result<u64, String>>,
    steps: Weighed<JobId, Arc<Vec<String>>>,
    /// Designs of live VIs, parsed, at a version: a VI's detail is built
    /// again at every change of its state and jobs, its design never.
    designs: Weighed<(ViId, i64), Arc<neptune_topology::Topology>>,
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
}

/// Values by key with a total weight; emptied when a value would take it
/// over its bound (the values are cheap to derive again).
#[derive(Debug)]
struct Weighed<K, V>(Mutex<(HashMap<K, V>, usize)>);

impl<K, V> Default for Weighed<K, V> {
    fn default() -> Self {
        Weighed(Mutex::new((HashMap::new(), 0)))
    }
}

impl<K: std::hash::Hash + Eq, V: Clone> Weighed<K, V> {
    fn get(&self, key: &K) -> Option<V> {
        self.0.lock().ok()?.0.get(key).cloned()
    }

    fn forget(&self, key: &K, weight: usize) {
        if let Ok(mut kept) = self.0.lock() {
            let (map, total) = &mut *kept;
            if map.remove(key).is_some() {
                *total = total.saturating_sub(weight);
            }
        }
    }

    fn remember(&self, key: K, value: V, weight: usize, max: usize) -> V {
        if let Ok(mut kept) = self.0.lock() {
            let (map, total) = &mut *kept;
            if *total + weight > max {
                map.clear();
                *total = 0;
            }
            if weight <= max {
                map.insert(key, value.clone());
                *total += weight;
            }
        }
        value
    }

    #[cfg(test)]
    fn weight(&self) -> (usize, usize) {
        let kept = self.0.lock().unwrap();
        (kept.0.len(), kept.1)
    }
}

impl Views {
    /// The design of `vi` at its version, parsed once while the VI lives.
    /// A terminated VI's design is parsed each time and forgotten here,
    /// so the memory of a domain that shrinks comes back.
    pub(crate) fn design(&self, vi: &ViRecord) -> ApiResult<Arc<neptune_topology::Topology>> {
        let key = (vi.id, vi.version);
        let weight = vi.design_xml.len().saturating_mul(DESIGN_WEIGHT);
        if vi.state == neptune_lifecycle::ViState::Terminated {
            self.designs.forget(&key, weight);
            return Ok(Arc::new(crate::app::design::design_of(vi)?));
        }
        if let Some(topo) = self.designs.get(&key) {
            return Ok(topo);
        }
        let topo = Arc::new(crate::app::design::design_of(vi)?);
        Ok(self.designs.remember(key, topo, weight, MAX_DESIGN_BYTES))
    }

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

    /// The summary of `vi`'s design at its version. Every change of a VI
    /// bumps its version, so an entry never goes stale.
    pub(crate) fn summary(&self, vi: &ViRecord) -> ApiResult<api::ViSummary> {
        let key = (vi.id, vi.version);
        if let Some(s) = self.summaries.get(&key) {
            return Ok(s);
        }
        let summary = crate::app::design::summary(&crate::app::design::design_of(vi)?);
        Ok(self.summaries.remember(key, summary, 1, MAX_SUMMARIES))
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
        let key = (vi.id, vi.version);
        if let Some(d) = self.demands.get(&key) {
            return Ok(d);
        }
        let topo = crate::app::design::design_of(vi)?;
        let demand = crate::plan::private_demand(pools, vi.id, &topo).map_err(|e| e.for_tenant());
        Ok(self.demands.remember(key, demand, 1, MAX_SUMMARIES))
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
        // Forgetting gives the weight back.
        w.remember(99, 99, 10, 95);
        let before = w.weight();
        w.forget(&99, 10);
        assert_eq!(w.get(&99), None);
        assert_eq!(w.weight(), (before.0 - 1, before.1 - 10));
        w.forget(&99, 10);
        assert_eq!(w.weight(), (before.0 - 1, before.1 - 10));
    }

    /// A live VI's design is parsed once per version; a terminated one's
    /// is never kept, and forgets what was kept of it.
    #[test]
    fn designs_are_kept_while_their_vi_lives() {
        let views = Views::default();
        let mut vi = ViRecord {
            id: uuid::Uuid::new_v4().into(),
            owner_id: uuid::Uuid::new_v4().into(),
            name: "web".into(),
            state: neptune_lifecycle::ViState::Running,
            design_xml: include_str!("../../../neptune-topology/testdata/web-with-links.xml")
                .into(),
            home_datacenter_id: None,
            location_id: None,
            reject_reason: None,
            version: 1,
            created_at: 0,
            updated_at: 0,
            address_plan: None,
        };
        let first = views.design(&vi).unwrap();
        assert!(Arc::ptr_eq(&first, &views.design(&vi).unwrap()));
        assert_eq!(views.designs.weight().0, 1);
        vi.version = 2;
        assert!(!Arc::ptr_eq(&first, &views.design(&vi).unwrap()));
        assert_eq!(views.designs.weight().0, 2);
        vi.state = neptune_lifecycle::ViState::Terminated;
        let dead = views.design(&vi).unwrap();
        assert_eq!(dead.nodes.len(), first.nodes.len());
        assert!(!Arc::ptr_eq(&dead, &views.design(&vi).unwrap()));
        assert_eq!(views.designs.weight().0, 1);
    }
}

//! Views derived from immutable inputs, computed once: a VI's design at a
//! version (its summary and JSON form), a job's step names. Reads of a
//! VI's detail then parse nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use neptune_api as api;
use neptune_store::{JobRecord, ViRecord};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::jobs::Step;

/// Entries kept per map before it is emptied (the inputs are cheap to re-derive).
const MAX_ENTRIES: usize = 4096;

#[derive(Debug)]
pub(crate) struct DesignView {
    pub(crate) summary: api::ViSummary,
    pub(crate) topology: serde_json::Value,
}

#[derive(Debug, Default)]
pub struct Views {
    designs: Mutex<HashMap<(Uuid, i64), Arc<DesignView>>>,
    steps: Mutex<HashMap<Uuid, Arc<Vec<String>>>>,
    /// VI details as sent, each valid at one store revision of its VI.
    pub(crate) details: super::cache::Bodies<Uuid, i64>,
    /// VI lists as sent, by owner (`None`: all VIs, for administrators).
    pub(crate) lists: super::cache::Bodies<Option<Uuid>, neptune_store::ViListStamp>,
    pub(crate) users: super::cache::NameMap,
    pub(crate) datacenters: super::cache::NameMap,
    pub(crate) hosts: super::cache::NameMap,
}

fn remember<K: std::hash::Hash + Eq, V: Clone>(map: &Mutex<HashMap<K, V>>, key: K, value: V) -> V {
    if let Ok(mut m) = map.lock() {
        if m.len() >= MAX_ENTRIES {
            m.clear();
        }
        m.insert(key, value.clone());
    }
    value
}

impl Views {
    /// The design of `vi` at its version. Every change of a VI bumps its
    /// version, so an entry never goes stale.
    pub(crate) fn design(&self, vi: &ViRecord) -> ApiResult<Arc<DesignView>> {
        let key = (vi.id, vi.version);
        if let Some(v) = self.designs.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(v);
        }
        let topo = super::vis::design_of(vi)?;
        let topology = serde_json::from_str(&neptune_topology::to_json(&topo))
            .map_err(|e| ApiError::Internal(e.into()))?;
        let view = Arc::new(DesignView {
            summary: super::vis::summary(&topo),
            topology,
        });
        Ok(remember(&self.designs, key, view))
    }

    /// The names of a job's steps (a job's steps never change).
    pub(crate) fn step_names(&self, job: &JobRecord) -> Arc<Vec<String>> {
        if let Some(v) = self.steps.lock().ok().and_then(|m| m.get(&job.id).cloned()) {
            return v;
        }
        let steps: Vec<Step> = serde_json::from_str(&job.steps).unwrap_or_default();
        let names = Arc::new(steps.iter().map(Step::name).collect());
        remember(&self.steps, job.id, names)
    }
}

//! How the Manager reaches hosts in production: each host's Agent over
//! HTTP, authenticated with the Agents' token ([`AgentDirectory`]).

use neptune_types::HostId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use neptune_agent::{AgentHypervisor, AgentPool};
use neptune_hypervisor::{Capacity, Hypervisor};
use neptune_store::HostRecord;
use neptune_types::Secret;

use crate::jobs::HostDirectory;

/// One client per host, created on first use and replaced when the host
/// re-registers at another URL; all of them share one connection pool and
/// at most [`MAX_AGENT_REQUESTS`] requests in flight, so the Manager's
/// open files stay bounded however many hosts and jobs there are.
#[derive(Debug)]
pub struct AgentDirectory {
    token: Secret,
    pool: AgentPool,
    clients: Mutex<HashMap<HostId, (String, Arc<AgentHypervisor>)>>,
}

/// Requests to Agents in flight at once, over every host and job: each
/// holds a connection (a file). A job runs 16 steps at once, so this lets
/// 32 jobs' batches run together; more wait for a slot.
pub const MAX_AGENT_REQUESTS: usize = 512;

impl AgentDirectory {
    pub fn new(token: Secret) -> anyhow::Result<Self> {
        Ok(AgentDirectory {
            token,
            pool: AgentPool::new(MAX_AGENT_REQUESTS)?,
            clients: Mutex::default(),
        })
    }
}

#[async_trait]
impl HostDirectory for AgentDirectory {
    async fn hypervisor(&self, host: &HostRecord) -> anyhow::Result<Arc<dyn Hypervisor>> {
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| anyhow::anyhow!("agent clients poisoned"))?;
        if let Some((url, hv)) = clients.get(&host.id) {
            if *url == host.agent_url {
                return Ok(hv.clone());
            }
        }
        let client = self.pool.client(&host.agent_url, self.token.clone());
        let capacity = Capacity {
            cpus: u32::try_from(host.cpus).unwrap_or(u32::MAX),
            ram_mib: u64::try_from(host.ram_mib).unwrap_or(0),
            disk_mib: u64::try_from(host.disk_mib).unwrap_or(0),
            vm_slots: u32::try_from(host.vm_slots).unwrap_or(u32::MAX),
        };
        let hv = Arc::new(AgentHypervisor::new(client, capacity));
        clients.insert(host.id, (host.agent_url.clone(), hv.clone()));
        Ok(hv)
    }
}

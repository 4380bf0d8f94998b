//! Rows of a placement gathered so that one statement writes each group:
//! a VI of 20 VMs on three hosts is three host updates, not twenty, and
//! its covering prefixes one statement. Write transactions are shorter,
//! and on SQLite every writer waits for the one before it.

use std::collections::HashMap;

use neptune_types::HostId;

use crate::records::VmRecord;

/// What a group of VMs takes of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostUse<'a> {
    pub host: HostId,
    pub vcpus: i64,
    pub ram_mib: i64,
    pub disk_mib: i64,
    pub uplink_mbps: i64,
    pub slots: i64,
    /// The VMs, in the order given.
    pub vms: Vec<&'a VmRecord>,
}

impl HostUse<'_> {
    /// The VM that does not fit on a host with `room` (the host refused
    /// them all): the first whose addition would overfill it.
    pub(crate) fn misfit(&self, room: &Room) -> String {
        let mut used = [
            room.used_vcpus,
            room.used_ram_mib,
            room.used_disk_mib,
            room.used_slots,
            room.used_uplink_mbps,
        ];
        for vm in &self.vms {
            used[0] += vm.vcpus;
            used[1] += vm.ram_mib;
            used[2] += vm.disk_mib;
            used[3] += 1;
            used[4] += vm.uplink_mbps;
            let fits = room.ready
                && used[0] <= room.cpus
                && used[1] <= room.ram_mib
                && used[2] <= room.disk_mib
                && used[3] <= room.vm_slots
                && (room.uplink_mbps == 0 || used[4] <= room.uplink_mbps);
            if !fits {
                return vm.node_id.clone();
            }
        }
        // Room for all of them now: another commit gave some back since.
        self.vms
            .first()
            .map(|vm| vm.node_id.clone())
            .unwrap_or_default()
    }
}

/// A host's capacity and use, as read when it refused a group of VMs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Room {
    pub ready: bool,
    pub cpus: i64,
    pub ram_mib: i64,
    pub disk_mib: i64,
    pub vm_slots: i64,
    pub uplink_mbps: i64,
    pub used_vcpus: i64,
    pub used_ram_mib: i64,
    pub used_disk_mib: i64,
    pub used_slots: i64,
    pub used_uplink_mbps: i64,
}

/// Takes a [`HostUse`] of its host, only if the host is ready and has
/// room for all of it: the database decides, so concurrent commits cannot
/// overfill a host. `$1` vCPUs, `$2` RAM, `$3` disk, `$4` the host's id,
/// `$5` uplink, `$6` slots.
pub(crate) const TAKE_ROOM: &str = "UPDATE hosts SET used_vcpus = used_vcpus + $1, \
     used_ram_mib = used_ram_mib + $2, used_disk_mib = used_disk_mib + $3, \
     used_slots = used_slots + $6, used_uplink_mbps = used_uplink_mbps + $5 \
     WHERE id = $4 AND state = 'ready' AND used_vcpus + $1 <= cpus \
     AND used_ram_mib + $2 <= ram_mib AND used_disk_mib + $3 <= disk_mib \
     AND used_slots + $6 <= vm_slots \
     AND (uplink_mbps = 0 OR used_uplink_mbps + $5 <= uplink_mbps)";

/// Gives a [`HostUse`] back to its host; the parameters as [`TAKE_ROOM`]'s.
pub(crate) const GIVE_ROOM: &str = "UPDATE hosts SET used_vcpus = used_vcpus - $1, \
     used_ram_mib = used_ram_mib - $2, used_disk_mib = used_disk_mib - $3, \
     used_slots = used_slots - $6, used_uplink_mbps = used_uplink_mbps - $5 WHERE id = $4";

/// The query that reads a [`Room`] (`$1`: the host's id).
pub(crate) const ROOM: &str = "SELECT CAST(CASE WHEN state = 'ready' THEN 1 ELSE 0 END AS BIGINT) AS ready, cpus, ram_mib, disk_mib, vm_slots, \
     uplink_mbps, used_vcpus, used_ram_mib, used_disk_mib, used_slots, used_uplink_mbps \
     FROM hosts WHERE id = $1";

/// The use of each host by `vms`, in host id order (the order hosts are
/// locked in, on PostgreSQL, by every placement and release).
pub(crate) fn per_host<'a>(vms: impl Iterator<Item = &'a VmRecord>) -> Vec<HostUse<'a>> {
    let mut by_host: HashMap<HostId, HostUse<'a>> = HashMap::new();
    for vm in vms {
        let used = by_host.entry(vm.host_id).or_insert_with(|| HostUse {
            host: vm.host_id,
            vcpus: 0,
            ram_mib: 0,
            disk_mib: 0,
            uplink_mbps: 0,
            slots: 0,
            vms: Vec::new(),
        });
        used.vcpus += vm.vcpus;
        used.ram_mib += vm.ram_mib;
        used.disk_mib += vm.disk_mib;
        used.uplink_mbps += vm.uplink_mbps;
        used.slots += 1;
        used.vms.push(vm);
    }
    let mut uses: Vec<HostUse<'_>> = by_host.into_values().collect();
    uses.sort_by_key(|u| u.host);
    uses
}

/// Each distinct `(pool, prefix)` with how many times it is listed, in
/// the order first listed.
pub(crate) fn counted<'a>(
    prefixes: impl Iterator<Item = (&'a str, &'a str)>,
) -> Vec<(&'a str, &'a str, i64)> {
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    let mut out: Vec<(&str, &str, i64)> = Vec::new();
    for (pool, prefix) in prefixes {
        match seen.get(&(pool, prefix)) {
            Some(&i) => out[i].2 += 1,
            None => {
                seen.insert((pool, prefix), out.len());
                out.push((pool, prefix, 1));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(node: &str, host: HostId, vcpus: i64) -> VmRecord {
        VmRecord {
            vi_id: uuid::Uuid::nil().into(),
            node_id: node.to_owned(),
            host_id: host,
            vcpus,
            ram_mib: 512 * vcpus,
            disk_mib: 1024,
            uplink_mbps: 10,
        }
    }

    #[test]
    fn vms_are_summed_per_host_in_host_order() {
        let (a, b): (HostId, HostId) = {
            let mut ids = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()];
            ids.sort();
            (ids[0].into(), ids[1].into())
        };
        let vms = [vm("web", b, 2), vm("db", a, 1), vm("cache", b, 1)];
        let uses = per_host(vms.iter());
        assert_eq!(uses.len(), 2);
        assert_eq!((uses[0].host, uses[0].slots, uses[0].vcpus), (a, 1, 1));
        assert_eq!(uses[0].vms[0].node_id, "db");
        assert_eq!((uses[1].host, uses[1].slots, uses[1].vcpus), (b, 2, 3));
        assert_eq!(
            (uses[1].ram_mib, uses[1].disk_mib, uses[1].uplink_mbps),
            (1536, 2048, 20)
        );
        let nodes: Vec<&str> = uses[1].vms.iter().map(|v| v.node_id.as_str()).collect();
        assert_eq!(nodes, ["web", "cache"]);
    }

    #[test]
    fn the_vm_named_is_the_first_that_overfills() {
        let host: HostId = uuid::Uuid::new_v4().into();
        let vms = [vm("a", host, 2), vm("b", host, 4), vm("c", host, 1)];
        let uses = per_host(vms.iter());
        let room = Room {
            ready: true,
            cpus: 4,
            ram_mib: 1 << 20,
            disk_mib: 1 << 20,
            vm_slots: 8,
            ..Room::default()
        };
        assert_eq!(uses[0].misfit(&room), "b");
        // Slots count too, and so does the uplink.
        assert_eq!(
            uses[0].misfit(&Room {
                cpus: 16,
                vm_slots: 2,
                ..room.clone()
            }),
            "c"
        );
        assert_eq!(
            uses[0].misfit(&Room {
                cpus: 16,
                uplink_mbps: 15,
                ..room.clone()
            }),
            "b"
        );
        // A host that is not ready takes none.
        assert_eq!(
            uses[0].misfit(&Room {
                ready: false,
                cpus: 16,
                ..room
            }),
            "a"
        );
    }

    #[test]
    fn repeated_prefixes_are_counted_once_each() {
        let rows = [
            ("p", "10.0.0.0/8"),
            ("p", "10.1.0.0/16"),
            ("p", "10.0.0.0/8"),
            ("q", "10.0.0.0/8"),
        ];
        assert_eq!(
            counted(rows.into_iter()),
            vec![
                ("p", "10.0.0.0/8", 2),
                ("p", "10.1.0.0/16", 1),
                ("q", "10.0.0.0/8", 1)
            ]
        );
    }
}

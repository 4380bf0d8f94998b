//! How a NIC is held to its link's bandwidth on this host.
//!
//! libvirt (9.0) turns a NIC's `<bandwidth>` into `tc` commands on its tap
//! device: an htb class with an sfq queue and an fw filter for the inbound
//! rate, an ingress qdisc with a u32 filter that polices the outbound one.
//! A kernel without one of them (some minimal VM kernels lack sfq and the
//! police action) makes every start of a shaped domain fail with
//! "Specified qdisc kind is unknown" or "Failed to load TC action module".
//!
//! Such a kernel may still have tbf, the ingress qdisc, the u32 classifier,
//! the mirred action and IFB devices, which is all the adapter's own
//! shaping needs ([`BandwidthShaping::Tap`]):
//!
//! - what the tap sends is what the guest receives: a tbf at the link's
//!   rate as the tap's root qdisc caps the guest's inbound;
//! - what the tap receives is what the guest sends: the tap's ingress
//!   redirects it (u32 matching everything, mirred) to an IFB device of the
//!   NIC's own with the same tbf, which caps the guest's outbound. An IFB
//!   hands each frame back to the tap's receive path once it leaves.
//!
//! So each guest gets at most the link's rate each way, on a LAN as on a
//! point-to-point link. tbf is a policer with a queue, not a fair
//! scheduler: flows of one NIC share its rate first come, first served.
//!
//! The commands of each way are tried once per process on the loopback
//! device of a network namespace of their own (`unshare --net`), which
//! vanishes with them: nothing on the host changes.

use std::process::Command;

/// How the adapter holds NICs to their link's bandwidth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BandwidthShaping {
    /// libvirt's `<bandwidth>` on each NIC: where the kernel has htb, sfq,
    /// fw, u32 and police.
    Libvirt,
    /// The adapter's own `tc` on each NIC's tap after every start and
    /// restore: tbf on the tap for the guest's inbound, tbf on an IFB the
    /// tap's ingress is redirected to for its outbound.
    Tap,
    /// Not enforced: the kernel can do neither. The spec keeps the
    /// bandwidth.
    Off,
}

const LIBVIRT_PROBE: &str = "set -e
tc qdisc add dev lo root handle 1: htb default 1
tc class add dev lo parent 1: classid 1:1 htb rate 1000kbps
tc qdisc add dev lo parent 1:1 handle 2: sfq perturb 10
tc filter add dev lo parent 1:0 protocol all handle 1 fw flowid 1
tc qdisc add dev lo ingress
tc filter add dev lo parent ffff: protocol all u32 match u32 0 0 police rate 1000kbps burst 1000kb mtu 64kb drop flowid :1";

const TAP_PROBE: &str = "set -e
ip link add ntifprobe type ifb
ip link set dev ntifprobe up
tc qdisc replace dev lo root tbf rate 1mbit burst 32768 limit 98304
tc qdisc replace dev ntifprobe root tbf rate 1mbit burst 32768 limit 98304
tc qdisc replace dev lo ingress
tc filter replace dev lo parent ffff: protocol all prio 1 handle 800::800 u32 match u32 0 0 action mirred egress redirect dev ntifprobe";

fn probe(script: &str) -> bool {
    Command::new("unshare")
        .args(["--net", "sh", "-c", script])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What this host's kernel can shape with, libvirt's way first (probed
/// once per process; every host of `neptune up` shares the machine).
pub(super) fn usable() -> BandwidthShaping {
    static USABLE: std::sync::OnceLock<BandwidthShaping> = std::sync::OnceLock::new();
    *USABLE.get_or_init(|| {
        if probe(LIBVIRT_PROBE) {
            BandwidthShaping::Libvirt
        } else if probe(TAP_PROBE) {
            BandwidthShaping::Tap
        } else {
            BandwidthShaping::Off
        }
    })
}

/// The tap of each NIC, in the domain's order, from `virsh --quiet
/// domiflist` (`<tap> <type> <source> <model> <mac>`); `None` for a NIC
/// without one (`-`: the domain does not run).
pub(super) fn taps(domiflist: &str) -> Vec<Option<String>> {
    domiflist
        .lines()
        .filter_map(|row| row.split_whitespace().next())
        .map(|tap| (tap != "-").then(|| tap.to_owned()))
        .collect()
}

/// The IFB device that carries the outbound traffic of `vm`'s `index`th
/// NIC: named for the NIC, not its tap, so that every start of the VM
/// reuses it instead of leaving one behind per tap name.
pub(super) fn ifb_name(vm: &str, index: usize) -> String {
    format!("ntif{:011x}", super::name_hash(&format!("{vm}/{index}")))
}

/// The alias an IFB of `vm` carries, by which the VM's are found and
/// removed with it (whatever its NICs were).
pub(super) fn ifb_alias(vm: &str, index: usize) -> String {
    format!("{}{index}", ifb_alias_prefix(vm))
}

/// VM names have no spaces: `neptune a nic ` starts no alias of `ab`.
pub(super) fn ifb_alias_prefix(vm: &str) -> String {
    format!("neptune {vm} nic ")
}

/// The arguments of `tc qdisc replace` that make `dev`'s root a token
/// bucket of `mbps` megabits per second.
///
/// The bucket holds 10 ms of the rate, and at least 32 KiB: the qdisc's
/// timer wakes it no more often than that, and a smaller bucket would keep
/// the rate below the link's. The queue holds 50 ms of the rate beyond the
/// bucket (at least 64 KiB, a whole segmentation-offloaded frame): enough
/// for TCP to keep the link busy, short enough that it still feels like
/// one.
pub(super) fn tbf_args(dev: &str, mbps: u64) -> Vec<String> {
    let bytes_per_second = mbps.saturating_mul(125_000).max(1_000);
    let burst = (bytes_per_second / 100).max(32 << 10);
    let limit = burst.saturating_add((bytes_per_second / 20).max(64 << 10));
    let rate = format!("{}kbit", mbps.saturating_mul(1_000).max(8));
    let (burst, limit) = (burst.to_string(), limit.to_string());
    [
        "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate, "burst", &burst, "limit",
        &limit,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The arguments of `tc` that send what `tap` receives through `ifb`: an
/// ingress qdisc and one u32 filter matching everything, under a fixed
/// handle so that a second run replaces it instead of adding another.
pub(super) fn redirect_args(tap: &str, ifb: &str) -> [Vec<String>; 2] {
    let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    [
        own(&["qdisc", "replace", "dev", tap, "ingress"]),
        own(&[
            "filter", "replace", "dev", tap, "parent", "ffff:", "protocol", "all", "prio", "1",
            "handle", "800::800", "u32", "match", "u32", "0", "0", "action", "mirred", "egress",
            "redirect", "dev", ifb,
        ]),
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn taps_come_in_the_domains_order() {
        let list = " vnet51   network   nt-a-l01   virtio   02:4e:0a:00:00:01\n vnet52   bridge   br0   virtio   02:4e:0a:00:00:02\n";
        assert_eq!(
            taps(list),
            [Some("vnet51".to_owned()), Some("vnet52".to_owned())]
        );
        assert_eq!(
            taps(" -   network   lan   virtio   52:54:00:00:00:01\n\n"),
            [None]
        );
    }

    #[test]
    fn ifbs_are_named_for_the_nic_within_the_kernels_limit() {
        let a = ifb_name("nt-62c2a1f0b3d4-a-rather-long-node-name", 0);
        assert_eq!(a.len(), 15);
        assert_ne!(a, ifb_name("nt-62c2a1f0b3d4-a-rather-long-node-name", 1));
        assert_eq!(a, ifb_name("nt-62c2a1f0b3d4-a-rather-long-node-name", 0));
        assert!(ifb_alias("vm", 3).starts_with(&ifb_alias_prefix("vm")));
        assert!(!ifb_alias("vm2", 3).starts_with(&ifb_alias_prefix("vm")));
    }

    #[test]
    fn token_buckets_fit_the_rate() {
        assert_eq!(
            tbf_args("vnet1", 20).join(" "),
            "qdisc replace dev vnet1 root tbf rate 20000kbit burst 32768 limit 157768"
        );
        // 1 Gbit/s: 10 ms is 1.25 MB of bucket, 50 ms of queue beyond it.
        assert_eq!(
            tbf_args("t", 1000).join(" "),
            "qdisc replace dev t root tbf rate 1000000kbit burst 1250000 limit 7500000"
        );
        assert!(tbf_args("t", 0).join(" ").contains("rate 8kbit"));
        let [ingress, filter] = redirect_args("vnet1", "ntif0");
        assert_eq!(ingress.join(" "), "qdisc replace dev vnet1 ingress");
        assert!(filter
            .join(" ")
            .ends_with("u32 match u32 0 0 action mirred egress redirect dev ntif0"));
    }
}

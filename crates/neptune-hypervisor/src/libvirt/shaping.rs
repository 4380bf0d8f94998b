//! Whether this host's kernel can shape a NIC as libvirt does it: libvirt
//! (9.0) turns a NIC's `<bandwidth>` into `tc` commands on its tap device,
//! an htb class with an sfq queue and an fw filter for the inbound rate,
//! an ingress qdisc with a u32 filter that polices the outbound one. A
//! kernel without one of them (some minimal VM kernels lack sfq and the
//! police action) makes every start of a shaped domain fail with
//! "Specified qdisc kind is unknown" or "Failed to load TC action module".
//!
//! The same commands are tried once per process on the loopback device of
//! a network namespace of their own (`unshare --net`), which vanishes with
//! them: nothing on the host changes.

use std::process::Command;

const PROBE: &str = "set -e
tc qdisc add dev lo root handle 1: htb default 1
tc class add dev lo parent 1: classid 1:1 htb rate 1000kbps
tc qdisc add dev lo parent 1:1 handle 2: sfq perturb 10
tc filter add dev lo parent 1:0 protocol all handle 1 fw flowid 1
tc qdisc add dev lo ingress
tc filter add dev lo parent ffff: protocol all u32 match u32 0 0 police rate 1000kbps burst 1000kb mtu 64kb drop flowid :1";

/// Whether NICs can be shaped here (probed once per process; every host of
/// `neptune up` shares the machine).
pub(super) fn usable() -> bool {
    static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *USABLE.get_or_init(|| {
        Command::new("unshare")
            .args(["--net", "sh", "-c", PROBE])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

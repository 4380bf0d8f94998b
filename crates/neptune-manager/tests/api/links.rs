//! Virtual links that span hosts: the VXLAN segments of the VMs' NICs.

use super::*;

/// The tunnel endpoint each host's Agent URL names: host0 and host1 on
/// machines of their own, host2 on host1's.
const ENDPOINTS: [&str; 3] = ["127.0.0.2", "127.0.0.3", "127.0.0.3"];

/// Every VM of the test's hosts with its host's endpoint.
pub(crate) async fn vms_with_endpoints(
    m: &TestManager,
) -> Vec<(String, neptune_hypervisor::VmSpec)> {
    let mut out = Vec::new();
    for (i, endpoint) in ENDPOINTS.iter().enumerate() {
        for vm in m.sims.sim(&format!("host{i}")).list().await.unwrap() {
            out.push(((*endpoint).to_owned(), vm.spec));
        }
    }
    out
}

/// Checks that every NIC on a link reaches, through its segment, exactly
/// the endpoints of the link's other VMs that are not its own, and that
/// links have identifiers of their own; returns how many NICs have one.
fn check_segments(vms: &[(String, neptune_hypervisor::VmSpec)]) -> usize {
    let mut vnis: HashMap<String, u32> = HashMap::new();
    let mut segmented = 0;
    for (endpoint, spec) in vms {
        for nic in spec.nics.iter().filter(|n| n.network != "public") {
            let mut expected: Vec<String> = vms
                .iter()
                .filter(|(_, o)| o.name != spec.name)
                .filter(|(_, o)| o.nics.iter().any(|n| n.network == nic.network))
                .map(|(e, _)| e.clone())
                .filter(|e| e != endpoint)
                .map(|e| format!("{e}:4789"))
                .collect();
            expected.sort();
            expected.dedup();
            match &nic.segment {
                None => assert!(expected.is_empty(), "{}: {expected:?}", spec.name),
                Some(seg) => {
                    segmented += 1;
                    let peers: Vec<String> = seg.peers.iter().map(|p| p.to_string()).collect();
                    assert_eq!(peers, expected, "{} on {}", spec.name, nic.network);
                    assert_eq!(seg.port, 4789);
                    let vni = *vnis.entry(nic.network.clone()).or_insert(seg.vni);
                    assert_eq!(vni, seg.vni, "one identifier per link");
                }
            }
        }
    }
    let mut distinct: Vec<u32> = vnis.values().copied().collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        vnis.len(),
        "links share an identifier: {vnis:?}"
    );
    segmented
}

/// A VI whose links span hosts: the VMs' NICs carry their links' VXLAN
/// segments, to the other hosts' endpoints (none to a host at the same
/// endpoint, which shares the bridge), and get them again when the VI is
/// resumed onto hosts planned anew.
pub(crate) async fn links_spanning_hosts_are_segments(m: &TestManager) {
    let p = m.people().await;
    m.infrastructure(&p.admin, 0, 0).await;
    let admin = m.client(&p.admin);
    for (i, endpoint) in ENDPOINTS.iter().enumerate() {
        let host = napoli_host(&format!("host{i}"), &format!("http://{endpoint}:9"), 2, 0);
        admin.register_host(&host).await.unwrap();
    }
    // Six VMs in a ring on three hosts of two slots: links between hosts.
    let id = m.running_vi(&p, "ring", 6).await;
    let vms = vms_with_endpoints(m).await;
    assert_eq!(vms.len(), 6);
    assert!(
        check_segments(&vms) >= 2,
        "a ring on three hosts crosses them"
    );

    m.act(&p.alice, &id, "suspend", "suspending").await;
    let v = m.act(&p.alice, &id, "resume", "resuming").await;
    assert_eq!(v["state"], "running", "{v}");
    let resumed = vms_with_endpoints(m).await;
    assert_eq!(resumed.len(), 6);
    assert!(check_segments(&resumed) >= 2);
}

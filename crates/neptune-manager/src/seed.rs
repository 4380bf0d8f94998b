//! Every VM configured from the plan: the cloud-init NoCloud seed of a
//! node (meta-data, network configuration version 2, user data), and the
//! MAC of each of its interfaces.
//!
//! A MAC is the interface's pin in the design, else Neptune's: `02:4E`
//! (locally administered, unicast) followed by the interface's planned
//! IPv4 address. The address plan keeps addresses unique in the Service
//! Switching domain, so Neptune's MACs are unique there too, and a VI keeps
//! them wherever it goes. Pins are checked against every other VI's when
//! the VI is accepted (see [`pinned_macs`]); a pin may not fall in
//! Neptune's range.
//!
//! The documents are YAML in a small regular form (two-space indentation,
//! every string a JSON-quoted scalar, which YAML reads as a double-quoted
//! one), read by cloud-init itself on a full template and by the tiny
//! test template's init (guest/tiny). Pure: the same VI, design and plan
//! always give the same seed.

use neptune_types::ViId;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use neptune_hypervisor::{Seed, READY_MARKER};
use neptune_topology::{NetworkInterface, Topology, VirtualNode};
use neptune_types::MacAddr;

/// The first two bytes of the MACs Neptune allocates.
pub const MAC_PREFIX: [u8; 2] = [0x02, 0x4e];

/// The pool under which a pinned MAC is held in the address table: its
/// unique (pool, prefix) key refuses a second VI pinning it.
pub const MAC_POOL: &str = "mac";

/// Whether `mac` is in the range Neptune allocates from (not pinnable).
pub fn is_neptunes(mac: MacAddr) -> bool {
    mac.0[..2] == MAC_PREFIX
}

/// The MAC of `iface` of `node`: its pin, else derived from its planned
/// address (its link's, or its Home Address). An interface with neither
/// (on no link, not an entry point: no network to be on) gets one derived
/// from its names, outside the addresses' range.
pub fn mac_of(
    vi: ViId,
    plan: &neptune_ipam::Plan,
    node: &VirtualNode,
    iface: &NetworkInterface,
) -> MacAddr {
    if let Some(pin) = iface.mac {
        return pin;
    }
    match planned_address(plan, node, iface) {
        Some(a) => {
            let o = a.octets();
            MacAddr([MAC_PREFIX[0], MAC_PREFIX[1], o[0], o[1], o[2], o[3]])
        }
        None => {
            let h = fnv1a(&[&vi.to_string(), node.id.as_str(), iface.name.as_str()]).to_be_bytes();
            MacAddr([MAC_PREFIX[0], MAC_PREFIX[1] | 0x01, h[0], h[1], h[2], h[3]])
        }
    }
}

/// The MACs pinned in `topo`, in Neptune's range or not (the caller
/// refuses the former).
pub fn pinned_macs(topo: &Topology) -> Vec<(MacAddr, String)> {
    topo.nodes
        .iter()
        .flat_map(|n| {
            n.interfaces
                .iter()
                .filter_map(move |i| i.mac.map(|m| (m, format!("{}/{}", n.id, i.name))))
        })
        .collect()
}

/// The text of a MAC as a seed and the hypervisor write it (lower case).
pub fn mac_text(mac: MacAddr) -> String {
    mac.to_string().to_ascii_lowercase()
}

/// The address planned for `iface`: on its link, else its Home Address.
fn planned_address(
    plan: &neptune_ipam::Plan,
    node: &VirtualNode,
    iface: &NetworkInterface,
) -> Option<Ipv4Addr> {
    plan.interfaces()
        .find(|(_, i)| i.node == node.id && i.interface == iface.name)
        .map(|(_, i)| i.address)
        .or_else(|| {
            plan.entry_points
                .iter()
                .find(|e| e.node == node.id && e.interface == iface.name)
                .map(|e| e.home_address)
        })
}

/// The instance id of `node` in VI `vi`: new for every VI, so a disk
/// saved from a VM of another VI configures itself anew.
pub fn instance_id(vi: ViId, node: &VirtualNode) -> String {
    format!("iid-{}-{}", vi.uuid().simple(), node.id)
}

/// The guest's host name: the node's name as a DNS label (letters,
/// digits and `-`, at most 63), else its id.
pub fn hostname(node: &VirtualNode) -> String {
    let label = |s: &str| -> String {
        let mut out = String::new();
        for c in s.chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c.to_ascii_lowercase());
            } else if !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
        }
        out.truncate(63);
        out.trim_end_matches('-').to_owned()
    };
    let from_name = label(&node.name);
    if from_name.is_empty() {
        let from_id = label(node.id.as_str());
        if from_id.is_empty() {
            "vm".to_owned()
        } else {
            from_id
        }
    } else {
        from_name
    }
}

/// The name of the `index`th interface inside the guest: the design's,
/// when Linux takes it as is, else `eth<index>`.
fn guest_ifname(iface: &NetworkInterface, index: usize) -> String {
    let name = iface.name.as_str();
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && name != "lo";
    if ok {
        name.to_owned()
    } else {
        format!("eth{index}")
    }
}

/// A YAML double-quoted scalar (JSON's string syntax is one).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// The seed of `node` of VI `vi`, numbered as `plan` says; `ssh_keys`: the
/// owner's public keys; `public_gateway`: the home datacenter's router on
/// its public network, an entry point's default route.
pub fn render(
    vi: ViId,
    node: &VirtualNode,
    plan: &neptune_ipam::Plan,
    ssh_keys: &[String],
    public_gateway: Option<Ipv4Addr>,
) -> Seed {
    let instance_id = instance_id(vi, node);
    let host = hostname(node);
    let meta_data = format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        q(&instance_id),
        q(&host)
    );

    let is_entry = node.interfaces.iter().any(|i| i.entry_point.is_some());
    let own: Vec<Ipv4Addr> = plan
        .interfaces()
        .filter(|(_, i)| i.node == node.id)
        .map(|(_, i)| i.address)
        .collect();
    // A backend leaves its links through the gateway of the first LAN it
    // is on; an entry point leaves through its public side.
    // The default route is written `0.0.0.0/0`: Debian 12's cloud-init
    // (22.4) drops an interface's whole configuration on `default`.
    let default_via = if is_entry {
        None
    } else {
        plan.interfaces()
            .filter(|(_, i)| i.node == node.id)
            .find_map(|(l, _)| l.gateway.filter(|g| !own.contains(g)))
    };
    let mut net = String::from("version: 2\nethernets:\n");
    let mut public_ifnames = Vec::new();
    for (index, iface) in node.interfaces.iter().enumerate() {
        let name = guest_ifname(iface, index);
        let mac = mac_of(vi, plan, node, iface);
        let _ = write!(
            net,
            "  {name}:\n    match:\n      macaddress: {}\n    set-name: {}\n",
            q(&mac_text(mac)),
            q(&name)
        );
        let on_link = plan
            .interfaces()
            .find(|(_, i)| i.node == node.id && i.interface == iface.name);
        let home = plan
            .entry_points
            .iter()
            .find(|e| e.node == node.id && e.interface == iface.name);
        let mut addresses = Vec::new();
        if let Some((_, i)) = on_link {
            addresses.push(format!("{}/{}", i.address, i.cidr.prefix_len()));
        }
        if let Some(e) = home {
            addresses.push(format!("{}/32", e.home_address));
            public_ifnames.push(name.clone());
        }
        if !addresses.is_empty() {
            net.push_str("    addresses:\n");
            for a in &addresses {
                let _ = writeln!(net, "      - {}", q(a));
            }
        }
        // An entry point leaves through its datacenter's router, on the
        // link of its /32 Home Address.
        if let (Some(_), Some(gw), true) = (home, public_gateway, public_ifnames.len() == 1) {
            let _ = write!(
                net,
                "    routes:\n      - to: \"0.0.0.0/0\"\n        via: {}\n        on-link: true\n",
                q(&gw.to_string())
            );
        }
        if let (Some(via), Some((link, _))) = (default_via, on_link) {
            if link.gateway == Some(via) {
                let _ = write!(
                    net,
                    "    routes:\n      - to: \"0.0.0.0/0\"\n        via: {}\n",
                    q(&via.to_string())
                );
            }
        }
    }

    let mut user = String::from("#cloud-config\n");
    let _ = writeln!(user, "hostname: {}", q(&host));
    let os_user = node.os.username.trim();
    if !os_user.is_empty() {
        let hash = node.os.password.expose();
        user.push_str("users:\n");
        let _ = writeln!(user, "  - name: {}", q(os_user));
        if crate::auth::is_crypt_hash(hash) {
            let _ = writeln!(user, "    lock_passwd: false\n    passwd: {}", q(hash));
        } else {
            user.push_str("    lock_passwd: true\n");
        }
        user.push_str("    shell: \"/bin/sh\"\n    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n");
        if !ssh_keys.is_empty() {
            user.push_str("    ssh_authorized_keys:\n");
            for k in ssh_keys {
                let _ = writeln!(user, "      - {}", q(k));
            }
        }
        user.push_str("ssh_pwauth: true\n");
    }
    // A NAT/firewall entry point in front of private backends: it forwards
    // and masquerades what leaves through its public side.
    let is_gateway = plan
        .links
        .iter()
        .any(|l| l.gateway.is_some_and(|g| own.contains(&g)));
    if is_gateway && !public_ifnames.is_empty() {
        let oifs: Vec<String> = public_ifnames.iter().map(|n| q(n)).collect();
        let rules = format!(
            "table ip neptune_nat {{\n  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname {{ {} }} masquerade\n  }}\n}}\n",
            oifs.join(", ")
        );
        user.push_str("write_files:\n  - path: \"/etc/neptune/nat.nft\"\n    permissions: \"0644\"\n    content: |\n");
        for line in rules.lines() {
            let _ = writeln!(user, "      {line}");
        }
        user.push_str(
            "runcmd:\n  - \"sysctl -w net.ipv4.ip_forward=1\"\n  - \"nft -f /etc/neptune/nat.nft\"\n",
        );
    }
    let ready = format!("{READY_MARKER} {instance_id}");
    let _ = writeln!(user, "final_message: {}", q(&ready));

    Seed {
        instance_id,
        meta_data,
        user_data: user,
        network_config: net,
    }
}

/// FNV-1a over the parts, separated so ("ab","c") and ("a","bc") differ.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0xFF)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use uuid::Uuid;

    const NAT: &str = r#"<?xml version="1.0"?>
<topology id="shop">
  <nodes>
    <node id="gw">
      <name>Gateway</name>
      <ram dimension="128"/><hd dimension="1"/>
      <network_interfaces>
        <interface name="eth0"><entry_point/></interface>
        <interface name="eth1"/>
      </network_interfaces>
      <operative_system name="Debian" username="alice" password="$6$saltsalt$abcdefghijklmnopqrstuv"/>
    </node>
    <node id="web1">
      <ram dimension="128"/><hd dimension="1"/>
      <network_interfaces><interface name="eth0"/></network_interfaces>
    </node>
    <node id="web2">
      <ram dimension="128"/><hd dimension="1"/>
      <network_interfaces><interface name="eth0" MAC="1E:87:3F:D6:E7:8D"/></network_interfaces>
    </node>
  </nodes>
  <links>
    <link id="lan" type="lan" bandwidth="100">
      <endpoint node="gw" interface="eth1"/>
      <endpoint node="web1" interface="eth0"/>
      <endpoint node="web2" interface="eth0"/>
    </link>
  </links>
</topology>"#;

    fn planned() -> (ViId, Topology, neptune_ipam::Plan) {
        let topo = neptune_topology::from_xml(NAT).unwrap();
        let vi = Uuid::from_u128(0x7f3c_2a10_b5e4_0000_0000_0000_0000_0001).into();
        let pools = ["10.20.0.0/16".parse().unwrap()];
        let dcs = [neptune_store::DatacenterRecord {
            public_gateway: None,
            id: Uuid::from_u128(1).into(),
            name: "dc1".to_owned(),
            created_at: 0,
            home_pools: vec!["192.0.2.0/24".to_owned()],
        }];
        let domain = crate::plan::domain(&pools, &dcs).unwrap();
        let snapshot = crate::plan::snapshot(domain, &[]).unwrap();
        let plan = crate::plan::addresses(&snapshot, vi, &topo, "dc1").unwrap();
        (vi, topo, plan)
    }

    #[test]
    fn macs_are_pins_or_the_planned_address() {
        let (vi, topo, plan) = planned();
        let gw = &topo.nodes[0];
        // The entry point's public side: its Home Address.
        assert_eq!(
            mac_text(mac_of(vi, &plan, gw, &gw.interfaces[0])),
            "02:4e:c0:00:02:01"
        );
        // The LAN's gateway is numbered first.
        assert_eq!(
            mac_text(mac_of(vi, &plan, gw, &gw.interfaces[1])),
            "02:4e:0a:14:00:01"
        );
        let web2 = &topo.nodes[2];
        assert_eq!(
            mac_text(mac_of(vi, &plan, web2, &web2.interfaces[0])),
            "1e:87:3f:d6:e7:8d"
        );
        assert_eq!(pinned_macs(&topo).len(), 1);
        assert!(is_neptunes("02:4E:0A:00:00:01".parse().unwrap()));
        assert!(!is_neptunes("1E:87:3F:D6:E7:8D".parse().unwrap()));
    }

    #[test]
    fn a_backend_routes_through_its_lans_gateway() {
        let (vi, topo, plan) = planned();
        let seed = render(vi, &topo.nodes[1], &plan, &[], None);
        assert_eq!(
            seed.network_config,
            "version: 2\nethernets:\n  eth0:\n    match:\n      macaddress: \"02:4e:0a:14:00:02\"\n    set-name: \"eth0\"\n    addresses:\n      - \"10.20.0.2/29\"\n    routes:\n      - to: \"0.0.0.0/0\"\n        via: \"10.20.0.1\"\n"
        );
        assert_eq!(
            seed.meta_data,
            format!(
                "instance-id: \"{}\"\nlocal-hostname: \"web1\"\n",
                seed.instance_id
            )
        );
        assert!(seed.user_data.starts_with("#cloud-config\n"));
        assert!(
            !seed.user_data.contains("users:"),
            "no OS user in the design"
        );
        assert!(seed
            .user_data
            .ends_with(&format!("final_message: \"{}\"\n", seed.ready_line())));
    }

    #[test]
    fn the_nat_node_masquerades_out_of_its_public_side() {
        let (vi, topo, plan) = planned();
        let keys = vec!["ssh-ed25519 AAAAC3Nza alice@example".to_owned()];
        let seed = render(vi, &topo.nodes[0], &plan, &keys, None);
        let net = &seed.network_config;
        assert!(net.contains("      - \"192.0.2.1/32\"\n"), "{net}");
        assert!(!net.contains("routes:"), "no router known: {net}");
        let routed = render(
            vi,
            &topo.nodes[0],
            &plan,
            &keys,
            Some(Ipv4Addr::new(192, 0, 2, 254)),
        );
        // The route belongs to the public interface (eth0), not the LAN's.
        assert!(
            routed.network_config.contains(
                "      - \"192.0.2.1/32\"\n    routes:\n      - to: \"0.0.0.0/0\"\n        via: \"192.0.2.254\"\n        on-link: true\n  eth1:\n"
            ),
            "{}",
            routed.network_config
        );
        assert_eq!(routed.network_config.matches("routes:").count(), 1);
        let user = &seed.user_data;
        assert!(user.contains("hostname: \"gateway\"\n"), "{user}");
        assert!(user.contains("  - name: \"alice\"\n    lock_passwd: false\n    passwd: \"$6$saltsalt$abcdefghijklmnopqrstuv\"\n"), "{user}");
        assert!(
            user.contains("      - \"ssh-ed25519 AAAAC3Nza alice@example\"\n"),
            "{user}"
        );
        assert!(user.contains("oifname { \"eth0\" } masquerade"), "{user}");
        assert!(
            user.contains("  - \"nft -f /etc/neptune/nat.nft\"\n"),
            "{user}"
        );
    }

    #[test]
    fn the_public_gateway_is_never_a_home_address() {
        let topo = neptune_topology::from_xml(NAT).unwrap();
        let vi = Uuid::from_u128(7).into();
        let mut dc = neptune_store::DatacenterRecord {
            id: Uuid::from_u128(1).into(),
            name: "dc1".to_owned(),
            created_at: 0,
            home_pools: vec!["192.0.2.0/24".to_owned()],
            public_gateway: Some("192.0.2.1".to_owned()),
        };
        let pools = ["10.20.0.0/16".parse().unwrap()];
        let domain = crate::plan::domain(&pools, std::slice::from_ref(&dc)).unwrap();
        let snapshot = crate::plan::snapshot(domain, &[]).unwrap();
        let plan = crate::plan::addresses(&snapshot, vi, &topo, "dc1").unwrap();
        let home = plan.entry_points[0].home_address;
        assert_ne!(home, Ipv4Addr::new(192, 0, 2, 1), "the gateway is kept");
        assert!(
            "192.0.2.0/24"
                .parse::<neptune_ipam::ipnet::Ipv4Net>()
                .unwrap()
                .contains(&home),
            "{home}"
        );
        // Outside the pools, or the network's own address: refused.
        for bad in ["198.51.100.1", "192.0.2.0", "not-an-address"] {
            dc.public_gateway = Some(bad.to_owned());
            let err = crate::plan::domain(&pools, std::slice::from_ref(&dc)).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn names_become_host_and_interface_names() {
        let (_, mut topo, _) = planned();
        let node = &mut topo.nodes[0];
        node.name = "Web Front #1".to_owned();
        assert_eq!(hostname(node), "web-front-1");
        node.name = "###".to_owned();
        assert_eq!(hostname(node), "gw");
        let mut iface = node.interfaces[0].clone();
        iface.name = "a-very-long-interface-name".parse().unwrap();
        assert_eq!(guest_ifname(&iface, 3), "eth3");
    }
}

//! `neptune address` run as a user runs it: the real binary, real files.

use super::{neptune, stderr, stdout, testdata};

/// A design without pins: a gateway on a LAN of three back ends, two of
/// which replicate over a point-to-point link.
const UNPINNED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<topology id="plain">
  <nodes>
    <node id="gw">
      <ram dimension="256"/>
      <hd dimension="1"/>
      <network_interfaces>
        <interface name="eth0"><interface_binding type="HIF"/><entry_point/></interface>
        <interface name="eth1"/>
      </network_interfaces>
    </node>
    <node id="a"><ram dimension="256"/><hd dimension="1"/><network_interfaces><interface name="eth0"/><interface name="eth1"/></network_interfaces></node>
    <node id="b"><ram dimension="256"/><hd dimension="1"/><network_interfaces><interface name="eth0"/><interface name="eth1"/></network_interfaces></node>
    <node id="c"><ram dimension="256"/><hd dimension="1"/><network_interfaces><interface name="eth0"/></network_interfaces></node>
  </nodes>
  <links>
    <link id="lan" type="lan" bandwidth="100">
      <endpoint node="gw" interface="eth1"/>
      <endpoint node="a" interface="eth0"/>
      <endpoint node="b" interface="eth0"/>
      <endpoint node="c" interface="eth0"/>
    </link>
    <link id="repl" bandwidth="1000">
      <endpoint node="a" interface="eth1"/>
      <endpoint node="b" interface="eth1"/>
    </link>
  </links>
</topology>
"#;

fn write_unpinned() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("plain.xml");
    std::fs::write(&path, UNPINNED).expect("write topology");
    let path = path.to_string_lossy().into_owned();
    (dir, path)
}

#[test]
fn plans_the_pinned_shop_design() {
    let out = neptune(&["address", "plan", &testdata("web-with-links.xml")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "VI shop: no block (every link is pinned)\n\
         \n\
         LINK     SUBNET        GATEWAY\n\
         backend  10.20.0.0/29  10.20.0.1  pinned\n\
         \n\
         INTERFACE  LINK     ADDRESS\n\
         gw/eth1    backend  10.20.0.1/29  pinned\n\
         web1/eth0  backend  10.20.0.2/29\n\
         web2/eth0  backend  10.20.0.3/29\n\
         \n\
         ENTRY POINT  HOME ADDRESS  DATACENTER\n\
         gw/eth0      192.0.2.10    home        pinned\n"
    );
}

#[test]
fn plans_an_unpinned_design_in_the_given_pools_as_json() {
    let (_dir, path) = write_unpinned();
    let out = neptune(&[
        "address",
        "plan",
        &path,
        "--pool",
        "172.16.0.0/12",
        "--home-pool",
        "198.51.100.0/24",
        "--datacenter",
        "napoli",
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON plan");
    assert_eq!(plan["vi"], "plain");
    assert_eq!(plan["block"], "172.16.0.0/28");
    assert_eq!(plan["links"][0]["subnet"], "172.16.0.0/29");
    assert_eq!(plan["links"][0]["gateway"], "172.16.0.1");
    assert_eq!(plan["links"][0]["interfaces"][0]["node"], "gw");
    assert_eq!(plan["links"][0]["interfaces"][3]["cidr"], "172.16.0.4/29");
    assert_eq!(plan["links"][1]["subnet"], "172.16.0.8/31");
    assert_eq!(plan["links"][1]["interfaces"][1]["address"], "172.16.0.9");
    assert_eq!(plan["entry_points"][0]["home_address"], "198.51.100.1");
    assert_eq!(plan["entry_points"][0]["datacenter"], "napoli");
    assert_eq!(plan["allocations"].as_array().map(Vec::len), Some(2));
}

#[test]
fn slash30_point_to_point_on_request() {
    let (_dir, path) = write_unpinned();
    let out = neptune(&["address", "plan", &path, "--point-to-point", "30"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("repl  10.0.0.8/30"), "{text}");
    assert!(text.contains("a/eth1     repl  10.0.0.9/30"), "{text}");
}

#[test]
fn refused_plans_exit_1_with_the_reason() {
    // The design pins 192.0.2.10 as its Home Address.
    let out = neptune(&[
        "address",
        "plan",
        &testdata("web-with-links.xml"),
        "--home-pool",
        "198.51.100.0/24",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(
            "pinned Home Address 192.0.2.10 of entry point gw/eth0 is not inside home pool \
             198.51.100.0/24 of datacenter home"
        ),
        "{err}"
    );
    let (_dir, path) = write_unpinned();
    let out = neptune(&["address", "plan", &path, "--pool", "10.0.0.0/29"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(
            "private pool 10.0.0.0/29 cannot hold a /28 (16 addresses) for the address block \
             of VI plain (2 links): 8 addresses free, largest free block 10.0.0.0/29"
        ),
        "{err}"
    );
}

#[test]
fn bad_input_is_reported() {
    let bad = testdata("many-errors.xml");
    let out = neptune(&["address", "plan", &bad]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with(&format!("{bad}:")),
        "{}",
        stderr(&out)
    );

    let (_dir, path) = write_unpinned();
    let out = neptune(&[
        "address",
        "plan",
        &path,
        "--pool",
        "10.0.0.0/8",
        "--home-pool",
        "10.1.0.0/24",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out)
            .contains("private pool 10.0.0.0/8 overlaps home pool 10.1.0.0/24 of datacenter home"),
        "{}",
        stderr(&out)
    );

    let out = neptune(&["address", "plan", "/nonexistent/topology.xml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("reading /nonexistent/topology.xml"),
        "{}",
        stderr(&out)
    );

    let out = neptune(&["address", "plan", &path, "--pool", "10.0.0.0/33"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap refuses a malformed prefix"
    );
}

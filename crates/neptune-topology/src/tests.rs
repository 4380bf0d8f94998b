//! Tests of loading, writing and validating topologies in both forms.

use neptune_types::{InterfaceName, Mbps, Mib, NodeId};
use proptest::prelude::*;

use super::*;
use crate::catalogue::{self, Kind, Params};

const FIG3: &str = include_str!("../testdata/fig3.xml");
const SHOP: &str = include_str!("../testdata/web-with-links.xml");
const MANY_ERRORS: &str = include_str!("../testdata/many-errors.xml");

fn messages(errs: &[Diagnostic]) -> Vec<String> {
    errs.iter().map(|d| d.to_string()).collect()
}

#[test]
fn figure_3_loads_as_written() {
    let topo = from_xml(FIG3).unwrap();
    assert_eq!(topo.id.as_str(), "luigi");
    assert_eq!(topo.nodes.len(), 1);
    let n = &topo.nodes[0];
    assert_eq!(n.id.as_str(), "node0");
    assert_eq!(n.ram, Mib(256));
    assert_eq!(n.disk, Mib(2048), "hd dimension=\"2,0\" is 2 GiB");
    assert_eq!(n.cpu.amount, 0, "zero means unspecified");
    assert_eq!(n.vcpus(), 1);
    assert_eq!(n.interfaces.len(), 2);
    assert_eq!(
        n.interfaces[0].mac,
        Some("1E:87:3F:D6:E7:8D".parse().unwrap())
    );
    assert_eq!(n.interfaces[0].binding, InterfaceBinding::Hif);
    assert_eq!(n.interfaces[1].binding, InterfaceBinding::Bridge);
    assert_eq!(n.os.name, "CentOS");
    assert_eq!(n.os.password.expose(), "antoxps");
    assert_eq!(n.software.template, "minicentos");
    assert_eq!(n.software.ssh_port, Some(22));
    assert_eq!(n.software.software[0].name, "apache");
    assert_eq!(n.software.software[0].kind, "webserver");
    assert_eq!(n.software.software[0].version, "2");
    assert!(topo.links.is_empty(), "files without <links> stay valid");
}

#[test]
fn links_entry_points_and_pins() {
    let topo = from_xml(SHOP).unwrap();
    let s = topo.summary();
    assert_eq!((s.nodes, s.links, s.entry_points), (3, 1, 1));
    assert_eq!(s.vcpus, 3);
    assert_eq!(s.ram, Mib(1280));
    assert_eq!(s.disk, Mib(1536 + 4096 * 2));
    assert_eq!(s.bandwidth, Mbps(1000));
    let link = &topo.links[0];
    assert_eq!(link.kind, LinkKind::Lan);
    assert_eq!(link.subnet, Some("10.20.0.0/29".parse().unwrap()));
    let (gw, eth0) = topo.entry_points().next().unwrap();
    assert_eq!(gw.id.as_str(), "gw");
    assert_eq!(
        eth0.entry_point.as_ref().unwrap().home_address,
        Some("192.0.2.10".parse().unwrap())
    );
    assert_eq!(gw.interfaces[1].address, Some("10.20.0.1".parse().unwrap()));
    assert_eq!(gw.description, "NAT and firewall");
    // A MAC absent from the design stays absent: the Manager allocates it.
    assert_eq!(topo.nodes[1].interfaces[0].mac, None);
}

#[test]
fn write_then_read_is_identity_for_goldens() {
    for text in [FIG3, SHOP] {
        let topo = from_xml(text).unwrap();
        let written = to_xml(&topo);
        let again = from_xml(&written).unwrap_or_else(|e| panic!("{written}\n{e:?}"));
        assert_eq!(topo, again);
        assert_eq!(written, to_xml(&again), "writing is stable");
    }
}

#[test]
fn written_figure_3_matches_golden() {
    let written = to_xml(&from_xml(FIG3).unwrap());
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/fig3.canonical.xml");
    if std::env::var_os("NEPTUNE_UPDATE_GOLDEN").is_some() {
        std::fs::write(path, &written).unwrap();
    }
    let golden = std::fs::read_to_string(path).unwrap();
    assert_eq!(
        written, golden,
        "update testdata/fig3.canonical.xml if the dialect changed on purpose"
    );
}

#[test]
fn every_error_at_once_with_positions() {
    let errs = from_xml(MANY_ERRORS).unwrap_err();
    let msgs = messages(&errs);
    let expect = [
        "5:23: \"dimension\" of <ram>: \"lots\" is not a number",
        "6:22: disk size must be positive",
        "7:7: unknown element <colour> in <node>",
        "9:25: \"MAC\" of <interface>: \"ZZ:87:3F:D6:E7:8D\" is not a MAC address",
        "9:56: unknown attribute \"speed\" on <interface>",
        "10:9: duplicate interface \"eth0\" in node \"a\"",
        "13:5: duplicate node id \"a\" (first defined on node #1)",
        "17:25: duplicate MAC address 52:54:00:00:00:01 (also on a/eth0)",
        "20:5: missing element <ram> in <node>",
        "25:30: \"bandwidth\" of <link>: \"-5\" is negative",
        "27:7: link refers to unknown node \"ghost\"",
        "29:30: bandwidth must be positive",
        "30:7: link refers to unknown interface \"eth9\" of node \"c\"",
        "31:7: interface a/eth0 is already an end point of link \"l1\"",
    ];
    for e in expect {
        assert!(
            msgs.iter().any(|m| m.starts_with(e)),
            "missing {e:?} in\n{}",
            msgs.join("\n")
        );
    }
    // Nothing else: in particular no follow-on noise ("RAM must be positive" for "lots").
    assert_eq!(msgs.len(), expect.len(), "{msgs:#?}");
    let positions: Vec<(u32, u32)> = errs.iter().map(|d| (d.line, d.column)).collect();
    let mut sorted = positions.clone();
    sorted.sort();
    assert_eq!(positions, sorted);
}

#[test]
fn missing_attributes_and_wrong_root() {
    let errs = from_xml("<topology><nodes/></topology>").unwrap_err();
    assert_eq!(
        messages(&errs),
        vec!["1:1: missing attribute \"id\" on <topology>"]
    );
    let errs = from_xml("<graph id=\"x\"/>").unwrap_err();
    assert!(messages(&errs)[0].contains("unknown element <graph> in <document>"));
    let errs = from_xml("<topology id=\"x\"><nodes/></topology>").unwrap_err();
    assert_eq!(messages(&errs), vec!["1:1: the topology has no nodes"]);
}

#[test]
fn malformed_xml_names_line_and_column() {
    let errs = from_xml("<topology id=\"x\">\n  <nodes>\n</topology>").unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!((errs[0].line, errs[0].column), (3, 1));
    assert!(errs[0].to_string().contains("nodes"), "{}", errs[0]);
}

#[test]
fn doctype_and_entities_are_refused() {
    let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<topology id="&lol2;"><nodes/></topology>"#;
    let errs = from_xml(laughs).unwrap_err();
    assert_eq!(
        messages(&errs),
        vec!["2:1: DOCTYPE and entity declarations are not allowed"]
    );
    let external = r#"<!DOCTYPE t SYSTEM "file:///etc/passwd"><topology id="x"/>"#;
    assert_eq!(from_xml(external).unwrap_err()[0].problem, Problem::Doctype);
    let undeclared = r#"<topology id="&xxe;"><nodes/></topology>"#;
    assert!(matches!(
        from_xml(undeclared).unwrap_err()[0].problem,
        Problem::Syntax(_)
    ));
}

#[test]
fn a_text_cut_short_is_reported_where_it_ends() {
    let cut = "<topology id=\"x\">\n  <nodes>\n    <node";
    let errs = from_xml(cut).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!((errs[0].line, errs[0].column), (3, 10), "{errs:?}");
    assert!(matches!(errs[0].problem, Problem::Syntax(_)));
    // Cut inside a tag, not only after one.
    let errs = from_xml("<topology id=\"x\"><nodes><no").unwrap_err();
    assert_eq!((errs[0].line, errs[0].column), (1, 28), "{errs:?}");
}

#[test]
fn size_and_depth_are_bounded() {
    let big = " ".repeat(xml::MAX_INPUT_BYTES + 1);
    assert!(matches!(
        from_xml(&big).unwrap_err()[0].problem,
        Problem::TooLarge { .. }
    ));
    let deep = format!(
        "<topology id=\"x\">{}{}</topology>",
        "<a>".repeat(5000),
        "</a>".repeat(5000)
    );
    let errs = from_xml(&deep).unwrap_err();
    assert!(
        matches!(errs[0].problem, Problem::TooDeep { .. }),
        "{errs:?}"
    );
}

#[test]
fn a_design_is_bounded_in_nodes_and_resources() {
    // One node more than the limit, each as small as XML allows.
    let mut text = String::from("<topology id=\"big\"><nodes>");
    for n in 0..=limits::MAX_NODES {
        text.push_str(&format!(
            "<node id=\"n{n}\"><ram dimension=\"1\"/><hd dimension=\"1\"/></node>"
        ));
    }
    text.push_str("</nodes></topology>");
    let errs = from_xml(&text).unwrap_err();
    assert_eq!(
        messages(&errs),
        vec![format!(
            "1:1: the design has {} nodes; the limit is {}",
            limits::MAX_NODES + 1,
            limits::MAX_NODES
        )]
    );

    // 2^63 MiB of RAM would overflow every sum of a quota: refused here.
    let huge = r#"<topology id="t"><nodes>
  <node id="a"><cpu amount="5000"/><ram dimension="9223372036854775808"/><hd dimension="1"/></node>
</nodes></topology>"#;
    let errs = from_xml(huge).unwrap_err();
    assert_eq!(
        messages(&errs),
        vec![
            "2:3: a node's CPU amount of 5000 vCPUs is beyond any host; the limit is 1024 vCPUs"
                .to_owned(),
            format!(
                "2:52: RAM of 9223372036854775808 MiB is beyond any host; the limit is {} MiB",
                limits::MAX_RAM_MIB
            ),
        ]
    );
    // At the limits, the design is valid.
    let edge = format!(
        r#"<topology id="t"><nodes><node id="a"><cpu amount="1024"/><ram dimension="{}"/><hd dimension="1"/></node></nodes></topology>"#,
        limits::MAX_RAM_MIB
    );
    assert!(from_xml(&edge).is_ok());
}

#[test]
fn text_that_is_not_utf8_is_placed_at_its_first_bad_byte() {
    let mut bytes = "<topology id=\"t\">\n  <nodes>\u{e9}".as_bytes().to_vec();
    bytes.push(0xff);
    bytes.extend_from_slice(b"</nodes></topology>");
    assert_eq!(
        messages(&load_bytes(&bytes).unwrap_err()),
        vec!["2:11: the text is not UTF-8 (byte 0xff)"]
    );
    // Valid UTF-8 loads as text does.
    assert_eq!(load_bytes(FIG3.as_bytes()).unwrap(), load(FIG3).unwrap());
}

#[test]
fn diagnostics_are_capped() {
    let mut text = String::from(
        "<topology id=\"x\"><nodes><node id=\"n\"><ram dimension=\"1\"/><hd dimension=\"1\"/>",
    );
    for _ in 0..500 {
        text.push_str("<bogus/>");
    }
    text.push_str("</node></nodes></topology>");
    let errs = from_xml(&text).unwrap_err();
    assert_eq!(errs.len(), xml::MAX_DIAGNOSTICS + 1);
    assert!(errs
        .last()
        .unwrap()
        .to_string()
        .contains("300 more problems"));
}

#[test]
fn link_arity_self_links_and_double_use() {
    let text = r#"<topology id="t"><nodes>
  <node id="a"><ram dimension="1"/><hd dimension="1"/><network_interfaces>
    <interface name="e0"/><interface name="e1"/></network_interfaces></node>
  <node id="b"><ram dimension="1"/><hd dimension="1"/><network_interfaces>
    <interface name="e0"/></network_interfaces></node>
</nodes><links>
  <link id="p" type="point_to_point" bandwidth="10">
    <endpoint node="a" interface="e0"/><endpoint node="a" interface="e1"/><endpoint node="b" interface="e0"/>
  </link>
  <link id="q" bandwidth="10"><endpoint node="b" interface="e0"/><endpoint node="a" interface="e0"/></link>
  <link id="q" type="lan" bandwidth="10"><endpoint node="b" interface="e0"/></link>
  <link id="r" type="ring" bandwidth="10"/>
</links></topology>"#;
    let msgs = messages(&from_xml(text).unwrap_err());
    let all = msgs.join("\n");
    for needle in [
        "a point-to-point link joins exactly 2 interfaces, this one joins 3",
        "the link joins node \"a\" to itself",
        "interface b/e0 is already an end point of link \"p\"",
        "interface a/e0 is already an end point of link \"p\"",
        "duplicate link id \"q\"",
        "a LAN joins at least 2 interfaces, this one joins 1",
        "\"ring\" is not a link type",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in\n{all}");
    }
}

#[test]
fn pinned_address_outside_subnet() {
    let text = SHOP.replace("address=\"10.20.0.1\"", "address=\"10.99.0.1\"");
    let all = messages(&from_xml(&text).unwrap_err()).join("\n");
    assert!(
        all.contains(
            "pinned address 10.99.0.1 is not inside the link's pinned subnet 10.20.0.0/29"
        ),
        "{all}"
    );
    let text = SHOP.replace("subnet=\"10.20.0.0/29\"", "subnet=\"10.20.0.0/33\"");
    let all = messages(&from_xml(&text).unwrap_err()).join("\n");
    assert!(all.contains("is not an IPv4 prefix"), "{all}");
}

#[test]
fn json_form_hides_the_password_and_round_trips() {
    let topo = from_xml(SHOP).unwrap();
    let json = to_json(&topo);
    assert!(!json.contains("s3cret"), "password leaked: {json}");
    assert!(json.contains("\"password_set\": true"));
    let back = from_json(&json).unwrap();
    let mut expected = topo.clone();
    for n in &mut expected.nodes {
        n.os.password = Default::default();
    }
    assert_eq!(back, expected);
    assert!(
        !format!("{topo:?}").contains("s3cret"),
        "Debug leaks the password"
    );
}

#[test]
fn json_errors_are_placed() {
    let errs = from_json("{\"id\": \"x\",\n \"nodes\": [}").unwrap_err();
    assert_eq!((errs[0].line, errs[0].column), (2, 12));
    let errs = from_json(r#"{"id":"x","nodes":[{"id":"a","ram":0,"disk":1}]}"#).unwrap_err();
    assert_eq!(errs[0].pointer.as_deref(), Some("/nodes/0/ram"));
    assert_eq!(
        errs[0].to_string(),
        "1:1: /nodes/0/ram: RAM must be positive"
    );
    let errs = from_json(r#"{"id":"x","nodes":[],"colour":1}"#).unwrap_err();
    assert!(
        errs[0].to_string().contains("unknown field `colour`"),
        "{}",
        errs[0]
    );
}

#[test]
fn load_sniffs_the_form() {
    let topo = from_xml(FIG3).unwrap();
    assert_eq!(load(&to_json(&topo)).unwrap().id, topo.id);
    assert_eq!(load(FIG3).unwrap(), topo);
}

#[test]
fn every_catalogue_kind_is_valid() {
    for kind in Kind::ALL {
        for nodes in [
            kind.min_nodes(),
            kind.default_nodes(),
            12.min(kind.max_nodes()),
        ] {
            let params = Params {
                nodes,
                ..Params::new(kind)
            };
            let topo = catalogue::generate(kind, &params).unwrap();
            assert!(
                validate(&topo).is_empty(),
                "{kind:?} {nodes}: {:?}",
                validate(&topo)
            );
            assert_eq!(topo.nodes.len(), nodes, "{kind:?}");
            assert_eq!(topo.entry_points().count(), 1, "{kind:?}");
            let (entry, iface) = topo.entry_points().next().unwrap();
            assert_eq!(iface.name.as_str(), "eth0");
            assert_eq!(entry.id, topo.nodes[0].id);
            // Every link interface exists and every non-entry interface is linked.
            let linked: usize = topo.links.iter().map(|l| l.endpoints.len()).sum();
            let ifaces: usize = topo.nodes.iter().map(|n| n.interfaces.len()).sum();
            assert_eq!(linked + 1, ifaces, "{kind:?}");
            // Through XML and back.
            assert_eq!(from_xml(&to_xml(&topo)).unwrap(), topo, "{kind:?}");
        }
    }
}

#[test]
fn catalogue_shapes() {
    let gen = |kind, nodes| {
        catalogue::generate(
            kind,
            &Params {
                nodes,
                ..Params::new(kind)
            },
        )
        .unwrap()
    };
    assert_eq!(gen(Kind::Line, 5).links.len(), 4);
    assert_eq!(gen(Kind::Ring, 5).links.len(), 5);
    assert_eq!(gen(Kind::Star, 5).links.len(), 4);
    assert_eq!(gen(Kind::Tree, 7).links.len(), 6);
    assert_eq!(gen(Kind::FullMesh, 6).links.len(), 15);
    let nat = gen(Kind::NatBackends, 4);
    assert_eq!(nat.links.len(), 1);
    assert_eq!(nat.links[0].kind, LinkKind::Lan);
    assert_eq!(nat.links[0].endpoints.len(), 4);
    assert_eq!(nat.nodes[0].id.as_str(), "gateway");
    let web = gen(Kind::ThreeTier, 5);
    assert_eq!(web.links.len(), 2);
    assert_eq!(web.links[0].endpoints.len(), 4, "balancer + 3 web servers");
    assert_eq!(web.links[1].endpoints.len(), 4, "3 web servers + db");
    let cluster = gen(Kind::Cluster, 9);
    assert_eq!(cluster.nodes[0].id.as_str(), "head");
    assert_eq!(cluster.links[0].endpoints.len(), 9);
}

#[test]
fn catalogue_refuses_bad_parameters() {
    let p = Params {
        nodes: 1,
        ..Params::new(Kind::Ring)
    };
    assert_eq!(
        catalogue::generate(Kind::Ring, &p).unwrap_err().to_string(),
        "a ring topology needs between 3 and 10000 nodes, not 1"
    );
    let p = Params {
        nodes: 65,
        ..Params::new(Kind::FullMesh)
    };
    assert!(catalogue::generate(Kind::FullMesh, &p).is_err());
    let p = Params {
        bandwidth: Mbps(0),
        ..Params::new(Kind::Line)
    };
    assert!(catalogue::generate(Kind::Line, &p).is_err());
    assert!(catalogue::kind("hypercube").is_err());
}

// ---- property tests: any model survives XML and JSON ----

fn id_text() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_.-]{0,8}"
}

fn free_text() -> impl Strategy<Value = String> {
    // Printable, XML-special characters included; trimmed, as the reader trims.
    "[ -~àé€]{0,12}".prop_map(|s| s.trim().to_owned())
}

fn node_strategy() -> impl Strategy<Value = VirtualNode> {
    (
        id_text(),
        free_text(),
        free_text(),
        (0u32..64, 0u32..5000, free_text()),
        1u64..1 << 20,
        1u64..1 << 24,
        proptest::collection::vec((any::<bool>(), 0u8..3, any::<bool>()), 0..4),
        (free_text(), free_text(), "[ -~]{0,8}"),
        (
            free_text(),
            proptest::option::of(1u16..),
            proptest::collection::vec((free_text(), free_text()), 0..3),
        ),
    )
        .prop_map(
            |(id, name, description, (amount, clock, cpu_name), ram, disk, ifaces, os, sw)| {
                VirtualNode {
                    id: NodeId::new(id).unwrap(),
                    name,
                    description,
                    cpu: Cpu {
                        amount,
                        clock: neptune_types::Mhz(clock),
                        name: cpu_name,
                        kind: String::new(),
                    },
                    ram: Mib(ram),
                    disk: Mib(disk),
                    interfaces: ifaces
                        .into_iter()
                        .enumerate()
                        .map(|(k, (entry, binding, pinned))| NetworkInterface {
                            name: InterfaceName::new(format!("eth{k}")).unwrap(),
                            mac: None,
                            kind: "virtio".into(),
                            binding: [
                                InterfaceBinding::Unspecified,
                                InterfaceBinding::Hif,
                                InterfaceBinding::Bridge,
                            ][binding as usize],
                            entry_point: entry.then(EntryPoint::default),
                            address: None
                                .or(pinned.then_some(std::net::Ipv4Addr::new(10, 0, 0, 1))),
                        })
                        .collect(),
                    os: OperatingSystem {
                        name: os.0,
                        username: os.1,
                        password: neptune_types::Secret::new(os.2),
                    },
                    software: SoftwareConfiguration {
                        template: sw.0,
                        ssh_port: sw.1,
                        software: sw
                            .2
                            .into_iter()
                            .map(|(name, version)| Software {
                                name,
                                kind: String::new(),
                                version,
                            })
                            .collect(),
                    },
                }
            },
        )
}

fn topology_strategy() -> impl Strategy<Value = Topology> {
    (
        id_text(),
        proptest::collection::vec(node_strategy(), 1..6),
        any::<u64>(),
        1u64..100_000,
    )
        .prop_map(|(id, mut nodes, seed, bw)| {
            // Unique node ids; pinned addresses unique.
            for (k, n) in nodes.iter_mut().enumerate() {
                n.id = NodeId::new(format!("{}-{k}", n.id)).unwrap();
                for (j, i) in n.interfaces.iter_mut().enumerate() {
                    if i.address.is_some() {
                        i.address = Some(std::net::Ipv4Addr::new(10, 0, k as u8, j as u8 + 1));
                    }
                }
            }
            // Link free interfaces pairwise across different nodes.
            let free: Vec<(NodeId, InterfaceName)> = nodes
                .iter()
                .flat_map(|n| {
                    n.interfaces
                        .iter()
                        .filter(|i| i.entry_point.is_none())
                        .map(|i| (n.id.clone(), i.name.clone()))
                })
                .collect();
            let mut links = Vec::new();
            let mut used = std::collections::HashSet::new();
            for (k, a) in free.iter().enumerate() {
                if used.contains(a) {
                    continue;
                }
                if let Some(b) = free[k + 1..]
                    .iter()
                    .find(|b| b.0 != a.0 && !used.contains(*b))
                {
                    used.insert(a.clone());
                    used.insert(b.clone());
                    links.push(VirtualLink {
                        id: neptune_types::LinkId::new(format!("l{}", links.len())).unwrap(),
                        kind: LinkKind::PointToPoint,
                        bandwidth: Mbps(bw + seed % 7),
                        endpoints: vec![
                            Endpoint {
                                node: a.0.clone(),
                                interface: a.1.clone(),
                            },
                            Endpoint {
                                node: b.0.clone(),
                                interface: b.1.clone(),
                            },
                        ],
                        subnet: None,
                    });
                }
            }
            Topology {
                id: neptune_types::TopologyId::new(id).unwrap(),
                nodes,
                links,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn xml_round_trip(topo in topology_strategy()) {
        prop_assert!(validate(&topo).is_empty(), "{:?}", validate(&topo));
        let text = to_xml(&topo);
        let back = from_xml(&text).map_err(|e| TestCaseError::fail(format!("{e:?}\n{text}")))?;
        prop_assert_eq!(&back, &topo);
        prop_assert_eq!(back.nodes.iter().map(|n| n.os.password.expose()).collect::<Vec<_>>(),
            topo.nodes.iter().map(|n| n.os.password.expose()).collect::<Vec<_>>());
    }

    #[test]
    fn json_round_trip_without_passwords(topo in topology_strategy()) {
        let back = from_json(&to_json(&topo)).unwrap();
        let mut expected = topo;
        for n in &mut expected.nodes { n.os.password = Default::default(); }
        prop_assert_eq!(back, expected);
    }

    #[test]
    fn reading_never_panics(text in "\\PC{0,200}") {
        let _ = from_xml(&text);
        let _ = from_json(&text);
    }

    #[test]
    fn mutated_documents_never_panic(cut in 0usize..2000, insert in "[<>&\"'/=a-z ]{0,5}") {
        let mut text = SHOP.to_owned();
        let at = cut.min(text.len());
        let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.insert_str(at, &insert);
        let _ = from_xml(&text);
    }
}

/// The dialect's documentation shows documents that load and a JSON form
/// that is what `to_json` writes.
#[test]
fn documented_examples_are_true() {
    let doc = include_str!("../../../docs/topology-xml.md");
    let blocks = |lang: &str| -> Vec<String> {
        let fence = format!("```{lang}\n");
        doc.split(fence.as_str())
            .skip(1)
            .filter_map(|b| b.split("```").next().map(str::to_owned))
            .collect()
    };
    let documents: Vec<String> = blocks("xml")
        .into_iter()
        .filter(|b| b.starts_with("<?xml"))
        .collect();
    assert_eq!(documents.len(), 2);
    assert_eq!(from_xml(&documents[0]).unwrap(), from_xml(FIG3).unwrap());
    assert_eq!(
        documents[1],
        SHOP.replace(
            "<!-- A NAT/firewall entry point in front of two web backends on a LAN. -->\n",
            ""
        )
    );
    let json = &blocks("json")[0];
    let shown: serde_json::Value = serde_json::from_str(json).unwrap();
    let actual: serde_json::Value =
        serde_json::from_str(&to_json(&from_xml(FIG3).unwrap())).unwrap();
    assert_eq!(shown, actual);
    // The error listing is what the reader says about many-errors.xml.
    let listing: Vec<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("many-errors.xml:"))
        .map(str::to_owned)
        .collect();
    assert_eq!(listing, messages(&from_xml(MANY_ERRORS).unwrap_err()));
}

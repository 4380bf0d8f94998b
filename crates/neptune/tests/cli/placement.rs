//! `neptune placement` run as a user runs it: the real binary, real files.

use std::path::Path;
use std::process::Output;

use super::neptune;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write graph");
    p.to_string_lossy().into_owned()
}

/// Two triangles (weight 10 inside) joined by one edge of weight 1.
const TWO_TRIANGLES: &str = "% two triangles\n6 7 1\n2 10 3 10\n1 10 3 10\n1 10 2 10 4 1\n3 1 5 10 6 10\n4 10 6 10\n4 10 5 10\n";

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}

#[test]
fn solve_finds_the_two_triangles_with_both_solvers() {
    let dir = tempfile::tempdir().unwrap();
    let g = write(dir.path(), "g.graph", TWO_TRIANGLES);
    for solver in ["kl", "default"] {
        let o = neptune(&[
            "placement",
            "solve",
            &g,
            "--group-size",
            "3",
            "--solver",
            solver,
            "--output",
            "json",
        ]);
        assert!(
            o.status.success(),
            "{solver}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v = json(&o);
        assert_eq!(v["cut"], 1, "{solver}");
        assert_eq!(v["max_group_size"], 3);
        assert_eq!(v["admissible"], true);
        let group: Vec<u64> = v["group"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        assert_eq!(group.len(), 6);
        assert_eq!(group[0], group[1]);
        assert_eq!(group[1], group[2]);
        assert_eq!(group[3], group[4]);
        assert_eq!(group[4], group[5]);
        assert_ne!(group[0], group[3]);
        assert!(v["time_s"].as_f64().unwrap() >= 0.0);
    }
}

#[test]
fn both_efforts_find_the_two_triangles_and_say_which_ran() {
    let dir = tempfile::tempdir().unwrap();
    let g = write(dir.path(), "g.graph", TWO_TRIANGLES);
    for (args, effort) in [(&[][..], "fast"), (&["--effort", "high"][..], "high")] {
        let mut all = vec!["placement", "solve", &g, "-k", "3", "--output", "json"];
        all.extend_from_slice(args);
        let o = neptune(&all);
        assert!(
            o.status.success(),
            "{effort}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v = json(&o);
        assert_eq!(v["effort"], effort);
        assert_eq!(v["cut"], 1, "{effort}");
        assert_eq!(v["max_group_size"], 3, "{effort}");
        // Six VMs: searched exactly, the cut of 1 is proven the least.
        assert_eq!(
            (v["optimal"].as_bool(), v["lower_bound"].as_u64()),
            (Some(true), Some(1))
        );
    }
    let o = neptune(&["placement", "solve", &g, "-k", "3"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("optimal: yes (proven by exact search)"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = neptune(&["placement", "solve", &g, "-k", "3", "--effort", "extreme"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--effort"));
}

#[test]
fn kl_reports_each_restart_and_i_star() {
    let dir = tempfile::tempdir().unwrap();
    let g = write(dir.path(), "g.graph", TWO_TRIANGLES);
    let o = neptune(&[
        "placement",
        "solve",
        &g,
        "-k",
        "3",
        "--solver",
        "kl",
        "--restarts",
        "7",
        "--seed",
        "3",
        "--output",
        "json",
    ]);
    assert!(o.status.success());
    let v = json(&o);
    let costs = v["restart_costs"].as_array().unwrap();
    assert_eq!(costs.len(), 7);
    let i = v["best_iteration"].as_u64().unwrap() as usize;
    assert_eq!(costs[i - 1], v["cut"]);
}

#[test]
fn text_output_and_same_seed_same_groups() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("30 45 1\n");
    // A ring of 30 with chords: deterministic but not trivial.
    let mut adj: Vec<Vec<(usize, u64)>> = vec![Vec::new(); 30];
    let mut m = 0;
    for v in 0..30 {
        let (u, w) = ((v + 1) % 30, 3 + (v % 4) as u64);
        adj[v].push((u, w));
        adj[u].push((v, w));
        m += 1;
        if v % 2 == 0 {
            let u = (v + 7) % 30;
            adj[v].push((u, 2));
            adj[u].push((v, 2));
            m += 1;
        }
    }
    assert_eq!(m, 45);
    for list in &adj {
        let line: Vec<String> = list.iter().map(|(u, w)| format!("{} {w}", u + 1)).collect();
        text.push_str(&line.join(" "));
        text.push('\n');
    }
    let g = write(dir.path(), "ring.graph", &text);
    let o = neptune(&["placement", "solve", &g, "--group-size", "5"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("cut: "), "{out}");
    assert!(out.contains("max group size: 5 (limit 5)"), "{out}");
    assert!(out.contains("admissible: yes"), "{out}");
    let a = json(&neptune(&[
        "placement",
        "solve",
        &g,
        "-k",
        "5",
        "--seed",
        "9",
        "--output",
        "json",
    ]));
    let b = json(&neptune(&[
        "placement",
        "solve",
        &g,
        "-k",
        "5",
        "--seed",
        "9",
        "--output",
        "json",
    ]));
    assert_eq!(a["group"], b["group"]);
    assert_eq!(a["cut"], b["cut"]);
}

#[test]
fn an_overloaded_link_gives_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    // A 4-clique of weight 10 split into groups of 2: every split cuts 40
    // over a single host pair; a pair capacity of 5 cannot hold it.
    let g = write(
        dir.path(),
        "k4.graph",
        "4 6 1\n2 10 3 10 4 10\n1 10 3 10 4 10\n1 10 2 10 4 10\n1 10 2 10 3 10\n",
    );
    let o = neptune(&[
        "placement",
        "solve",
        &g,
        "-k",
        "2",
        "--link-capacity",
        "5",
        "--output",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    assert_eq!(v["admissible"], false);
    assert_eq!(v["overloaded_links"], 1);
    let o = neptune(&["placement", "solve", &g, "-k", "2", "--link-capacity", "40"]);
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn a_malformed_graph_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let g = write(dir.path(), "bad.graph", "3 2\n2\n1 9\n2\n");
    let o = neptune(&["placement", "solve", &g, "--group-size", "2"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("line 3, column 3"), "{err}");
    assert!(err.contains("out of range"), "{err}");
    let o = neptune(&[
        "placement",
        "solve",
        "/nonexistent/x.graph",
        "--group-size",
        "2",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let o = neptune(&["placement", "solve", &g, "--group-size", "0"]);
    assert!(!o.status.success());
}

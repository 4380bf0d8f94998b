//! `neptune topology` run as a user runs it: the real binary, real files.

use std::path::Path;

use super::{neptune, stderr, stdout, testdata};

#[test]
fn check_summarises_figure_3() {
    let out = neptune(&["topology", "check", &testdata("fig3.xml")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "topology \"luigi\": 1 node, 0 links, 0 entry points, 1 vCPU, 256 MiB RAM, 2 GiB disk"
        ),
        "{text}"
    );
    assert!(
        !text.contains("antoxps"),
        "the password must not be printed"
    );
}

#[test]
fn check_reports_every_error_with_file_line_column() {
    let bad = testdata("many-errors.xml");
    let out = neptune(&["topology", "check", &testdata("fig3.xml"), &bad]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 14, "{err}");
    assert!(
        lines.iter().all(|l| l.starts_with(&format!("{bad}:"))),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{bad}:5:23: \"dimension\" of <ram>: \"lots\" is not a number"
        )),
        "{err}"
    );
    assert!(
        stdout(&out).contains("luigi"),
        "good files are still summarised"
    );
}

#[test]
fn check_json_output() {
    let out = neptune(&[
        "topology",
        "check",
        "--output",
        "json",
        &testdata("web-with-links.xml"),
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["summary"]["nodes"], 3);
    assert_eq!(v[0]["summary"]["entry_points"], 1);
    assert_eq!(v[0]["summary"]["bandwidth"], 1000);
}

#[test]
fn convert_round_trips_and_hides_password_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = neptune(&[
        "topology",
        "convert",
        &testdata("web-with-links.xml"),
        "--to",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json = stdout(&out);
    assert!(!json.contains("s3cret"), "{json}");
    let json_path = dir.path().join("shop.json");
    std::fs::write(&json_path, &json).unwrap();
    let out = neptune(&[
        "topology",
        "convert",
        json_path.to_str().unwrap(),
        "--to",
        "xml",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let xml = stdout(&out);
    assert!(
        xml.contains(
            "<link id=\"backend\" type=\"lan\" bandwidth=\"1000\" subnet=\"10.20.0.0/29\">"
        ),
        "{xml}"
    );
    let xml_path = dir.path().join("shop.xml");
    std::fs::write(&xml_path, &xml).unwrap();
    let out = neptune(&["topology", "check", xml_path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn every_catalogue_kind_passes_check() {
    let out = neptune(&["topology", "catalogue"]);
    assert!(out.status.success());
    let listing = stdout(&out);
    let kinds: Vec<String> = listing
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    assert_eq!(kinds.len(), 8, "{listing}");
    let dir = tempfile::tempdir().unwrap();
    for kind in &kinds {
        let out = neptune(&[
            "topology",
            "new",
            kind,
            "--nodes",
            "6",
            "--bandwidth",
            "250",
            "--template",
            "alpine",
        ]);
        assert!(out.status.success(), "{kind}: {}", stderr(&out));
        let path = dir.path().join(format!("{kind}.xml"));
        std::fs::write(&path, &out.stdout).unwrap();
        let check = neptune(&["topology", "check", path.to_str().unwrap()]);
        assert!(check.status.success(), "{kind}: {}", stderr(&check));
        let text = stdout(&check);
        assert!(
            text.contains("6 nodes") && text.contains("1 entry point"),
            "{kind}: {text}"
        );
        assert!(stdout(&out).contains("template=\"alpine\""));
    }
}

#[test]
fn hostile_files_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "laughs.xml",
            "<?xml version=\"1.0\"?>\n<!DOCTYPE x [<!ENTITY a \"aaaa\">]>\n<topology id=\"&a;\"/>",
            ":2:1: DOCTYPE and entity declarations are not allowed",
        ),
        (
            "deep.xml",
            &format!("<topology id=\"x\">{}", "<a>".repeat(100)),
            "nested 33 deep; the limit is 32",
        ),
        ("binary.xml", "\u{0}\u{1}\u{2}garbage", ":1:1:"),
        ("empty.xml", "", ":1:1:"),
    ];
    for (name, text, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = neptune(&["topology", "check", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert!(stderr(&out).contains(expected), "{name}: {}", stderr(&out));
    }
    // Not UTF-8: invalid input (exit 1), placed at the first bad byte.
    let latin1 = dir.path().join("latin1.xml");
    std::fs::write(&latin1, b"<topology id=\"caf\xe9\"/>").unwrap();
    let out = neptune(&["topology", "check", latin1.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("latin1.xml:1:18: the text is not UTF-8 (byte 0xe9)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_neptune"))
        .args(["topology", "new", "ring", "--nodes", "5000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("<?xml"), "{first}");
    // The read end is closed here, long before the 5000 nodes are written.
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_usage_exits_2() {
    let out = neptune(&["topology", "new", "hypercube"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown topology kind \"hypercube\""),
        "{}",
        stderr(&out)
    );
    let out = neptune(&["topology", "new", "ring", "--nodes", "2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("between 3 and 10000 nodes"));
    let missing = Path::new("/nonexistent/topology.xml");
    let out = neptune(&["topology", "check", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("reading /nonexistent/topology.xml"));
}

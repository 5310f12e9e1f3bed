//! Config problems are reported with `file:line:col`, the key path (`targets[1].interval`,
//! `modules.x.prober`) and what was expected.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use rookery_common::config::{Sources, load};

fn problems(text: &str) -> (String, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probed.toml");
    std::fs::write(&path, text).unwrap();
    let sources = Sources::new("probed", Some(&path), Vec::new());
    let errs = load::<rookery_probed::Config>(&sources).expect_err("config must be rejected");
    (
        path.display().to_string(),
        errs.0.iter().map(ToString::to_string).collect(),
    )
}

#[test]
fn semantic_errors_name_file_line_col_and_key() {
    let text = r#"
[modules.web]
prober = "http"

[modules.shell]
prober = "udp"

[[targets]]
name = "ok"
module = "web"
address = "http://127.0.0.1/"

[[targets]]
name = "fast"
module = "web"
address = "http://127.0.0.1/"
interval = "100ms"

[[targets]]
name = "nomod"
module = "missing"
address = "127.0.0.1:1"
"#;
    let (p, lines) = problems(text);
    let all = lines.join("\n");
    assert!(
        lines.contains(&format!(
            "{p}:5:1: modules.shell.udp: is required by prober \"udp\" (expected at least send = \"…\")"
        )),
        "{all}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "{p}:17:12: targets[1].interval: 100ms is too short"
        ))),
        "{all}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "{p}:21:10: targets[2].module: no module \"missing\""
        ))),
        "{all}"
    );
    assert_eq!(lines.len(), 3, "{all}");
}

#[test]
fn bad_record_types_and_addresses_are_located() {
    let text = r#"
[modules.dns]
prober = "dns"
[modules.dns.dns]
query-name = "example.com"
query-type = "BOGUS"

[[targets]]
name = "t"
module = "dns"
address = "not a host"
"#;
    let (p, lines) = problems(text);
    let all = lines.join("\n");
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "{p}:6:14: modules.dns.dns.query-type: \"BOGUS\" is not a supported record type"
        ))),
        "{all}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "{p}:11:11: targets[0].address: \"not a host\" is not host:port"
        ))),
        "{all}"
    );
}

#[test]
fn type_errors_name_the_key_and_the_expected_type() {
    let text = "[modules.tcp]\nprober = \"tcp\"\ntimeout = \"fast\"\n";
    let (p, lines) = problems(text);
    let all = lines.join("\n");
    assert!(
        lines.iter().any(|l| l.starts_with(&format!(
            "{p}:3:11: modules.tcp.timeout: invalid value: string \"fast\", expected a duration"
        ))),
        "{all}"
    );
}

#[test]
fn check_config_of_the_binary_prints_every_problem_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probed.toml");
    std::fs::write(
        &path,
        "[scheduler]\nmax-concurrency = 0\n\n[modules.h]\nprober = \"dns\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rookery-probed"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(78), "{text}");
    let p = path.display();
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            format!("{p}:2:19: scheduler.max-concurrency: 0 is out of range (expected 1 to 65536)"),
            format!(
                "{p}:4:1: modules.h.dns: is required by prober \"dns\" (expected at least query-name = \"…\")"
            ),
        ],
        "{text}"
    );
    std::fs::write(&path, "[scheduler]\nmax-concurrency = 8\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rookery-probed"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

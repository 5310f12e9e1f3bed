//! The shipped `etc/rookery/probed.toml` documents exactly the compiled defaults, and its
//! worked example is a valid configuration.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use rookery_common::config::DaemonConfig;

fn factory_text() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../etc/rookery/probed.toml");
    std::fs::read_to_string(path).expect("etc/rookery/probed.toml is readable")
}

#[test]
fn factory_probed_toml_equals_compiled_defaults() {
    let problems =
        rookery_common::config::factory_file_problems::<rookery_probed::Config>(&factory_text());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn factory_probed_toml_worked_example_is_valid() {
    // Uncomment the example lines ("# " followed by a table header or key) after the marker.
    let text = factory_text();
    let example = text
        .split_once("# A worked example")
        .expect("the file has a worked example")
        .1;
    let example: String = example
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with("#[scheduler]"))
        .map(|l| {
            l.strip_prefix("# ")
                .unwrap_or(l.strip_prefix('#').unwrap_or(l))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config: rookery_probed::Config = toml::from_str(&example).expect("the example parses");
    assert_eq!(config.modules.len(), 8, "{example}");
    assert_eq!(config.targets.len(), 4, "{example}");
    let issues = config.validate();
    assert!(issues.is_empty(), "{issues:?}");
}

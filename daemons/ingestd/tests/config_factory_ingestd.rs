//! The shipped `etc/rookery/ingestd.toml` documents exactly the compiled defaults.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

#[test]
fn factory_ingestd_toml_equals_compiled_defaults() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../etc/rookery/ingestd.toml"
    );
    let text = std::fs::read_to_string(path).expect("etc/rookery/ingestd.toml is readable");
    let problems = rookery_common::config::factory_file_problems::<rookery_ingestd::Config>(&text);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

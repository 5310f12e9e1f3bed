//! Helpers shared by rookeryctl's integration tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is the failure report"
)]

use std::process::Command;

/// The rookeryctl binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_rookeryctl");

/// Runs rookeryctl; returns exit code, stdout and stderr.
pub fn rookeryctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

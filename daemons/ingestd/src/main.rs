//! `rookery-ingestd`: see the crate documentation in `lib.rs`.

fn main() -> std::process::ExitCode {
    rookery_common::daemon::main::<rookery_ingestd::app::Ingestd>()
}

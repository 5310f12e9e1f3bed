//! `rookery-probed`: see the crate documentation in `lib.rs`.

fn main() -> std::process::ExitCode {
    rookery_common::daemon::main::<rookery_probed::app::Probed>()
}

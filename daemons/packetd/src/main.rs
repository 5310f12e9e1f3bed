//! `rookery-packetd`: see the crate documentation in `lib.rs`.

fn main() -> std::process::ExitCode {
    rookery_common::daemon::main::<rookery_packetd::app::Packetd>()
}

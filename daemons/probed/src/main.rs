//! `rookery-probed`: see the crate documentation in `lib.rs`.

/// mimalloc instead of glibc's malloc: probes allocate and free all the time while the
/// per-target state lives on, and glibc's arenas keep the holes this leaves (tens of MiB with
/// 10,000 targets, see docs/benchmarks.md); mimalloc returns free pages to the system.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    rookery_common::daemon::main::<rookery_probed::app::Probed>()
}

//! Prints how often the kernel ran BPF programs and for how long in total: one line
//! `ID RUN_COUNT RUN_TIME_NS` per program id given (all loaded programs when none is given,
//! with their names). The kernel counts only while `kernel.bpf_stats_enabled` is 1:
//! `bench/packetd.sh` turns it on and reads this before and after each measurement, which gives
//! the time the reflector program itself spends per packet (its "profile" in docs/benchmarks.md).
//!
//! `xdp_runtime [ID ...]`
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool: results on stdout, errors on stderr"
)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut ids = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.parse::<u32>() {
            Ok(id) => ids.push(id),
            Err(e) => {
                eprintln!("xdp_runtime: program id {arg:?}: {e} (usage: xdp_runtime [ID ...])");
                return ExitCode::from(2);
            }
        }
    }
    let mut found = 0;
    for info in aya::programs::loaded_programs() {
        let info = match info {
            Ok(i) => i,
            Err(e) => {
                eprintln!("xdp_runtime: cannot read a loaded program's info: {e}");
                return ExitCode::FAILURE;
            }
        };
        if !ids.is_empty() && !ids.contains(&info.id()) {
            continue;
        }
        found += 1;
        let line = format!(
            "{} {} {}",
            info.id(),
            info.run_count(),
            info.run_time().as_nanos()
        );
        if ids.is_empty() {
            println!("{line} {}", info.name_as_str().unwrap_or("?"));
        } else {
            println!("{line}");
        }
    }
    if found < ids.len() {
        eprintln!(
            "xdp_runtime: {} of the programs {ids:?} are not loaded",
            ids.len() - found
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

//! Runs one raw rate generator session ([`rookery_packetd::generator`]) in the foreground
//! and prints its final statistics as JSON: what `bench/packetd.sh` uses to load the
//! reflectors and to measure the generator. Without `--max-pps` the rate is unbounded here
//! (the daemon's `[sessions].max-pps` limit applies to sessions started over gRPC).
//!
//! `generate ADDRESS:PORT [--rate PPS] [--count N] [--duration-ms MS] [--size BYTES] [--dscp D]
//! [--backend auto|af-xdp|socket] [--queue Q]`
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool: results on stdout, usage errors on stderr"
)]

use std::process::ExitCode;
use std::time::Duration;

use rookery_packetd::config::{Backend, GeneratorSection};
use rookery_packetd::generator;
use rookery_packetd::measure::Stats;
use rookery_packetd::sender::{Kind, SessionSpec};
use tokio_util::sync::CancellationToken;

fn parse() -> Result<(SessionSpec, GeneratorSection), String> {
    let mut args = std::env::args().skip(1);
    let dest = args.next().ok_or("usage: generate ADDRESS:PORT [--rate PPS] [--count N] [--duration-ms MS] [--size BYTES] [--dscp D] [--backend auto|af-xdp|socket] [--queue Q]")?;
    let mut options = GeneratorSection::default();
    let mut spec = SessionSpec {
        kind: Kind::Raw,
        destination: dest
            .parse()
            .map_err(|e| format!("destination {dest:?}: {e} (expected e.g. 10.0.0.1:9)"))?,
        source: None,
        dscp: 0,
        packet_size: 18,
        rate_pps: 1000,
        count: 0,
        duration: Duration::ZERO,
        ssid: 0,
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag} {v:?}: {e}"));
        match flag.as_str() {
            "--rate" => spec.rate_pps = u32::try_from(num(&value)?).map_err(|e| e.to_string())?,
            "--count" => spec.count = num(&value)?,
            "--duration-ms" => spec.duration = Duration::from_millis(num(&value)?),
            "--size" => {
                spec.packet_size = u32::try_from(num(&value)?).map_err(|e| e.to_string())?
            }
            "--dscp" => spec.dscp = u8::try_from(num(&value)?).map_err(|e| e.to_string())?,
            "--backend" => {
                options.backend = match value.as_str() {
                    "auto" => Backend::Auto,
                    "af-xdp" => Backend::AfXdp,
                    "socket" => Backend::Socket,
                    _ => {
                        return Err(format!(
                            "--backend {value:?}: expected auto, af-xdp or socket"
                        ));
                    }
                }
            }
            "--queue" => options.queue = u32::try_from(num(&value)?).map_err(|e| e.to_string())?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    let problems = spec.problems(u32::MAX);
    if problems.is_empty() {
        Ok((spec, options))
    } else {
        Err(problems.join("; "))
    }
}

fn main() -> ExitCode {
    let (spec, options) = match parse() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("generate: {e}");
            return ExitCode::from(2);
        }
    };
    let (tx, _rx) = tokio::sync::watch::channel(Stats::default());
    match generator::run(&spec, &options, &tx, &CancellationToken::new()) {
        Ok(stats) => {
            println!("{}", serde_json::to_string(&stats).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("generate: cannot send to {}: {e}", spec.destination);
            ExitCode::FAILURE
        }
    }
}

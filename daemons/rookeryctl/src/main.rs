//! `rookeryctl`: see the crate documentation in `lib.rs`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = rookeryctl::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            rookeryctl::print_error(&format!("cannot start the async runtime: {err}"));
            return ExitCode::from(1);
        }
    };
    ExitCode::from(runtime.block_on(rookeryctl::run(cli)))
}

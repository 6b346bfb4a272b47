//! `kv-cli`: the client shell. See `kv::cli` for the modes and the exit statuses.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let status = kv::cli::run(kv::cli::CliArgs::parse());
    ExitCode::from(status as u8)
}

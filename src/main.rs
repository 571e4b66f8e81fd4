//! The `smsgate` binary: parse the command line, run it, exit with its status.

use std::process::ExitCode;

fn main() -> ExitCode {
    smsgate::cli::run(smsgate::cli::parse())
}

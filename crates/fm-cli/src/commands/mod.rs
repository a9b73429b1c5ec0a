//! One module per subcommand.

use anyhow::Result;

use crate::cli::{Cli, Command};

pub mod analyze;
mod common;
mod eval;
mod sample;
mod train;

pub use train::Interrupted;

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(a) => train::run(*a),
        Command::Sample(a) => sample::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Analyze(a) => analyze::run(a),
    }
}

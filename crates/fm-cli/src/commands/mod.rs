//! One module per subcommand.

use anyhow::Result;

use crate::cli::{Cli, Command, PlotCommand};

pub mod analyze;
pub mod classifier;
mod common;
pub mod convert;
pub mod data;
mod density;
mod energies;
mod eval;
pub mod export;
pub mod frechet;
pub mod grid;
pub mod hub;
mod likelihood;
mod reflow;
mod sample;
mod train;
pub mod velocity;

pub use train::Interrupted;

pub fn run(cli: Cli) -> Result<()> {
    crate::device::select(&cli.device)?;
    match cli.command {
        Command::Train(a) => train::run(*a),
        Command::Sample(a) => sample::run(a),
        Command::Reflow(a) => reflow::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Likelihood(a) => likelihood::run(a),
        Command::Plot(PlotCommand::Density(a)) => density::run(a),
        Command::Plot(PlotCommand::Grid(a)) => grid::run(a),
        Command::Analyze(a) => analyze::run(a),
        Command::Energies(a) => energies::run(a),
        Command::Classifier(c) => classifier::run(c),
        Command::Frechet(a) => frechet::run(*a),
        Command::Export(a) => export::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Velocity(a) => velocity::run(a),
        Command::Data(c) => data::run(c),
    }
}

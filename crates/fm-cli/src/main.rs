//! `fm`: train, sample, evaluate and plot flow-matching models.
//!
//! Time convention: `t = 0` is noise, `t = 1` is data.

use std::process::ExitCode;

use clap::Parser;

mod checksum;
mod cli;
mod commands;
mod data;
mod device;
mod figures;
mod io;
mod plot;
mod plot_density;
mod plot_images;
mod progress;
mod record;
mod solver;
mod source;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<commands::Interrupted>() => {
            eprintln!("{e}");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

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
    pin_thread_count();
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

/// Fixes candle's thread count for the whole run. Without `RAYON_NUM_THREADS`,
/// candle 0.11 works the count out again on every matrix product, and on Linux
/// that reads `/proc/cpuinfo` each time: about 4,700 reads per training step of
/// a small U-Net, a quarter of its time. Runs first in `main`, before any
/// thread exists; an explicit `RAYON_NUM_THREADS` is left as the user set it.
fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle::utils::get_num_threads();
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
}

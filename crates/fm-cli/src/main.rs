//! `fm`: train, sample, evaluate and plot flow-matching models.
//!
//! Time convention: `t = 0` is noise, `t = 1` is data.

use std::process::ExitCode;

use clap::Parser;

mod checksum;
mod cli;
mod commands;
mod device;
mod figures;
mod io;
mod plot;
mod plot_density;
mod plot_images;
mod plot_manifold;
mod progress;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    pin_thread_count();
    retain_freed_memory();
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

/// Keeps the memory that large freed temporaries held, for reuse, instead
/// of handing it back to the OS a second later (mimalloc's default purge
/// delay). Candle allocates every result afresh; a U-Net training step on
/// MNIST shapes frees and reallocates hundreds of MiB of attention weights,
/// and re-faulting and zeroing those pages took a third of the step (12.7 s
/// → 9.3 s with this, batch 128 on one thread). Peak memory is unchanged
/// (the freed pages are what the next allocations reuse). An explicit
/// `MIMALLOC_PURGE_DELAY` in the environment is left as the user set it.
fn retain_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: `mi_option_set` only stores an option value; any value is
        // valid for `purge_delay` (-1: never purge).
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

/// `mi_option_purge_delay` in mimalloc's option enumeration (version 3, as
/// built by `libmimalloc-sys` without its `v2` feature).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    #[cfg(test)]
    fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
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

#[cfg(test)]
mod allocator_tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        if let Some(v) = std::env::var_os("MIMALLOC_PURGE_DELAY") {
            // The user's value is left as set (mimalloc read it at start-up).
            retain_freed_memory();
            let want: std::ffi::c_long = v.to_string_lossy().trim().parse().unwrap_or(-2);
            // SAFETY: reading an option value.
            assert_eq!(unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }, want);
            return;
        }
        // SAFETY: reading an option value.
        let default = unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) };
        // mimalloc 3 documents a 1000 ms default for `purge_delay`; no other
        // option defaults to 1000, so this pins the enumeration index.
        assert_eq!(default, 1000, "the option index no longer names purge_delay");
        retain_freed_memory();
        // SAFETY: as above.
        assert_eq!(unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }, -1);
    }
}

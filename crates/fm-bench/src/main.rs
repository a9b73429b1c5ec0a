//! `fm-bench`: runs fm's benchmark workloads for `cargo xtask bench`.
//!
//! - `fm-bench serve [--quick]`: reads requests `NAME ITERS` from standard
//!   input, one a line, and answers each with one JSON line
//!   `{"name", "secs": [..], "nfe", "flops"}` (the workload is built and warmed
//!   up on its first request, and kept).
//! - `fm-bench mem NAME [--quick]`: builds the workload, runs it once and prints
//!   `{"name", "rss_before_kib", "peak_kib"}` (resident memory from `/proc`).
//! - `fm-bench list`: the workload names.
//! - `fm-bench discrete --out DIR --test FILE [...]`: fm's side of `cargo xtask
//!   discrete` (see [`fm_bench::discrete`]); one JSON line.
//! - `fm-bench riemannian --data AIRPORTS --out DIR [...]`: fm's side of
//!   `cargo xtask riemannian` (see [`fm_bench::riemannian`]); one JSON line.
//!
//! Threads: candle's matmul uses `RAYON_NUM_THREADS` (set by `cargo xtask bench --threads N`).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Instant;

use fm_bench::{build, memory, Error, Result, Scale, Workload, NAMES};
use serde_json::json;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

fn serve(scale: Scale) -> Result<()> {
    let mut built: HashMap<String, Box<dyn Workload>> = HashMap::new();
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| Error::Request(format!("standard input: {e}")))?;
        let mut parts = line.split_whitespace();
        let (Some(name), Some(iters)) = (parts.next(), parts.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(Error::Request(format!("expected `NAME ITERS`, got `{line}`")));
        };
        let iters: usize =
            iters.parse().map_err(|_| Error::Request(format!("ITERS must be a count, got `{iters}`")))?;
        if !built.contains_key(name) {
            let mut w = build(name, scale)?;
            w.run()?; // warm-up
            built.insert(name.to_string(), w);
        }
        let w = built.get_mut(name).ok_or_else(|| Error::Request(name.into()))?;
        let mut secs = Vec::with_capacity(iters);
        let mut info = Default::default();
        for _ in 0..iters {
            let start = Instant::now();
            info = w.run()?;
            secs.push(start.elapsed().as_secs_f64());
        }
        let fm_bench::RunInfo { nfe, flops } = info;
        let reply = json!({ "name": name, "secs": secs, "nfe": nfe, "flops": flops });
        writeln!(out, "{reply}").and_then(|_| out.flush()).map_err(|e| Error::Request(e.to_string()))?;
    }
    Ok(())
}

fn mem(name: &str, scale: Scale) -> Result<()> {
    let mut w = build(name, scale)?;
    let (before, _) = memory::rss_kib().unwrap_or((0, 0));
    let reset = memory::reset_peak();
    let info = w.run()?;
    let (_, peak) = memory::rss_kib().unwrap_or((0, 0));
    let reply = json!({
        "name": name, "rss_before_kib": before, "peak_kib": peak, "peak_reset": reset, "nfe": info.nfe,
    });
    println!("{reply}");
    Ok(())
}

fn main() -> ExitCode {
    retain_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scale = Scale { quick: args.iter().any(|a| a == "--quick") };
    let positional: Vec<&str> = args.iter().map(String::as_str).filter(|a| !a.starts_with("--")).collect();
    let result = match positional.as_slice() {
        ["discrete", ..] => fm_bench::discrete::DiscreteCompare::parse(&args[1..])
            .and_then(|c| c.run())
            .map(|v| println!("{v}")),
        ["riemannian", ..] => fm_bench::riemannian::RiemannianCompare::parse(&args[1..])
            .and_then(|c| c.run())
            .map(|v| println!("{v}")),
        ["serve"] => serve(scale),
        ["simd"] => {
            println!("{}", fm_core::simd::level_name());
            Ok(())
        }
        ["mem", name] => mem(name, scale),
        ["list"] => {
            println!("{}", NAMES.join("\n"));
            Ok(())
        }
        _ => {
            eprintln!("usage: fm-bench serve [--quick] | mem NAME [--quick] | list | simd | discrete --out DIR --test FILE ... | riemannian --data FILE --out DIR ...");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
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

//! `fm-bench`: runs fm's benchmark workloads for `cargo xtask bench`.
//!
//! - `fm-bench serve [--quick]`: reads requests `NAME ITERS` from standard
//!   input, one a line, and answers each with one JSON line
//!   `{"name", "secs": [..], "nfe", "flops"}` (the workload is built and warmed
//!   up on its first request, and kept).
//! - `fm-bench mem NAME [--quick]`: builds the workload, runs it once and prints
//!   `{"name", "rss_before_kib", "peak_kib"}` (resident memory from `/proc`).
//! - `fm-bench list`: the workload names.
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scale = Scale { quick: args.iter().any(|a| a == "--quick") };
    let positional: Vec<&str> = args.iter().map(String::as_str).filter(|a| !a.starts_with("--")).collect();
    let result = match positional.as_slice() {
        ["serve"] => serve(scale),
        ["mem", name] => mem(name, scale),
        ["list"] => {
            println!("{}", NAMES.join("\n"));
            Ok(())
        }
        _ => {
            eprintln!("usage: fm-bench serve [--quick] | mem NAME [--quick] | list");
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

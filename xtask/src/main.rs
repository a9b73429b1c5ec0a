//! `cargo xtask`: project automation (see `cargo xtask help`).
//!
//! Kept minimal on purpose: std and anyhow only.

use std::process::Command;

use anyhow::{bail, Context, Result};

mod bench;
mod discrete;
mod guide;
mod guide_commands;
mod parity;
mod riemannian;

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  ci     run what CI runs, plus the lints: fmt check, clippy -D warnings, docs, tests
  bench  fm against PyTorch on the same workloads (see `cargo xtask bench --help`)
  parity fm's U-Net and MLP against torchcfm's on the same weights and inputs (max abs diff, timings)
  discrete fm against flow_matching on its 2-D discrete example (ELBO, energy distance, speed)
  riemannian fm against flow_matching on the US airports on the sphere (test NLL, baselines, speed)
  guide  regenerate the guide's figures (docs/guide) by running its fm commands [--quick] [CHAPTER…]
  help   this message";

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_else(|| "help".into());
    match task.as_str() {
        "ci" => ci(),
        "bench" => {
            let args: Vec<String> = std::env::args().skip(2).collect();
            if args.iter().any(|a| a == "--help" || a == "-h") {
                println!("{}", bench::USAGE);
                return Ok(());
            }
            bench::run(&args)
        }
        "parity" => {
            let args: Vec<String> = std::env::args().skip(2).collect();
            if args.iter().any(|a| a == "--help" || a == "-h") {
                println!("{}", parity::USAGE);
                return Ok(());
            }
            parity::run(&args)
        }
        "discrete" => {
            let args: Vec<String> = std::env::args().skip(2).collect();
            if args.iter().any(|a| a == "--help" || a == "-h") {
                println!("{}", discrete::USAGE);
                return Ok(());
            }
            discrete::run(&args)
        }
        "riemannian" => {
            let args: Vec<String> = std::env::args().skip(2).collect();
            if args.iter().any(|a| a == "--help" || a == "-h") {
                println!("{}", riemannian::USAGE);
                return Ok(());
            }
            riemannian::run(&args)
        }
        "guide" => guide::run(&std::env::args().skip(2).collect::<Vec<_>>()),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown task `{other}`\n\n{USAGE}"),
    }
}

fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn ci() -> Result<()> {
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
    cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"], &[])?;
    cargo(&["doc", "--workspace", "--no-deps"], &[("RUSTDOCFLAGS", "-D warnings")])?;
    cargo(&["test", "--release", "--workspace"], &[])?;
    Ok(())
}

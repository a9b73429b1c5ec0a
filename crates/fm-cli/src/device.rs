//! `--device cpu|cuda[:N]`: where models run.
//!
//! The choice is made once per process (in [`select`], from the global flag)
//! and read by every subcommand through [`selected`]. CUDA needs a build with
//! `--features cuda`; without it `--device cuda:N` fails with that advice.

use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use candle::Device;

static SELECTED: OnceLock<Device> = OnceLock::new();

/// Parses `cpu`, `cuda` (device 0) or `cuda:N` and opens that device.
pub fn parse(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    let ordinal = match spec.as_str() {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        s => match s.strip_prefix("cuda:") {
            Some(n) => n
                .parse::<usize>()
                .with_context(|| format!("--device {spec}: `{n}` is not a device number"))?,
            None => bail!("--device {spec}: unknown device; use cpu, cuda or cuda:N"),
        },
    };
    if !cfg!(feature = "cuda") {
        bail!("--device {spec}: this fm was built without CUDA; rebuild it with `cargo build --release --features cuda`");
    }
    Device::new_cuda(ordinal).with_context(|| format!("--device {spec}: cannot open CUDA device {ordinal}"))
}

/// Opens the device named by `--device` and makes it the process's device.
pub fn select(spec: &str) -> Result<()> {
    let device = parse(spec)?;
    // A second selection in the same process (tests) keeps the first.
    let _ = SELECTED.set(device);
    Ok(())
}

/// The device chosen with `--device` (the CPU when none was).
pub fn selected() -> Device {
    SELECTED.get().cloned().unwrap_or(Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_explains_cuda_and_typos() {
        assert!(parse("cpu").map(|d| d.is_cpu()).unwrap_or(false));
        assert!(parse(" CPU ").map(|d| d.is_cpu()).unwrap_or(false));
        let e = parse("gpu").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("--device gpu") && e.contains("cuda:N"), "{e}");
        let e = parse("cuda:x").err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(e.contains("not a device number"), "{e}");
        if !cfg!(feature = "cuda") {
            let e = parse("cuda:0").err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("--features cuda"), "{e}");
        }
    }
}

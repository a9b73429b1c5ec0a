//! `fm velocity`: the network's raw output on given inputs, for parity checks
//! against other implementations (e.g. `cargo xtask parity` against torchcfm).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle::{DType, Device, Tensor};
use clap::Args;
use serde_json::json;

use crate::cli::HubArgs;
use crate::io::print_json;

#[derive(Debug, Args, Clone)]
pub struct VelocityArgs {
    /// Checkpoint directory (or hf:// address).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Inputs: a safetensors file with `x` (b, …) and `t` (b,), and `y` (b,) class labels for
    /// a class-conditional U-Net (absent: the null class).
    #[arg(long)]
    pub inputs: PathBuf,
    /// Output safetensors file with `v`, the network's output (the shape of `x`).
    #[arg(long)]
    pub out: PathBuf,
    /// Forward passes to time (the reported time is the median).
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    #[command(flatten)]
    pub hub: HubArgs,
    /// Print one JSON object as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (also hidden when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(a: VelocityArgs) -> Result<()> {
    let device = Device::Cpu;
    let m = super::common::load(&a.checkpoint, a.hub.offline, &device)?;
    let (inputs, _): (HashMap<String, Tensor>, _) = fm_models::torchcfm::read_state_dict(&a.inputs, &device)
        .with_context(|| format!("--inputs {}", a.inputs.display()))?;
    let get = |k: &str| {
        inputs.get(k).cloned().with_context(|| format!("--inputs {}: no tensor `{k}`", a.inputs.display()))
    };
    let x = get("x")?.to_dtype(DType::F32)?;
    let t = get("t")?.to_dtype(DType::F32)?;
    let y = match inputs.get("y") {
        Some(y) => Some(y.to_dtype(DType::I64)?.to_dtype(DType::U32)?),
        None => None,
    };
    if a.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let net = m.model().velocity_net().with_context(|| {
        format!("--checkpoint {}: a {} has no velocity network", a.checkpoint.display(), m.family().name())
    })?;
    let mut times = Vec::with_capacity(a.repeat);
    let mut v = None;
    let pb = crate::progress::bar(a.repeat, a.quiet, "{bar:30} {pos}/{len} forward passes ETA {eta}");
    for _ in 0..a.repeat {
        let start = Instant::now();
        let out = net
            .forward(&x, &t, y.as_ref(), None)
            .with_context(|| format!("--inputs {}", a.inputs.display()))?;
        times.push(start.elapsed().as_secs_f64());
        v = Some(out);
        pb.inc(1);
    }
    pb.finish_and_clear();
    let Some(v) = v else { bail!("no forward pass ran") };
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let out = HashMap::from([("v".to_string(), v.clone())]);
    fm_models::torchcfm::write_state_dict(&a.out, &out, HashMap::new())
        .with_context(|| format!("--out {}", a.out.display()))?;
    let log = |s: String| if a.json { eprintln!("{s}") } else { println!("{s}") };
    log(format!(
        "v {:?} written to {}; forward pass median {:.4} s over {}",
        v.dims(),
        a.out.display(),
        median,
        a.repeat
    ));
    if a.json {
        print_json(
            &json!({ "out": a.out, "shape": v.dims(), "seconds_median": median, "repeat": a.repeat }),
        )?;
    }
    Ok(())
}

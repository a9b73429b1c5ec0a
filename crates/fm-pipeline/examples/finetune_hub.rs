//! Fine-tune a checkpoint from the Hugging Face Hub and sample it: the
//! weights of `hf://OWNER/REPO` (downloaded into the Hub cache) start a new
//! run on two moons; the result is saved, reloaded and sampled.
//!
//! ```text
//! cargo run --release -p fm-pipeline --example finetune_hub -- hf://OWNER/REPO [STEPS]
//! ```
use std::path::Path;

use candle::Device;
use fm_pipeline::{
    InitReport, Run, RunConfig, RunSettings, SampleRequest, Samples, Silent, SolverChoice, Trained,
};

#[cfg(not(test))] // the test that includes this file as a module has its own allocator
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What the example measures (its test checks these).
pub struct Report {
    /// What `--init` loaded.
    pub init: InitReport,
    /// Mean training loss of the fine-tuning steps.
    pub loss: f64,
    /// 2,000 samples of the fine-tuned model, in data units.
    pub samples: Samples,
}

/// Fine-tunes `checkpoint` (a folder, a file or `hf://…`) for `steps` steps into `out`, then samples.
pub fn run(checkpoint: &str, out: &Path, steps: usize) -> fm_pipeline::Result<Report> {
    let config = RunConfig {
        init: Some(checkpoint.into()),
        lr: Some(1e-3),
        steps: Some(steps),
        out: Some(out.into()),
        ..RunConfig::default()
    };
    let mut run = Run::new(RunSettings::resolve(&config)?, &Device::Cpu)?;
    let init = run.init_report().cloned().expect("a run with --init reports what it loaded");
    println!("{}\n{}", init.describe(), run.describe());
    let summary = run.train(&mut Silent)?;
    let model = Trained::load(out, false, &Device::Cpu)?;
    let samples = model.sample(&SampleRequest::new(2000, 0, SolverChoice::parse_spec("midpoint:8")?))?;
    Ok(Report { init, loss: summary.loss, samples })
}

fn main() -> fm_pipeline::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(checkpoint) = args.next() else {
        eprintln!("usage: finetune_hub hf://OWNER/REPO [STEPS]");
        std::process::exit(2);
    };
    let steps = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let out = std::env::temp_dir().join("fm-example-finetune");
    let r = run(&checkpoint, &out, steps)?;
    println!("loss {:.4}; {} samples (NFE {}) from {}", r.loss, r.samples.n, r.samples.nfe, out.display());
    Ok(())
}

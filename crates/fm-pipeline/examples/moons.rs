//! The `fm train` main job as a program: train the guide's two-moons MLP,
//! save it, load it back from its folder, sample 2,000 points and compute
//! their log-likelihood under the model.
//!
//! ```text
//! cargo run --release -p fm-pipeline --example moons [-- --quick]
//! ```
use std::path::Path;

use candle::Device;
use fm_pipeline::{
    LikelihoodRequest, Run, RunConfig, RunSettings, SampleRequest, Silent, SolverChoice, Trained,
};

#[cfg(not(test))] // the test that includes this file as a module has its own allocator
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What the example measures (its test checks these).
pub struct Report {
    /// Mean training loss over the last 500 steps (the floor is ≈ 0.94).
    pub loss: f64,
    /// The 2,000 samples, in data units.
    pub samples: fm_pipeline::Samples,
    /// Mean log-likelihood of the samples under the model (nats per point).
    pub mean_log_p: f64,
}

/// Trains for `steps` steps into `out`, then reloads, samples and scores.
pub fn run(out: &Path, steps: usize) -> fm_pipeline::Result<Report> {
    // The guide's recipe: MLP 3-64-64-64-2 (ELU), Adam lr 1e-2, batch 256, fresh moons every step.
    let config = RunConfig { steps: Some(steps), out: Some(out.into()), ..RunConfig::default() };
    let mut run = Run::new(RunSettings::resolve(&config)?, &Device::Cpu)?;
    println!("{}", run.describe());
    let summary = run.train(&mut Silent)?; // writes model.safetensors, config.json, resume.safetensors

    // Back from the folder, as trained (parametrization, source, standardization, EMA).
    let model = Trained::load(out, false, &Device::Cpu)?;
    let solver = SolverChoice::parse_spec("midpoint:8")?;
    let samples = model.sample(&SampleRequest::new(2000, 0, solver))?;
    let likelihood =
        model.log_likelihood(&samples.values, &LikelihoodRequest::exact_rk4(20)?, &mut |_| ())?;
    let mean_log_p = likelihood.log_p.iter().sum::<f64>() / likelihood.log_p.len() as f64;
    Ok(Report { loss: summary.loss, samples, mean_log_p })
}

fn main() -> fm_pipeline::Result<()> {
    let steps = if std::env::args().any(|a| a == "--quick") { 300 } else { 10_000 };
    let out = std::env::temp_dir().join("fm-example-moons");
    let r = run(&out, steps)?;
    println!("loss {:.4}; {} samples (NFE {})", r.loss, r.samples.n, r.samples.nfe);
    println!("mean log-likelihood of the samples {:.3} nats; checkpoint in {}", r.mean_log_p, out.display());
    Ok(())
}

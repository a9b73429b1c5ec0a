//! `fm train`: conditional flow matching on a dataset, then samples, a plot and metrics.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use fm_core::loss::cfm_train_step;
use fm_core::metrics::SampleMetrics;
use fm_core::path::AffinePath;
use fm_core::scheduler::SchedulerKind;
use fm_core::SeededRng;
use fm_models::checkpoint::{self, varmap_tensors};
use fm_models::{Activation, CheckpointConfig, MlpConfig, ModelConfig, VelocityMlp};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::common::{generate, load_model};
use crate::cli::TrainArgs;
use crate::data::TrainingData;
use crate::io::{print_json, write_samples};
use crate::plot::samples_figure;
use crate::record::TrainingRecord;
use crate::solver::SolverChoice;

/// Points used for the exact W2 after training (an `O(n³)` assignment).
const EXACT_W2_POINTS: usize = 1000;

/// A named recipe: the defaults it sets.
struct Preset {
    name: &'static str,
    about: &'static str,
    data: &'static str,
    noise: Option<f64>,
    steps: usize,
    batch_size: usize,
    lr: f64,
    hidden: &'static [usize],
    activation: Activation,
}

const PRESETS: &[Preset] = &[Preset {
    name: "guide-moons",
    about: "Lipman et al.'s guide, Code 1: MLP 3-64-64-64-2 ELU, Adam 1e-2, batch 256, 10k steps, fresh moons (noise 0.05)",
    data: "moons",
    noise: Some(0.05),
    steps: 10_000,
    batch_size: 256,
    lr: 1e-2,
    hidden: &[64, 64, 64],
    activation: Activation::Elu,
}];

/// The window over which the reported `loss` is averaged.
const LOSS_WINDOW: usize = 500;

/// Training settings after presets and flags are merged.
struct Resolved {
    preset: Option<String>,
    data: String,
    columns: Vec<String>,
    noise: Option<f64>,
    n_train: Option<usize>,
    steps: usize,
    batch_size: usize,
    lr: f64,
    mlp_hidden: Vec<usize>,
    activation: Activation,
    scheduler: SchedulerKind,
    out: PathBuf,
}

fn resolve(a: &TrainArgs) -> Result<Resolved> {
    let preset = match &a.preset {
        Some(name) => Some(PRESETS.iter().find(|p| p.name == name).with_context(|| {
            let list: Vec<String> = PRESETS.iter().map(|p| format!("{} ({})", p.name, p.about)).collect();
            format!("--preset: unknown preset `{name}`; valid: {}", list.join(", "))
        })?),
        None => None,
    };
    // Without a preset the defaults are the guide's recipe.
    let base = preset.unwrap_or(&PRESETS[0]);
    let data = a.data.clone().unwrap_or_else(|| base.data.to_string());
    let same_data = data == base.data;
    let noise = a.noise.or(if same_data { base.noise } else { None });
    let steps = a.steps.unwrap_or(base.steps);
    let batch_size = a.batch_size.unwrap_or(base.batch_size);
    let lr = a.lr.unwrap_or(base.lr);
    if steps == 0 {
        bail!("--steps must be at least 1, got 0");
    }
    if batch_size == 0 {
        bail!("--batch-size must be at least 1, got 0");
    }
    if !(lr.is_finite() && lr > 0.0) {
        bail!("--lr must be a positive number, got {lr}");
    }
    if let Some(n) = noise {
        if !(n.is_finite() && n >= 0.0) {
            bail!("--noise must be a non-negative number, got {n}");
        }
    }
    if a.n_train == Some(0) {
        bail!("--n-train must be at least 1, got 0");
    }
    let mlp_hidden = a.hidden.clone().unwrap_or_else(|| base.hidden.to_vec());
    if mlp_hidden.is_empty() || mlp_hidden.contains(&0) {
        bail!("--hidden needs positive widths, e.g. 64,64,64; got {mlp_hidden:?}");
    }
    let activation = match &a.activation {
        Some(s) => s.parse().context("--activation")?,
        None => base.activation,
    };
    let scheduler = match &a.scheduler {
        Some(s) => s.parse().context("--scheduler")?,
        None => SchedulerKind::CondOt,
    };
    let out = a.out.clone().unwrap_or_else(|| {
        let stem = a
            .preset
            .clone()
            .unwrap_or_else(|| data.trim_start_matches("csv:").replace(['/', '\\', '.'], "_"));
        PathBuf::from("runs").join(stem)
    });
    Ok(Resolved {
        preset: a.preset.clone(),
        data,
        columns: a.columns.clone().unwrap_or_default(),
        noise,
        n_train: a.n_train,
        steps,
        batch_size,
        lr,
        mlp_hidden,
        activation,
        scheduler,
        out,
    })
}

fn progress(steps: usize, quiet: bool) -> ProgressBar {
    let pb = ProgressBar::new(steps as u64);
    if quiet {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    } else {
        pb.set_draw_target(ProgressDrawTarget::stderr());
    }
    let style = ProgressStyle::with_template("{bar:30} {pos}/{len} loss {msg} {per_sec} ETA {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb
}

pub fn run(a: TrainArgs) -> Result<()> {
    let r = resolve(&a)?;
    let device = Device::Cpu;
    // Validate the sampling settings before spending minutes on training.
    let choice = SolverChoice::new(&a.sample_solver, a.sample_steps, 1e-5, 1e-5)
        .context("--sample-solver/--sample-steps")?;
    let mut data =
        TrainingData::prepare(&r.data, &r.columns, r.noise, r.n_train, a.seed).context("--data")?;
    let dim = data.dim();

    let config = MlpConfig { dim, hidden: r.mlp_hidden.clone(), activation: r.activation };
    let mut init_rng = SeededRng::for_stream(a.seed, "init");
    let mut data_rng = SeededRng::for_stream(a.seed, "data");
    let mut train_rng = SeededRng::for_stream(a.seed, "train");
    let (model, varmap) = VelocityMlp::init(&config, &mut init_rng, DType::F32, &device)?;
    let params = ParamsAdamW { lr: r.lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 };
    let mut opt = AdamW::new(varmap.all_vars(), params)?;
    let path = AffinePath::new(r.scheduler);

    let log = |s: String| if a.json { eprintln!("{s}") } else { println!("{s}") };
    log(format!(
        "training {} ({} parameters) on {} for {} steps, batch {}, Adam lr {}, {} path, seed {}",
        format_args!(
            "MLP {}-{}-{}",
            dim + 1,
            r.mlp_hidden.iter().map(|h| h.to_string()).collect::<Vec<_>>().join("-"),
            dim
        ),
        config.num_parameters(),
        data.describe(),
        r.steps,
        r.batch_size,
        r.lr,
        r.scheduler,
        a.seed
    ));

    let pb = progress(r.steps, a.quiet);
    let start = Instant::now();
    let mut losses = Vec::with_capacity(r.steps);
    for step in 1..=r.steps {
        let x1: Tensor = data.batch(r.batch_size, &mut data_rng)?;
        let loss = cfm_train_step(&model, &path, &mut opt, &x1, &mut train_rng).with_context(|| {
            format!("training diverged at step {step}; nothing was written to {}", r.out.display())
        })?;
        losses.push(loss);
        if step % 50 == 0 || step == r.steps {
            let w = &losses[losses.len().saturating_sub(50)..];
            pb.set_message(format!("{:.4}", w.iter().sum::<f64>() / w.len() as f64));
            pb.set_position(step as u64);
        }
    }
    pb.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let tail = &losses[losses.len().saturating_sub(LOSS_WINDOW)..];
    let final_loss = tail.iter().sum::<f64>() / tail.len() as f64;
    let steps_per_s = r.steps as f64 / seconds;

    let record = TrainingRecord {
        data: r.data.clone(),
        columns: data.columns().to_vec(),
        noise: r.noise,
        n_train: r.n_train,
        scheduler: r.scheduler,
        objective: "cfm".into(),
        optimizer: "adam(beta1=0.9, beta2=0.999, eps=1e-8)".into(),
        lr: r.lr,
        batch_size: r.batch_size,
        steps: r.steps,
        step: r.steps,
        seed: a.seed,
        preset: r.preset.clone(),
        loss: Some(final_loss),
        transform: data.transform().cloned(),
        command: std::env::args().collect(),
    };
    let mut ckpt = CheckpointConfig::new(ModelConfig::Mlp(config));
    ckpt.training = serde_json::to_value(&record)?;
    checkpoint::save(&r.out, &ckpt, &varmap_tensors(&varmap)?)
        .with_context(|| format!("--out {}: cannot write the checkpoint", r.out.display()))?;
    log(format!(
        "trained in {seconds:.1} s ({steps_per_s:.0} steps/s); loss (mean of the last {} steps) {final_loss:.4}; checkpoint in {}",
        tail.len(),
        r.out.display()
    ));

    // Samples, plot and metrics from the checkpoint just written (the same path a user takes).
    let loaded = load_model(&r.out, &device)?;
    let gen = generate(&loaded, a.sample_n, a.seed, &choice, dim == 2, &device)?;
    let samples_path = r.out.join("samples.npy");
    write_samples(&samples_path, &gen.samples, a.sample_n, dim, data.columns())?;
    let reference = data.reference(a.sample_n, a.seed)?;
    let n_ref = reference.len() / dim;
    // Metrics on the model's scale (standardized units for CSV data), as `fm eval` reports them.
    let s = Tensor::from_vec(data.to_model_units(&gen.samples)?, (a.sample_n, dim), &device)?;
    let rf = Tensor::from_vec(data.to_model_units(&reference)?, (n_ref, dim), &device)?;
    let bandwidth = data.metric_bandwidth();
    let exact_n = EXACT_W2_POINTS.min(a.sample_n).min(n_ref);
    let metrics = SampleMetrics::compute(&s, &rf, a.seed, exact_n, bandwidth)?;
    let mut plot_path = None;
    if dim == 2 {
        let p = r.out.join("plot.png");
        let title = format!("{} — CFM, {} steps, {} (NFE {})", r.data, r.steps, choice.label, gen.nfe);
        samples_figure(&p, &title, &reference, &gen.samples, &gen.trajectory)?;
        plot_path = Some(p);
    }
    let report = json!({
        "loss": final_loss,
        "steps": r.steps,
        "steps_per_s": steps_per_s,
        "seconds": seconds,
        "checkpoint": r.out,
        "samples": samples_path,
        "plot": plot_path,
        "solver": choice.label,
        "nfe": gen.nfe,
        "n_samples": a.sample_n,
        "metrics": metrics,
    });
    checkpoint::atomic_write(
        &r.out.join("metrics.json"),
        format!("{}\n", serde_json::to_string_pretty(&report)?).as_bytes(),
    )?;
    log(format!(
        "samples: {} ({}, NFE {}); energy distance {:.5}, MMD² (h={}) {:.3e}, sliced W2 {:.4}, exact W2 {}",
        samples_path.display(),
        choice.label,
        gen.nfe,
        metrics.energy_distance,
        bandwidth,
        metrics.mmd_rbf,
        metrics.sliced_w2,
        metrics.exact_w2.map(|w| format!("{w:.4} (first {exact_n} points)")).unwrap_or_else(|| "n/a".into()),
    ));
    if let Some(p) = &plot_path {
        log(format!("plot: {}", p.display()));
    }
    if a.json {
        print_json(&report)?;
    }
    Ok(())
}

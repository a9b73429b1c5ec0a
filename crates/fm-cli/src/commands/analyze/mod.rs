//! `fm analyze`: closed-form analyses of flow matching (Bertrand, Gagneux,
//! Massias, Emonet, arXiv 2506.03719; docs/reference/closed-form.md).
//! Each subcommand writes a CSV of its numbers and a PNG of its figure into
//! `--out DIR`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use fm_models::checkpoint::atomic_write;

use fm_core::VelocityField;
use fm_pipeline::{SolverChoice, Trained};

mod alignment;
mod gaussian;
mod hybrid;
mod memorization;
mod pipeline;
mod targets;

/// The analyses.
#[derive(Debug, Subcommand)]
pub enum AnalyzeCommand {
    /// Distance from generated samples to the nearest training point, for the model and for û*.
    #[command(
        after_help = "Examples:\n  fm train --n-train 200 --steps 3000 --out runs/moons-200\n  fm analyze memorization --checkpoint runs/moons-200 --closed-form\n  fm analyze memorization --checkpoint runs/moons --n-train 500 --threshold 0.02 --json"
    )]
    Memorization(MemorizationArgs),
    /// Nearest-training-point distance of hybrid samples (û* on [0, τ], the model on [τ, 1]) against τ.
    #[command(
        after_help = "Examples:\n  fm analyze hybrid --checkpoint runs/moons-500\n  fm analyze hybrid --checkpoint runs/moons-50 --taus 0,0.2,0.4,0.6,0.8,1 --n 500 --json"
    )]
    Hybrid(HybridArgs),
    /// Fraction of pairs with cos(û*(x_t, t), x1 − x0) > 0.9 against t, for Gaussian data of several
    /// dimensions and optionally MNIST at 7×7, 14×14 and 28×28.
    #[command(
        after_help = "Examples:\n  fm analyze alignment\n  fm analyze alignment --dims 2,8,32 --n 500 --pairs 100 --json\n  fm analyze alignment --mnist data/mnist --out runs/alignment"
    )]
    Alignment(AlignmentArgs),
    /// Exact W2 to the true N(μ, Σ) of solvers following the Gaussian velocity built from the
    /// empirical mean and covariance of n samples; with --sampler sde|langevin, of the whole score
    /// pipeline (samples, training steps, SDE or Langevin sampler, noise floor).
    #[command(
        after_help = "Examples:\n  fm analyze gaussian\n  fm analyze gaussian --dim 16 --alpha 1.5 --n 100,1000 --solvers euler,rk4 --steps 1,2,4,8 --json\n  fm analyze gaussian --t-stop 0.999\n  fm analyze gaussian --sampler sde --dim 64 --alpha 1 --steps 10,100,1000 --n 100,1000,10000   # the whole score pipeline, axis by axis"
    )]
    Gaussian(GaussianArgs),
    /// CFM against EFM targets on a checkpoint's training set: per-sample loss variance, distance
    /// to û*, and the exact W2 of the model's samples to test and training points.
    #[command(
        after_help = "Examples:\n  fm train --data 8gaussians --n-train 5000 --objective efm --efm-m 256 --out runs/8g-efm\n  fm analyze targets --checkpoint runs/8g-efm --m 256 --json"
    )]
    Targets(TargetsArgs),
}

#[derive(Debug, Args, Clone)]
pub struct TargetsArgs {
    /// Checkpoint directory written by `fm train` (trained on a finite set, or give --n-train).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// EFM's reference-set size M.
    #[arg(long, default_value_t = 256)]
    pub m: usize,
    /// Rebuild a training set of N points from the checkpoint's seed (for fresh-data checkpoints).
    #[arg(long)]
    pub n_train: Option<usize>,
    /// Draws (x0, x1, t) for the target statistics.
    #[arg(long, default_value_t = 20000)]
    pub n: usize,
    /// Bins of t in the CSV and the plot.
    #[arg(long, default_value_t = 10)]
    pub bins: usize,
    /// Model samples (and test/training points) for the exact W2.
    #[arg(long, default_value_t = 1000)]
    pub n_w2: usize,
    #[command(flatten)]
    pub solver: AnalyzeSolverArgs,
    /// Seed of the draws, the model's noise and the test points.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory for the CSV and PNG [default: CHECKPOINT/analyze-targets].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print one JSON object with the results as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (also hidden when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args, Clone)]
pub struct MemorizationArgs {
    /// Checkpoint directory written by `fm train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Also sample with the closed-form velocity û* of the training set (same noise).
    #[arg(long)]
    pub closed_form: bool,
    /// Size of a training set rebuilt from the checkpoint's seed, for checkpoints trained on fresh data.
    #[arg(long)]
    pub n_train: Option<usize>,
    /// Number of generated samples.
    #[arg(long, default_value_t = 1000)]
    pub n: usize,
    #[command(flatten)]
    pub solver: AnalyzeSolverArgs,
    /// A sample closer than this to a training point (model units) counts as a copy.
    #[arg(long, default_value_t = 0.01)]
    pub threshold: f64,
    /// Seed of the source noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory for the CSV and PNG [default: CHECKPOINT/analyze-memorization].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print one JSON object with the results as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (also hidden when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args, Clone)]
pub struct HybridArgs {
    /// Checkpoint directory written by `fm train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Switching times τ, comma separated, each in [0, 1].
    #[arg(long, value_delimiter = ',', default_value = "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1")]
    pub taus: Vec<f64>,
    /// Size of a training set rebuilt from the checkpoint's seed, for checkpoints trained on fresh data.
    #[arg(long)]
    pub n_train: Option<usize>,
    /// Number of samples (one fixed noise batch for every τ).
    #[arg(long, default_value_t = 500)]
    pub n: usize,
    #[command(flatten)]
    pub solver: AnalyzeSolverArgs,
    /// Seed of the source noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory for the CSV and PNG [default: CHECKPOINT/analyze-hybrid].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print one JSON object with the results as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (also hidden when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args, Clone)]
pub struct AlignmentArgs {
    /// Dimensions of the Gaussian datasets N(0, I_d), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "2,8,32,128,512,2048")]
    pub dims: Vec<usize>,
    /// Training points per dataset.
    #[arg(long, default_value_t = 1000)]
    pub n: usize,
    /// Pairs (x0, x1) per time; x1 are training points.
    #[arg(long, default_value_t = 200)]
    pub pairs: usize,
    /// Times t, comma separated, in [0, 1), increasing.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,0.05,0.1,0.15,0.2,0.25,0.3,0.35,0.4,0.45,0.5,0.55,0.6,0.65,0.7,0.75,0.8,0.85,0.9,0.95"
    )]
    pub times: Vec<f64>,
    /// A pair is aligned when its cosine exceeds this.
    #[arg(long, default_value_t = 0.9)]
    pub threshold: f64,
    /// The crossing time is when the aligned fraction first reaches this level.
    #[arg(long, default_value_t = 0.5)]
    pub level: f64,
    /// Directory with MNIST's IDX files: adds MNIST at 7×7, 14×14 and 28×28 (first --n training images).
    #[arg(long, value_name = "DIR")]
    pub mnist: Option<PathBuf>,
    /// Subtract the per-pixel mean of the MNIST subset. In [−1, 1] the mostly-black images lie far
    /// from the origin, so û* ≈ x̄ − x0 already points along x1 − x0 at t = 0 and the fraction starts near 1.
    #[arg(long)]
    pub center: bool,
    /// Seed of the data, the pairs' noise and the Gaussian datasets.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory for the CSV and PNG [default: runs/analyze-alignment].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print one JSON object with the results as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (also hidden when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args, Clone)]
pub struct GaussianArgs {
    /// Data dimension d.
    #[arg(long, default_value_t = 8)]
    pub dim: usize,
    /// Power-law spectrum of the true covariance: λ_k = k^(−alpha), k = 1..d (diagonal Σ).
    #[arg(long, default_value_t = 1.0)]
    pub alpha: f64,
    /// Every coordinate of the true mean μ.
    #[arg(long, default_value_t = 0.0)]
    pub mean: f64,
    /// Training-set sizes n, comma separated (each > --dim); smaller sets are prefixes of larger ones.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000,10000")]
    pub n: Vec<usize>,
    /// Fixed-step solvers, comma separated: euler, midpoint, heun, heun3, rk4, rk4-3/8.
    #[arg(long, value_delimiter = ',', default_value = "euler,midpoint,heun,rk4")]
    pub solvers: Vec<String>,
    /// Step counts, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32")]
    pub steps: Vec<usize>,
    /// First time of the grid (the solve starts from N(0, I) there).
    #[arg(long, default_value_t = 0.0)]
    pub t_start: f64,
    /// Last time of the grid.
    #[arg(long, default_value_t = 1.0)]
    pub t_stop: f64,
    /// Seed of the training samples.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// ode: the solvers' error (above); sde or langevin: the exact error of the whole score
    /// pipeline — a linear model from --n samples and --train-steps gradient steps, then the
    /// stochastic sampler on --steps steps — against each axis in turn, split over the spectrum.
    #[arg(long, default_value = "ode", value_parser = ["ode", "sde", "langevin"])]
    pub sampler: String,
    /// The SDE's diffusion g(t) (see fm sample --diffusion).
    #[arg(long, default_value = "sigma:1")]
    pub diffusion: String,
    /// The path of the pipeline mode: cond-ot, polynomial:N, cosine, linear-vp, vp
    /// (--diffusion path needs vp).
    #[arg(long, default_value = "cond-ot")]
    pub scheduler: String,
    /// The SDE scheme: euler-maruyama (em) or stochastic-heun (heun).
    #[arg(long, default_value = "euler-maruyama")]
    pub sde_solver: String,
    /// Noise floors δ, comma separated (the first is the baseline of the other axes).
    #[arg(long, value_delimiter = ',', default_value = "0.001,0.01,0.03,0.1")]
    pub noise_floor: Vec<f64>,
    /// Gradient steps K of the linear denoiser, comma separated (the other axes use a fully trained one).
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000,10000")]
    pub train_steps: Vec<u64>,
    /// The gradient step size η of --train-steps.
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// The step size ε of --sampler langevin.
    #[arg(long, default_value_t = 0.01)]
    pub langevin_step: f64,
    /// Data draws averaged per --n value (pipeline mode).
    #[arg(long, default_value_t = 5)]
    pub repeats: u64,
    /// Pipeline mode: take the spectrum from an image dataset's covariance instead of k^(−alpha)
    /// (FORMAT:PATH, e.g. mnist:data/mnist; pixels in [−1, 1]; --dim is then the image size).
    #[arg(long, value_name = "FORMAT:PATH")]
    pub spectrum_from: Option<String>,
    /// Training images whose covariance gives --spectrum-from's spectrum.
    #[arg(long, default_value_t = 10_000)]
    pub spectrum_n: usize,
    /// Output directory for the CSV and PNG [default: runs/analyze-gaussian].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print one JSON object with the results as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (also hidden when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

/// Solver flags of the sampling analyses. The default, 200 Euler steps, is the
/// memorisation check of docs/reference/closed-form.md: it integrates û* onto
/// the training points (coarser grids stop at posterior means of nearby points).
#[derive(Debug, Args, Clone)]
pub struct AnalyzeSolverArgs {
    /// ODE solver: euler, midpoint, heun, heun3, rk4, rk4-3/8, dopri5.
    #[arg(long, default_value = "euler")]
    pub solver: String,
    /// Number of steps of a fixed-step solver (uniform grid on [0, 1]).
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// Relative tolerance of dopri5.
    #[arg(long, default_value_t = 1e-5)]
    pub rtol: f64,
    /// Absolute tolerance of dopri5.
    #[arg(long, default_value_t = 1e-5)]
    pub atol: f64,
}

impl AnalyzeSolverArgs {
    fn choice(&self) -> Result<SolverChoice> {
        Ok(SolverChoice::new(&self.solver, self.steps, self.rtol, self.atol)?)
    }
}

pub fn run(cmd: AnalyzeCommand) -> Result<()> {
    match cmd {
        AnalyzeCommand::Memorization(a) => memorization::run(a),
        AnalyzeCommand::Hybrid(a) => hybrid::run(a),
        AnalyzeCommand::Targets(a) => targets::run(a),
        AnalyzeCommand::Alignment(a) => alignment::run(a),
        AnalyzeCommand::Gaussian(a) => gaussian::run(a),
    }
}

/// Human-readable progress: stdout, or stderr when stdout carries JSON.
/// The checkpoint's model as a velocity field (the closed-form analyses compare with one).
fn velocity_field(m: &Trained) -> Result<&dyn VelocityField> {
    m.velocity_field().with_context(|| {
        format!(
            "checkpoint {}: a {} is not a velocity field; these analyses need a flow-matching model (--model mlp|unet)",
            m.dir().display(),
            m.family().name()
        )
    })
}

fn logger(json: bool) -> impl Fn(String) {
    move |s: String| if json { eprintln!("{s}") } else { println!("{s}") }
}

/// Creates `--out DIR` (or the default) and checks that it is writable.
fn out_dir(out: Option<&Path>, default: PathBuf) -> Result<PathBuf> {
    let dir = out.map(Path::to_path_buf).unwrap_or(default);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("--out {}: cannot create the directory", dir.display()))?;
    Ok(dir)
}

/// Writes a CSV with `header` and one line per row.
fn write_csv(path: &Path, header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let mut s = header.join(",");
    s.push('\n');
    for r in rows {
        s.push_str(&r.join(","));
        s.push('\n');
    }
    atomic_write(path, s.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

/// The median (mean of the two middle values for an even count); NaN if empty.
fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let k = s.len() / 2;
    if s.len() % 2 == 1 {
        s[k]
    } else {
        0.5 * (s[k - 1] + s[k])
    }
}

/// Checks a user-given probability-like time list.
fn check_unit(values: &[f64], flag: &str, upper_open: bool) -> Result<()> {
    if values.is_empty() {
        bail!("{flag} needs at least one value");
    }
    for &v in values {
        let ok = v.is_finite() && v >= 0.0 && if upper_open { v < 1.0 } else { v <= 1.0 };
        if !ok {
            let range = if upper_open { "[0, 1)" } else { "[0, 1]" };
            bail!("{flag}: every value must lie in {range}, got {v}");
        }
    }
    Ok(())
}

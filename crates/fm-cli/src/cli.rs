//! Command-line definitions (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Flow matching in Rust: train, sample, evaluate and plot flow models.
///
/// Time convention: t = 0 is noise, t = 1 is data (as in flow_matching and torchcfm).
#[derive(Debug, Parser)]
#[command(name = "fm", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Where models run: cpu, cuda or cuda:N (CUDA needs a build with `--features cuda`).
    #[arg(long, global = true, default_value = "cpu", value_name = "cpu|cuda:N")]
    pub device: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a velocity field by conditional flow matching, or (--model planar|realnvp) a discrete
    /// normalizing flow by maximum likelihood.
    #[command(
        after_help = "Examples:\n  fm train                                   # the guide's two-moons recipe\n  fm train --data 8gaussians --steps 5000 --out runs/8g\n  fm train --data csv:faithful.csv --columns eruptions,waiting --out runs/faithful\n  fm train --preset guide-moons --seed 1 --json\n  fm train --config recipe.toml --steps 20000    # flags override the file\n  fm train --resume runs/moons --steps 20000      # continue a run (after Ctrl-C, a crash, or to go further)\n  fm train --model realnvp --layers 8 --hidden 64,64 --out runs/moons-nvp   # a discrete flow, maximum likelihood\n  fm train --model planar --layers 16 --steps 3000 --out runs/moons-planar\n  fm train --data mnist:data/mnist --model unet --preset mnist --ema-decay 0.999 --out runs/mnist\n  fm train --data digits:digits.csv.gz --model unet --preset tiny --class-cond --label-dropout 0.1"
    )]
    Train(Box<TrainArgs>),
    /// Draw samples from a trained checkpoint by solving the ODE from t = 0 to 1.
    #[command(
        after_help = "Examples:\n  fm sample --checkpoint runs/moons --solver midpoint --steps 8 --n 2000 --out samples.npy\n  fm sample --checkpoint runs/moons --solver dopri5 --rtol 1e-5 --atol 1e-5 --out samples.csv\n  fm sample --checkpoint runs/moons-n500 --hybrid 0.3 --out hybrid.npy   # û* on [0, 0.3], the model after\n  fm sample --checkpoint runs/mnist --n 10000 --solver euler --steps 20 --out mnist.png   # grid + mnist.npy\n  fm sample --checkpoint runs/mnist-cond --class 3 --cfg-scale 1.5 --out threes.png --trajectory strip.png\n  fm sample --checkpoint runs/moons --sampler sde --diffusion sigma:2 --steps 100 --noise-floor 0.01   # same marginals, stochastic paths\n  fm sample --checkpoint runs/vp --sampler sde --diffusion path --steps 500   # the reverse VP-SDE of a --scheduler vp model"
    )]
    Sample(SampleArgs),
    /// Write coupled pairs (x0, ODE solution x1) of a velocity model for reflow (rectified flow):
    /// train on them with `fm train --data pairs:FILE`.
    #[command(
        after_help = "Examples:\n  fm reflow --checkpoint runs/moons --pairs 100000 --out runs/moons/pairs.npy\n  fm train --data pairs:runs/moons/pairs.npy --steps 10000 --out runs/moons-2rf   # the 2-rectified flow\n  fm reflow --checkpoint runs/moons-2rf --pairs 100000 --solver rk4 --steps 25 --out runs/moons-2rf/pairs.npy\n  fm train --data pairs:runs/moons-2rf/pairs.npy --objective distill --out runs/moons-2rf-distilled   # one step: fm sample --solver euler --steps 1"
    )]
    Reflow(ReflowArgs),
    /// Evaluate sample quality of a checkpoint for several solvers against fresh data.
    #[command(
        after_help = "Examples:\n  fm eval --checkpoint runs/moons\n  fm eval --checkpoint runs/moons --solvers euler:8,midpoint:8,euler:100 --json"
    )]
    Eval(EvalArgs),
    /// Log-likelihood of data under a checkpoint (instantaneous change of variables, t = 1 → 0).
    #[command(
        after_help = "Examples:\n  fm likelihood --checkpoint runs/moons                       # 2000 fresh test points, exact divergence\n  fm likelihood --checkpoint runs/moons --hutchinson 4 --solver dopri5 --json\n  fm likelihood --checkpoint runs/faithful --data csv:faithful.csv --columns eruptions,waiting\n  fm likelihood --checkpoint runs/moons-nvp --json            # a planar/RealNVP flow: exact, no ODE"
    )]
    Likelihood(LikelihoodArgs),
    /// Figures from a checkpoint.
    #[command(subcommand)]
    Plot(PlotCommand),
    /// Closed-form analyses: memorization, hybrid τ, cosine alignment, Gaussian solver error.
    #[command(subcommand)]
    Analyze(crate::commands::analyze::AnalyzeCommand),
    /// Fit planar flows by reverse KL to the test energies U1–U4 (Rezende & Mohamed 2015, Fig. 3).
    #[command(
        after_help = "Examples:\n  fm energies                                          # U1–U4 × K = 2, 8, 32, 3000 steps each\n  fm energies --layers 2,8,32 --energies u1,u3 --steps 10000 --out runs/energies\n  fm energies --steps 20000 --anneal-steps 10000      # the paper's schedule, β_t = min(1, 0.01 + t/10⁴)\n\nReported: for U1 (normalisable on ℝ²) KL(q‖p) = E_q[log q + U] + log Z₁ (1.8775). U2–U4 do not\nconfine z₁, so their target is p restricted to the box [−4,4]² (trained with a soft wall outside\nthe box) and the reported KL is KL(q_box‖p_box) = E_q[log q + U | box] − log q(box) + log Z_box\n(2.0821 / 2.6417 / 2.6846), where q_box is q conditioned on the box, together with the mass of q\noutside the box (`mass_outside_box`)."
    )]
    Energies(EnergiesArgs),
    /// The image classifier whose features the Fréchet distance uses.
    #[command(subcommand)]
    Classifier(crate::commands::classifier::ClassifierCommand),
    /// Fréchet distance between generated images and the test split, in the classifier's features.
    #[command(
        after_help = "Examples:\n  fm frechet --samples samples.npy --classifier runs/mnist-classifier --data mnist:data/mnist\n  fm frechet --checkpoint runs/mnist --n 10000 --solver euler --steps 100 --classifier runs/mnist-classifier --data mnist:data/mnist --json\n  fm frechet --baseline train --data mnist:data/mnist   # the floor, with fm's pinned classifier\n  fm frechet --baseline blur:1.0 --classifier runs/mnist-classifier --data mnist:data/mnist"
    )]
    Frechet(Box<crate::commands::frechet::FrechetArgs>),
    /// Export a checkpoint: --format hub writes a folder ready to upload to the Hugging Face Hub.
    #[command(
        after_help = "Examples:\n  fm export --format hub runs/mnist --out hub/mnist-unet   # model.safetensors, config.json, README.md\n  huggingface-cli upload OWNER/mnist-unet hub/mnist-unet    # then: fm sample --checkpoint hf://OWNER/mnist-unet"
    )]
    Export(crate::commands::export::ExportArgs),
    /// Convert weights between fm checkpoints and PyTorch state dicts (torchcfm), as safetensors.
    #[command(
        after_help = "Examples:\n  fm convert --from torchcfm-unet unet.safetensors --preset mnist --shape 1x28x28 --out runs/from-torch\n  fm convert --from torchcfm-unet unet.safetensors --config unet.json --out runs/from-torch\n  fm convert --from torchcfm-mlp mlp.safetensors --out runs/mlp   # sizes read off the shapes\n  fm convert --to torchcfm-unet runs/mnist --out mnist-torchcfm.safetensors"
    )]
    Convert(crate::commands::convert::ConvertArgs),
    /// Evaluate a checkpoint's network on inputs from a safetensors file (x, t, optional y).
    #[command(
        after_help = "Examples:\n  fm velocity --checkpoint runs/mnist --inputs in.safetensors --out out.safetensors --json"
    )]
    Velocity(crate::commands::velocity::VelocityArgs),
    /// Datasets: fetch MNIST, Fashion-MNIST, CIFAR-10 (through the Hugging Face Hub) or the digits.
    #[command(subcommand)]
    Data(crate::commands::data::DataCommand),
}

#[derive(Debug, Args, Clone)]
pub struct EnergiesArgs {
    /// Numbers of planar layers K, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "2,8,32")]
    pub layers: Vec<usize>,
    /// Energies, comma separated: u1, u2, u3, u4.
    #[arg(long, value_delimiter = ',', default_value = "u1,u2,u3,u4")]
    pub energies: Vec<String>,
    /// Adam steps per fit (the paper trains far longer; 3000 keeps a default run to a few minutes).
    #[arg(long, default_value_t = 3000)]
    pub steps: usize,
    /// Steps over which β rises from 0.01 to 1: β_t = min(1, 0.01 + t/N). Default: 10⁴ (the
    /// paper's) when --steps ≥ 2·10⁴, else --steps/2 so that the last half of the run is at β = 1.
    #[arg(long, value_name = "N")]
    pub anneal_steps: Option<usize>,
    /// Samples per step.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Learning rate of Adam.
    #[arg(long, default_value_t = 1e-2)]
    pub lr: f64,
    /// Samples of the final KL estimate.
    #[arg(long, default_value_t = 20_000)]
    pub eval_n: usize,
    /// Grid points per axis of the density figure.
    #[arg(long, default_value_t = 80)]
    pub grid: usize,
    /// Seed of the initialisation and the noise (each fit uses its own stream).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory for results.csv and densities.png.
    #[arg(long, default_value = "runs/energies")]
    pub out: PathBuf,
    /// Print one JSON object (`results`: energy, layers, kl, mass_outside_box, ...) as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum PlotCommand {
    /// The model's density on a grid as a heat map, beside a histogram of the data (2-D).
    #[command(
        after_help = "Examples:\n  fm plot density --checkpoint runs/checkerboard\n  fm plot density --checkpoint runs/moons --grid 150 --out density.png\n  fm plot density --checkpoint runs/moons-nvp       # a planar/RealNVP flow: exact density, no ODE"
    )]
    Density(DensityArgs),
    /// Image samples side by side: one row per .npy file (e.g. one sampler or step count per row).
    #[command(
        after_help = "Examples:\n  fm plot grid --samples runs/mf/1.npy,runs/mf/2.npy,runs/unet/100.npy --out rows.png\n  fm plot grid --samples a.npy,b.npy --cols 16 --shape 3,32,32 --out cifar-rows.png"
    )]
    Grid(GridArgs),
}

#[derive(Debug, Args, Clone)]
pub struct GridArgs {
    /// Sample files as `fm sample` writes them (.npy, (n, c·h·w) or (n, c, h, w), in [−1, 1]), comma separated: one row each, in order.
    #[arg(long, value_delimiter = ',', required = true)]
    pub samples: Vec<PathBuf>,
    /// Images per row (the first of each file).
    #[arg(long, default_value_t = 10)]
    pub cols: usize,
    /// Image shape `C,H,W` for (n, c·h·w) files [default: the file's own (n, c, h, w), else one square channel].
    #[arg(long, value_delimiter = ',')]
    pub shape: Option<Vec<usize>>,
    /// Pixel zoom.
    #[arg(long, default_value_t = 3)]
    pub zoom: usize,
    /// Output PNG.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args, Clone)]
pub struct LikelihoodSolverArgs {
    /// ODE solver of the backward solve: euler, midpoint, heun, heun3, rk4, rk4-3/8, dopri5.
    #[arg(long, default_value = "rk4")]
    pub solver: String,
    /// Number of steps of a fixed-step solver (uniform grid from t = 1 to 0).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Relative tolerance of dopri5.
    #[arg(long, default_value_t = 1e-5)]
    pub rtol: f64,
    /// Absolute tolerance of dopri5.
    #[arg(long, default_value_t = 1e-5)]
    pub atol: f64,
    /// Exact divergence (one backward pass per dimension) — the default.
    #[arg(long, conflicts_with = "hutchinson")]
    pub exact: bool,
    /// Hutchinson's trace estimator with K probes (drawn once per solve).
    #[arg(long, value_name = "K")]
    pub hutchinson: Option<usize>,
    /// Probe distribution of the Hutchinson estimator: rademacher or gaussian.
    #[arg(long, default_value = "rademacher")]
    pub probe: String,
}

#[derive(Debug, Args, Clone)]
pub struct LikelihoodArgs {
    /// Checkpoint directory written by `fm train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Data to evaluate: a toy name or csv:PATH. Default: the checkpoint's own data
    /// (fresh test points for toys, the whole file for CSV).
    #[arg(long)]
    pub data: Option<String>,
    /// Columns of a CSV dataset (default: the checkpoint's).
    #[arg(long, value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
    /// Number of points (toys: fresh test points; CSV: at most this many rows).
    #[arg(long, default_value_t = 2000)]
    pub n: usize,
    #[command(flatten)]
    pub solver: LikelihoodSolverArgs,
    /// Points per batch of the solve (memory).
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Seed of the test points and the probes.
    #[arg(long, default_value_t = 777)]
    pub seed: u64,
    /// Print one JSON object (`nll`, `nll_stderr`, ...) as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (also hidden when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args, Clone)]
pub struct DensityArgs {
    /// Checkpoint directory written by `fm train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Grid points per axis.
    #[arg(long, default_value_t = 100)]
    pub grid: usize,
    /// Plot window `xmin,xmax,ymin,ymax` in data units (default: the data's range plus a margin).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub range: Option<Vec<f64>>,
    /// Steps of the RK4 backward solve at every grid point.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Output PNG. Default: CHECKPOINT/density.png.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print one JSON object with the figure's numbers as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (also hidden when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args, Clone, Default)]
pub struct TrainArgs {
    /// TOML file of training settings; its keys are the long flag names (e.g. `batch-size = 256`),
    /// and flags given on the command line override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Continue the run saved in DIR (by a periodic checkpoint, Ctrl-C or the end of a run):
    /// the result is bit-identical to an uninterrupted run. `--steps` may raise the total.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Start from these weights instead of a random initialisation: a checkpoint directory, a
    /// .safetensors file, or `hf://OWNER/REPO[@REVISION][/FILE]` on the Hugging Face Hub. The
    /// names and shapes must fit the model exactly unless --allow-partial.
    #[arg(long, value_name = "CHECKPOINT")]
    pub init: Option<PathBuf>,
    /// With --init: load the parameters that fit (name and shape) and keep the initial values of
    /// the rest (e.g. a new class embedding); the report lists what stayed initialised.
    #[arg(long, requires = "init")]
    pub allow_partial: bool,
    #[command(flatten)]
    pub hub: HubArgs,
    /// Named recipe setting the defaults below (explicit flags override it): guide-moons; with
    /// --model unet the U-Net preset: tiny, mnist, cifar10 [default: mnist].
    #[arg(long)]
    pub preset: Option<String>,
    /// Dataset: moons, 8gaussians, checkerboard, circles, 2spirals, swissroll, or csv:PATH.
    #[arg(long)]
    pub data: Option<String>,
    /// Columns of a CSV dataset, comma separated (e.g. eruptions,waiting).
    #[arg(long, value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
    /// Noise level of the toy dataset (moons: 0.05 unless set).
    #[arg(long)]
    pub noise: Option<f64>,
    /// Train on a fixed set of N points instead of fresh points every step.
    #[arg(long)]
    pub n_train: Option<usize>,
    /// Number of optimisation steps [default: 10000].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Batch size [default: 256].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Learning rate of Adam [default: 0.01; flows: 0.001].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Decoupled weight decay (AdamW, as PyTorch's) [default: 0, plain Adam].
    #[arg(long, value_name = "W")]
    pub weight_decay: Option<f64>,
    /// Model: mlp (a velocity field trained by flow matching), unet (an image velocity field:
    /// --preset tiny|mnist|cifar10), planar or realnvp (discrete normalizing flows trained by
    /// maximum likelihood), meanflow (an average-velocity MLP sampled in 1–2 steps: fm sample
    /// --steps 1), meanflow-unet (the same on images: the U-Net's --preset and sizes,
    /// unconditional, no dropout), discrete (discrete flow matching: an MLP posterior over tokens —
    /// points on a grid of --bins cells per coordinate, image pixels at their grey levels — sampled
    /// by a CTMC, likelihood by the ELBO), discrete-unet (the same on images with the U-Net's
    /// --preset, --class-cond and guidance), riemannian (flow matching on a --manifold: an MLP on
    /// embedding coordinates projected onto tangent spaces) [default: mlp; riemannian with
    /// --manifold].
    #[arg(long)]
    pub model: Option<String>,
    /// Number of flow layers with --model planar|realnvp [default: planar 16, realnvp 8].
    #[arg(long, value_name = "K")]
    pub layers: Option<usize>,
    #[command(flatten)]
    pub unet: UNetTrainArgs,
    /// Hidden widths of the MLP (or of RealNVP's conditioners), comma separated [default: 64,64,64;
    /// realnvp: 64,64].
    #[arg(long, value_delimiter = ',')]
    pub hidden: Option<Vec<usize>>,
    /// Activation: elu, silu, selu, relu, tanh [default: elu].
    #[arg(long)]
    pub activation: Option<String>,
    /// Training objective: cfm (flow matching, regression on x1 − x0), efm (see --efm-m),
    /// likelihood (a CNF trained by maximum likelihood through the ODE solver, the
    /// pre-flow-matching way) or distill (with --data pairs:FILE from `fm reflow`: the one-step
    /// map x0 + u(x0, 0) = x1, sampled by `fm sample --solver euler --steps 1`) [default: cfm];
    /// discrete models: cross-entropy or generalized-kl (the ELBO's integrand) [default:
    /// cross-entropy].
    #[arg(long)]
    pub objective: Option<String>,
    /// RK4 steps of the likelihood solve with --objective likelihood [default: 10].
    #[arg(long, value_name = "N")]
    pub cnf_steps: Option<usize>,
    /// Reference-set size M of --objective efm (empirical flow matching: the regression target is
    /// the closed-form velocity estimated from the generating point plus M − 1 training points;
    /// needs a finite training set, e.g. --n-train) [default: 256].
    #[arg(long, value_name = "M")]
    pub efm_m: Option<usize>,
    /// What the network predicts: velocity, noise (ε) or data (x̂₁, the denoiser); sampling converts
    /// it to a velocity [default: velocity].
    #[arg(long)]
    pub parametrization: Option<String>,
    /// Loss weighting over t, named by the loss it reproduces: uniform (plain MSE of the
    /// prediction), velocity (the FM loss), noise (DDPM's ε-loss), data (the denoising loss),
    /// v-prediction [default: uniform].
    #[arg(long)]
    pub weighting: Option<String>,
    /// Add W · ‖∂u/∂x‖²_F / d to the loss (Hutchinson's estimate, one forward-mode JVP per probe).
    #[arg(long, value_name = "W")]
    pub jacobian_reg: Option<f64>,
    /// Rademacher probes per sample of --jacobian-reg [default: 1].
    #[arg(long, value_name = "K")]
    pub jacobian_probes: Option<usize>,
    /// Probability-path scheduler: cond-ot, cosine, linear-vp, vp, polynomial:N [default: cond-ot;
    /// discrete models: polynomial:2, κ = t²].
    #[arg(long)]
    pub scheduler: Option<String>,
    /// torchcfm matcher: icfm, otcfm (exact minibatch OT), sbcfm (Schrödinger bridge), fm (Lipman's
    /// target FM), si (variance-preserving interpolant) [default: none, plain CFM on --scheduler].
    #[arg(long)]
    pub matcher: Option<String>,
    /// Minibatch coupling: independent, ot (exact permutation), sinkhorn or sinkhorn:REG
    /// [default: the matcher's; implies --matcher icfm when given alone].
    #[arg(long)]
    pub coupling: Option<String>,
    /// The matcher's noise level σ [default: 1 for sbcfm, 0 otherwise; implies --matcher icfm].
    #[arg(long)]
    pub sigma: Option<f64>,
    /// Source distribution at t = 0: normal (N(0, I)) or 8gaussians (torchcfm's, 2-D; needs
    /// --matcher) [default: normal]; discrete models: mask (every token masked) or uniform
    /// [default: mask].
    #[arg(long)]
    pub source: Option<String>,
    /// Discrete models: token values per coordinate of points (equal cells tiling [−m, m], m the
    /// smallest integer bounding the data) [default: 128], or grey levels of images (2 binarizes)
    /// [default: the images' own levels].
    #[arg(long, value_name = "N")]
    pub bins: Option<usize>,
    /// Riemannian flow matching on a manifold (implies --model riemannian): sphere (S², the data's
    /// columns longitude, latitude in degrees), sphere:D, torus or torus:D (angles in degrees), euclidean:D,
    /// or a product such as product:sphere+torus:1 (the columns of each factor in turn) [default:
    /// the dataset's own — sphere-mixture, torus-mixture, sphere-clock — else sphere].
    #[arg(long, value_name = "M")]
    pub manifold: Option<String>,
    /// Seed for data, initialisation, t and noise: the same seed gives a bit-identical checkpoint
    /// [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output directory for the checkpoint, samples, plot and metrics [default: runs/PRESET or runs/DATA].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Save a resumable checkpoint every N steps; 0 saves only at the end [default: 1000].
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<usize>,
    /// Number of samples drawn after training [default: 2000].
    #[arg(long)]
    pub sample_n: Option<usize>,
    /// Solver for the samples drawn after training [default: midpoint].
    #[arg(long)]
    pub sample_solver: Option<String>,
    /// Steps of that solver [default: 50].
    #[arg(long)]
    pub sample_steps: Option<usize>,
    /// Print one JSON object with the results as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (also hidden when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args, Clone)]
pub struct SolverArgs {
    /// ODE solver: euler, midpoint, heun, heun3, rk4, rk4-3/8, dopri5.
    #[arg(long, default_value = "midpoint")]
    pub solver: String,
    /// Number of steps of a fixed-step solver (uniform grid on [0, 1]).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Relative tolerance of dopri5.
    #[arg(long, default_value_t = 1e-5)]
    pub rtol: f64,
    /// Absolute tolerance of dopri5.
    #[arg(long, default_value_t = 1e-5)]
    pub atol: f64,
}

#[derive(Debug, Args, Clone)]
pub struct ReflowArgs {
    /// Checkpoint directory of a velocity model trained from N(0, I) (or hf://…).
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub hub: HubArgs,
    #[command(flatten)]
    pub solver: SolverArgs,
    /// Number of pairs.
    #[arg(long, default_value_t = 100_000)]
    pub pairs: usize,
    /// Seed of the source draws x0 (stream sample-noise).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Pairs per solve (they are written to the file as they come).
    #[arg(long, default_value_t = 10_000)]
    pub batch_size: usize,
    /// Output .npy: an (n, 2d) float32 array, rows x0 then x1, in the model's units; written
    /// under a temporary name and renamed when complete. FILE.json beside it names the teacher
    /// and its data (a model trained on the pairs is measured against that data).
    #[arg(long)]
    pub out: PathBuf,
    /// Print one JSON object with the results as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (also hidden when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

/// Stochastic sampling (velocity models trained from N(0, I)).
#[derive(Debug, Args, Clone)]
pub struct StochasticArgs {
    /// ode: the --solver's ODE solve; sde: dx = [u + ½g²∇log p] dt + g dW on --steps steps to
    /// t = 1 − δ, then one denoising step (the same marginals as the ODE for any g); langevin:
    /// --steps unadjusted Langevin steps of size --langevin-step at t = 1 − δ, then the denoising step.
    #[arg(long, default_value = "ode", value_parser = ["ode", "sde", "langevin"])]
    pub sampler: String,
    /// The SDE's diffusion g(t): sigma:C (g = C·σ_t), constant:C, path (the path's own; the
    /// reverse VP-SDE for a --scheduler vp model) or none (the ODE).
    #[arg(long, default_value = "sigma:1")]
    pub diffusion: String,
    /// The noise floor δ of --sampler sde|langevin: stop at t = 1 − δ and denoise.
    #[arg(long, default_value_t = 0.01)]
    pub noise_floor: f64,
    /// The SDE scheme: euler-maruyama (em) or stochastic-heun (heun).
    #[arg(long, default_value = "euler-maruyama")]
    pub sde_solver: String,
    /// Langevin corrector steps after every SDE step (0: none), of size ε = R·σ_t² (--corrector-ratio).
    #[arg(long, default_value_t = 0)]
    pub corrector_steps: usize,
    /// The corrector's R in ε = R·σ_t².
    #[arg(long, default_value_t = 0.1)]
    pub corrector_ratio: f64,
    /// The step size ε of --sampler langevin.
    #[arg(long, default_value_t = 0.01)]
    pub langevin_step: f64,
}

#[derive(Debug, Args, Clone)]
pub struct SampleArgs {
    /// Checkpoint directory written by `fm train`, or `hf://OWNER/REPO[@REVISION][/FILE]` on the
    /// Hugging Face Hub (downloaded into the Hub cache, reused offline).
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub hub: HubArgs,
    #[command(flatten)]
    pub solver: SolverArgs,
    #[command(flatten)]
    pub stochastic: StochasticArgs,
    /// Number of samples.
    #[arg(long, default_value_t = 2000)]
    pub n: usize,
    /// Seed of the source noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output file: .npy or .csv (by extension), or for images .png (a grid of the first 100,
    /// with all samples in a .npy of the same name beside it). Image samples are written in the
    /// model's scale, pixel p ↦ 2(p + ½)/levels − 1 ∈ [−1, 1], unclipped, one flattened c·h·w
    /// image per row. Default: CHECKPOINT/samples.npy.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write a PNG of the samples and their trajectories (2-D data).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    #[command(flatten)]
    pub images: ImageSampleArgs,
    /// Follow the closed-form velocity û* of the checkpoint's training set on [0, TAU]
    /// and the model on [TAU, 1] (TAU in [0, 1]; needs a checkpoint trained with --n-train or CSV data).
    #[arg(long, value_name = "TAU")]
    pub hybrid: Option<f64>,
    /// Print one JSON object with the results as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (also hidden when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

/// Hugging Face Hub options of the commands that accept `hf://` checkpoints.
///
/// The endpoint, cache and token come from `HF_ENDPOINT`, `HF_HUB_CACHE` (or `HF_HOME`) and
/// `HF_TOKEN`, as in Python's huggingface_hub.
#[derive(Debug, Args, Clone, Default)]
pub struct HubArgs {
    /// Make no network request: hf:// files must already be in the Hub cache (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}

#[derive(Debug, Args, Clone)]
pub struct EvalArgs {
    /// Checkpoint directory written by `fm train`.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Solver settings to compare, comma separated: NAME:STEPS for fixed-step, dopri5 or
    /// dopri5:TOL, and sde:STEPS or sde:STEPS:DIFFUSION for the marginal-preserving SDE (diffusion sigma:C,
    /// constant:C or path; default sigma:1), e.g. sde:100:sigma:2.
    #[arg(long, value_delimiter = ',', default_value = "euler:8,midpoint:8,euler:100,rk4:25,dopri5")]
    pub solvers: Vec<String>,
    /// The noise floor δ of the sde: entries.
    #[arg(long, default_value_t = 0.01)]
    pub noise_floor: f64,
    /// The scheme of the sde: entries: euler-maruyama (em) or stochastic-heun (heun).
    #[arg(long, default_value = "euler-maruyama")]
    pub sde_solver: String,
    /// Number of generated and of reference points.
    #[arg(long, default_value_t = 2000)]
    pub n: usize,
    /// Points used for the exact W2 (an O(n³) assignment); 0 skips it.
    #[arg(long, default_value_t = 1000)]
    pub exact_n: usize,
    /// RBF bandwidth of the MMD.
    #[arg(long, default_value_t = 0.5)]
    pub bandwidth: f64,
    /// Seed of the source noise and of the fresh reference data.
    #[arg(long, default_value_t = 12345)]
    pub seed: u64,
    /// Print one JSON object with the results as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (also hidden when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

/// `fm train` options of image models (`--model unet`).
#[derive(Debug, Args, Clone, Default)]
pub struct UNetTrainArgs {
    /// U-Net base channels (torchcfm's num_channels) [default: the preset's].
    #[arg(long, value_name = "C")]
    pub channels: Option<usize>,
    /// U-Net channel multipliers per level, comma separated [default: the preset's].
    #[arg(long, value_delimiter = ',', value_name = "M,M,..")]
    pub channel_mult: Option<Vec<usize>>,
    /// U-Net residual blocks per level [default: the preset's].
    #[arg(long, value_name = "N")]
    pub res_blocks: Option<usize>,
    /// Resolutions (image widths) with self-attention, comma separated, as torchcfm's
    /// attention_resolutions; `none` for the middle block only [default: the preset's, 16].
    #[arg(long, value_name = "R,R,..|none")]
    pub attention_res: Option<String>,
    /// Dropout in the U-Net's residual blocks [default: the preset's].
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Class-conditional training on the dataset's labels (a null class is added for guidance).
    #[arg(long)]
    pub class_cond: bool,
    /// Probability of replacing a label by the null class while training (classifier-free
    /// guidance; flow_matching uses 0.2) [default: 0.1 with --class-cond].
    #[arg(long, value_name = "P")]
    pub label_dropout: Option<f64>,
    /// Keep an exponential moving average of the weights with this decay; checkpoints'
    /// model.safetensors then hold the EMA weights, which sampling uses.
    #[arg(long, value_name = "DECAY")]
    pub ema_decay: Option<f64>,
    /// Clip the global gradient norm to this value.
    #[arg(long, value_name = "NORM")]
    pub grad_clip: Option<f64>,
    /// Linear learning-rate warm-up over this many steps.
    #[arg(long, value_name = "STEPS")]
    pub warmup: Option<usize>,
}

/// `fm sample` options of image models.
#[derive(Debug, Args, Clone, Default)]
pub struct ImageSampleArgs {
    /// Class to sample from a class-conditional model [default: classes 0, 1, …, K−1 in turn].
    #[arg(long, value_name = "K")]
    pub class: Option<u32>,
    /// Classifier-free guidance weight w: (1 + w)·u(x|y) − w·u(x|∅) [default: 0, the conditional model].
    #[arg(long, value_name = "W")]
    pub cfg_scale: Option<f64>,
    /// Write a strip of x_t along the trajectory (rows: samples, columns: times) to this PNG.
    #[arg(long, value_name = "FILE.png")]
    pub trajectory: Option<PathBuf>,
    /// Images per solve (memory) [default: 250].
    #[arg(long, value_name = "B")]
    pub batch_size: Option<usize>,
}

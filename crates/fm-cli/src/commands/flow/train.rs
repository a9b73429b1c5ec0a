//! `fm train --model planar|realnvp`: a discrete normalizing flow trained by
//! maximum likelihood (forward KL), then samples, a plot and metrics including
//! the exact test NLL.
//!
//! Like the MLP runs, flow runs save a resumable checkpoint every
//! `--checkpoint-every` steps, on Ctrl-C and at the end, and `--resume DIR`
//! continues bit-identically.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle::{DType, Device, Tensor};
use candle_nn::VarMap;
use fm_core::metrics::SampleMetrics;
use fm_core::SeededRng;
use fm_models::checkpoint::{self, varmap_tensors};
use fm_models::flows::{CouplingMask, NormalizingFlow, PlanarConfig, RealNvpConfig};

/// RealNVP's logit margin γ for images (Dinh et al. 2017).
const IMAGE_LOGIT_GAMMA: f64 = 0.05;
use fm_models::optim::{Adam, AdamParams};
use fm_models::{resume, Activation, CheckpointConfig, ModelConfig};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    describe_model, flow_log_likelihoods, generate_flow, is_flow_checkpoint, load_flow, FlowRecord, ModelKind,
};
use crate::cli::TrainArgs;
use crate::commands::likelihood::mean_stderr;
use crate::commands::train::{interrupt_flag, Interrupted};
use crate::data::TrainingData;
use crate::io::{print_json, write_samples};
use crate::plot::samples_figure;

/// The window over which the reported `loss` is averaged.
const LOSS_WINDOW: usize = 500;
/// Test points of the NLL in the report: `fm likelihood`'s defaults (`--n 2000 --seed 777`),
/// so that `fm likelihood --checkpoint DIR` reproduces the report's `nll`.
pub const TEST_N: usize = 2000;
pub const TEST_SEED: u64 = 777;
/// Points used for the exact W2 after training.
const EXACT_W2_POINTS: usize = 1000;

/// Whether `fm train` should train a flow: `--model planar|realnvp`, or `--resume`
/// of a flow checkpoint. Also refuses `--layers` with the MLP.
pub fn is_flow_run(a: &TrainArgs) -> Result<bool> {
    let kind = ModelKind::parse(a.model.as_deref())?;
    if kind != ModelKind::Mlp {
        return Ok(true);
    }
    if a.model.is_none() {
        if let Some(dir) = &a.resume {
            if is_flow_checkpoint(dir) {
                return Ok(true);
            }
        }
    }
    if a.layers.is_some() {
        bail!("--layers only applies to --model planar or realnvp (the MLP's depth is set by --hidden)");
    }
    Ok(false)
}

/// The settings of a flow run.
#[derive(Debug, Clone)]
struct FlowSettings {
    model_kind: ModelKind,
    layers: usize,
    hidden: Vec<usize>,
    activation: Activation,
    data: String,
    columns: Vec<String>,
    noise: Option<f64>,
    n_train: Option<usize>,
    steps: usize,
    batch_size: usize,
    lr: f64,
    seed: u64,
    out: PathBuf,
}

fn validate_numbers(steps: usize, batch_size: usize, lr: f64) -> Result<()> {
    if steps == 0 {
        bail!("--steps must be at least 1, got 0");
    }
    if batch_size == 0 {
        bail!("--batch-size must be at least 1, got 0");
    }
    if !(lr.is_finite() && lr > 0.0) {
        bail!("--lr must be a positive number, got {lr}");
    }
    Ok(())
}

/// Flags of the MLP that mean nothing for a flow: refused rather than silently ignored.
fn refuse_mlp_flags(a: &TrainArgs, kind: ModelKind) -> Result<()> {
    let mlp_only = [
        ("--preset", a.preset.is_some()),
        ("--objective", a.objective.is_some()),
        ("--cnf-steps", a.cnf_steps.is_some()),
        ("--scheduler", a.scheduler.is_some()),
        ("--sample-solver", a.sample_solver.is_some()),
        ("--sample-steps", a.sample_steps.is_some()),
        ("--hidden", kind == ModelKind::Planar && a.hidden.is_some()),
        ("--activation", kind == ModelKind::Planar && a.activation.is_some()),
    ];
    let given: Vec<&str> = mlp_only.iter().filter(|(_, g)| *g).map(|(n, _)| *n).collect();
    if !given.is_empty() {
        bail!(
            "{} do(es) not apply to --model {} (a discrete flow: trained by maximum likelihood, \
             sampled without an ODE solver)",
            given.join(", "),
            kind.name()
        );
    }
    Ok(())
}

fn resolve(a: &TrainArgs, kind: ModelKind) -> Result<FlowSettings> {
    refuse_mlp_flags(a, kind)?;
    let data = a.data.clone().unwrap_or_else(|| "moons".to_string());
    let noise = a.noise.or(if data == "moons" { Some(0.05) } else { None });
    if let Some(n) = noise {
        if !(n.is_finite() && n >= 0.0) {
            bail!("--noise must be a non-negative number, got {n}");
        }
    }
    if a.n_train == Some(0) {
        bail!("--n-train must be at least 1, got 0");
    }
    let steps = a.steps.unwrap_or(5000);
    let batch_size = a.batch_size.unwrap_or(256);
    let lr = a.lr.unwrap_or(1e-3);
    validate_numbers(steps, batch_size, lr)?;
    let layers = a.layers.unwrap_or(match kind {
        ModelKind::Planar => 16,
        _ => 8,
    });
    if layers == 0 {
        bail!("--layers must be at least 1, got 0");
    }
    let hidden = a.hidden.clone().unwrap_or_else(|| vec![64, 64]);
    if hidden.is_empty() || hidden.contains(&0) {
        bail!("--hidden needs positive widths, e.g. 64,64; got {hidden:?}");
    }
    let activation = match &a.activation {
        Some(s) => s.parse().context("--activation")?,
        None => Activation::Elu,
    };
    let out = a.out.clone().unwrap_or_else(|| {
        let stem = data.trim_start_matches("csv:").replace(['/', '\\', '.'], "_");
        PathBuf::from("runs").join(format!("{stem}-{}", kind.name()))
    });
    Ok(FlowSettings {
        model_kind: kind,
        layers,
        hidden,
        activation,
        data,
        columns: a.columns.clone().unwrap_or_default(),
        noise,
        n_train: a.n_train,
        steps,
        batch_size,
        lr,
        seed: a.seed.unwrap_or(0),
        out,
    })
}

/// The loop's own state, stored in the resume file.
#[derive(Debug, Serialize, Deserialize)]
struct LoopState {
    step: usize,
    /// The data RNG's position as a decimal string (128-bit).
    data_rng: String,
    recent_losses: Vec<f64>,
}

struct FlowSession {
    settings: FlowSettings,
    model: ModelConfig,
    flow: NormalizingFlow,
    varmap: VarMap,
    opt: Adam,
    data: TrainingData,
    data_rng: SeededRng,
    step: usize,
    recent: VecDeque<f64>,
    last_saved: Option<usize>,
}

fn check_writable(dir: &Path) -> Result<()> {
    let cannot = || format!("--out {}: cannot write there", dir.display());
    std::fs::create_dir_all(dir).with_context(cannot)?;
    let probe = dir.join(format!(".fm-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(cannot)?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

impl FlowSession {
    fn new(s: FlowSettings, model: Option<ModelConfig>, device: &Device) -> Result<Self> {
        check_writable(&s.out)?;
        let data =
            TrainingData::prepare(&s.data, &s.columns, s.noise, s.n_train, s.seed).context("--data")?;
        let model = match model {
            Some(m) => m,
            None => match s.model_kind {
                ModelKind::Planar => ModelConfig::Planar(PlanarConfig { dim: data.dim(), layers: s.layers }),
                _ => {
                    let mut c = RealNvpConfig::new(data.dim(), s.layers, &s.hidden);
                    c.activation = s.activation;
                    if let Some(info) = data.image_info() {
                        // Images: RealNVP's checkerboard masks and logit pre-processing.
                        c.mask = CouplingMask::Checkerboard { height: info.height, width: info.width };
                        c.logit = Some(IMAGE_LOGIT_GAMMA);
                    }
                    ModelConfig::RealNvp(c)
                }
            },
        };
        let mut init_rng = SeededRng::for_stream(s.seed, "init");
        let (flow, varmap) =
            NormalizingFlow::init(&model, &mut init_rng, DType::F32, device).with_context(|| {
                format!("--model {} on {} ({}-D data)", s.model_kind.name(), s.data, data.dim())
            })?;
        let opt = Adam::new(&varmap, AdamParams::with_lr(s.lr))?;
        Ok(Self {
            data_rng: SeededRng::for_stream(s.seed, "data"),
            settings: s,
            model,
            flow,
            varmap,
            opt,
            data,
            step: 0,
            recent: VecDeque::with_capacity(LOSS_WINDOW),
            last_saved: None,
        })
    }

    fn resume(dir: &Path, steps: Option<usize>, device: &Device) -> Result<Self> {
        let point = resume::load(dir, device).context("--resume")?;
        let record: FlowRecord = serde_json::from_value(point.config.training.clone())
            .with_context(|| format!("--resume {}: the flow's training record is invalid", dir.display()))?;
        let state: LoopState = serde_json::from_str(&point.state)
            .with_context(|| format!("--resume {}: the loop state is invalid", dir.display()))?;
        let (model_kind, layers, hidden, activation) = match &point.config.model {
            ModelConfig::Planar(c) => (ModelKind::Planar, c.layers, vec![], Activation::Elu),
            ModelConfig::RealNvp(c) => (ModelKind::RealNvp, c.layers, c.hidden.clone(), c.activation),
            other => bail!("--resume {}: not a flow checkpoint ({other:?})", dir.display()),
        };
        let total = steps.unwrap_or(record.steps);
        if total < state.step {
            bail!("--steps {total} is below the {} steps this run has already done", state.step);
        }
        let settings = FlowSettings {
            model_kind,
            layers,
            hidden,
            activation,
            data: record.data.clone(),
            columns: record.columns.clone(),
            noise: record.noise,
            n_train: record.n_train,
            steps: total,
            batch_size: record.batch_size,
            lr: record.lr,
            seed: record.seed,
            out: dir.to_path_buf(),
        };
        validate_numbers(settings.steps, settings.batch_size, settings.lr)?;
        let mut s = Self::new(settings, Some(point.config.model.clone()), device)?;
        {
            let vars = s.varmap.data().lock().map_err(|_| anyhow::anyhow!("variable map poisoned"))?;
            for (name, var) in vars.iter() {
                let t = point
                    .weights
                    .get(name)
                    .with_context(|| format!("--resume {}: no weight `{name}`", dir.display()))?;
                var.set(t)?;
            }
        }
        s.opt.load_state(&point.optimizer).with_context(|| format!("--resume {}", dir.display()))?;
        let pos: u128 = state.data_rng.parse().with_context(|| {
            format!("--resume {}: bad data RNG position `{}`", dir.display(), state.data_rng)
        })?;
        s.data_rng.set_position(pos);
        s.step = state.step;
        s.recent = state.recent_losses.into_iter().collect();
        s.last_saved = Some(state.step);
        Ok(s)
    }

    fn num_parameters(&self) -> usize {
        varmap_tensors(&self.varmap).map(|v| v.iter().map(|(_, t)| t.elem_count()).sum()).unwrap_or(0)
    }

    /// One maximum-likelihood step; the batch's NLL (model units).
    fn train_step(&mut self) -> Result<f64> {
        let x: Tensor = self.data.batch(self.settings.batch_size, &mut self.data_rng)?;
        let x = x.to_device(&crate::device::selected())?;
        let loss = self.flow.forward_kl_loss(&x)?;
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            bail!("the training loss (NLL) became {value}; lower the learning rate");
        }
        self.opt.backward_step(&loss)?;
        self.step += 1;
        if self.recent.len() == LOSS_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(value);
        Ok(value)
    }

    fn mean_loss(&self, n: usize) -> f64 {
        let k = n.min(self.recent.len()).max(1);
        self.recent.iter().rev().take(k).sum::<f64>() / k as f64
    }

    fn checkpoint_config(&self) -> Result<CheckpointConfig> {
        let r = &self.settings;
        let record = FlowRecord {
            data: r.data.clone(),
            columns: self.data.columns().to_vec(),
            noise: r.noise,
            n_train: r.n_train,
            objective: "forward-kl".into(),
            optimizer: "adam(beta1=0.9, beta2=0.999, eps=1e-8)".into(),
            lr: r.lr,
            batch_size: r.batch_size,
            steps: r.steps,
            step: self.step,
            seed: r.seed,
            loss: (!self.recent.is_empty()).then(|| self.mean_loss(LOSS_WINDOW)),
            transform: self.data.transform().cloned(),
            command: std::env::args().collect(),
        };
        let mut ckpt = CheckpointConfig::new(self.model.clone());
        ckpt.training = serde_json::to_value(&record)?;
        Ok(ckpt)
    }

    fn save(&mut self) -> Result<PathBuf> {
        let dir = self.settings.out.clone();
        let config = self.checkpoint_config()?;
        let weights = varmap_tensors(&self.varmap)?;
        let state = LoopState {
            step: self.step,
            data_rng: self.data_rng.position().to_string(),
            recent_losses: self.recent.iter().copied().collect(),
        };
        let write = || -> Result<()> {
            resume::save(
                &dir,
                &config,
                &weights,
                &self.opt.state_tensors()?,
                &serde_json::to_string(&state)?,
            )?;
            checkpoint::save(&dir, &config, &weights)?;
            Ok(())
        };
        write().with_context(|| format!("--out {}: cannot write the checkpoint", dir.display()))?;
        self.last_saved = Some(self.step);
        Ok(dir)
    }
}

/// With `--resume`, only `--steps` and the output options may be given.
fn check_resume_flags(a: &TrainArgs) -> Result<()> {
    let fixed = [
        ("--data", a.data.is_some()),
        ("--columns", a.columns.is_some()),
        ("--noise", a.noise.is_some()),
        ("--n-train", a.n_train.is_some()),
        ("--batch-size", a.batch_size.is_some()),
        ("--lr", a.lr.is_some()),
        ("--layers", a.layers.is_some()),
        ("--hidden", a.hidden.is_some()),
        ("--activation", a.activation.is_some()),
        ("--seed", a.seed.is_some()),
        ("--out", a.out.is_some()),
    ];
    let given: Vec<&str> = fixed.iter().filter(|(_, g)| *g).map(|(n, _)| *n).collect();
    if !given.is_empty() {
        bail!(
            "--resume continues a run with its own settings; {} cannot be changed (only --steps, \
             --checkpoint-every and the sampling/output flags can)",
            given.join(", ")
        );
    }
    Ok(())
}

pub fn run(a: TrainArgs) -> Result<()> {
    let device = crate::device::selected();
    let json_out = a.json;
    let quiet = a.quiet;
    let checkpoint_every = a.checkpoint_every.unwrap_or(1000);
    let sample_n = a.sample_n.unwrap_or(2000);
    if sample_n == 0 {
        bail!("--sample-n must be at least 1, got 0");
    }
    let mut s = match &a.resume {
        Some(dir) => {
            check_resume_flags(&a)?;
            if let Some(m) = &a.model {
                let kind = ModelKind::parse(Some(m))?;
                if !is_flow_checkpoint(dir) || kind == ModelKind::Mlp {
                    bail!("--model {m}: --resume {} holds another kind of model", dir.display());
                }
            }
            refuse_mlp_flags(&a, ModelKind::RealNvp)?;
            FlowSession::resume(dir, a.steps, &device)?
        }
        None => {
            let kind = ModelKind::parse(a.model.as_deref())?;
            FlowSession::new(resolve(&a, kind)?, None, &device)?
        }
    };
    let r = s.settings.clone();
    let log = |t: String| if json_out { eprintln!("{t}") } else { println!("{t}") };
    log(format!(
        "{} {} ({} parameters) by maximum likelihood on {} for {} steps{}, batch {}, Adam lr {}, seed {}",
        if a.resume.is_some() { "resuming" } else { "training" },
        describe_model(&s.model),
        s.num_parameters(),
        s.data.describe(),
        r.steps,
        if s.step > 0 { format!(" (from step {})", s.step) } else { String::new() },
        r.batch_size,
        r.lr,
        r.seed
    ));

    let interrupted = interrupt_flag();
    let pb =
        super::progress_bar(r.steps, s.step, quiet, "{bar:30} {pos}/{len} NLL {msg} {per_sec} ETA {eta}");
    let start = Instant::now();
    let first = s.step;
    while s.step < r.steps {
        if interrupted.load(Ordering::SeqCst) {
            pb.finish_and_clear();
            let dir = s.save()?;
            return Err(Interrupted { step: s.step, steps: r.steps, dir: dir.display().to_string() }.into());
        }
        if let Err(e) = s.train_step() {
            pb.finish_and_clear();
            let kept = match s.last_saved {
                Some(k) => format!("the checkpoint of step {k} in {} is intact", r.out.display()),
                None => format!("no checkpoint was written to {}", r.out.display()),
            };
            return Err(e.context(format!("training diverged at step {}; {kept}", s.step + 1)));
        }
        if s.step % 50 == 0 || s.step == r.steps {
            pb.set_message(format!("{:.4}", s.mean_loss(50)));
            pb.set_position(s.step as u64);
        }
        if checkpoint_every > 0 && s.step % checkpoint_every == 0 && s.step < r.steps {
            s.save()?;
        }
    }
    pb.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let steps_per_s = (s.step - first) as f64 / seconds.max(1e-9);
    let final_loss = s.mean_loss(LOSS_WINDOW);
    if s.last_saved != Some(s.step) {
        s.save()?;
    }
    log(format!(
        "trained in {seconds:.1} s ({steps_per_s:.0} steps/s); loss (training NLL in model units, mean of the \
         last {} steps) {final_loss:.4}; checkpoint in {}",
        s.recent.len(),
        r.out.display()
    ));

    // Everything below reads the checkpoint back, the path a user takes.
    let m = load_flow(&r.out, &device)?;
    let data = m.record.training_data()?;
    let dim = data.dim();
    let gen = generate_flow(&m.flow, data.transform(), sample_n, r.seed, dim == 2, &device)?;
    let samples_path = r.out.join("samples.npy");
    write_samples(&samples_path, &gen.samples, sample_n, dim, data.columns())?;
    let reference = data.reference(sample_n, r.seed)?;
    let n_ref = reference.len() / dim;
    let st = Tensor::from_vec(data.to_model_units(&gen.samples)?, (sample_n, dim), &device)?;
    let rf = Tensor::from_vec(data.to_model_units(&reference)?, (n_ref, dim), &device)?;
    let bandwidth = data.metric_bandwidth();
    let exact_n = EXACT_W2_POINTS.min(sample_n).min(n_ref);
    let metrics = SampleMetrics::compute(&st, &rf, r.seed, exact_n, bandwidth)?;

    let test = data.likelihood_points(TEST_N, TEST_SEED)?;
    let (log_p, log_det_jacobian) = flow_log_likelihoods(&m.flow, &data, &test, 1000, &device)?;
    let nll: Vec<f64> = log_p.iter().map(|v| -v).collect();
    let (nll_mean, nll_se) = mean_stderr(&nll);
    if !nll_mean.is_finite() {
        bail!("the test NLL of the trained flow is not finite ({nll_mean})");
    }

    let mut plot_path = None;
    if dim == 2 {
        let p = r.out.join("plot.png");
        samples_figure(
            &p,
            &format!("{} — {}, {} steps (trajectories: layer by layer)", r.data, m.describe(), r.steps),
            &reference,
            &gen.samples,
            &gen.trajectory,
        )?;
        plot_path = Some(p);
    } else if let Some(info) = data.image_info() {
        let p = r.out.join("samples.png");
        let k = sample_n.min(100);
        crate::plot_images::image_grid(&p, &gen.samples[..k * dim], info, 10, 4)?;
        plot_path = Some(p);
    }
    let bits_per_dim = data.image_info().map(|info| info.bits_per_dim(nll_mean));
    let report = json!({
        "bits_per_dim": bits_per_dim,
        "loss": final_loss,
        "steps": r.steps,
        "steps_per_s": steps_per_s,
        "seconds": seconds,
        "checkpoint": r.out,
        "model": r.model_kind.name(),
        "layers": r.layers,
        "nll": nll_mean,
        "nll_stderr": nll_se,
        "nll_n": nll.len(),
        "nll_data": format!("{} ({}, seed {TEST_SEED})", r.data, if data.transform().is_some() { "the file" } else { "fresh test points" }),
        "log_det_jacobian": log_det_jacobian,
        "samples": samples_path,
        "plot": plot_path,
        "n_samples": sample_n,
        "metrics": metrics,
    });
    checkpoint::atomic_write(
        &r.out.join("metrics.json"),
        format!("{}\n", serde_json::to_string_pretty(&report)?).as_bytes(),
    )?;
    log(format!(
        "test NLL {nll_mean:.4} ± {nll_se:.4} nats per point on {} points{} (exact, no ODE)",
        nll.len(),
        if log_det_jacobian != 0.0 {
            format!(", in data units (standardization log-Jacobian {log_det_jacobian:+.4} included)")
        } else {
            String::new()
        }
    ));
    if let Some(bpd) = bits_per_dim {
        log(format!("{bpd:.4} bits/dim on the dequantized test images ([−1, 1] scaling accounted for)"));
    }
    log(format!(
        "samples: {}; energy distance {:.5}, MMD² (h={}) {:.3e}, sliced W2 {:.4}, exact W2 {}",
        samples_path.display(),
        metrics.energy_distance,
        bandwidth,
        metrics.mmd_rbf,
        metrics.sliced_w2,
        metrics.exact_w2.map(|w| format!("{w:.4} (first {exact_n} points)")).unwrap_or_else(|| "n/a".into()),
    ));
    if let Some(p) = &plot_path {
        log(format!("plot: {}", p.display()));
    }
    if json_out {
        print_json(&report)?;
    }
    Ok(())
}

//! [`Run`]: the training loop of every family — data and random streams, the
//! optimiser (Adam with warm-up, clipping and EMA), checkpoints every N steps
//! written atomically, bit-identical resume, interruption and divergence stops.
//! The family supplies the step ([`crate::family::Trainer`]); the run owns the
//! rest. It prints nothing: an [`Observer`] hears of its progress.
//!
//! # Streams
//! Every random draw comes from a [`SeededRng`] stream of the run's seed:
//! `init` (weights), `data` (batches), `train` (times, source draws, probes,
//! couplings) and the family's own (`labels`, `dropout`). The resume file
//! stores their positions, so a resumed run draws what the uninterrupted run
//! would have drawn.

mod init;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle::{Device, Tensor};
use fm_core::SeededRng;
use fm_models::checkpoint::{self, varmap_tensors};
use fm_models::optim::AdamParams;
use fm_models::training::TrainingOptimizer;
use fm_models::{resume, CheckpointConfig, ModelConfig};
use serde::{Deserialize, Serialize};

use crate::source::Source;
use serde_json::{Map, Value};

pub use init::InitReport;

use crate::error::bail;
use crate::family::{self, StepContext, Trainer};
use crate::settings::validate_numbers;
use crate::{Error, Result, ResultExt, RunRecord, RunSettings, TrainingData};

/// The window over which the reported loss is averaged.
pub const LOSS_WINDOW: usize = 500;

/// Hears of a run's progress and may stop it.
pub trait Observer {
    /// After every step: steps done, steps planned, and the mean loss of the last 50 steps.
    fn step(&mut self, _done: usize, _steps: usize, _recent_loss: f64) {}

    /// Checked before every step: `true` saves the run and stops it with [`Error::Interrupted`].
    fn interrupted(&self) -> bool {
        false
    }
}

/// An observer that hears nothing and never stops the run.
pub struct Silent;

impl Observer for Silent {}

/// How a call of [`Run::train`] went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainSummary {
    /// Wall time of the steps taken, in seconds.
    pub seconds: f64,
    /// Steps taken per second.
    pub steps_per_s: f64,
    /// Mean loss over the last [`LOSS_WINDOW`] steps (fewer early on).
    pub loss: f64,
    /// Steps that mean covers.
    pub loss_window: usize,
}

/// The loop's own state, stored in the resume file.
#[derive(Debug, Serialize, Deserialize)]
struct LoopState {
    step: usize,
    /// RNG positions as decimal strings (they are 128-bit).
    data_rng: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    train_rng: Option<String>,
    /// The last (up to) [`LOSS_WINDOW`] batch losses.
    recent_losses: Vec<f64>,
    /// The family's own state ([`Trainer::state`]).
    #[serde(flatten)]
    family: Map<String, Value>,
}

/// One training run of any family.
///
/// ```
/// use candle::Device;
/// use fm_pipeline::{Run, RunConfig, RunSettings, Silent};
///
/// # fn main() -> fm_pipeline::Result<()> {
/// let out = std::env::temp_dir().join(format!("fm-run-doc-{}", std::process::id()));
/// let config = RunConfig { steps: Some(20), out: Some(out.clone()), ..Default::default() };
/// let mut run = Run::new(RunSettings::resolve(&config)?, &Device::Cpu)?;
/// let summary = run.train(&mut Silent)?; // saves model.safetensors, config.json, resume.safetensors
/// assert!(summary.loss.is_finite() && run.steps_done() == 20);
/// # std::fs::remove_dir_all(&out).ok();
/// # Ok(())
/// # }
/// ```
pub struct Run {
    settings: RunSettings,
    device: Device,
    model: ModelConfig,
    data: TrainingData,
    trainer: Box<dyn Trainer>,
    opt: TrainingOptimizer,
    data_rng: SeededRng,
    train_rng: SeededRng,
    step: usize,
    recent: VecDeque<f64>,
    last_saved: Option<usize>,
    init_report: Option<InitReport>,
    /// The `--init` source recorded in every checkpoint (kept across resumes).
    init_source: Option<String>,
    resumed: bool,
}

/// Fails early, before any training, if the output folder cannot be written.
fn check_writable(dir: &Path) -> Result<()> {
    let cannot = || format!("--out {}: cannot write there", dir.display());
    std::fs::create_dir_all(dir)
        .map_err(|io| Error::Io { path: dir.to_path_buf(), io })
        .with_context(cannot)?;
    let probe = dir.join(format!(".fm-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|io| Error::Io { path: probe.clone(), io }).with_context(cannot)?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

impl Run {
    /// A new run: its data, a freshly initialised network (or `--init`'s
    /// weights), the optimiser and the streams of its seed.
    pub fn new(mut settings: RunSettings, device: &Device) -> Result<Self> {
        check_writable(&settings.out)?;
        let s = &settings;
        let mut data =
            TrainingData::prepare(&s.data, &s.columns, s.noise, s.n_train, s.seed).context("--data")?;
        s.family.prepare_data(s, &mut data)?;
        // Coupled pairs carry their source: the x₀ were drawn from the teacher's,
        // and the student samples from it too.
        if let Some(source) = data.pairs_source() {
            settings.flow_matching.source =
                Source::parse(Some(source)).context("the pairs' source (their .json sidecar)")?;
        }
        let s = &settings;
        let model = s.family.configure(s, &data)?;
        Self::with_data(settings, data, model, device)
    }

    /// A new run on data a program holds ([`TrainingData::from_points`], …).
    pub fn with_data(
        settings: RunSettings,
        data: TrainingData,
        model: ModelConfig,
        device: &Device,
    ) -> Result<Self> {
        let s = &settings;
        let trainer = s.family.trainer(&model, s, &data, device)?;
        // --init overwrites the fresh weights before the optimiser (and its EMA) sees them.
        let init_report = match &s.init {
            Some(init) => Some(init::load_init(init, &model, trainer.varmap(), device)?),
            None => None,
        };
        let params = AdamParams { lr: s.lr, weight_decay: s.weight_decay, ..AdamParams::default() };
        let opt = TrainingOptimizer::new(trainer.varmap(), params, s.training)?;
        Ok(Self {
            data_rng: SeededRng::for_stream(s.seed, "data"),
            train_rng: SeededRng::for_stream(s.seed, "train"),
            init_source: s.init.as_ref().map(|i| i.source.clone()),
            device: device.clone(),
            model,
            data,
            trainer,
            opt,
            step: 0,
            recent: VecDeque::with_capacity(LOSS_WINDOW),
            last_saved: None,
            init_report,
            resumed: false,
            settings,
        })
    }

    /// Continues the run saved in `dir`, optionally to a new total of `steps`.
    pub fn resume(dir: &Path, steps: Option<usize>, device: &Device) -> Result<Self> {
        let at = || format!("--resume {}", dir.display());
        let point = resume::load(dir, device).context("--resume")?;
        let record: RunRecord = serde_json::from_value(point.config.training.clone())
            .with_context(|| format!("{}: the training record is invalid", at()))?;
        let state: LoopState = serde_json::from_str(&point.state)
            .with_context(|| format!("{}: the loop state is invalid", at()))?;
        let family = family::of(&point.config.model).with_context(at)?;
        let mut settings = family.resume(&record, &point.config.model).with_context(at)?;
        let total = steps.unwrap_or(record.steps);
        if total < state.step {
            bail!("--steps {total} is below the {} steps this run has already done", state.step);
        }
        settings.steps = total;
        settings.out = dir.to_path_buf();
        settings.command = record.command.clone();
        validate_numbers(settings.steps, settings.batch_size, settings.lr)?;
        let s = &settings;
        let mut data =
            TrainingData::prepare(&s.data, &s.columns, s.noise, s.n_train, s.seed).context("--data")?;
        s.family.prepare_data(s, &mut data)?;
        let mut run = Self::with_data(settings, data, point.config.model.clone(), device)?;
        // The same variables, now holding the saved weights.
        run.load_weights(&point.weights).with_context(at)?;
        run.opt.load_state(&point.optimizer).with_context(at)?;
        let pos = |p: &str, name: &str| -> Result<u128> {
            p.parse().map_err(|_| Error::Setting(format!("{}: bad {name} position `{p}`", at())))
        };
        run.data_rng.set_position(pos(&state.data_rng, "data RNG")?);
        if let Some(p) = &state.train_rng {
            run.train_rng.set_position(pos(p, "train RNG")?);
        }
        let mut cx = StepContext {
            data: &mut run.data,
            data_rng: &mut run.data_rng,
            train_rng: &mut run.train_rng,
            opt: &mut run.opt,
            settings: &run.settings,
            device: &run.device,
        };
        run.trainer.restore(&state.family, &mut cx).with_context(at)?;
        run.step = state.step;
        run.recent = state.recent_losses.into_iter().collect();
        run.last_saved = Some(state.step);
        run.init_source = record.init.clone();
        run.resumed = true;
        Ok(run)
    }

    /// Sets the network's weights (all of them, by name and shape).
    pub fn load_weights(&mut self, weights: &HashMap<String, Tensor>) -> Result<()> {
        let vars = self
            .trainer
            .varmap()
            .data()
            .lock()
            .map_err(|_| Error::Setting("variable map poisoned".into()))?;
        for (name, var) in vars.iter() {
            let t = weights.get(name).with_context(|| format!("no weight `{name}`"))?;
            var.set(t)?;
        }
        Ok(())
    }

    /// The network's current weights by name (sorted), not the EMA's.
    pub fn weights(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(varmap_tensors(self.trainer.varmap())?)
    }

    /// One optimisation step; the loss of its batch.
    pub fn step(&mut self) -> Result<f64> {
        let mut cx = StepContext {
            data: &mut self.data,
            data_rng: &mut self.data_rng,
            train_rng: &mut self.train_rng,
            opt: &mut self.opt,
            settings: &self.settings,
            device: &self.device,
        };
        let loss = self.trainer.step(&mut cx)?;
        self.step += 1;
        if self.recent.len() == LOSS_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(loss);
        Ok(loss)
    }

    /// Steps to the planned total, saving every `checkpoint_every` steps and at
    /// the end. A step that fails stops the run with [`Error::Diverged`] (the last
    /// checkpoint stays intact); [`Observer::interrupted`] saves and stops it with
    /// [`Error::Interrupted`].
    pub fn train(&mut self, observer: &mut dyn Observer) -> Result<TrainSummary> {
        let start = Instant::now();
        let first = self.step;
        let steps = self.settings.steps;
        while self.step < steps {
            if observer.interrupted() {
                let dir = self.save()?;
                return Err(Error::Interrupted { step: self.step, steps, dir });
            }
            if let Err(e) = self.step() {
                return Err(Error::Diverged {
                    step: self.step + 1,
                    kept: self.last_saved,
                    out: self.settings.out.clone(),
                    source: Box::new(e),
                });
            }
            observer.step(self.step, steps, self.mean_loss(50));
            let every = self.settings.checkpoint_every;
            if every > 0 && self.step.is_multiple_of(every) && self.step < steps {
                self.save()?;
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        if self.last_saved != Some(self.step) {
            self.save()?;
        }
        Ok(TrainSummary {
            seconds,
            steps_per_s: (self.step - first) as f64 / seconds.max(1e-9),
            loss: self.mean_loss(LOSS_WINDOW),
            loss_window: self.recent.len(),
        })
    }

    /// The run's settings.
    pub fn settings(&self) -> &RunSettings {
        &self.settings
    }

    /// The network's configuration.
    pub fn model(&self) -> &ModelConfig {
        &self.model
    }

    /// The run's data.
    pub fn data(&self) -> &TrainingData {
        &self.data
    }

    /// Steps done.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// The step of the last checkpoint written (or resumed from).
    pub fn last_saved(&self) -> Option<usize> {
        self.last_saved
    }

    /// What `--init` loaded (`None` without it and on resume).
    pub fn init_report(&self) -> Option<&InitReport> {
        self.init_report.as_ref()
    }

    /// Mean loss over the last `n` steps (at most [`LOSS_WINDOW`]).
    pub fn mean_loss(&self, n: usize) -> f64 {
        let k = n.min(self.recent.len()).max(1);
        self.recent.iter().rev().take(k).sum::<f64>() / k as f64
    }

    /// One line describing the run, e.g. `training MLP 3-64-64-64-2 (8706
    /// parameters) by flow matching on moons (fresh points every step) for
    /// 10000 steps, batch 256, Adam lr 0.01, cond-ot path, seed 0`.
    pub fn describe(&self) -> String {
        let s = &self.settings;
        let t = &s.training;
        let mut extras = String::new();
        if t.warmup > 0 {
            extras.push_str(&format!(", warm-up {} steps", t.warmup));
        }
        if let Some(c) = t.grad_clip {
            extras.push_str(&format!(", grad clip {c}"));
        }
        if let Some(d) = t.ema_decay {
            extras.push_str(&format!(", EMA {d}"));
        }
        if let Some(p) = s.network.label_dropout {
            extras.push_str(&format!(", label dropout {p}"));
        }
        let optimizer = if s.weight_decay > 0.0 {
            format!("AdamW lr {} (weight decay {})", s.lr, s.weight_decay)
        } else {
            format!("Adam lr {}", s.lr)
        };
        format!(
            "{} {} by {} on {} for {} steps{}, batch {}, {optimizer}{extras}{}, seed {}",
            if self.resumed { "resuming" } else { "training" },
            s.family.describe_model(&self.model),
            s.family.describe_objective(s),
            self.data.describe(),
            s.steps,
            if self.step > 0 { format!(" (from step {})", self.step) } else { String::new() },
            s.batch_size,
            s.family.describe_path(s),
            s.seed
        )
    }

    /// The run record at the current step.
    pub fn record(&self) -> RunRecord {
        let s = &self.settings;
        let optimizer = if s.weight_decay > 0.0 {
            format!("adamw(beta1=0.9, beta2=0.999, eps=1e-8, weight_decay={})", s.weight_decay)
        } else {
            "adam(beta1=0.9, beta2=0.999, eps=1e-8)".into()
        };
        let mut r = RunRecord {
            data: s.data.clone(),
            columns: self.data.columns().to_vec(),
            noise: s.noise,
            n_train: s.n_train,
            optimizer,
            lr: s.lr,
            weight_decay: (s.weight_decay > 0.0).then_some(s.weight_decay),
            batch_size: s.batch_size,
            steps: s.steps,
            step: self.step,
            seed: s.seed,
            preset: s.preset.clone(),
            loss: (!self.recent.is_empty()).then(|| self.mean_loss(LOSS_WINDOW)),
            transform: self.data.transform().cloned(),
            command: s.command.clone(),
            warmup: (s.training.warmup > 0).then_some(s.training.warmup),
            grad_clip: s.training.grad_clip,
            ema_decay: s.training.ema_decay,
            init: self.init_source.clone(),
            tokens: self.data.token_grid(),
            manifold: self.data.manifold().cloned(),
            image_shape: self.data.token_grid().and(self.data.image_info().map(|i| i.shape())),
            ..RunRecord::default()
        };
        s.family.record(s, &mut r);
        r
    }

    /// Writes the resume file, then the weights (the EMA's, when kept) and
    /// `config.json`, each atomically; returns the run's folder.
    pub fn save(&mut self) -> Result<PathBuf> {
        let dir = self.settings.out.clone();
        let mut config = CheckpointConfig::new(self.model.clone());
        config.training = serde_json::to_value(self.record())?;
        let weights = varmap_tensors(self.trainer.varmap())?;
        // Sampling uses the EMA weights when there are some; the resume file keeps both.
        let published = match self.opt.ema() {
            Some(e) => e.tensors()?,
            None => weights.clone(),
        };
        let state = LoopState {
            step: self.step,
            data_rng: self.data_rng.position().to_string(),
            train_rng: Some(self.train_rng.position().to_string()),
            recent_losses: self.recent.iter().copied().collect(),
            family: self.trainer.state(),
        };
        let write = || -> Result<()> {
            resume::save(
                &dir,
                &config,
                &weights,
                &self.opt.state_tensors()?,
                &serde_json::to_string(&state)?,
            )?;
            checkpoint::save(&dir, &config, &published)?;
            Ok(())
        };
        write().with_context(|| format!("--out {}: cannot write the checkpoint", dir.display()))?;
        self.last_saved = Some(self.step);
        Ok(dir)
    }
}

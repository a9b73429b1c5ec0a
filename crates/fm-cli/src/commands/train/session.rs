//! A training session: model, optimiser, data and random streams, which can be
//! saved at any step and resumed bit-identically.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle::{DType, Device, Tensor};
use candle_nn::VarMap;
use fm_core::coupling::Coupling;
use fm_core::likelihood::cnf_nll_loss_exact;
use fm_core::loss::{cfm_train_step, draw_source_and_time};
use fm_core::matcher::{matcher_train_step, matcher_train_step_from, Matcher};
use fm_core::objective::{objective_train_step, RegressionTarget};
use fm_core::path::AffinePath;
use fm_core::scheduler::SchedulerKind;
use fm_core::SeededRng;
use fm_models::checkpoint::{self, varmap_tensors};
use fm_models::optim::AdamParams;
use fm_models::training::{TrainingOptimizer, TrainingOptions};
use fm_models::{
    mlp_cfm_train_step, resume, CheckpointConfig, DrawnBatch, MlpConfig, ModelConfig, OtCfmPipeline,
    VelocityNet,
};
use serde::{Deserialize, Serialize};

use super::images::{drop_labels, UNetSpec};
use super::settings::{validate_numbers, Objective, Resolved};
use crate::data::TrainingData;
use crate::record::TrainingRecord;
use crate::source::Source;

/// The window over which the reported `loss` is averaged.
pub const LOSS_WINDOW: usize = 500;

/// Fails early, before any training, if the output directory cannot be written.
fn check_writable(dir: &Path) -> Result<()> {
    let cannot = || format!("--out {}: cannot write there", dir.display());
    std::fs::create_dir_all(dir).with_context(cannot)?;
    let probe = dir.join(format!(".fm-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(cannot)?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// The training set EFM draws references from: the finite set of points in model units.
fn efm_reference_set(data: &TrainingData, name: &str, device: &Device) -> Result<Tensor> {
    let Some(points) = data.fixed_points() else {
        bail!(
            "--objective efm needs a finite training set to draw its references from, but `{name}` \
             gives fresh points every step; add --n-train N"
        );
    };
    let d = data.dim();
    Ok(Tensor::from_vec(points.to_vec(), (points.len() / d, d), device)?)
}

/// Draws one OT-CFM training batch: data from `data_rng`, then `t` and `x₀`
/// from `train_rng` ([`draw_source`]).
fn draw_batch(
    data: &mut TrainingData,
    r: &Resolved,
    device: &Device,
    data_rng: &mut SeededRng,
    train_rng: &mut SeededRng,
) -> Result<DrawnBatch> {
    let x1 = data.batch(r.batch_size, data_rng)?.to_device(device)?;
    let (x0, t) = draw_source(&x1, &r.source, train_rng)?;
    Ok(DrawnBatch { x0, x1, t })
}

/// `x₀` from `source` and `t ~ U(0, 1)` for the data batch `x1` `(b, d)`,
/// drawn from `rng` in the order of `draw_source_and_time` (`t` first).
fn draw_source(x1: &Tensor, source: &Source, rng: &mut SeededRng) -> Result<(Tensor, Tensor)> {
    if *source == Source::Normal {
        return Ok(draw_source_and_time(x1, rng)?);
    }
    let (b, dim) = x1.dims2()?;
    let t = rng.uniform(b, 0.0, 1.0, x1.dtype(), x1.device())?;
    Ok((source.sample(b, dim, rng, x1.device())?, t))
}

/// The loop's own state, stored in the resume file.
#[derive(Debug, Serialize, Deserialize)]
struct LoopState {
    step: usize,
    /// RNG positions as decimal strings (they are 128-bit).
    data_rng: String,
    train_rng: String,
    /// The last (up to) [`LOSS_WINDOW`] batch losses.
    recent_losses: Vec<f64>,
    /// Positions of the label-dropout and dropout streams (U-Net runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    label_rng: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dropout_rng: Option<String>,
    /// Exact OT-CFM runs: the data and train stream positions from before the
    /// queued batch was drawn (a resume draws it again from there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    queued_from: Option<[String; 2]>,
}

pub struct Session {
    pub settings: Resolved,
    /// Where the model and its batches live (`--device`).
    device: Device,
    pub model: VelocityNet,
    pub model_config: ModelConfig,
    varmap: VarMap,
    opt: TrainingOptimizer,
    path: AffinePath<SchedulerKind>,
    pub data: TrainingData,
    /// The finite training set `(n, d)` that EFM draws its references from.
    train_set: Option<Tensor>,
    data_rng: SeededRng,
    train_rng: SeededRng,
    /// Label dropout draws (class-conditional runs).
    label_rng: SeededRng,
    /// Dropout masks inside the U-Net.
    dropout_rng: RefCell<SeededRng>,
    /// Exact OT-CFM runs of the MLP: the next batch's coupling is solved while a step runs.
    ot: Option<OtCfmPipeline>,
    /// Data and train stream positions before the batch queued in `ot` was drawn.
    queued_from: Option<(u128, u128)>,
    /// Steps completed.
    pub step: usize,
    recent: VecDeque<f64>,
    /// Step of the last checkpoint written by this session (or resumed from).
    pub last_saved: Option<usize>,
    /// What `--init` loaded (for the run's report); `None` without `--init` and on resume.
    pub init_report: Option<super::init::InitReport>,
    /// The `--init` source recorded in every checkpoint (kept across resumes).
    init_source: Option<String>,
}

impl Session {
    /// A new run from its settings.
    pub fn new(r: Resolved, device: &Device) -> Result<Self> {
        check_writable(&r.out)?;
        let data =
            TrainingData::prepare(&r.data, &r.columns, r.noise, r.n_train, r.seed).context("--data")?;
        r.source.check_dim(data.dim())?;
        let model_config = match &r.unet {
            None => ModelConfig::Mlp(MlpConfig {
                dim: data.dim(),
                hidden: r.hidden.clone(),
                activation: r.activation,
            }),
            Some(u) => {
                let info =
                    data.image_info().context("--model unet needs image data (--data mnist:DIR, ...)")?;
                ModelConfig::UNet(u.build(info, data.num_classes())?)
            }
        };
        let mut init_rng = SeededRng::for_stream(r.seed, "init");
        let (model, varmap) = VelocityNet::init(&model_config, &mut init_rng, DType::F32, device)?;
        // --init overwrites the fresh weights before the optimiser (and its EMA) sees them.
        let init_report = match &r.init {
            Some(init) => Some(super::init::load_init(init, &model_config, &varmap, device)?),
            None => None,
        };
        let init_source = r.init.as_ref().map(|i| i.source.display().to_string());
        let exact_ot = r.matcher.is_some_and(|m| m.coupling() == Coupling::ExactOt);
        let ot = (exact_ot && r.unet.is_none() && r.objective == Objective::Cfm && r.spec.is_plain_cfm())
            .then(|| OtCfmPipeline::new(false)); // sequential: faster than overlapped on two cores
        let opt = TrainingOptimizer::new(&varmap, AdamParams::with_lr(r.lr), r.training)?;
        let train_set = match r.spec.target {
            RegressionTarget::Efm { m } if m > 1 => Some(efm_reference_set(&data, &r.data, device)?),
            _ => None,
        };
        Ok(Self {
            device: device.clone(),
            train_set,
            label_rng: SeededRng::for_stream(r.seed, "labels"),
            dropout_rng: RefCell::new(SeededRng::for_stream(r.seed, "dropout")),
            path: AffinePath::new(r.scheduler),
            data_rng: SeededRng::for_stream(r.seed, "data"),
            train_rng: SeededRng::for_stream(r.seed, "train"),
            ot,
            queued_from: None,
            settings: r,
            model,
            model_config,
            varmap,
            opt,
            data,
            step: 0,
            recent: VecDeque::with_capacity(LOSS_WINDOW),
            last_saved: None,
            init_report,
            init_source,
        })
    }

    /// Continues the run saved in `dir`, optionally to a new total of `steps`.
    pub fn resume(dir: &Path, steps: Option<usize>, device: &Device) -> Result<Self> {
        let point = resume::load(dir, device).context("--resume")?;
        let record: TrainingRecord = serde_json::from_value(point.config.training.clone())
            .with_context(|| format!("--resume {}: the training record is invalid", dir.display()))?;
        let state: LoopState = serde_json::from_str(&point.state)
            .with_context(|| format!("--resume {}: the loop state is invalid", dir.display()))?;
        let (mlp, unet) = match &point.config.model {
            ModelConfig::Mlp(c) => (c.clone(), None),
            ModelConfig::UNet(c) => {
                (MlpConfig::guide(c.dim()), Some(UNetSpec::exact(record.preset.clone(), c.clone())))
            }
            #[allow(unreachable_patterns)]
            other => bail!("--resume {}: cannot resume training a {other:?} model", dir.display()),
        };
        let total = steps.unwrap_or(record.steps);
        if total < state.step {
            bail!("--steps {total} is below the {} steps this run has already done", state.step);
        }
        let mut settings = Resolved {
            preset: record.preset.clone(),
            data: record.data.clone(),
            columns: record.columns.clone(),
            noise: record.noise,
            n_train: record.n_train,
            steps: total,
            batch_size: record.batch_size,
            lr: record.lr,
            hidden: mlp.hidden.clone(),
            activation: mlp.activation,
            scheduler: record.scheduler,
            objective: Objective::parse(Some(&record.objective), record.cnf_steps, record.options.efm_m)
                .with_context(|| format!("--resume {}: the recorded objective", dir.display()))?,
            spec: Default::default(),
            matcher: match &record.matcher {
                Some(name) => {
                    let kind = name
                        .parse()
                        .with_context(|| format!("--resume {}: the recorded matcher", dir.display()))?;
                    let m = Matcher::new(kind, record.sigma.unwrap_or(kind.default_sigma()))?;
                    Some(match record.coupling {
                        Some(c) => m.with_coupling(c)?,
                        None => m,
                    })
                }
                None => None,
            },
            source: Source::parse(record.source.as_deref())
                .with_context(|| format!("--resume {}: the recorded source", dir.display()))?,
            seed: record.seed,
            out: dir.to_path_buf(),
            unet,
            training: TrainingOptions {
                warmup: record.warmup.unwrap_or(0),
                grad_clip: record.grad_clip,
                ema_decay: record.ema_decay,
            },
            label_dropout: record.label_dropout,
            init: None,
        };
        settings.spec = super::objective::spec(
            settings.objective,
            &super::objective::ObjectiveFlags::of_record(&record),
            settings.matcher.is_some(),
        )
        .with_context(|| format!("--resume {}: the recorded objective options", dir.display()))?;
        validate_numbers(settings.steps, settings.batch_size, settings.lr)?;
        let mut s = Self::new(settings, device)?;
        // The same variables, now holding the saved weights.
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
        let pos = |p: &str, name: &str| -> Result<u128> {
            p.parse().with_context(|| format!("--resume {}: bad {name} position `{p}`", dir.display()))
        };
        s.data_rng.set_position(pos(&state.data_rng, "data RNG")?);
        s.train_rng.set_position(pos(&state.train_rng, "train RNG")?);
        if let Some(p) = &state.label_rng {
            s.label_rng.set_position(pos(p, "label RNG")?);
        }
        if let Some(p) = &state.dropout_rng {
            s.dropout_rng.borrow_mut().set_position(pos(p, "dropout RNG")?);
        }
        if let (Some([d, t]), Some(ot)) = (&state.queued_from, s.ot.as_mut()) {
            // Draw the queued batch again, then continue where the streams were saved.
            let end = (s.data_rng.position(), s.train_rng.position());
            let from = (pos(d, "queued data RNG")?, pos(t, "queued train RNG")?);
            s.data_rng.set_position(from.0);
            s.train_rng.set_position(from.1);
            ot.push(draw_batch(&mut s.data, &s.settings, &s.device, &mut s.data_rng, &mut s.train_rng)?)?;
            s.data_rng.set_position(end.0);
            s.train_rng.set_position(end.1);
            s.queued_from = Some(from);
        }
        s.step = state.step;
        s.recent = state.recent_losses.into_iter().collect();
        s.last_saved = Some(state.step);
        s.init_source = record.init.clone();
        Ok(s)
    }

    /// One optimisation step; the loss of its batch.
    pub fn train_step(&mut self) -> Result<f64> {
        if self.ot.is_some() {
            let loss = self.ot_step()?;
            self.record_loss(loss);
            return Ok(loss);
        }
        let mlp = match &self.model {
            VelocityNet::UNet(_) => return self.unet_step(),
            VelocityNet::Mlp(mlp) => mlp,
        };
        let x1: Tensor =
            self.data.batch(self.settings.batch_size, &mut self.data_rng)?.to_device(&self.device)?;
        let loss = match self.settings.objective {
            Objective::Cfm if self.settings.spec.is_plain_cfm() => match &self.settings.matcher {
                Some(m) => {
                    let (x0, t) = draw_source(&x1, &self.settings.source, &mut self.train_rng)?;
                    matcher_train_step_from(mlp, m, &mut self.opt, &x0, &x1, &t, &mut self.train_rng)?
                }
                // Explicit backward pass: same draws and loss as fm-core's `cfm_train_step`, faster.
                None => mlp_cfm_train_step(mlp, &self.path, &mut self.opt, &x1, &mut self.train_rng)?,
            },
            Objective::Cfm | Objective::Efm { .. } => {
                let s = &self.settings.spec;
                let set = self.train_set.as_ref();
                objective_train_step(mlp, &self.path, s, &mut self.opt, &x1, set, &mut self.train_rng)?.total
            }
            Objective::Likelihood { steps } => {
                // Forward-mode exact divergence: first-order autograd only.
                let loss = cnf_nll_loss_exact(mlp, &x1, steps)?;
                let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                if !value.is_finite() {
                    bail!("the training loss (NLL) became {value}; lower the learning rate");
                }
                self.opt.backward_step(&loss)?;
                value
            }
        };
        self.record_loss(loss);
        Ok(loss)
    }

    /// One exact OT-CFM step of the MLP through the pipeline: the next batch
    /// is drawn and queued (its coupling solved during this step), then the
    /// step runs on the batch queued before it.
    fn ot_step(&mut self) -> Result<f64> {
        let (VelocityNet::Mlp(mlp), Some(matcher), Some(ot)) =
            (&self.model, self.settings.matcher, &mut self.ot)
        else {
            bail!("not an exact OT-CFM run of an MLP");
        };
        let (data, r, device) = (&mut self.data, &self.settings, &self.device);
        if ot.queued() == 0 {
            ot.push(draw_batch(data, r, device, &mut self.data_rng, &mut self.train_rng)?)?;
        }
        let from = (self.data_rng.position(), self.train_rng.position());
        ot.push(draw_batch(data, r, device, &mut self.data_rng, &mut self.train_rng)?)?;
        self.queued_from = Some(from);
        Ok(ot.step(mlp, &matcher, &mut self.opt, &mut self.train_rng)?)
    }

    /// One flow-matching step of the U-Net: labels (with label dropout) and
    /// dropout masks come from their own streams.
    fn unet_step(&mut self) -> Result<f64> {
        let VelocityNet::UNet(net) = &self.model else { bail!("not a U-Net run") };
        let (x1, labels) = self.data.batch_with_labels(self.settings.batch_size, &mut self.data_rng)?;
        let x1 = x1.to_device(&self.device)?;
        let labels = labels.map(|l| l.to_device(&self.device)).transpose()?;
        let labels = match (net.null_class(), labels) {
            (Some(null), Some(l)) => {
                Some(drop_labels(&l, self.settings.label_dropout.unwrap_or(0.0), null, &mut self.label_rng)?)
            }
            (Some(_), None) => bail!("the class-conditional U-Net needs labelled data"),
            (None, _) => None,
        };
        let field = net.conditioned(labels.as_ref(), Some(&self.dropout_rng));
        let loss = match &self.settings.matcher {
            Some(m) => matcher_train_step(&field, m, &mut self.opt, &x1, &mut self.train_rng)?,
            None => cfm_train_step(&field, &self.path, &mut self.opt, &x1, &mut self.train_rng)?,
        };
        self.record_loss(loss);
        Ok(loss)
    }

    fn record_loss(&mut self, loss: f64) {
        self.step += 1;
        if self.recent.len() == LOSS_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(loss);
    }

    /// One line describing the network (for the training log).
    pub fn describe_model(&self) -> String {
        match &self.model_config {
            ModelConfig::UNet(c) => super::images::describe(c),
            ModelConfig::Mlp(m) => format!(
                "MLP {}-{}-{} ({} parameters)",
                m.dim + 1,
                m.hidden.iter().map(|h| h.to_string()).collect::<Vec<_>>().join("-"),
                m.dim,
                m.num_parameters()
            ),
            other => format!("{other:?}"),
        }
    }

    /// Mean loss over the last `n` steps (at most [`LOSS_WINDOW`]).
    pub fn mean_loss(&self, n: usize) -> f64 {
        let k = n.min(self.recent.len()).max(1);
        self.recent.iter().rev().take(k).sum::<f64>() / k as f64
    }

    /// Steps the reported loss is averaged over.
    pub fn loss_window(&self) -> usize {
        self.recent.len()
    }

    /// The checkpoint configuration at the current step.
    fn checkpoint_config(&self) -> Result<CheckpointConfig> {
        let r = &self.settings;
        let record = TrainingRecord {
            data: r.data.clone(),
            columns: self.data.columns().to_vec(),
            noise: r.noise,
            n_train: r.n_train,
            scheduler: r.scheduler,
            objective: r.objective.name().into(),
            cnf_steps: match r.objective {
                Objective::Likelihood { steps } => Some(steps),
                Objective::Cfm | Objective::Efm { .. } => None,
            },
            options: super::objective::record(&r.spec),
            matcher: r.matcher.map(|m| m.kind.name().to_string()),
            sigma: r.matcher.map(|m| m.sigma),
            coupling: r.matcher.map(|m| m.coupling()),
            source: r.source.record_name(),
            optimizer: "adam(beta1=0.9, beta2=0.999, eps=1e-8)".into(),
            lr: r.lr,
            batch_size: r.batch_size,
            steps: r.steps,
            step: self.step,
            seed: r.seed,
            preset: r.preset.clone(),
            loss: (!self.recent.is_empty()).then(|| self.mean_loss(LOSS_WINDOW)),
            transform: self.data.transform().cloned(),
            command: std::env::args().collect(),
            warmup: (r.training.warmup > 0).then_some(r.training.warmup),
            grad_clip: r.training.grad_clip,
            ema_decay: r.training.ema_decay,
            label_dropout: r.label_dropout,
            init: self.init_source.clone(),
        };
        let mut ckpt = CheckpointConfig::new(self.model_config.clone());
        ckpt.training = serde_json::to_value(&record)?;
        Ok(ckpt)
    }

    /// Writes the resume file, then the weights and config.json, each atomically.
    pub fn save(&mut self) -> Result<PathBuf> {
        let dir = self.settings.out.clone();
        let config = self.checkpoint_config()?;
        let weights = varmap_tensors(&self.varmap)?;
        // Sampling uses the EMA weights when there are some; the resume file keeps both.
        let published = match self.opt.ema() {
            Some(e) => e.tensors()?,
            None => weights.clone(),
        };
        let unet = matches!(self.model, VelocityNet::UNet(_));
        let state = LoopState {
            step: self.step,
            data_rng: self.data_rng.position().to_string(),
            train_rng: self.train_rng.position().to_string(),
            recent_losses: self.recent.iter().copied().collect(),
            label_rng: unet.then(|| self.label_rng.position().to_string()),
            dropout_rng: unet.then(|| self.dropout_rng.borrow().position().to_string()),
            queued_from: self.queued_from.map(|(d, t)| [d.to_string(), t.to_string()]),
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

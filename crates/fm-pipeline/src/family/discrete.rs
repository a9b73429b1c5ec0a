//! Discrete flow matching (`--model discrete`): a [`DiscreteMlp`] of the
//! factorized posterior `p_{1|t}(x₁ⁱ | x_t)` on the mixture path of
//! [`fm_core::discrete`], trained by cross-entropy or the generalized KL,
//! sampled by the CTMC Euler sampler (`--steps`), its likelihood bounded by
//! the ELBO. The data are made tokens by [`TrainingData::tokenize`] (points on
//! a grid, images at their grey levels); samples come back at the tokens'
//! values, so every metric and plot of the continuous families applies.
//!
//! What the two discrete families share (the trainer, the trained model, the
//! settings and the record) lives here; `discrete_unet.rs` adds the U-Net.
//!
//! The defaults are flow_matching's 2-D discrete example: the checkerboard on
//! 128 cells per coordinate, `κ_t = t²`, an MLP of width 128 with SiLU
//! (Swish), Adam 10⁻³, batch 4096 (its source is uniform and its loss the
//! generalized KL; ours default to the mask and cross-entropy, `--source`
//! and `--objective` give the others).
//!
//! Classifier-free guidance (class-conditional models, `--cfg-scale w`): the
//! posterior of the logits `(1 + w)·ℓ(x | c) − w·ℓ(x | ∅)`, as flow_matching
//! guides its discrete image model; the CTMC then runs on that posterior.

use std::cell::RefCell;
use std::collections::HashMap;

use candle::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use fm_core::discrete::{
    cross_entropy, ctmc_euler, elbo, generalized_kl_loss, DiscretePosterior, ElboSettings, MixturePath,
};
use fm_core::divergence::Divergence;
use fm_core::SeededRng;
use fm_data::tokens::TokenGrid;
use fm_models::training::TrainingOptimizer;
use fm_models::{
    discrete_mlp_train_step, token_posterior, DiscreteBatch, DiscreteMlp, DiscreteMlpConfig, ModelConfig,
};
use serde_json::{Map, Value};

use super::unet::{label_and_dropout_state, restore_label_and_dropout};
use super::{finite, Family, Generated, ModelLikelihood, SampleRequest, StepContext, TrainedModel, Trainer};
use crate::error::bail;
use crate::settings::{self, Defaults, DiscreteLoss, DiscreteSettings, UNET_FLAGS};
use crate::{Result, ResultExt, RunConfig, RunRecord, RunSettings, SolverChoice, TrainingData};

/// The default scheduler of the mixture path: flow_matching's 2-D discrete
/// example uses `κ_t = t²`.
pub const DEFAULT_SCHEDULER: &str = "polynomial:2";

/// Training times are drawn from `[0, 1 − T_MARGIN)`, as flow_matching's
/// examples draw them: at `t → 1` every token is data and the generalized
/// KL's weight `κ̇/(1 − κ)` diverges.
pub const T_MARGIN: f64 = 1e-3;

/// CTMC steps when a report asks for none.
pub const DEFAULT_SAMPLE_STEPS: usize = 100;

/// The flags of continuous flow matching that a discrete model refuses.
const CONTINUOUS_FLAGS: &[&str] = &[
    "--cnf-steps",
    "--efm-m",
    "--parametrization",
    "--weighting",
    "--jacobian-reg",
    "--jacobian-probes",
    "--matcher",
    "--coupling",
    "--sigma",
];

/// The discrete MLP family.
#[derive(Debug)]
pub(crate) struct Discrete;

impl Family for Discrete {
    fn name(&self) -> &'static str {
        "discrete"
    }

    fn accepts(&self, name: &str) -> bool {
        ["discrete", "discrete-mlp", "dfm"].iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    fn owns(&self, model: &ModelConfig) -> bool {
        matches!(model, ModelConfig::DiscreteMlp(_))
    }

    fn resolve(&'static self, c: &RunConfig) -> Result<RunSettings> {
        if c.layers.is_some() {
            bail!("--layers only applies to --model planar or realnvp (the MLP's depth is set by --hidden)");
        }
        if c.preset.is_some() {
            bail!("--preset applies to --model mlp, unet and discrete-unet");
        }
        let unet_only: Vec<&str> =
            UNET_FLAGS.iter().copied().filter(|f| !["--class-cond", "--label-dropout"].contains(f)).collect();
        settings::refuse(c, &unet_only, "only applies to --model unet and discrete-unet")?;
        let mut s = settings::common(
            c,
            self,
            Defaults {
                data: Some("checkerboard"),
                noise: None,
                steps: 20_000,
                batch_size: 4096,
                lr: 1e-3,
                out_stem: None,
            },
        )?;
        s.network.hidden = settings::hidden(c, &[128, 128, 128, 128])?;
        s.network.activation = settings::activation(c, fm_models::Activation::Silu)?;
        resolve_discrete(&mut s, c)?;
        let d = s.discrete.as_ref().context("discrete settings")?;
        s.network.label_dropout = label_dropout(c, d.class_cond)?;
        Ok(s)
    }

    fn config_of_record(&self, r: &RunRecord, model: &ModelConfig) -> Result<RunConfig> {
        let ModelConfig::DiscreteMlp(m) = model else { bail!("not a discrete MLP checkpoint") };
        let mut c = config_of_record(self, r)?;
        c.hidden = Some(m.hidden.clone());
        c.activation = Some(m.activation.to_string());
        c.class_cond = m.num_classes.is_some().then_some(true);
        Ok(c)
    }

    fn resume(&'static self, record: &RunRecord, model: &ModelConfig) -> Result<RunSettings> {
        let mut s = self.resolve(&self.config_of_record(record, model)?)?;
        restore(&mut s, record)?;
        Ok(s)
    }

    fn prepare_data(&self, s: &RunSettings, data: &mut TrainingData) -> Result<()> {
        prepare_data(s, data)
    }

    fn configure(&self, s: &RunSettings, data: &TrainingData) -> Result<ModelConfig> {
        let (d, grid) = tokens_of(s, data)?;
        let num_classes = match d.class_cond {
            true => Some(data.num_classes().context("--class-cond: the dataset has no labels")?),
            false => None,
        };
        let config = DiscreteMlpConfig {
            seq_len: data.dim(),
            vocab: grid.bins,
            states: d.source.states(grid.bins),
            hidden: s.network.hidden.clone(),
            activation: s.network.activation,
            num_classes,
        };
        config.validate().context("--model discrete")?;
        Ok(ModelConfig::DiscreteMlp(config))
    }

    fn trainer(
        &self,
        model: &ModelConfig,
        s: &RunSettings,
        _data: &TrainingData,
        device: &Device,
    ) -> Result<Box<dyn Trainer>> {
        let ModelConfig::DiscreteMlp(config) = model else { bail!("not a discrete MLP configuration") };
        let mut init_rng = SeededRng::for_stream(s.seed, "init");
        let (net, varmap) = DiscreteMlp::init(config, &mut init_rng, DType::F32, device)?;
        Ok(Box::new(DiscreteTrainer::new(net, varmap, s, config.vocab)?))
    }

    fn load(
        &self,
        model: &ModelConfig,
        tensors: HashMap<String, Tensor>,
        record: &RunRecord,
        device: &Device,
    ) -> Result<Box<dyn TrainedModel>> {
        let ModelConfig::DiscreteMlp(config) = model else { bail!("not a discrete MLP checkpoint") };
        let net = DiscreteMlp::new(config, VarBuilder::from_tensors(tensors, DType::F32, device))?;
        // Points in one batch; images (an MLP on sklearn's digits) in the U-Net's batches.
        let batch =
            if record.image_shape.is_some() { super::velocity::DEFAULT_IMAGE_BATCH } else { usize::MAX };
        Ok(Box::new(DiscreteModel::of_record(
            net,
            record,
            config.vocab,
            config.seq_len,
            record.image_shape,
            batch,
        )?))
    }

    fn record(&self, s: &RunSettings, r: &mut RunRecord) {
        record(s, r);
    }

    fn describe_model(&self, model: &ModelConfig) -> String {
        match model {
            ModelConfig::DiscreteMlp(m) => {
                let mut widths = vec![m.seq_len * m.states + 1 + m.num_classes.map_or(0, |k| k + 1)];
                widths.extend(&m.hidden);
                widths.push(m.seq_len * m.vocab);
                let w: Vec<String> = widths.iter().map(|w| w.to_string()).collect();
                let params: usize =
                    model.parameter_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum();
                format!(
                    "discrete MLP {} {} on {} tokens of {} values{} ({params} parameters)",
                    w.join("-"),
                    m.activation,
                    m.seq_len,
                    m.vocab,
                    m.num_classes.map_or(String::new(), |k| format!(", {k} classes + ∅")),
                )
            }
            other => format!("{other:?}"),
        }
    }

    fn describe_objective(&self, s: &RunSettings) -> String {
        describe_objective(s)
    }

    fn describe_path(&self, s: &RunSettings) -> String {
        describe_path(s)
    }

    fn sampler_label(&self, solver: &SolverChoice) -> String {
        sampler_label(solver)
    }

    fn default_sample_steps(&self) -> Option<usize> {
        Some(DEFAULT_SAMPLE_STEPS)
    }

    fn likelihood_bound(&self) -> bool {
        true
    }
}

/// The discrete settings, the scheduler (default [`DEFAULT_SCHEDULER`]) and
/// the refusals every discrete family shares.
pub(super) fn resolve_discrete(s: &mut RunSettings, c: &RunConfig) -> Result<()> {
    settings::refuse(c, CONTINUOUS_FLAGS, "does not apply to a discrete model")?;
    let scheduler = c.scheduler.as_deref().unwrap_or(DEFAULT_SCHEDULER);
    s.flow_matching.scheduler = scheduler.parse().context("--scheduler")?;
    // Refuses the variance-preserving schedulers (κ must run from 0 to 1).
    MixturePath::new(s.flow_matching.scheduler, fm_core::discrete::DiscreteSource::Mask, 2)
        .context("--scheduler")?;
    s.discrete = Some(DiscreteSettings::of_config(c)?);
    Ok(())
}

/// The label dropout of a class-conditional run (`--label-dropout`, default 0.1).
pub(super) fn label_dropout(c: &RunConfig, class_cond: bool) -> Result<Option<f64>> {
    if c.label_dropout.is_some() && !class_cond {
        bail!("--label-dropout needs --class-cond");
    }
    if let Some(p) = c.label_dropout {
        if !(0.0..1.0).contains(&p) {
            bail!("--label-dropout must lie in [0, 1), got {p}");
        }
    }
    Ok(class_cond.then(|| c.label_dropout.unwrap_or(crate::DEFAULT_LABEL_DROPOUT)))
}

/// The keys every discrete run records the same way.
pub(super) fn config_of_record(family: &dyn Family, r: &RunRecord) -> Result<RunConfig> {
    let mut c = RunConfig::of_record(r);
    c.model = Some(family.name().into());
    c.scheduler = r.scheduler.map(|k| k.to_string());
    c.objective = Some(r.objective.clone());
    c.source = r.source.clone();
    c.bins = r.tokens.map(|g| g.bins);
    c.label_dropout = r.label_dropout;
    Ok(c)
}

/// A resumed run keeps its exact grid.
pub(super) fn restore(s: &mut RunSettings, r: &RunRecord) -> Result<()> {
    let d = s.discrete.as_mut().context("discrete settings")?;
    d.grid = Some(r.tokens.context("the checkpoint's record has no token grid")?);
    Ok(())
}

pub(super) fn prepare_data(s: &RunSettings, data: &mut TrainingData) -> Result<()> {
    let d = s.discrete.as_ref().context("discrete settings")?;
    data.tokenize(d.bins, d.grid, s.seed).context("--data")?;
    Ok(())
}

/// The run's discrete settings and its data's grid.
pub(super) fn tokens_of<'a>(
    s: &'a RunSettings,
    data: &TrainingData,
) -> Result<(&'a DiscreteSettings, TokenGrid)> {
    let d = s.discrete.as_ref().context("discrete settings")?;
    let grid = data.token_grid().with_context(|| format!("--data {}: not tokenized", s.data))?;
    Ok((d, grid))
}

pub(super) fn record(s: &RunSettings, r: &mut RunRecord) {
    r.scheduler = Some(s.flow_matching.scheduler);
    if let Some(d) = &s.discrete {
        r.objective = d.loss.to_string();
        r.source = Some(d.source.to_string());
    }
    r.label_dropout = s.network.label_dropout;
}

pub(super) fn describe_objective(s: &RunSettings) -> String {
    match &s.discrete {
        Some(d) => format!("discrete flow matching ({}), {} source", d.loss, d.source),
        None => "discrete flow matching".into(),
    }
}

/// The path of the discrete families' log line.
pub(super) fn describe_path(s: &RunSettings) -> String {
    format!(", mixture path κ = {}", s.flow_matching.scheduler)
}

/// `ctmc-euler-100`.
pub(super) fn sampler_label(solver: &SolverChoice) -> String {
    format!("ctmc-euler-{}", solver.steps)
}

/// A posterior network as the discrete families train and sample it.
pub(super) trait TokenNet {
    /// Logits `(b, L, V)` at tokens `x` `(b, L)` `u32` and times `t` `(b,)`
    /// for class `labels` `(b,)` (`None`: no class), dropout from `rng` while training.
    fn token_logits(
        &self,
        x: &Tensor,
        t: &Tensor,
        labels: Option<&Tensor>,
        rng: Option<&RefCell<SeededRng>>,
    ) -> Result<Tensor>;

    /// The null class of a class-conditional network.
    fn null_class(&self) -> Option<u32>;

    /// One optimiser step on `batch` by the network's own explicit backward
    /// pass, where it has one (`None`: autograd through [`TokenNet::token_logits`]).
    fn explicit_step(&self, _batch: &DiscreteBatch, _opt: &mut TrainingOptimizer) -> Option<Result<f64>> {
        None
    }
}

impl TokenNet for DiscreteMlp {
    fn token_logits(
        &self,
        x: &Tensor,
        t: &Tensor,
        labels: Option<&Tensor>,
        _rng: Option<&RefCell<SeededRng>>,
    ) -> Result<Tensor> {
        let labels = labels.map(|l| l.to_vec1::<u32>()).transpose()?;
        Ok(self.logits_with(x, t, labels.as_deref())?)
    }

    fn null_class(&self) -> Option<u32> {
        self.config().num_classes.map(|k| k as u32)
    }

    fn explicit_step(&self, batch: &DiscreteBatch, opt: &mut TrainingOptimizer) -> Option<Result<f64>> {
        self.has_explicit_step().then(|| discrete_mlp_train_step(self, batch, opt).map_err(Into::into))
    }
}

/// One optimisation step of a discrete family: tokens and labels from the
/// data stream; times, the path's draws and label dropout from the train and
/// label streams.
pub(super) struct DiscreteTrainer<N> {
    net: N,
    varmap: VarMap,
    path: MixturePath,
    loss: DiscreteLoss,
    label_rng: SeededRng,
    dropout_rng: RefCell<SeededRng>,
}

impl<N: TokenNet> DiscreteTrainer<N> {
    pub(super) fn new(net: N, varmap: VarMap, s: &RunSettings, vocab: usize) -> Result<Self> {
        let d = s.discrete.as_ref().context("discrete settings")?;
        Ok(Self {
            net,
            varmap,
            path: MixturePath::new(s.flow_matching.scheduler, d.source, vocab)?,
            loss: d.loss,
            label_rng: SeededRng::for_stream(s.seed, "labels"),
            dropout_rng: RefCell::new(SeededRng::for_stream(s.seed, "dropout")),
        })
    }
}

impl<N: TokenNet> Trainer for DiscreteTrainer<N> {
    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn step(&mut self, cx: &mut StepContext<'_>) -> Result<f64> {
        let b = cx.settings.batch_size;
        let (x1, labels) = cx.data.token_batch(b, cx.data_rng)?;
        let l = x1.len() / b;
        let t = cx.train_rng.uniform_vec(b, 0.0, 1.0 - T_MARGIN);
        let xt = self.path.sample(&x1, &t, cx.train_rng)?;
        let labels: Option<Vec<u32>> = match (self.net.null_class(), labels) {
            (Some(null), Some(y)) => {
                let p = cx.settings.network.label_dropout.unwrap_or(0.0);
                let u = self.label_rng.uniform_vec(b, 0.0, 1.0);
                Some(
                    y.to_vec1::<u32>()?
                        .into_iter()
                        .zip(u)
                        .map(|(y, u)| if u < p { null } else { y })
                        .collect(),
                )
            }
            (Some(_), None) => bail!("the class-conditional model needs labelled data"),
            (None, _) => None,
        };
        let weights: Option<Vec<f64>> = match self.loss {
            DiscreteLoss::CrossEntropy => None,
            DiscreteLoss::GeneralizedKl => Some(t.iter().map(|&ti| self.path.kl_weight(ti)).collect()),
        };
        let batch = DiscreteBatch {
            xt: &xt,
            x1: &x1,
            t: &t,
            labels: labels.as_deref(),
            kl_weights: weights.as_deref(),
        };
        if let Some(loss) = self.net.explicit_step(&batch, cx.opt) {
            return loss;
        }
        let labels = labels.map(|y| Tensor::from_vec(y, b, cx.device)).transpose()?;
        let xt = Tensor::from_vec(xt, (b, l), cx.device)?;
        let x1 = Tensor::from_vec(x1, (b, l), cx.device)?;
        let times = Tensor::from_vec(t.iter().map(|&v| v as f32).collect::<Vec<_>>(), b, cx.device)?;
        let logits = self.net.token_logits(&xt, &times, labels.as_ref(), Some(&self.dropout_rng))?;
        let loss = match self.loss {
            DiscreteLoss::CrossEntropy => cross_entropy(&logits, &x1)?,
            DiscreteLoss::GeneralizedKl => generalized_kl_loss(&logits, &x1, &xt, &t, &self.path)?,
        };
        let value = finite(&loss)?;
        cx.opt.backward_step(&loss)?;
        Ok(value)
    }

    fn state(&self) -> Map<String, Value> {
        label_and_dropout_state(&self.label_rng, &self.dropout_rng)
    }

    fn restore(&mut self, state: &Map<String, Value>, _cx: &mut StepContext<'_>) -> Result<()> {
        restore_label_and_dropout(state, &mut self.label_rng, &self.dropout_rng)
    }
}

/// The posterior a sampler follows: the network's for fixed labels, guided
/// by weight `w` against the null class, unmasked tokens carried over
/// ([`MixturePath::carry_unmasked`]).
struct Guided<'a, N> {
    net: &'a N,
    path: &'a MixturePath,
    labels: Option<Tensor>,
    w: f64,
}

impl<N: TokenNet> DiscretePosterior for Guided<'_, N> {
    fn posterior(&self, x: &[u32], t: &[f64]) -> fm_core::Result<Vec<f32>> {
        let mut p = token_posterior(x, t, &Device::Cpu, |xs, ts| {
            let err = |e: crate::Error| fm_models::Error::Shape(e.to_string());
            let conditional = self.net.token_logits(xs, ts, self.labels.as_ref(), None).map_err(err)?;
            if self.w == 0.0 || self.labels.is_none() {
                return Ok(conditional);
            }
            let unconditional = self.net.token_logits(xs, ts, None, None).map_err(err)?;
            Ok(((conditional * (1.0 + self.w))? - (unconditional * self.w)?)?)
        })?;
        self.path.carry_unmasked(x, &mut p);
        Ok(p)
    }
}

/// A trained discrete model: CTMC sampling (in batches of `batch`), the
/// ELBO, samples at the grid's values.
pub(super) struct DiscreteModel<N> {
    net: N,
    path: MixturePath,
    grid: TokenGrid,
    dim: usize,
    batch: usize,
    image: Option<crate::ImageShape>,
}

impl<N: TokenNet> DiscreteModel<N> {
    /// The model of a checkpoint's `record` (its grid, source and scheduler).
    pub(super) fn of_record(
        net: N,
        record: &RunRecord,
        vocab: usize,
        dim: usize,
        image: Option<crate::ImageShape>,
        batch: usize,
    ) -> Result<Self> {
        let grid = record.tokens.context("the record has no token grid")?;
        if grid.bins != vocab {
            bail!("the record's grid has {} values, the model {vocab}", grid.bins);
        }
        let crate::Source::Tokens { source, .. } =
            crate::Source::parse_tokens(record.source.as_deref(), vocab)?
        else {
            bail!("not a discrete source");
        };
        let scheduler = record.scheduler.context("the record has no scheduler")?;
        Ok(Self { net, path: MixturePath::new(scheduler, source, vocab)?, grid, dim, batch, image })
    }

    /// The token ids of source draws `x0` (ids as `f32`).
    fn ids(&self, x0: &Tensor) -> Result<Vec<u32>> {
        let states = self.path.source().states(self.path.vocab()) as f32;
        let v = x0.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        if let Some(bad) = v.iter().find(|&&x| !(x >= 0.0 && x < states && x.fract() == 0.0)) {
            bail!("source draws of a discrete model are token ids below {states}; got {bad}");
        }
        Ok(v.into_iter().map(|x| x as u32).collect())
    }
}

impl<N: TokenNet> TrainedModel for DiscreteModel<N> {
    fn dim(&self) -> usize {
        self.dim
    }

    fn generate(
        &self,
        x0: &Tensor,
        request: &SampleRequest,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Generated> {
        if request.stochastic.is_some() {
            bail!("--sampler sde|langevin: a discrete model samples by its CTMC (--steps)");
        }
        let classes = self.net.null_class();
        match (classes, request.class) {
            (None, Some(_)) => bail!("--class: this model is not class-conditional"),
            (Some(k), Some(c)) if c >= k => bail!("--class {c}: the model knows classes 0 to {}", k - 1),
            _ => {}
        }
        if classes.is_none() && request.cfg_scale != 0.0 {
            bail!("--cfg-scale: guidance needs a class-conditional model");
        }
        let batch = request.batch_size.unwrap_or(self.batch);
        if batch == 0 {
            bail!("--batch-size must be at least 1, got 0");
        }
        let (n, d) = x0.dims2()?;
        let ids = self.ids(x0)?;
        let steps = request.solver.steps;
        let mut rng = SeededRng::for_stream(request.seed, "sample-jumps");
        let mut out = Vec::with_capacity(n * d);
        let mut start = 0;
        while start < n {
            let b = batch.min(n - start);
            let labels = match classes {
                Some(k) => Some(Tensor::from_vec(
                    (start..start + b)
                        .map(|i| request.class.unwrap_or((i % k as usize) as u32))
                        .collect::<Vec<_>>(),
                    b,
                    &Device::Cpu,
                )?),
                None => None,
            };
            let guided = Guided { net: &self.net, path: &self.path, labels, w: request.cfg_scale };
            let (x, _) =
                ctmc_euler(&guided, &self.path, &ids[start * d..(start + b) * d], b, steps, &mut rng)
                    .with_context(|| format!("CTMC sampling in {steps} steps"))?;
            out.extend(x);
            start += b;
            progress(start);
        }
        let values = self.grid.centres(&out)?;
        Ok(Generated {
            samples: Tensor::from_vec(values, (n, d), x0.device())?,
            trajectory: vec![],
            nfe: steps,
        })
    }

    fn log_likelihood(
        &self,
        x: &Tensor,
        solver: &SolverChoice,
        _divergence: Divergence,
        rng: &mut SeededRng,
    ) -> Result<ModelLikelihood> {
        // The ELBO with one τ node per step (a class-conditional model: of its unconditional posterior).
        let (b, _) = x.dims2()?;
        let ids = self.grid.tokens(&x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)?;
        let settings = ElboSettings { nodes: solver.steps, ..ElboSettings::default() };
        let guided = Guided { net: &self.net, path: &self.path, labels: None, w: 0.0 };
        let log_p = elbo(&guided, &self.path, &ids, b, settings, rng).context("the ELBO")?;
        Ok(ModelLikelihood { log_p, nfe: settings.nodes * settings.draws })
    }

    fn image_shape(&self) -> Option<crate::ImageShape> {
        self.image
    }

    fn num_classes(&self) -> Option<usize> {
        self.net.null_class().map(|k| k as usize)
    }
}

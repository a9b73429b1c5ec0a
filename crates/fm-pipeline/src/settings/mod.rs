//! [`RunSettings`]: a run after the family's defaults and checks, every value
//! decided; and the checks every family shares.

mod discrete;
mod objective;

use std::path::PathBuf;

use fm_core::coupling::Coupling;
use fm_core::matcher::{Matcher, MatcherKind};
use fm_core::objective::ObjectiveSpec;
use fm_core::scheduler::SchedulerKind;
use fm_models::training::TrainingOptions;
use fm_models::unet::UNetConfig;
use fm_models::Activation;

pub use discrete::{DiscreteLoss, DiscreteSettings};
pub(crate) use objective::{
    describe as describe_objective, record as objective_record, spec, ObjectiveFlags,
};
pub use objective::{parametrization_of, Objective};

use crate::error::bail;
use crate::family::{self, Family};
use crate::source::Source;
use crate::{Result, ResultExt, RunConfig};

/// Default period of resumable checkpoints, in steps.
pub const DEFAULT_CHECKPOINT_EVERY: usize = 1000;

/// A run with every value decided.
///
/// Build it with [`RunSettings::resolve`] from a [`RunConfig`]; the family
/// named by `--model` supplies the defaults and refuses what does not apply.
///
/// ```
/// use fm_pipeline::{RunConfig, RunSettings};
///
/// # fn main() -> fm_pipeline::Result<()> {
/// let s = RunSettings::resolve(&RunConfig::default())?; // the guide's two-moons recipe
/// assert_eq!((s.family.name(), s.steps, s.batch_size, s.lr), ("mlp", 10_000, 256, 0.01));
/// let flow = RunSettings::resolve(&RunConfig { model: Some("realnvp".into()), ..Default::default() })?;
/// assert_eq!((flow.network.layers, flow.steps), (8, 5000));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// The model family that trains.
    pub family: &'static dyn Family,
    /// The preset used, if any.
    pub preset: Option<String>,
    /// The dataset, as named (`moons`, `csv:PATH`, `mnist:DIR`, …).
    pub data: String,
    /// CSV columns.
    pub columns: Vec<String>,
    /// Toy noise level.
    pub noise: Option<f64>,
    /// Size of a fixed training set (`None`: fresh toy points every step, or the whole dataset).
    pub n_train: Option<usize>,
    /// Steps to reach.
    pub steps: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Decoupled weight decay (AdamW); 0 for Adam.
    pub weight_decay: f64,
    /// The seed of every random stream.
    pub seed: u64,
    /// The run's folder.
    pub out: PathBuf,
    /// Save a resumable checkpoint every this many steps (0: only at the end and on interruption).
    pub checkpoint_every: usize,
    /// Warm-up, gradient clipping, EMA.
    pub training: TrainingOptions,
    /// Weights to start from.
    pub init: Option<InitFrom>,
    /// The network's shape.
    pub network: NetworkSettings,
    /// The flow-matching objective (velocity families; the defaults elsewhere;
    /// the discrete families read its scheduler).
    pub flow_matching: FlowMatchingSettings,
    /// The discrete families' tokens, source and loss (`None` elsewhere).
    pub discrete: Option<DiscreteSettings>,
    /// The Riemannian family's manifold, as `--manifold` names it (`None` elsewhere).
    pub manifold: Option<String>,
    /// The command that started the run, recorded in checkpoints (empty for a library call).
    pub command: Vec<String>,
}

/// The network's shape: what each family reads of it.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkSettings {
    /// Hidden widths (MLP, RealNVP conditioners).
    pub hidden: Vec<usize>,
    /// Activation (MLP, RealNVP conditioners).
    pub activation: Activation,
    /// Layers of a normalizing flow.
    pub layers: usize,
    /// The U-Net: a preset with overrides, or an exact configuration (resumed runs).
    pub unet: Option<UNetSpec>,
    /// Label dropout of class-conditional training.
    pub label_dropout: Option<f64>,
}

/// The U-Net of a run: a preset with overrides, or (resumed runs) an exact configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct UNetSpec {
    /// `tiny`, `mnist` or `cifar10`.
    pub preset: String,
    /// Base channels.
    pub channels: Option<usize>,
    /// Channel multipliers per level.
    pub channel_mult: Option<Vec<usize>>,
    /// Residual blocks per level.
    pub res_blocks: Option<usize>,
    /// Attention resolutions (image widths); `Some(vec![])` is the middle block only.
    pub attention_res: Option<Vec<usize>>,
    /// Dropout in the residual blocks.
    pub dropout: Option<f64>,
    /// Class-conditional (labels from the data).
    pub class_cond: bool,
    /// The exact configuration of a resumed run.
    pub exact: Option<UNetConfig>,
    /// A network of the average velocity (MeanFlow, `--model meanflow-unet`).
    pub average_velocity: bool,
}

/// How a velocity field is trained.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowMatchingSettings {
    /// The probability path's scheduler (without a matcher).
    pub scheduler: SchedulerKind,
    /// CFM, EFM or maximum likelihood.
    pub objective: Objective,
    /// Parametrization, weighting, CFM/EFM target and Jacobian penalty.
    pub spec: ObjectiveSpec,
    /// A torchcfm matcher, replacing the scheduler path.
    pub matcher: Option<Matcher>,
    /// The source distribution.
    pub source: Source,
}

impl Default for FlowMatchingSettings {
    fn default() -> Self {
        Self {
            scheduler: SchedulerKind::CondOt,
            objective: Objective::Cfm,
            spec: ObjectiveSpec::default(),
            matcher: None,
            source: Source::Normal,
        }
    }
}

/// Where the starting weights come from (`--init`).
#[derive(Debug, Clone, PartialEq)]
pub struct InitFrom {
    /// As given: a checkpoint folder, a `.safetensors` file or an `hf://` address.
    pub source: String,
    /// Load what fits and leave the rest at its fresh initialisation (`--allow-partial`).
    pub allow_partial: bool,
    /// Never download (`--offline`).
    pub offline: bool,
}

impl RunSettings {
    /// The settings of a new run: the family of `config.model` (default `mlp`)
    /// decides the defaults and refuses what does not apply.
    pub fn resolve(config: &RunConfig) -> Result<Self> {
        // `--manifold`, or data on a manifold, without `--model` select the Riemannian family.
        let on_manifold = config.manifold.is_some()
            || config
                .data
                .as_deref()
                .is_some_and(|d| matches!(d.parse(), Ok(fm_data::DataSpec::Manifold(_))));
        let model = match &config.model {
            None if on_manifold => Some("riemannian"),
            m => m.as_deref(),
        };
        family::named(model)?.resolve(config)
    }
}

/// Checks the numbers every run needs, whatever set them.
pub fn validate_numbers(steps: usize, batch_size: usize, lr: f64) -> Result<()> {
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

/// Defaults a family gives the common settings.
pub(crate) struct Defaults<'a> {
    pub data: Option<&'a str>,
    /// The noise of `data` when the run uses that dataset.
    pub noise: Option<f64>,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// The folder's name under `runs/` when `--out` is not given.
    pub out_stem: Option<String>,
}

/// The settings every family shares, from `config` and the family's `defaults`;
/// the family fills `network` and `flow_matching` afterwards.
pub(crate) fn common(
    config: &RunConfig,
    family: &'static dyn Family,
    defaults: Defaults,
) -> Result<RunSettings> {
    let data = match (&config.data, defaults.data) {
        (Some(d), _) => d.clone(),
        (None, Some(d)) => d.to_string(),
        (None, None) => bail!("--data is needed for --model {}", family.name()),
    };
    let noise = config.noise.or(if Some(data.as_str()) == defaults.data { defaults.noise } else { None });
    if let Some(n) = noise {
        if !(n.is_finite() && n >= 0.0) {
            bail!("--noise must be a non-negative number, got {n}");
        }
    }
    if config.manifold.is_some() && family.name() != "riemannian" {
        bail!("--manifold applies to --model riemannian (the model when --manifold is given alone)");
    }
    if config.n_train == Some(0) {
        bail!("--n-train must be at least 1, got 0");
    }
    let steps = config.steps.unwrap_or(defaults.steps);
    let batch_size = config.batch_size.unwrap_or(defaults.batch_size);
    let lr = config.lr.unwrap_or(defaults.lr);
    validate_numbers(steps, batch_size, lr)?;
    let weight_decay = config.weight_decay.unwrap_or(0.0);
    if !(weight_decay.is_finite() && weight_decay >= 0.0) {
        bail!("--weight-decay must be a non-negative number, got {weight_decay}");
    }
    let training = TrainingOptions {
        warmup: config.warmup.unwrap_or(0),
        grad_clip: config.grad_clip,
        ema_decay: config.ema_decay,
    };
    training.validate()?;
    let out = config.out.clone().unwrap_or_else(|| {
        let stem = defaults
            .out_stem
            .unwrap_or_else(|| data.trim_start_matches("csv:").replace(['/', '\\', '.'], "_"));
        PathBuf::from("runs").join(stem)
    });
    Ok(RunSettings {
        family,
        preset: config.preset.clone(),
        columns: config.columns.clone().unwrap_or_default(),
        noise,
        n_train: config.n_train,
        steps,
        batch_size,
        lr,
        weight_decay,
        seed: config.seed.unwrap_or(0),
        out,
        checkpoint_every: config.checkpoint_every.unwrap_or(DEFAULT_CHECKPOINT_EVERY),
        training,
        init: config.init.clone().map(|source| InitFrom {
            source,
            allow_partial: config.allow_partial.unwrap_or(false),
            offline: config.offline.unwrap_or(false),
        }),
        network: NetworkSettings {
            hidden: vec![],
            activation: Activation::Elu,
            layers: 0,
            unet: None,
            label_dropout: None,
        },
        flow_matching: FlowMatchingSettings::default(),
        discrete: None,
        manifold: None,
        command: vec![],
        data,
    })
}

/// Hidden widths: `--hidden` or `default`, all positive.
pub(crate) fn hidden(config: &RunConfig, default: &[usize]) -> Result<Vec<usize>> {
    let hidden = config.hidden.clone().unwrap_or_else(|| default.to_vec());
    if hidden.is_empty() || hidden.contains(&0) {
        bail!("--hidden needs positive widths, e.g. 64,64,64; got {hidden:?}");
    }
    Ok(hidden)
}

/// `--activation` or `default`.
pub(crate) fn activation(config: &RunConfig, default: Activation) -> Result<Activation> {
    match &config.activation {
        Some(s) => s.parse().context("--activation"),
        None => Ok(default),
    }
}

/// Refuses each flag of `flags` that is set: `{flag} {why}`.
pub(crate) fn refuse(config: &RunConfig, flags: &[&'static str], why: &str) -> Result<()> {
    if let Some(flag) = config.given_of(flags).first() {
        bail!("{flag} {why}");
    }
    Ok(())
}

/// The U-Net's own flags.
pub(crate) const UNET_FLAGS: &[&str] = &[
    "--channels",
    "--channel-mult",
    "--res-blocks",
    "--attention-res",
    "--dropout",
    "--class-cond",
    "--label-dropout",
];

/// The flow-matching flags.
pub(crate) const FLOW_MATCHING_FLAGS: &[&str] = &[
    "--preset",
    "--objective",
    "--cnf-steps",
    "--efm-m",
    "--scheduler",
    "--parametrization",
    "--weighting",
    "--jacobian-reg",
    "--jacobian-probes",
    "--matcher",
    "--coupling",
    "--sigma",
    "--source",
    "--sample-solver",
    "--sample-steps",
];

/// The flow-matching settings of `config` (velocity families).
pub(crate) fn flow_matching(config: &RunConfig) -> Result<FlowMatchingSettings> {
    let scheduler = match &config.scheduler {
        Some(s) => s.parse().context("--scheduler")?,
        None => SchedulerKind::CondOt,
    };
    let objective = Objective::parse(config.objective.as_deref(), config.cnf_steps, config.efm_m)?;
    let matcher = parse_matcher(config.matcher.as_deref(), config.coupling.as_deref(), config.sigma)?;
    let flags = ObjectiveFlags {
        parametrization: config.parametrization.as_deref(),
        weighting: config.weighting.as_deref(),
        jacobian_reg: config.jacobian_reg,
        jacobian_probes: config.jacobian_probes,
    };
    let spec = spec(objective, &flags, matcher.is_some())?;
    if matcher.is_some() {
        if objective != Objective::Cfm {
            bail!("--matcher/--coupling/--sigma apply to --objective cfm only");
        }
        if config.scheduler.is_some() {
            bail!("--matcher defines its own path; --scheduler applies only without --matcher/--coupling/--sigma");
        }
    }
    let source = Source::parse(config.source.as_deref())?;
    if source != Source::Normal && matcher.is_none() {
        bail!(
            "--source {} needs --matcher (e.g. --matcher icfm)",
            config.source.as_deref().unwrap_or_default()
        );
    }
    Ok(FlowMatchingSettings { scheduler, objective, spec, matcher, source })
}

/// The matcher of `--matcher`, `--coupling` and `--sigma`; `None` (plain
/// CFM on the scheduler path, the historical behaviour) when none is given.
/// `--coupling` or `--sigma` alone select I-CFM.
pub fn parse_matcher(
    name: Option<&str>,
    coupling: Option<&str>,
    sigma: Option<f64>,
) -> Result<Option<Matcher>> {
    if name.is_none() && coupling.is_none() && sigma.is_none() {
        return Ok(None);
    }
    let kind: MatcherKind = name.unwrap_or("icfm").parse().context("--matcher")?;
    let sigma = sigma.unwrap_or(kind.default_sigma());
    let mut m = Matcher::new(kind, sigma).context("--sigma")?;
    if let Some(c) = coupling {
        let c: Coupling = c.parse().context("--coupling")?;
        m = m.with_coupling(c).context("--coupling")?;
    }
    Ok(Some(m))
}

/// Refuses, for a resumed run, the keys that would change it: the checkpoint
/// fixes them. Only `--steps` (to go further) and the output options may be given.
pub fn check_resume_config(config: &RunConfig) -> Result<()> {
    let fixed: Vec<&str> =
        config.given().into_iter().filter(|f| !crate::config::RESUMABLE.contains(f)).collect();
    if !fixed.is_empty() {
        bail!(
            "--resume continues a run with its own settings; {} cannot be changed (only --steps, \
             --checkpoint-every and the sampling/output flags can)",
            fixed.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_refuses_keys_that_change_the_run() {
        let c = RunConfig { lr: Some(0.1), seed: Some(3), steps: Some(10), ..Default::default() };
        let e = check_resume_config(&c).err().map(|e| e.to_string()).unwrap_or_default();
        let refused = e.split("cannot be changed").next().unwrap_or("");
        assert!(
            refused.contains("--lr") && refused.contains("--seed") && !refused.contains("--steps"),
            "{e}"
        );
        assert!(check_resume_config(&RunConfig { steps: Some(10), ..Default::default() }).is_ok());
    }
}

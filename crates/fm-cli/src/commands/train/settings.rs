//! Training settings: presets, the TOML config file, flags, and their validation.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use fm_core::coupling::Coupling;
use fm_core::matcher::{Matcher, MatcherKind};
use fm_core::scheduler::SchedulerKind;
use fm_models::training::TrainingOptions;
use fm_models::Activation;
use serde::Deserialize;

use super::images::UNetSpec;
use crate::cli::TrainArgs;
use crate::source::Source;

/// A named recipe: the defaults it sets.
pub struct Preset {
    pub name: &'static str,
    pub about: &'static str,
    pub data: &'static str,
    pub noise: Option<f64>,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub hidden: &'static [usize],
    pub activation: Activation,
}

pub const PRESETS: &[Preset] = &[Preset {
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

/// What the network is trained to minimise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// Conditional flow matching: regression of `u_θ(x_t, t)` on `x1 − x0`.
    Cfm,
    /// Maximum likelihood of a CNF: the NLL by an RK4 solve of `steps` steps
    /// with the exact divergence, backpropagated through the solver.
    Likelihood { steps: usize },
    /// Empirical flow matching: regression on `û*_M`, from `m` references.
    Efm { m: usize },
}

impl Objective {
    /// The name stored in checkpoints.
    pub fn name(&self) -> &'static str {
        match self {
            Objective::Cfm => "cfm",
            Objective::Likelihood { .. } => "likelihood",
            Objective::Efm { .. } => "efm",
        }
    }

    /// Parses `--objective`, `--cnf-steps` and `--efm-m`.
    pub fn parse(name: Option<&str>, cnf_steps: Option<usize>, efm_m: Option<usize>) -> Result<Self> {
        let o = match name.unwrap_or("cfm").to_ascii_lowercase().as_str() {
            "cfm" | "fm" => Objective::Cfm,
            "likelihood" | "ml" | "cnf" => {
                let steps = cnf_steps.unwrap_or(10);
                if steps == 0 {
                    bail!("--cnf-steps must be at least 1, got 0");
                }
                Objective::Likelihood { steps }
            }
            "efm" => {
                let m = efm_m.unwrap_or(256);
                if m == 0 {
                    bail!("--efm-m must be at least 1, got 0");
                }
                Objective::Efm { m }
            }
            other => bail!("--objective: unknown objective `{other}`; valid: cfm, efm, likelihood"),
        };
        if cnf_steps.is_some() && !matches!(o, Objective::Likelihood { .. }) {
            bail!("--cnf-steps only applies to --objective likelihood");
        }
        if efm_m.is_some() && !matches!(o, Objective::Efm { .. }) {
            bail!("--efm-m only applies to --objective efm");
        }
        Ok(o)
    }
}

/// Default period of resumable checkpoints, in steps.
pub const DEFAULT_CHECKPOINT_EVERY: usize = 1000;

/// Training settings after the config file, presets and flags are merged.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub preset: Option<String>,
    pub data: String,
    pub columns: Vec<String>,
    pub noise: Option<f64>,
    pub n_train: Option<usize>,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub hidden: Vec<usize>,
    pub activation: Activation,
    pub scheduler: SchedulerKind,
    pub objective: Objective,
    /// Parametrization, weighting, CFM/EFM target and Jacobian penalty.
    pub spec: fm_core::objective::ObjectiveSpec,
    /// A torchcfm matcher, replacing the scheduler path (`--matcher/--coupling/--sigma`).
    pub matcher: Option<Matcher>,
    /// The source distribution (`--source`).
    pub source: Source,
    pub seed: u64,
    pub out: PathBuf,
    /// The U-Net of `--model unet` (`None`: the MLP).
    pub unet: Option<UNetSpec>,
    /// Warm-up, gradient clipping and EMA.
    pub training: TrainingOptions,
    /// Label dropout of class-conditional training.
    pub label_dropout: Option<f64>,
    /// `--init`: the weights to start from (a path or an `hf://` address), and `--allow-partial`.
    pub init: Option<InitFrom>,
}

/// Where `--init` loads the starting weights from.
#[derive(Debug, Clone)]
pub struct InitFrom {
    /// As given (a checkpoint directory, a .safetensors file or an `hf://` address).
    pub source: PathBuf,
    /// `--allow-partial`.
    pub allow_partial: bool,
    /// `--offline` (or `HF_HUB_OFFLINE`).
    pub offline: bool,
}

/// What the run does after training.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub checkpoint_every: usize,
    pub sample_n: usize,
    pub sample_solver: String,
    pub sample_steps: usize,
    pub json: bool,
    pub quiet: bool,
}

/// The keys a `--config` TOML file may hold: the long flag names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ConfigFile {
    preset: Option<String>,
    data: Option<String>,
    columns: Option<Vec<String>>,
    noise: Option<f64>,
    n_train: Option<usize>,
    steps: Option<usize>,
    batch_size: Option<usize>,
    lr: Option<f64>,
    model: Option<String>,
    layers: Option<usize>,
    hidden: Option<Vec<usize>>,
    activation: Option<String>,
    scheduler: Option<String>,
    objective: Option<String>,
    cnf_steps: Option<usize>,
    efm_m: Option<usize>,
    parametrization: Option<String>,
    weighting: Option<String>,
    jacobian_reg: Option<f64>,
    jacobian_probes: Option<usize>,
    matcher: Option<String>,
    coupling: Option<String>,
    sigma: Option<f64>,
    source: Option<String>,
    seed: Option<u64>,
    out: Option<PathBuf>,
    checkpoint_every: Option<usize>,
    sample_n: Option<usize>,
    sample_solver: Option<String>,
    sample_steps: Option<usize>,
    json: Option<bool>,
    quiet: Option<bool>,
    channels: Option<usize>,
    channel_mult: Option<Vec<usize>>,
    res_blocks: Option<usize>,
    attention_res: Option<String>,
    dropout: Option<f64>,
    class_cond: Option<bool>,
    label_dropout: Option<f64>,
    ema_decay: Option<f64>,
    grad_clip: Option<f64>,
    warmup: Option<usize>,
}

/// Fills every flag not given on the command line from the `--config` file.
pub fn merge_config_file(mut a: TrainArgs) -> Result<TrainArgs> {
    let Some(path) = a.config.clone() else { return Ok(a) };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("--config {}: cannot read the file", path.display()))?;
    let f: ConfigFile =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
    // Relative paths in the file are relative to the file, as users expect of config files.
    let base = path.parent().unwrap_or(Path::new(""));
    let rel = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
    a.preset = a.preset.or(f.preset);
    a.data = a.data.or(f.data.map(|d| match d.strip_prefix("csv:") {
        Some(p) => format!("csv:{}", rel(PathBuf::from(p)).display()),
        None => d,
    }));
    a.columns = a.columns.or(f.columns);
    a.noise = a.noise.or(f.noise);
    a.n_train = a.n_train.or(f.n_train);
    a.steps = a.steps.or(f.steps);
    a.batch_size = a.batch_size.or(f.batch_size);
    a.lr = a.lr.or(f.lr);
    a.model = a.model.or(f.model);
    a.layers = a.layers.or(f.layers);
    a.hidden = a.hidden.or(f.hidden);
    a.activation = a.activation.or(f.activation);
    a.scheduler = a.scheduler.or(f.scheduler);
    a.objective = a.objective.or(f.objective);
    a.cnf_steps = a.cnf_steps.or(f.cnf_steps);
    a.efm_m = a.efm_m.or(f.efm_m);
    a.parametrization = a.parametrization.or(f.parametrization);
    a.weighting = a.weighting.or(f.weighting);
    a.jacobian_reg = a.jacobian_reg.or(f.jacobian_reg);
    a.jacobian_probes = a.jacobian_probes.or(f.jacobian_probes);
    a.matcher = a.matcher.or(f.matcher);
    a.coupling = a.coupling.or(f.coupling);
    a.sigma = a.sigma.or(f.sigma);
    a.source = a.source.or(f.source);
    a.seed = a.seed.or(f.seed);
    a.out = a.out.or(f.out.map(rel));
    a.checkpoint_every = a.checkpoint_every.or(f.checkpoint_every);
    a.sample_n = a.sample_n.or(f.sample_n);
    a.sample_solver = a.sample_solver.or(f.sample_solver);
    a.sample_steps = a.sample_steps.or(f.sample_steps);
    a.json |= f.json.unwrap_or(false);
    a.quiet |= f.quiet.unwrap_or(false);
    let u = &mut a.unet;
    u.channels = u.channels.or(f.channels);
    u.channel_mult = u.channel_mult.take().or(f.channel_mult);
    u.res_blocks = u.res_blocks.or(f.res_blocks);
    u.attention_res = u.attention_res.take().or(f.attention_res);
    u.dropout = u.dropout.or(f.dropout);
    u.class_cond |= f.class_cond.unwrap_or(false);
    u.label_dropout = u.label_dropout.or(f.label_dropout);
    u.ema_decay = u.ema_decay.or(f.ema_decay);
    u.grad_clip = u.grad_clip.or(f.grad_clip);
    u.warmup = u.warmup.or(f.warmup);
    Ok(a)
}

fn find_preset(name: &str) -> Result<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name).with_context(|| {
        let list: Vec<String> = PRESETS.iter().map(|p| format!("{} ({})", p.name, p.about)).collect();
        format!("--preset: unknown preset `{name}`; valid: {}", list.join(", "))
    })
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

/// The settings of a new run.
pub fn resolve(a: &TrainArgs) -> Result<Resolved> {
    let unet = UNetSpec::from_args(a)?;
    // With --model unet, --preset names the U-Net preset.
    let preset = match unet {
        Some(_) => None,
        None => a.preset.as_deref().map(find_preset).transpose()?,
    };
    // Without a preset the defaults are the guide's recipe.
    let base = preset.unwrap_or(&PRESETS[0]);
    let defaults = unet.as_ref().map(|u| u.defaults());
    let data = match (&a.data, &unet) {
        (Some(d), _) => d.clone(),
        (None, Some(_)) => bail!("--model unet needs image data: --data mnist:DIR, fashion-mnist:DIR, cifar10:DIR, digits:FILE or png:DIR"),
        (None, None) => base.data.to_string(),
    };
    let same_data = data == base.data;
    let noise = a.noise.or(if same_data && unet.is_none() { base.noise } else { None });
    let steps = a.steps.unwrap_or(defaults.as_ref().map_or(base.steps, |d| d.steps));
    let batch_size = a.batch_size.unwrap_or(defaults.as_ref().map_or(base.batch_size, |d| d.batch_size));
    let lr = a.lr.unwrap_or(defaults.as_ref().map_or(base.lr, |d| d.lr));
    validate_numbers(steps, batch_size, lr)?;
    if let Some(n) = noise {
        if !(n.is_finite() && n >= 0.0) {
            bail!("--noise must be a non-negative number, got {n}");
        }
    }
    if a.n_train == Some(0) {
        bail!("--n-train must be at least 1, got 0");
    }
    let hidden = a.hidden.clone().unwrap_or_else(|| base.hidden.to_vec());
    if hidden.is_empty() || hidden.contains(&0) {
        bail!("--hidden needs positive widths, e.g. 64,64,64; got {hidden:?}");
    }
    let activation = match &a.activation {
        Some(s) => s.parse().context("--activation")?,
        None => base.activation,
    };
    let scheduler = match &a.scheduler {
        Some(s) => s.parse().context("--scheduler")?,
        None => SchedulerKind::CondOt,
    };
    let objective = Objective::parse(a.objective.as_deref(), a.cnf_steps, a.efm_m)?;
    let matcher = parse_matcher(a.matcher.as_deref(), a.coupling.as_deref(), a.sigma)?;
    let flags = super::objective::ObjectiveFlags {
        parametrization: a.parametrization.as_deref(),
        weighting: a.weighting.as_deref(),
        jacobian_reg: a.jacobian_reg,
        jacobian_probes: a.jacobian_probes,
    };
    let spec = super::objective::spec(objective, &flags, matcher.is_some())?;
    if unet.is_some() && !(objective == Objective::Cfm && spec.is_plain_cfm()) {
        bail!(
            "--model unet trains by plain CFM: --objective efm|likelihood, --parametrization, --weighting \
             and --jacobian-reg apply to the MLP only"
        );
    }
    if let (Some(u), Some(m)) = (&unet, &matcher) {
        if u.class_cond && m.coupling() != Coupling::Independent {
            bail!("--class-cond with a minibatch coupling (--coupling/--matcher otcfm/sbcfm) is not supported: the coupling would separate images from their labels");
        }
    }
    let training = TrainingOptions {
        warmup: a.unet.warmup.unwrap_or(0),
        grad_clip: a.unet.grad_clip,
        ema_decay: a.unet.ema_decay,
    };
    training.validate()?;
    let label_dropout = match &unet {
        Some(u) if u.class_cond => Some(a.unet.label_dropout.unwrap_or(super::images::DEFAULT_LABEL_DROPOUT)),
        _ => None,
    };
    if matcher.is_some() {
        if objective != Objective::Cfm {
            bail!("--matcher/--coupling/--sigma apply to --objective cfm only");
        }
        if a.scheduler.is_some() {
            bail!("--matcher defines its own path; --scheduler applies only without --matcher/--coupling/--sigma");
        }
    }
    let source = Source::parse(a.source.as_deref())?;
    if source != Source::Normal && matcher.is_none() {
        bail!("--source {} needs --matcher (e.g. --matcher icfm)", a.source.as_deref().unwrap_or_default());
    }
    let out = a.out.clone().unwrap_or_else(|| {
        let stem = a
            .preset
            .clone()
            .unwrap_or_else(|| data.trim_start_matches("csv:").replace(['/', '\\', '.'], "_"));
        PathBuf::from("runs").join(stem)
    });
    Ok(Resolved {
        data,
        columns: a.columns.clone().unwrap_or_default(),
        noise,
        n_train: a.n_train,
        steps,
        batch_size,
        lr,
        hidden,
        activation,
        scheduler,
        objective,
        spec,
        matcher,
        source,
        seed: a.seed.unwrap_or(0),
        out,
        preset: match &unet {
            Some(u) => Some(u.preset.clone()),
            None => a.preset.clone(),
        },
        unet,
        training,
        label_dropout,
        init: a.init.clone().map(|source| InitFrom {
            source,
            allow_partial: a.allow_partial,
            offline: crate::commands::hub::offline(&a.hub),
        }),
    })
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

/// With `--resume`, the flags that would change the run are refused: the
/// checkpoint fixes them. Only `--steps` (to go further) and the output options may be given.
pub fn check_resume_flags(a: &TrainArgs) -> Result<()> {
    let fixed = [
        ("--preset", a.preset.is_some()),
        ("--data", a.data.is_some()),
        ("--columns", a.columns.is_some()),
        ("--noise", a.noise.is_some()),
        ("--n-train", a.n_train.is_some()),
        ("--batch-size", a.batch_size.is_some()),
        ("--lr", a.lr.is_some()),
        ("--hidden", a.hidden.is_some()),
        ("--activation", a.activation.is_some()),
        ("--scheduler", a.scheduler.is_some()),
        ("--objective", a.objective.is_some()),
        ("--cnf-steps", a.cnf_steps.is_some()),
        ("--efm-m", a.efm_m.is_some()),
        ("--parametrization", a.parametrization.is_some()),
        ("--weighting", a.weighting.is_some()),
        ("--jacobian-reg", a.jacobian_reg.is_some()),
        ("--jacobian-probes", a.jacobian_probes.is_some()),
        ("--matcher", a.matcher.is_some()),
        ("--coupling", a.coupling.is_some()),
        ("--sigma", a.sigma.is_some()),
        ("--source", a.source.is_some()),
        ("--seed", a.seed.is_some()),
        ("--out", a.out.is_some()),
        ("--channels", a.unet.channels.is_some()),
        ("--channel-mult", a.unet.channel_mult.is_some()),
        ("--res-blocks", a.unet.res_blocks.is_some()),
        ("--attention-res", a.unet.attention_res.is_some()),
        ("--dropout", a.unet.dropout.is_some()),
        ("--class-cond", a.unet.class_cond),
        ("--label-dropout", a.unet.label_dropout.is_some()),
        ("--ema-decay", a.unet.ema_decay.is_some()),
        ("--grad-clip", a.unet.grad_clip.is_some()),
        ("--warmup", a.unet.warmup.is_some()),
        ("--init", a.init.is_some()),
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

/// The post-training options, with their defaults.
pub fn run_options(a: &TrainArgs) -> Result<RunOptions> {
    let o = RunOptions {
        checkpoint_every: a.checkpoint_every.unwrap_or(DEFAULT_CHECKPOINT_EVERY),
        sample_n: a.sample_n.unwrap_or(2000),
        sample_solver: a.sample_solver.clone().unwrap_or_else(|| "midpoint".into()),
        sample_steps: a.sample_steps.unwrap_or(50),
        json: a.json,
        quiet: a.quiet,
    };
    if o.sample_n == 0 {
        bail!("--sample-n must be at least 1, got 0");
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("fm-settings-{name}-{}.toml", std::process::id()));
        std::fs::write(&p, text).expect("temp file");
        p
    }

    #[test]
    fn flags_override_the_config_file() -> Result<()> {
        let p = write("ok", "steps = 123\nbatch-size = 64\nhidden = [32, 32]\nlr = 0.005\n");
        let a = TrainArgs { config: Some(p.clone()), steps: Some(7), ..Default::default() };
        let r = resolve(&merge_config_file(a)?)?;
        assert_eq!((r.steps, r.batch_size, r.hidden.clone(), r.lr), (7, 64, vec![32, 32], 0.005));
        std::fs::remove_file(p)?;
        Ok(())
    }

    #[test]
    fn unknown_keys_and_bad_types_name_the_key() {
        let p = write("bad", "stepz = 3\n");
        let e = merge_config_file(TrainArgs { config: Some(p.clone()), ..Default::default() })
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(e.contains("stepz") && e.contains(&p.display().to_string()), "{e}");
        let q = write("type", "steps = \"many\"\n");
        let e = merge_config_file(TrainArgs { config: Some(q.clone()), ..Default::default() })
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(e.contains("steps") || e.contains("integer"), "{e}");
        let _ = std::fs::remove_file(p);
        let _ = std::fs::remove_file(q);
    }

    #[test]
    fn resume_refuses_flags_that_change_the_run() {
        let a = TrainArgs { lr: Some(0.1), seed: Some(3), steps: Some(10), ..Default::default() };
        let e = check_resume_flags(&a).err().map(|e| e.to_string()).unwrap_or_default();
        let refused = e.split("cannot be changed").next().unwrap_or("");
        assert!(
            refused.contains("--lr") && refused.contains("--seed") && !refused.contains("--steps"),
            "{e}"
        );
        assert!(check_resume_flags(&TrainArgs { steps: Some(10), ..Default::default() }).is_ok());
    }
}

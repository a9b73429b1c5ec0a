//! The velocity MLP ([`VelocityMlp`]): flow matching (CFM, EFM, the torchcfm
//! matchers, exact OT-CFM through a coupling pipeline) or CNF maximum
//! likelihood, on points.

use std::collections::HashMap;

use candle::{DType, Device, Tensor};
use candle_nn::VarMap;
use fm_core::coupling::Coupling;
use fm_core::likelihood::cnf_nll_loss_exact;
use fm_core::loss::draw_source_and_time;
use fm_core::matcher::matcher_batch_loss_from;
use fm_core::objective::{objective_batch_loss, RegressionTarget};
use fm_core::path::AffinePath;
use fm_core::scheduler::SchedulerKind;
use fm_core::SeededRng;
use fm_models::{
    mlp_cfm_train_step, mlp_coupled_cfm_train_step, mlp_one_step_distill_train_step, DrawnBatch, MlpConfig,
    ModelConfig, OtCfmPipeline, VelocityMlp, VelocityNet,
};
use serde_json::{Map, Value};

use super::velocity::{self, VelocityModel};
use super::{finite, Family, StepContext, TrainedModel, Trainer};
use crate::error::bail;
use crate::settings::{self, Defaults, Objective, UNET_FLAGS};
use crate::source::Source;
use crate::{Result, ResultExt, RunConfig, RunRecord, RunSettings, TrainingData};

/// A named recipe of the MLP: the defaults it sets.
pub struct Preset {
    /// Its `--preset` name.
    pub name: &'static str,
    /// What it reproduces.
    pub about: &'static str,
    /// Dataset.
    pub data: &'static str,
    /// The dataset's noise.
    pub noise: Option<f64>,
    /// Steps.
    pub steps: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Learning rate.
    pub lr: f64,
    /// Hidden widths.
    pub hidden: &'static [usize],
    /// Activation.
    pub activation: fm_models::Activation,
}

/// The MLP's presets; the first is the default recipe.
pub const PRESETS: &[Preset] = &[Preset {
    name: "guide-moons",
    about: "Lipman et al.'s guide, Code 1: MLP 3-64-64-64-2 ELU, Adam 1e-2, batch 256, 10k steps, fresh moons (noise 0.05)",
    data: "moons",
    noise: Some(0.05),
    steps: 10_000,
    batch_size: 256,
    lr: 1e-2,
    hidden: &[64, 64, 64],
    activation: fm_models::Activation::Elu,
}];

fn find_preset(name: &str) -> Result<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name).with_context(|| {
        let list: Vec<String> = PRESETS.iter().map(|p| format!("{} ({})", p.name, p.about)).collect();
        format!("--preset: unknown preset `{name}`; valid: {}", list.join(", "))
    })
}

/// The velocity MLP family.
#[derive(Debug)]
pub(crate) struct Mlp;

impl Family for Mlp {
    fn name(&self) -> &'static str {
        "mlp"
    }

    fn accepts(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case("mlp")
    }

    fn owns(&self, model: &ModelConfig) -> bool {
        matches!(model, ModelConfig::Mlp(_))
    }

    fn resolve(&'static self, c: &RunConfig) -> Result<RunSettings> {
        if c.layers.is_some() {
            bail!("--layers only applies to --model planar or realnvp (the MLP's depth is set by --hidden)");
        }
        settings::refuse(c, UNET_FLAGS, "only applies to --model unet")?;
        let preset = c.preset.as_deref().map(find_preset).transpose()?;
        // Without a preset the defaults are the guide's recipe.
        let base = preset.unwrap_or(&PRESETS[0]);
        let mut s = settings::common(
            c,
            self,
            Defaults {
                data: Some(base.data),
                noise: base.noise,
                steps: base.steps,
                batch_size: base.batch_size,
                lr: base.lr,
                out_stem: c.preset.clone(),
            },
        )?;
        s.network.hidden = settings::hidden(c, base.hidden)?;
        s.network.activation = settings::activation(c, base.activation)?;
        s.flow_matching = settings::flow_matching(c)?;
        Ok(s)
    }

    fn config_of_record(&self, r: &RunRecord, model: &ModelConfig) -> Result<RunConfig> {
        let ModelConfig::Mlp(m) = model else { bail!("not an MLP checkpoint") };
        let mut c = RunConfig::of_record(r);
        c.hidden = Some(m.hidden.clone());
        c.activation = Some(m.activation.to_string());
        velocity::config_of_record(r, &mut c);
        Ok(c)
    }

    fn resume(&'static self, record: &RunRecord, model: &ModelConfig) -> Result<RunSettings> {
        let mut s = self.resolve(&self.config_of_record(record, model)?)?;
        velocity::restore(&mut s, record)?;
        Ok(s)
    }

    fn configure(&self, s: &RunSettings, data: &TrainingData) -> Result<ModelConfig> {
        s.flow_matching.source.check_dim(data.dim())?;
        Ok(ModelConfig::Mlp(MlpConfig {
            dim: data.dim(),
            hidden: s.network.hidden.clone(),
            activation: s.network.activation,
        }))
    }

    fn trainer(
        &self,
        model: &ModelConfig,
        s: &RunSettings,
        data: &TrainingData,
        device: &Device,
    ) -> Result<Box<dyn Trainer>> {
        let fm = &s.flow_matching;
        let plain = fm.spec.is_plain_cfm() && fm.matcher.is_none();
        if data.is_paired() && !(matches!(fm.objective, Objective::Cfm | Objective::Distill) && plain) {
            bail!(
                "--data {}: coupled pairs train plain CFM (or --objective distill) on their couplings; \
                 --matcher, --objective efm|likelihood, --parametrization and --weighting do not apply to them",
                s.data
            );
        }
        if fm.objective == Objective::Distill && !data.is_paired() {
            bail!(
                "--objective distill learns the one-step map of coupled pairs: it needs --data pairs:FILE \
                 (`fm reflow` writes them), not `{}`",
                s.data
            );
        }
        let mut init_rng = SeededRng::for_stream(s.seed, "init");
        let (net, varmap) = VelocityNet::init(model, &mut init_rng, DType::F32, device)?;
        let VelocityNet::Mlp(mlp) = net else { bail!("not an MLP configuration") };
        let train_set = match fm.spec.target {
            RegressionTarget::Efm { m } if m > 1 => Some(efm_reference_set(data, &s.data, device)?),
            _ => None,
        };
        let exact_ot = fm.matcher.is_some_and(|m| m.coupling() == Coupling::ExactOt);
        let ot = (exact_ot && fm.objective == Objective::Cfm && fm.spec.is_plain_cfm())
            .then(|| OtCfmPipeline::new(false)); // sequential: faster than overlapped on two cores
        Ok(Box::new(MlpTrainer {
            mlp,
            varmap,
            path: AffinePath::new(fm.scheduler),
            train_set,
            ot,
            queued_from: None,
        }))
    }

    fn load(
        &self,
        model: &ModelConfig,
        tensors: HashMap<String, Tensor>,
        record: &RunRecord,
        device: &Device,
    ) -> Result<Box<dyn TrainedModel>> {
        Ok(Box::new(VelocityModel::load(model, tensors, record, device)?))
    }

    fn record(&self, s: &RunSettings, r: &mut RunRecord) {
        velocity::record(s, r);
    }

    fn describe_model(&self, model: &ModelConfig) -> String {
        match model {
            ModelConfig::Mlp(m) => {
                format!("MLP {}", velocity::widths_label(m.dim + 1, &m.hidden, m.dim, m.num_parameters()))
            }
            other => format!("{other:?}"),
        }
    }

    fn describe_objective(&self, s: &RunSettings) -> String {
        velocity::describe(s)
    }

    fn describe_path(&self, s: &RunSettings) -> String {
        velocity::describe_path(s)
    }
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

/// Draws one OT-CFM training batch: data from `data_rng`, then `t` and `x₀` from `train_rng`.
fn draw_batch(cx: &mut StepContext<'_>) -> Result<DrawnBatch> {
    let x1 = cx.data.batch(cx.settings.batch_size, cx.data_rng)?.to_device(cx.device)?;
    let (x0, t) = draw_source(&x1, &cx.settings.flow_matching.source, cx.train_rng)?;
    Ok(DrawnBatch { x0, x1, t })
}

struct MlpTrainer {
    mlp: VelocityMlp,
    varmap: VarMap,
    path: AffinePath<SchedulerKind>,
    /// The finite training set `(n, d)` that EFM draws its references from.
    train_set: Option<Tensor>,
    /// Exact OT-CFM: the next batch's coupling is solved while a step runs.
    ot: Option<OtCfmPipeline>,
    /// Data and train stream positions before the batch queued in `ot` was drawn.
    queued_from: Option<(u128, u128)>,
}

impl MlpTrainer {
    /// One exact OT-CFM step: the next batch is drawn and queued (its coupling
    /// solved), then the step runs on the batch queued before it.
    fn ot_step(&mut self, cx: &mut StepContext<'_>) -> Result<f64> {
        let (Some(matcher), Some(ot)) = (cx.settings.flow_matching.matcher, &mut self.ot) else {
            bail!("not an exact OT-CFM run");
        };
        if ot.queued() == 0 {
            ot.push(draw_batch(cx)?)?;
        }
        let from = (cx.data_rng.position(), cx.train_rng.position());
        ot.push(draw_batch(cx)?)?;
        self.queued_from = Some(from);
        Ok(ot.step(&self.mlp, &matcher, cx.opt, cx.train_rng)?)
    }
}

impl Trainer for MlpTrainer {
    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn step(&mut self, cx: &mut StepContext<'_>) -> Result<f64> {
        if self.ot.is_some() {
            return self.ot_step(cx);
        }
        let fm = &cx.settings.flow_matching;
        if let Some((x0, x1)) = cx.data.pair_batch(cx.settings.batch_size, cx.data_rng)? {
            // Reflow: CFM on the given couplings (x₀ from the file, not the source;
            // the trainer refused every other objective).
            let (x0, x1) = (x0.to_device(cx.device)?, x1.to_device(cx.device)?);
            // Explicit backward pass, as the plain CFM step.
            if fm.objective == Objective::Distill {
                return Ok(mlp_one_step_distill_train_step(&self.mlp, cx.opt, &x0, &x1)?);
            }
            return Ok(mlp_coupled_cfm_train_step(&self.mlp, &self.path, cx.opt, &x0, &x1, cx.train_rng)?);
        }
        let x1 = cx.data.batch(cx.settings.batch_size, cx.data_rng)?.to_device(cx.device)?;
        let loss = match fm.objective {
            Objective::Cfm if fm.spec.is_plain_cfm() => match &fm.matcher {
                Some(m) => {
                    let (x0, t) = draw_source(&x1, &fm.source, cx.train_rng)?;
                    matcher_batch_loss_from(&self.mlp, m, &x0, &x1, &t, cx.train_rng)?
                }
                // Explicit backward pass: same draws and loss as fm-core's `cfm_batch_loss`, faster.
                None => return Ok(mlp_cfm_train_step(&self.mlp, &self.path, cx.opt, &x1, cx.train_rng)?),
            },
            Objective::Cfm | Objective::Efm { .. } => {
                let set = self.train_set.as_ref();
                objective_batch_loss(&self.mlp, &self.path, &fm.spec, &x1, set, cx.train_rng)?.total
            }
            // Forward-mode exact divergence: first-order autograd only.
            Objective::Likelihood { steps } => cnf_nll_loss_exact(&self.mlp, &x1, steps)?,
            Objective::Distill => bail!("--objective distill trains on coupled pairs only"),
        };
        let value = finite(&loss)?;
        cx.opt.backward_step(&loss)?;
        Ok(value)
    }

    fn state(&self) -> Map<String, Value> {
        let mut m = Map::new();
        if let Some((d, t)) = self.queued_from {
            m.insert("queued_from".into(), serde_json::json!([d.to_string(), t.to_string()]));
        }
        m
    }

    fn restore(&mut self, state: &Map<String, Value>, cx: &mut StepContext<'_>) -> Result<()> {
        let (Some(q), Some(ot)) = (state.get("queued_from"), self.ot.as_mut()) else { return Ok(()) };
        let [d, t]: [String; 2] = serde_json::from_value(q.clone()).context("the queued batch's streams")?;
        let pos = |p: &str| -> Result<u128> {
            p.parse().map_err(|_| crate::Error::Setting(format!("bad queued stream position `{p}`")))
        };
        // Draw the queued batch again, then continue where the streams were saved.
        let end = (cx.data_rng.position(), cx.train_rng.position());
        let from = (pos(&d)?, pos(&t)?);
        cx.data_rng.set_position(from.0);
        cx.train_rng.set_position(from.1);
        ot.push(draw_batch(cx)?)?;
        cx.data_rng.set_position(end.0);
        cx.train_rng.set_position(end.1);
        self.queued_from = Some(from);
        Ok(())
    }
}

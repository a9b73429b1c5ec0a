//! What the velocity families (the MLP and the U-Net) share: the trained
//! model as a velocity field (its recorded parametrization converted to a
//! velocity), its sampler and likelihood, and the flow-matching part of the
//! run record.

use std::collections::HashMap;

use candle::{DType, Device, Tensor};
use fm_core::divergence::Divergence;
use fm_core::likelihood::{log_likelihood, log_likelihood_exact, log_likelihood_hutchinson_jvp};
use fm_core::parametrization::Parametrized;
use fm_core::path::AffinePath;
use fm_core::scheduler::SchedulerKind;
use fm_core::{SeededRng, VelocityField};
use fm_models::unet::{ClassifierFreeGuidance, UNet};
use fm_models::{ModelConfig, VelocityNet};

use super::{Generated, ModelLikelihood, SampleRequest, TrainedModel};
use crate::error::bail;
use crate::sample::solve_hybrid;
use crate::settings::{describe_objective, objective_record, parametrization_of, Objective};
use crate::{Result, ResultExt, RunConfig, RunRecord, RunSettings, SolverChoice};
use crate::{Solved, StochasticChoice};

/// Images per solve unless the request says otherwise.
pub const DEFAULT_IMAGE_BATCH: usize = 250;

/// A velocity network read as a velocity field, as it was trained.
pub(crate) struct VelocityModel {
    field: Parametrized<VelocityNet, SchedulerKind>,
    scheduler: SchedulerKind,
}

impl VelocityModel {
    /// The network of a checkpoint (`model`, `tensors`) with the parametrization and path of its `record`.
    pub(crate) fn load(
        model: &ModelConfig,
        tensors: HashMap<String, Tensor>,
        record: &RunRecord,
        device: &Device,
    ) -> Result<Self> {
        let kind = parametrization_of(record)?;
        let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, device);
        let net = VelocityNet::new(model, vb)?;
        let scheduler = record.scheduler.unwrap_or(SchedulerKind::CondOt);
        Ok(Self { field: Parametrized::new(net, AffinePath::new(scheduler), kind), scheduler })
    }
}

impl TrainedModel for VelocityModel {
    fn dim(&self) -> usize {
        match self.field.net() {
            VelocityNet::Mlp(m) => m.config().dim,
            VelocityNet::UNet(u) => u.config().dim(),
        }
    }

    fn generate(
        &self,
        x0: &Tensor,
        request: &SampleRequest,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Generated> {
        if let Some(st) = &request.stochastic {
            st.validate(self.scheduler)?;
        }
        if let VelocityNet::UNet(net) = self.field.net() {
            return generate_images(net, self.scheduler, x0, request, progress);
        }
        if request.class.is_some() || request.cfg_scale != 0.0 {
            bail!("--class and --cfg-scale apply to class-conditional image models (U-Nets)");
        }
        let keep = request.trajectory_rows > 0;
        let sol = match &request.stochastic {
            Some(st) => {
                st.run(&self.field, self.scheduler, x0, &mut StochasticChoice::noise(request.seed), keep)?
            }
            None => solve_hybrid(&self.field, &self.field, x0, &request.solver, 0.0, keep)?,
        };
        progress(x0.dim(0)?);
        let trajectory = super::first_rows(sol.trajectory, request.trajectory_rows)?;
        Ok(Generated { samples: sol.state, trajectory, nfe: sol.nfe })
    }

    fn log_likelihood(
        &self,
        x: &Tensor,
        solver: &SolverChoice,
        divergence: Divergence,
        rng: &mut SeededRng,
    ) -> Result<ModelLikelihood> {
        let grid = solver.backward_grid()?;
        let mlp = matches!(self.field.net(), VelocityNet::Mlp(_));
        let res = match divergence {
            // The MLP's own forward-mode divergence: exact, and cheaper than autograd.
            Divergence::Exact => log_likelihood_exact(&self.field, x, &solver.method, &grid),
            // The probes ride along as forward-mode tangents: no autograd graph
            // (the same probes and estimate as the autograd path).
            Divergence::Hutchinson { probe, num_probes } if mlp => {
                log_likelihood_hutchinson_jvp(&self.field, x, probe, num_probes, &solver.method, &grid, rng)
            }
            _ => log_likelihood(&self.field, x, divergence, &solver.method, &grid, rng),
        }
        .with_context(|| format!("likelihood solve with {}", solver.label))?;
        Ok(ModelLikelihood { log_p: res.log_p_vec()?, nfe: res.nfe })
    }

    fn velocity_field(&self) -> Option<&dyn VelocityField> {
        Some(&self.field)
    }

    fn velocity_net(&self) -> Option<&VelocityNet> {
        Some(self.field.net())
    }

    fn image_shape(&self) -> Option<crate::ImageShape> {
        let c = self.field.net().as_unet()?.config();
        Some(crate::ImageShape { channels: c.in_channels, height: c.height, width: c.width })
    }

    fn num_classes(&self) -> Option<usize> {
        self.field.net().as_unet().and_then(|u| u.config().num_classes)
    }
}

/// The labels of `n` samples: `class` for all, or classes `0, 1, …, K−1` in
/// turn; `None` for an unconditional model (where `class` is an error).
pub(crate) fn labels(net: &UNet, n: usize, class: Option<u32>) -> Result<Option<Vec<u32>>> {
    match (net.config().num_classes, class) {
        (None, None) => Ok(None),
        (None, Some(_)) => bail!("--class: the model is not class-conditional (train with --class-cond)"),
        (Some(k), Some(c)) if c as usize >= k => bail!("--class {c}: the model knows classes 0..{}", k - 1),
        (Some(_), Some(c)) => Ok(Some(vec![c; n])),
        (Some(k), None) => Ok(Some((0..n).map(|i| (i % k) as u32).collect())),
    }
}

/// Solves from the source draws `x0` `(n, d)` in batches; class-conditional
/// models cycle through the classes (or take the request's), with guidance.
fn generate_images(
    net: &UNet,
    scheduler: SchedulerKind,
    x0: &Tensor,
    s: &SampleRequest,
    progress: &mut dyn FnMut(usize),
) -> Result<Generated> {
    let batch = s.batch_size.unwrap_or(DEFAULT_IMAGE_BATCH);
    if batch == 0 {
        bail!("--batch-size must be at least 1, got 0");
    }
    if !s.cfg_scale.is_finite() {
        bail!("--cfg-scale must be a finite number, got {}", s.cfg_scale);
    }
    if s.cfg_scale != 0.0 && net.config().num_classes.is_none() {
        bail!("--cfg-scale: the model is not class-conditional (train with --class-cond)");
    }
    let (n, _) = x0.dims2()?;
    let labels = labels(net, n, s.class)?;
    let grid = s.solver.grid()?;
    let mut noise = StochasticChoice::noise(s.seed);
    let mut samples = Vec::new();
    let mut trajectory: Vec<Vec<Tensor>> = Vec::new();
    let mut nfe = 0;
    let mut start = 0;
    while start < n {
        let b = batch.min(n - start);
        let chunk = x0.narrow(0, start, b)?;
        let labels = match &labels {
            Some(l) => Some(Tensor::from_vec(l[start..start + b].to_vec(), b, chunk.device())?),
            None => None,
        };
        let keep = start < s.trajectory_rows;
        let field: Box<dyn VelocityField + '_> = match &labels {
            Some(l) => Box::new(ClassifierFreeGuidance { net, labels: l, scale: s.cfg_scale }),
            None => Box::new(net),
        };
        let sol = match &s.stochastic {
            Some(st) => st.run(&field, scheduler, &chunk, &mut noise, keep)?,
            None => {
                let sol = fm_solvers::OdeSolver::integrate(
                    &s.solver.method,
                    &fm_core::AsOde(&field),
                    &chunk,
                    &grid,
                    keep,
                )
                .with_context(|| format!("sampling with {}", s.solver.label))?;
                Solved { state: sol.state, trajectory: sol.trajectory, nfe: sol.stats.nfe }
            }
        };
        nfe = nfe.max(sol.nfe);
        samples.push(sol.state);
        if keep {
            let rows = (s.trajectory_rows - start).min(b);
            for (k, x) in sol.trajectory.iter().enumerate() {
                let part = x.narrow(0, 0, rows)?;
                match trajectory.get_mut(k) {
                    Some(t) => t.push(part),
                    None => trajectory.push(vec![part]),
                }
            }
        }
        start += b;
        progress(b);
    }
    let samples = Tensor::cat(&samples, 0)?;
    let trajectory = trajectory.iter().map(|parts| Tensor::cat(parts, 0)).collect::<candle::Result<_>>()?;
    Ok(Generated { samples, trajectory, nfe })
}

/// The flow-matching part of the run record.
pub(crate) fn record(s: &RunSettings, r: &mut RunRecord) {
    let fm = &s.flow_matching;
    r.scheduler = Some(fm.scheduler);
    r.objective = fm.objective.name().into();
    r.cnf_steps = match fm.objective {
        Objective::Likelihood { steps } => Some(steps),
        Objective::Cfm | Objective::Efm { .. } | Objective::Distill => None,
    };
    r.options = objective_record(&fm.spec);
    r.matcher = fm.matcher.map(|m| m.kind.name().to_string());
    r.sigma = fm.matcher.map(|m| m.sigma);
    r.coupling = fm.matcher.map(|m| m.coupling());
    r.source = fm.source.record_name();
}

/// The flow-matching keys of the configuration that made `r`; the path and
/// the matcher's coupling, which a string cannot always carry exactly, are set
/// afterwards by [`restore`].
pub(crate) fn config_of_record(r: &RunRecord, c: &mut RunConfig) {
    let o = &r.options;
    c.objective = Some(r.objective.clone());
    c.cnf_steps = r.cnf_steps;
    c.efm_m = o.efm_m;
    c.parametrization = o.parametrization.clone();
    c.weighting = o.weighting.clone();
    c.jacobian_reg = o.jacobian_reg;
    c.jacobian_probes = o.jacobian_probes;
    c.source = r.source.clone();
    c.matcher = r.matcher.clone();
    c.sigma = r.sigma;
}

/// The recorded path and matcher, exactly, in the settings of a resumed run.
pub(crate) fn restore(s: &mut RunSettings, r: &RunRecord) -> Result<()> {
    let fm = &mut s.flow_matching;
    fm.scheduler = r.scheduler.unwrap_or(SchedulerKind::CondOt);
    if let (Some(m), Some(c)) = (fm.matcher.as_mut(), r.coupling) {
        *m = m.with_coupling(c).context("the recorded coupling")?;
    }
    Ok(())
}

/// `flow matching`, `flow matching with the otcfm matcher`, `maximum likelihood (RK4-10)`, ….
pub(crate) fn describe(s: &RunSettings) -> String {
    let fm = &s.flow_matching;
    match fm.objective {
        Objective::Cfm | Objective::Efm { .. } => match &fm.matcher {
            Some(m) => format!("flow matching with the {m} matcher"),
            None => describe_objective(fm.objective, &fm.spec),
        },
        Objective::Likelihood { steps } => format!("maximum likelihood (RK4-{steps})"),
        Objective::Distill => describe_objective(fm.objective, &fm.spec),
    }
}

/// `, cond-ot path` for the run's log line.
pub(crate) fn describe_path(s: &RunSettings) -> String {
    format!(", {} path", s.flow_matching.scheduler)
}

/// `IN-H1-…-OUT (N parameters)`: how logs name an MLP's layer widths.
pub(crate) fn widths_label(input: usize, hidden: &[usize], output: usize, parameters: usize) -> String {
    let hidden: Vec<String> = hidden.iter().map(|h| h.to_string()).collect();
    format!("{input}-{}-{output} ({parameters} parameters)", hidden.join("-"))
}

//! Riemannian flow matching (`--model riemannian`, or `--manifold M` alone):
//! Chen & Lipman's model on the sphere, the flat torus, Euclidean space and
//! their products ([`fm_core::manifold`]). The data, given in chart
//! coordinates (longitude and latitude, angles, in degrees), are embedded on
//! the manifold ([`TrainingData::embed_on_manifold`]); a velocity MLP on the
//! embedding coordinates and time, its output projected onto the tangent
//! space, is trained on the geodesic conditional path with the loss in the
//! manifold's metric ([`fm_models::mlp_riemannian_train_step`]); samples are
//! solved from the uniform base with every step projected back onto the
//! manifold, and come back in degrees; the likelihood integrates the
//! Riemannian divergence (exact or Hutchinson) backwards.
//!
//! Defaults: the synthetic `sphere-mixture` data, an MLP of three hidden
//! layers of 256 with SiLU, Adam 10⁻³, batch 512, 5,000 steps, `κ_t = t`
//! (flow_matching's sphere example uses this network width and path).

use std::collections::HashMap;

use candle::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use fm_core::divergence::Divergence;
use fm_core::manifold::{
    riemannian_log_likelihood, sample_on_manifold, GeodesicPath, Manifold, ManifoldSpec, Retraction,
};
use fm_core::SeededRng;
use fm_models::{mlp_riemannian_train_step, MlpConfig, ModelConfig, RiemannianMlpConfig, VelocityMlp};

use super::velocity::widths_label;
use super::Family;
use super::{Generated, ModelLikelihood, SampleRequest, StepContext, TrainedModel, Trainer};
use crate::error::bail;
use crate::settings::{self, Defaults, UNET_FLAGS};
use crate::{Result, ResultExt, RunConfig, RunRecord, RunSettings, SolverChoice, TrainingData};

/// The flags of Euclidean flow matching that a Riemannian model refuses.
const EUCLIDEAN_FLAGS: &[&str] = &[
    "--layers",
    "--preset",
    "--objective",
    "--cnf-steps",
    "--efm-m",
    "--parametrization",
    "--weighting",
    "--jacobian-reg",
    "--jacobian-probes",
    "--matcher",
    "--coupling",
    "--sigma",
    "--source",
    "--bins",
];

/// The Riemannian flow-matching family.
#[derive(Debug)]
pub(crate) struct Riemannian;

impl Family for Riemannian {
    fn name(&self) -> &'static str {
        "riemannian"
    }

    fn accepts(&self, name: &str) -> bool {
        ["riemannian", "rfm", "manifold"].iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    fn owns(&self, model: &ModelConfig) -> bool {
        matches!(model, ModelConfig::RiemannianMlp(_))
    }

    fn resolve(&'static self, c: &RunConfig) -> Result<RunSettings> {
        settings::refuse(c, EUCLIDEAN_FLAGS, "does not apply to a Riemannian model")?;
        settings::refuse(c, UNET_FLAGS, "only applies to --model unet")?;
        let mut s = settings::common(
            c,
            self,
            Defaults {
                data: Some("sphere-mixture"),
                noise: None,
                steps: 5_000,
                batch_size: 512,
                lr: 1e-3,
                out_stem: None,
            },
        )?;
        s.network.hidden = settings::hidden(c, &[256, 256, 256])?;
        s.network.activation = settings::activation(c, fm_models::Activation::Silu)?;
        if let Some(m) = &c.manifold {
            // Checked now; the dimensions a bare `torus` leaves out come from the data.
            m.parse::<ManifoldSpec>().context("--manifold")?;
        }
        s.manifold = c.manifold.clone();
        let scheduler = c.scheduler.as_deref().unwrap_or("cond-ot");
        s.flow_matching.scheduler = scheduler.parse().context("--scheduler")?;
        GeodesicPath::new(s.flow_matching.scheduler).context("--scheduler")?;
        Ok(s)
    }

    fn config_of_record(&self, r: &RunRecord, model: &ModelConfig) -> Result<RunConfig> {
        let ModelConfig::RiemannianMlp(m) = model else { bail!("not a Riemannian checkpoint") };
        let mut c = RunConfig::of_record(r);
        c.model = Some(self.name().into());
        c.hidden = Some(m.mlp.hidden.clone());
        c.activation = Some(m.mlp.activation.to_string());
        c.manifold = Some(m.manifold.to_string());
        c.scheduler = r.scheduler.map(|k| k.to_string());
        Ok(c)
    }

    fn resume(&'static self, record: &RunRecord, model: &ModelConfig) -> Result<RunSettings> {
        let mut s = self.resolve(&self.config_of_record(record, model)?)?;
        if let Some(k) = record.scheduler {
            s.flow_matching.scheduler = k;
        }
        Ok(s)
    }

    fn prepare_data(&self, s: &RunSettings, data: &mut TrainingData) -> Result<()> {
        let name = s.manifold.as_deref().or(data.default_manifold()).unwrap_or("sphere");
        let spec = ManifoldSpec::with_chart_dim(name, Some(data.dim())).context("--manifold")?;
        data.embed_on_manifold(&spec)
    }

    fn configure(&self, s: &RunSettings, data: &TrainingData) -> Result<ModelConfig> {
        let manifold =
            data.manifold().with_context(|| format!("--data {}: not on a manifold", s.data))?.clone();
        let config = RiemannianMlpConfig {
            mlp: MlpConfig {
                dim: manifold.ambient_dim(),
                hidden: s.network.hidden.clone(),
                activation: s.network.activation,
            },
            manifold,
        };
        config.validate().context("--model riemannian")?;
        Ok(ModelConfig::RiemannianMlp(config))
    }

    fn trainer(
        &self,
        model: &ModelConfig,
        s: &RunSettings,
        _data: &TrainingData,
        device: &Device,
    ) -> Result<Box<dyn Trainer>> {
        let ModelConfig::RiemannianMlp(config) = model else { bail!("not a Riemannian configuration") };
        let mut init_rng = SeededRng::for_stream(s.seed, "init");
        let (mlp, varmap) = VelocityMlp::init(&config.mlp, &mut init_rng, DType::F32, device)?;
        Ok(Box::new(RiemannianTrainer {
            mlp,
            varmap,
            manifold: config.manifold.build(),
            path: GeodesicPath::new(s.flow_matching.scheduler)?,
        }))
    }

    fn load(
        &self,
        model: &ModelConfig,
        tensors: HashMap<String, Tensor>,
        _record: &RunRecord,
        device: &Device,
    ) -> Result<Box<dyn TrainedModel>> {
        let ModelConfig::RiemannianMlp(config) = model else { bail!("not a Riemannian checkpoint") };
        let mlp = VelocityMlp::new(&config.mlp, VarBuilder::from_tensors(tensors, DType::F32, device))?;
        Ok(Box::new(RiemannianModel { mlp, manifold: config.manifold.build() }))
    }

    fn record(&self, s: &RunSettings, r: &mut RunRecord) {
        r.scheduler = Some(s.flow_matching.scheduler);
        r.objective = "riemannian-cfm".into();
    }

    fn describe_model(&self, model: &ModelConfig) -> String {
        match model {
            ModelConfig::RiemannianMlp(m) => format!(
                "MLP {} {} on {}, projected onto its tangent spaces",
                widths_label(m.mlp.dim + 1, &m.mlp.hidden, m.mlp.dim, m.mlp.num_parameters()),
                m.mlp.activation,
                m.manifold
            ),
            other => format!("{other:?}"),
        }
    }

    fn describe_objective(&self, _s: &RunSettings) -> String {
        "Riemannian flow matching".into()
    }

    fn describe_path(&self, s: &RunSettings) -> String {
        format!(", geodesic path κ = {}", s.flow_matching.scheduler)
    }
}

struct RiemannianTrainer {
    mlp: VelocityMlp,
    varmap: VarMap,
    manifold: Box<dyn Manifold>,
    path: GeodesicPath,
}

impl Trainer for RiemannianTrainer {
    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    fn step(&mut self, cx: &mut StepContext<'_>) -> Result<f64> {
        let x1 = cx.data.batch(cx.settings.batch_size, cx.data_rng)?.to_device(cx.device)?;
        Ok(mlp_riemannian_train_step(
            &self.mlp,
            self.manifold.as_ref(),
            &self.path,
            cx.opt,
            &x1,
            cx.train_rng,
        )?)
    }
}

/// A trained Riemannian model: the network and its manifold.
struct RiemannianModel {
    mlp: VelocityMlp,
    manifold: Box<dyn Manifold>,
}

impl TrainedModel for RiemannianModel {
    fn dim(&self) -> usize {
        self.manifold.ambient_dim()
    }

    fn generate(
        &self,
        x0: &Tensor,
        request: &SampleRequest,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Generated> {
        if request.class.is_some() || request.cfg_scale != 0.0 {
            bail!("--class and --cfg-scale apply to class-conditional image models");
        }
        if request.stochastic.is_some() || request.hybrid.is_some() {
            bail!("a Riemannian model samples by its ODE only (no --sde, --langevin or --hybrid)");
        }
        // N(0, I) draws in the embedding, projected: the uniform base on compact factors.
        let x0 = self.manifold.project(x0)?;
        let keep = request.trajectory_rows > 0;
        let grid = request.solver.grid()?;
        let sol = sample_on_manifold(
            self.manifold.as_ref(),
            &self.mlp,
            &x0,
            &request.solver.method,
            &grid,
            Retraction::Project,
            keep,
        )
        .with_context(|| format!("sampling with {}", request.solver.label))?;
        progress(x0.dim(0)?);
        let trajectory = super::first_rows(sol.trajectory, request.trajectory_rows)?;
        Ok(Generated { samples: sol.state, trajectory, nfe: sol.stats.nfe })
    }

    fn log_likelihood(
        &self,
        x: &Tensor,
        solver: &SolverChoice,
        divergence: Divergence,
        rng: &mut SeededRng,
    ) -> Result<ModelLikelihood> {
        let grid = solver.backward_grid()?;
        let res = riemannian_log_likelihood(
            self.manifold.as_ref(),
            &self.mlp,
            x,
            divergence,
            &solver.method,
            &grid,
            rng,
        )
        .with_context(|| format!("likelihood solve with {}", solver.label))?;
        Ok(ModelLikelihood { log_p: res.log_p_vec()?, nfe: res.nfe })
    }
}

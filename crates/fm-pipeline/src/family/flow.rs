//! Discrete normalizing flows — planar (Rezende & Mohamed 2015) and RealNVP
//! (Dinh et al. 2017) — trained by maximum likelihood (forward KL); sampling is
//! one pass through the layers and the density is exact (no ODE).

use std::collections::HashMap;

use candle::{DType, Device, Tensor};
use candle_nn::VarMap;
use fm_core::divergence::Divergence;
use fm_core::SeededRng;
use fm_models::flows::{CouplingMask, NormalizingFlow, PlanarConfig, RealNvpConfig};
use fm_models::{Activation, ModelConfig};

use super::{finite, Family, Generated, ModelLikelihood, SampleRequest, StepContext, TrainedModel, Trainer};
use crate::error::bail;
use crate::settings::{self, Defaults, FLOW_MATCHING_FLAGS, UNET_FLAGS};
use crate::{Result, ResultExt, RunConfig, RunRecord, RunSettings, SolverChoice, TrainingData};

/// RealNVP's logit margin γ for images (Dinh et al. 2017).
const IMAGE_LOGIT_GAMMA: f64 = 0.05;

/// A normalizing-flow family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Planar layers.
    Planar,
    /// RealNVP affine couplings (checkerboard masks and logit pre-processing on images).
    RealNvp,
}

impl Family for Flow {
    fn name(&self) -> &'static str {
        match self {
            Flow::Planar => "planar",
            Flow::RealNvp => "realnvp",
        }
    }

    fn accepts(&self, name: &str) -> bool {
        match self {
            Flow::Planar => name.eq_ignore_ascii_case("planar"),
            Flow::RealNvp => {
                matches!(name.to_ascii_lowercase().as_str(), "realnvp" | "real-nvp" | "real_nvp")
            }
        }
    }

    fn owns(&self, model: &ModelConfig) -> bool {
        matches!(
            (self, model),
            (Flow::Planar, ModelConfig::Planar(_)) | (Flow::RealNvp, ModelConfig::RealNvp(_))
        )
    }

    fn resolve(&'static self, c: &RunConfig) -> Result<RunSettings> {
        let mut refused = c.given_of(FLOW_MATCHING_FLAGS);
        if *self == Flow::Planar {
            refused.extend(c.given_of(&["--hidden", "--activation"]));
        }
        if !refused.is_empty() {
            bail!(
                "{} do(es) not apply to --model {} (a discrete flow: trained by maximum likelihood, \
                 sampled without an ODE solver)",
                refused.join(", "),
                self.name()
            );
        }
        settings::refuse(c, UNET_FLAGS, "only applies to --model unet")?;
        let data = c.data.as_deref().unwrap_or("moons");
        let stem =
            format!("{}-{}", data.trim_start_matches("csv:").replace(['/', '\\', '.'], "_"), self.name());
        let defaults = Defaults {
            data: Some("moons"),
            noise: Some(0.05),
            steps: 5000,
            batch_size: 256,
            lr: 1e-3,
            out_stem: Some(stem),
        };
        let mut s = settings::common(c, self, defaults)?;
        s.network.layers = c.layers.unwrap_or(match self {
            Flow::Planar => 16,
            Flow::RealNvp => 8,
        });
        if s.network.layers == 0 {
            bail!("--layers must be at least 1, got 0");
        }
        s.network.hidden = settings::hidden(c, &[64, 64])?;
        s.network.activation = settings::activation(c, Activation::Elu)?;
        Ok(s)
    }

    fn config_of_record(&self, r: &RunRecord, model: &ModelConfig) -> Result<RunConfig> {
        let mut c = RunConfig::of_record(r);
        c.model = Some(self.name().into());
        match model {
            ModelConfig::Planar(p) => c.layers = Some(p.layers),
            ModelConfig::RealNvp(p) => {
                c.layers = Some(p.layers);
                c.hidden = Some(p.hidden.clone());
                c.activation = Some(p.activation.to_string());
            }
            other => bail!("not a flow checkpoint ({other:?})"),
        }
        Ok(c)
    }

    fn configure(&self, s: &RunSettings, data: &TrainingData) -> Result<ModelConfig> {
        Ok(match self {
            Flow::Planar => ModelConfig::Planar(PlanarConfig { dim: data.dim(), layers: s.network.layers }),
            Flow::RealNvp => {
                let mut c = RealNvpConfig::new(data.dim(), s.network.layers, &s.network.hidden);
                c.activation = s.network.activation;
                if let Some(info) = data.image_info() {
                    // Images: RealNVP's checkerboard masks and logit pre-processing.
                    c.mask = CouplingMask::Checkerboard { height: info.height, width: info.width };
                    c.logit = Some(IMAGE_LOGIT_GAMMA);
                }
                ModelConfig::RealNvp(c)
            }
        })
    }

    fn trainer(
        &self,
        model: &ModelConfig,
        s: &RunSettings,
        data: &TrainingData,
        device: &Device,
    ) -> Result<Box<dyn Trainer>> {
        if data.is_paired() {
            bail!(
                "--data {}: coupled pairs train velocity models (reflow); a {} has no coupling",
                s.data,
                self.name()
            );
        }
        let mut init_rng = SeededRng::for_stream(s.seed, "init");
        let (flow, varmap) = NormalizingFlow::init(model, &mut init_rng, DType::F32, device)
            .with_context(|| format!("--model {} on {} ({}-D data)", self.name(), s.data, data.dim()))?;
        Ok(Box::new(FlowTrainer { flow, varmap }))
    }

    fn load(
        &self,
        model: &ModelConfig,
        tensors: HashMap<String, Tensor>,
        _record: &RunRecord,
        device: &Device,
    ) -> Result<Box<dyn TrainedModel>> {
        let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, device);
        let flow = NormalizingFlow::new(model, vb).context("cannot build the flow")?;
        Ok(Box::new(TrainedFlow { flow }))
    }

    fn record(&self, _s: &RunSettings, r: &mut RunRecord) {
        r.objective = "forward-kl".into();
    }

    fn describe_model(&self, model: &ModelConfig) -> String {
        let params: usize = model.parameter_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum();
        let what = match model {
            ModelConfig::Planar(c) => format!("planar flow, K = {}", c.layers),
            ModelConfig::RealNvp(c) => format!(
                "RealNVP flow, K = {} {}couplings with {} conditioners{}",
                c.layers,
                if matches!(c.mask, CouplingMask::Checkerboard { .. }) { "checkerboard " } else { "" },
                c.hidden.iter().map(|h| h.to_string()).collect::<Vec<_>>().join("-"),
                c.logit.map_or(String::new(), |g| format!(", logit pre-processing (γ = {g})"))
            ),
            other => format!("{other:?}"),
        };
        format!("{what} ({params} parameters)")
    }

    fn describe_objective(&self, _s: &RunSettings) -> String {
        "maximum likelihood".into()
    }

    fn solves_ode(&self) -> bool {
        false
    }

    fn exact_likelihood(&self) -> bool {
        true
    }

    fn loss_name(&self) -> &'static str {
        "training NLL in model units"
    }
}

struct FlowTrainer {
    flow: NormalizingFlow,
    varmap: VarMap,
}

impl Trainer for FlowTrainer {
    fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// One maximum-likelihood step; the batch's NLL (model units).
    fn step(&mut self, cx: &mut StepContext<'_>) -> Result<f64> {
        let x = cx.data.batch(cx.settings.batch_size, cx.data_rng)?.to_device(cx.device)?;
        let loss = self.flow.forward_kl_loss(&x)?;
        let value = finite(&loss)?;
        cx.opt.backward_step(&loss)?;
        Ok(value)
    }
}

struct TrainedFlow {
    flow: NormalizingFlow,
}

impl TrainedModel for TrainedFlow {
    fn dim(&self) -> usize {
        self.flow.dim()
    }

    /// One pass through the layers; the "trajectory" is the state after every layer.
    fn generate(
        &self,
        x0: &Tensor,
        request: &SampleRequest,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Generated> {
        if request.class.is_some() || request.cfg_scale != 0.0 {
            bail!("--class and --cfg-scale apply to class-conditional image models (U-Nets)");
        }
        if request.stochastic.is_some() {
            bail!(
                "--sampler sde|langevin applies to velocity models; a normalizing flow samples in one pass"
            );
        }
        let rows = request.trajectory_rows.min(x0.dim(0)?);
        let mut z = x0.clone();
        let mut trajectory = Vec::new();
        if rows > 0 {
            trajectory.push(z.narrow(0, 0, rows)?);
        }
        for layer in self.flow.layers() {
            z = layer.forward(&z)?.0;
            if rows > 0 {
                trajectory.push(z.narrow(0, 0, rows)?);
            }
        }
        progress(x0.dim(0)?);
        if z.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?.iter().any(|v| !v.is_finite()) {
            bail!("the flow produced non-finite samples");
        }
        Ok(Generated { samples: z, trajectory, nfe: 0 })
    }

    /// The exact change of variables; the solver and divergence do not apply.
    fn log_likelihood(
        &self,
        x: &Tensor,
        _solver: &SolverChoice,
        _divergence: Divergence,
        _rng: &mut SeededRng,
    ) -> Result<ModelLikelihood> {
        let log_p = self.flow.log_prob(x)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        Ok(ModelLikelihood { log_p, nfe: 0 })
    }

    fn image_shape(&self) -> Option<crate::ImageShape> {
        match self.flow.config() {
            Some(ModelConfig::RealNvp(RealNvpConfig {
                mask: CouplingMask::Checkerboard { height, width },
                dim,
                ..
            })) => {
                Some(crate::ImageShape { channels: dim / (height * width), height: *height, width: *width })
            }
            _ => None,
        }
    }
}

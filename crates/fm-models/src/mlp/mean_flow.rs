//! The MeanFlow MLP: the average velocity `ū_θ(x, s, t) = MLP(concat(s, t, x))`
//! with an exact forward-mode tangent in all three inputs
//! ([`fm_core::mean_flow`]).

use candle::{DType, Device, Tensor};
use candle_nn::{Linear, Module, VarBuilder, VarMap};
use fm_core::mean_flow::AverageVelocityField;
use fm_core::{SeededRng, VelocityField};
use serde::{Deserialize, Serialize};

use super::model::{layer_shapes, linear_init, linear_layers, validate_widths};
use crate::{Activation, Error, Result};

/// Configuration of a [`MeanFlowMlp`]: input `d + 2` (`s`, `t`, `x`), output `d`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeanFlowConfig {
    /// Data dimension `d`.
    pub dim: usize,
    /// Hidden widths.
    pub hidden: Vec<usize>,
    /// The nonlinearity after every hidden layer.
    pub activation: Activation,
}

impl MeanFlowConfig {
    /// Checks the configuration and its sizes (as [`crate::MlpConfig::validate`]); the error names the field.
    pub fn validate(&self) -> Result<()> {
        validate_widths(self.dim, &self.hidden, || self.parameter_shapes())
    }

    /// The parameters' names and shapes (`net.0`, `net.2`, … as the MLP's).
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut w = vec![self.dim + 2];
        w.extend(&self.hidden);
        w.push(self.dim);
        layer_shapes(&w)
    }

    /// The number of trainable parameters.
    pub fn num_parameters(&self) -> usize {
        self.parameter_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }
}

/// The average-velocity network of MeanFlow.
///
/// ```
/// use candle::{DType, Device, Tensor};
/// use fm_core::mean_flow::{mean_flow_sample, AverageVelocityField};
/// use fm_core::SeededRng;
/// use fm_models::{Activation, MeanFlowConfig, MeanFlowMlp};
/// # fn main() -> anyhow::Result<()> {
/// let config = MeanFlowConfig { dim: 2, hidden: vec![32, 32], activation: Activation::Silu };
/// let (net, _vars) = MeanFlowMlp::init(&config, &mut SeededRng::new(0), DType::F32, &Device::Cpu)?;
/// let x0 = SeededRng::new(1).normal((5, 2), DType::F32, &Device::Cpu)?;
/// let (x1, nfe) = mean_flow_sample(&net, &x0, 1)?; // one step: x₀ + ū(x₀, 0, 1)
/// assert_eq!((x1.dims(), nfe), (&[5usize, 2][..], 1));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MeanFlowMlp {
    config: MeanFlowConfig,
    layers: Vec<Linear>,
}

impl MeanFlowMlp {
    /// Builds the model from a [`VarBuilder`].
    pub fn new(config: &MeanFlowConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        Ok(Self { config: config.clone(), layers: linear_layers(&config.parameter_shapes(), &vb)? })
    }

    /// A freshly initialised model (PyTorch's `nn.Linear` default from `rng`) and its variables.
    pub fn init(
        config: &MeanFlowConfig,
        rng: &mut SeededRng,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, VarMap)> {
        config.validate()?;
        let varmap = linear_init(&config.parameter_shapes(), rng, dtype, device)?;
        let vb = VarBuilder::from_varmap(&varmap, dtype, device);
        Ok((Self::new(config, vb)?, varmap))
    }

    /// The model's configuration.
    pub fn config(&self) -> &MeanFlowConfig {
        &self.config
    }

    /// A copy whose weights are plain tensors (no autograd graph when evaluated).
    pub fn detached(&self) -> Self {
        let layers = self
            .layers
            .iter()
            .map(|l| Linear::new(l.weight().detach(), l.bias().map(|b| b.detach())))
            .collect();
        Self { config: self.config.clone(), layers }
    }

    fn input(&self, x: &Tensor, s: &Tensor, t: &Tensor) -> Result<Tensor> {
        let (b, d) = x.dims2()?;
        if d != self.config.dim || s.dims() != [b] || t.dims() != [b] {
            return Err(Error::Config {
                field: "dim",
                reason: format!(
                    "the model takes {}-dimensional points with one (s, t) per row; got x {:?}, s {:?}, t {:?}",
                    self.config.dim,
                    x.dims(),
                    s.dims(),
                    t.dims()
                ),
            });
        }
        let s = s.to_dtype(x.dtype())?.reshape((b, 1))?;
        let t = t.to_dtype(x.dtype())?.reshape((b, 1))?;
        Ok(Tensor::cat(&[&s, &t, x], 1)?)
    }

    /// `ū(x, s, t)` and, when `tangent` (`(b, d + 2)` in the input's order
    /// `s, t, x`) is given, its directional derivative by forward mode.
    fn forward(&self, input: &Tensor, tangent: Option<&Tensor>) -> Result<(Tensor, Option<Tensor>)> {
        let mut h = input.clone();
        let mut tg = tangent.cloned();
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            let pre = layer.forward(&h)?;
            let tpre = match &tg {
                Some(v) => Some(v.matmul(&layer.weight().t()?)?),
                None => None,
            };
            if i < last {
                if let Some(tp) = tpre {
                    tg = Some((tp * self.config.activation.derivative(&pre)?)?);
                }
                h = self.config.activation.forward(&pre)?;
            } else {
                return Ok((pre, tpre));
            }
        }
        Err(Error::Config { field: "hidden", reason: "the MLP has no layers".into() })
    }
}

impl AverageVelocityField for MeanFlowMlp {
    fn average_velocity(&self, x: &Tensor, s: &Tensor, t: &Tensor) -> fm_core::Result<Tensor> {
        let input = self.input(x, s, t).map_err(to_core)?;
        Ok(self.forward(&input, None).map_err(to_core)?.0)
    }

    fn average_velocity_and_tangent(
        &self,
        x: &Tensor,
        s: &Tensor,
        t: &Tensor,
        dx: &Tensor,
        ds: &Tensor,
        dt: &Tensor,
    ) -> fm_core::Result<(Tensor, Tensor)> {
        let input = self.input(x, s, t).map_err(to_core)?;
        let tangent = self.input(&dx.to_dtype(x.dtype())?, ds, dt).map_err(to_core)?;
        let (out, tan) = self.forward(&input, Some(&tangent)).map_err(to_core)?;
        let tan = tan.ok_or_else(|| fm_core::Error::invalid("tangent", "no tangent was propagated"))?;
        Ok((out, tan))
    }
}

/// The instantaneous velocity `u(x, t) = ū(x, t, t)` (for analyses and ODE sampling).
impl VelocityField for MeanFlowMlp {
    fn velocity(&self, x: &Tensor, t: &Tensor) -> fm_core::Result<Tensor> {
        self.average_velocity(x, t, t)
    }
}

fn to_core(e: Error) -> fm_core::Error {
    fm_core::Error::invalid("mean-flow model", e.to_string())
}

/// One MeanFlow optimisation step with an explicit backward pass: the
/// target `u_c + (t − s)(∂ₓū·u_c + ∂ₛū)` by the graph-free forward-mode pass
/// (it is held fixed), then the MLP's regression gradients of
/// `mean ‖ū(x_s, s, t) − target‖²` (the loss of
/// [`fm_core::mean_flow::mean_flow_loss`], same value to rounding), then
/// `opt`. Returns the batch loss.
///
/// # Shapes
/// - `x0`, `x1`: `(b, d)`; `s`, `t`: `(b,)`
///
/// # Errors
/// [`Error::Core`] naming `loss` when it is not finite (before the weights
/// are touched); tensor errors.
pub fn mean_flow_train_step<S: fm_core::scheduler::Scheduler, O: crate::optim::GradientStep + ?Sized>(
    model: &MeanFlowMlp,
    path: &fm_core::path::AffinePath<S>,
    opt: &mut O,
    x0: &Tensor,
    x1: &Tensor,
    s: &Tensor,
    t: &Tensor,
) -> Result<f64> {
    let sample = path.sample(x0, x1, s)?;
    let plain = model.detached();
    let (_, tangent) = plain.average_velocity_and_tangent(
        &sample.x_t,
        s,
        t,
        &sample.dx_t,
        &s.ones_like()?,
        &s.zeros_like()?,
    )?;
    let gap = (t - s)?.unsqueeze(1)?;
    let target = (&sample.dx_t + tangent.broadcast_mul(&gap)?)?;
    let input = model.input(&sample.x_t, s, t)?;
    let g = super::backward::mse_gradients(&model.layers, model.config.activation, &input, &target)?;
    if !g.loss.is_finite() {
        return Err(Error::Core(fm_core::Error::invalid(
            "loss",
            format!("the training loss became {}; lower the learning rate", g.loss),
        )));
    }
    super::backward::apply_gradients(&g, opt)?;
    Ok(g.loss)
}

//! The MLP velocity field `u_θ(x, t) = MLP(concat(t, x))`.

use candle::{DType, Device, Tensor, Var};
use candle_nn::{Linear, Module, VarBuilder, VarMap};
use fm_core::{SeededRng, VelocityField};
use serde::{Deserialize, Serialize};

use crate::{limits, Activation, Error, Result};

/// Configuration of a [`VelocityMlp`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
    /// Data dimension `d` (input `d + 1` with the time, output `d`).
    pub dim: usize,
    /// Hidden widths, e.g. `[64, 64, 64]`.
    pub hidden: Vec<usize>,
    /// The nonlinearity after every hidden layer.
    pub activation: Activation,
}

impl MlpConfig {
    /// The flow-matching guide's model for 2-D data: `3 → 64 → 64 → 64 → 2`, ELU (8,706 parameters).
    pub fn guide(dim: usize) -> Self {
        Self { dim, hidden: vec![64, 64, 64], activation: Activation::Elu }
    }

    /// Checks the configuration, sizes included (at most
    /// [`limits::MAX_LAYERS`](crate::limits::MAX_LAYERS) hidden layers, no
    /// weight above [`limits::MAX_TENSOR_ELEMENTS`](crate::limits::MAX_TENSOR_ELEMENTS)
    /// elements, at most [`limits::MAX_PARAMETERS`](crate::limits::MAX_PARAMETERS)
    /// parameters); the error names the field.
    pub fn validate(&self) -> Result<()> {
        validate_widths(self.dim, &self.hidden, || self.parameter_shapes())
    }

    /// Layer widths from input to output: `[d + 1, h₁, …, h_k, d]`.
    fn widths(&self) -> Vec<usize> {
        let mut w = vec![self.dim + 1];
        w.extend(&self.hidden);
        w.push(self.dim);
        w
    }

    /// The parameters' names and shapes, in layer order.
    ///
    /// Names follow PyTorch's `nn.Sequential` numbering (`net.0`, `net.2`, …,
    /// activations at the odd indices), as in the flow-matching guide's
    /// `Flow` module, so its state dict maps one to one.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        layer_shapes(&self.widths())
    }

    /// The number of trainable parameters.
    pub fn num_parameters(&self) -> usize {
        self.parameter_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }
}

/// Parameter names and shapes of an MLP with layer `widths` (input to
/// output): PyTorch's `nn.Sequential` numbering, `net.0`, `net.2`, ….
pub(crate) fn layer_shapes(widths: &[usize]) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    for (k, pair) in widths.windows(2).enumerate() {
        out.push((format!("net.{}.weight", 2 * k), vec![pair[1], pair[0]]));
        out.push((format!("net.{}.bias", 2 * k), vec![pair[1]]));
    }
    out
}

/// Checks an MLP's `dim` and `hidden` widths and bounds its sizes (the
/// error names the field); `shapes` lists its parameters.
pub(crate) fn validate_widths(
    dim: usize,
    hidden: &[usize],
    shapes: impl FnOnce() -> Vec<(String, Vec<usize>)>,
) -> Result<()> {
    if dim == 0 {
        return Err(Error::Config { field: "dim", reason: "must be at least 1".into() });
    }
    if hidden.is_empty() || hidden.contains(&0) {
        return Err(Error::Config {
            field: "hidden",
            reason: format!("needs at least one layer and no zero width, got {hidden:?}"),
        });
    }
    // The input width and the list of `hidden.len() + 1` layers below stay small.
    limits::check_elements("dim", "the data dimension", Some(dim as u64))?;
    limits::check_layers("hidden", "hidden layers", Some(hidden.len() as u64))?;
    limits::check_parameter_sizes(
        shapes().iter().map(|(n, s)| (n.as_str(), s.as_slice())),
        |_| "hidden",
        "hidden",
    )
}

/// The linear layers of `(weight, bias)` parameter pairs, from `vb`.
pub(crate) fn linear_layers(shapes: &[(String, Vec<usize>)], vb: &VarBuilder) -> Result<Vec<Linear>> {
    shapes
        .chunks_exact(2)
        .map(|pair| {
            let w = vb.get(pair[0].1.as_slice(), &pair[0].0)?;
            let b = vb.get(pair[1].1.as_slice(), &pair[1].0)?;
            Ok(Linear::new(w, Some(b)))
        })
        .collect()
}

/// PyTorch's `nn.Linear` initialisation of `(weight, bias)` pairs: both
/// uniform in `±1/√fan_in`, drawn from `rng` in order.
pub(crate) fn linear_init(
    shapes: &[(String, Vec<usize>)],
    rng: &mut SeededRng,
    dtype: DType,
    device: &Device,
) -> Result<VarMap> {
    let varmap = VarMap::new();
    {
        let mut data = varmap.data().lock().map_err(|_| Error::Config {
            field: "varmap",
            reason: "the variable map's lock is poisoned".into(),
        })?;
        for pair in shapes.chunks_exact(2) {
            let bound = 1.0 / (pair[0].1[1] as f64).sqrt();
            for (name, shape) in pair {
                let t = rng.uniform(shape.as_slice(), -bound, bound, dtype, device)?;
                data.insert(name.clone(), Var::from_tensor(&t)?);
            }
        }
    }
    Ok(varmap)
}

/// An MLP velocity field on `concat(t, x)`.
///
/// # Shapes
/// - `x`: `(b, d)`, `t`: `(b,)` → `(b, d)`
///
/// ```
/// use candle::{DType, Device, Tensor};
/// use fm_core::{SeededRng, VelocityField};
/// use fm_models::{MlpConfig, VelocityMlp};
/// # fn main() -> anyhow::Result<()> {
/// let config = MlpConfig::guide(2);
/// let (mlp, varmap) = VelocityMlp::init(&config, &mut SeededRng::new(0), DType::F32, &Device::Cpu)?;
/// assert_eq!(varmap.all_vars().len(), 8);
/// assert_eq!(config.num_parameters(), 8706);
/// let x = Tensor::zeros((5, 2), DType::F32, &Device::Cpu)?;
/// let t = Tensor::zeros(5, DType::F32, &Device::Cpu)?;
/// assert_eq!(mlp.velocity(&x, &t)?.dims(), &[5, 2]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct VelocityMlp {
    config: MlpConfig,
    layers: Vec<Linear>,
}

impl VelocityMlp {
    /// Builds the model from a [`VarBuilder`] (weights from a file, a map, or a [`VarMap`]).
    pub fn new(config: &MlpConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        Ok(Self { config: config.clone(), layers: linear_layers(&config.parameter_shapes(), &vb)? })
    }

    /// A freshly initialised, trainable model and the [`VarMap`] holding its weights.
    ///
    /// Initialisation is PyTorch's `nn.Linear` default (weights and biases
    /// uniform in `±1/√fan_in`), drawn from `rng`: the same seed gives the same weights.
    pub fn init(
        config: &MlpConfig,
        rng: &mut SeededRng,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, VarMap)> {
        config.validate()?;
        let varmap = linear_init(&config.parameter_shapes(), rng, dtype, device)?;
        let vb = VarBuilder::from_varmap(&varmap, dtype, device);
        Ok((Self::new(config, vb)?, varmap))
    }

    /// A copy whose weights are plain tensors (sharing storage with `self`'s),
    /// not variables: evaluating it builds no autograd graph, which is what
    /// inference (sampling, likelihood) wants.
    pub fn detached(&self) -> Result<Self> {
        let layers = self
            .layers
            .iter()
            .map(|l| Linear::new(l.weight().detach(), l.bias().map(|b| b.detach())))
            .collect();
        Ok(Self { config: self.config.clone(), layers })
    }

    /// The linear layers, input to output.
    pub(crate) fn layers(&self) -> &[Linear] {
        &self.layers
    }

    /// The model's configuration.
    pub fn config(&self) -> &MlpConfig {
        &self.config
    }

    /// Applies the network to an already concatenated input `(b, d + 1)`.
    pub fn forward_raw(&self, input: &Tensor) -> Result<Tensor> {
        let mut h = input.clone();
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h)?;
            if i < last {
                h = self.config.activation.forward(&h)?;
            }
        }
        Ok(h)
    }
}

impl VelocityMlp {
    /// The velocity and its exact divergence in one forward pass, by forward-mode
    /// differentiation: the `d` tangents `∂h/∂x_i` are pushed through every layer
    /// beside the activations (`W · tangent`, then `σ'(pre) ⊙ tangent`).
    ///
    /// Everything is built from first-order candle ops, so a loss on the
    /// divergence (CNF maximum likelihood) backpropagates exactly with no
    /// second-order autograd (`CANDLE_GRAD_DO_NOT_DETACH` is not needed).
    /// The cost is that of `d + 1` forward passes, batched into one.
    ///
    /// # Shapes
    /// - `x`: `(b, d)`, `t`: `(b,)`
    /// - returns `u`: `(b, d)` and `∇·u`: `(b,)`
    ///
    /// Without gradients to track (inference, likelihood), f32 CPU tensors go
    /// through a graph-free blocked pass on all of candle's threads.
    pub fn velocity_and_divergence(&self, x: &Tensor, t: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, d) = x.dims2()?;
        if d == self.config.dim && t.dims() == [b] {
            if let Some(r) = self.velocity_and_divergence_blocked(x, &t.to_dtype(x.dtype())?)? {
                return Ok(r);
            }
        }
        self.velocity_and_divergence_tensors(x, t)
    }

    /// [`velocity_and_divergence`](Self::velocity_and_divergence) by candle tensor ops.
    pub(crate) fn velocity_and_divergence_tensors(&self, x: &Tensor, t: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, d) = x.dims2()?;
        if d != self.config.dim {
            return Err(Error::Config {
                field: "dim",
                reason: format!(
                    "the model takes {}-dimensional points, got shape ({b}, {d})",
                    self.config.dim
                ),
            });
        }
        let t = t.to_dtype(x.dtype())?.reshape((b, 1))?;
        let mut h = Tensor::cat(&[&t, x], 1)?;
        // Tangents (d, b, width): ∂h/∂x_i for each input coordinate i.
        let mut tangent: Option<Tensor> = None;
        let last = self.layers.len() - 1;
        for (k, layer) in self.layers.iter().enumerate() {
            let pre = layer.forward(&h)?;
            let width = pre.dim(1)?;
            let w = layer.weight(); // (width, in)
            let tpre = match &tangent {
                // First layer: ∂pre/∂x_i is the weight column of x_i (after t's column), for every row.
                None => w.narrow(1, 1, d)?.t()?.unsqueeze(1)?.broadcast_as((d, b, width))?.contiguous()?,
                Some(tg) => {
                    let in_w = tg.dim(2)?;
                    tg.reshape((d * b, in_w))?.matmul(&w.t()?)?.reshape((d, b, width))?
                }
            };
            if k < last {
                let slope = self.config.activation.derivative(&pre)?;
                tangent = Some(tpre.broadcast_mul(&slope.unsqueeze(0)?)?);
                h = self.config.activation.forward(&pre)?;
            } else {
                // Output tangents (d, b, d): J[:, :, i] column i; the divergence is the trace.
                let eye = Tensor::eye(d, x.dtype(), x.device())?.unsqueeze(1)?; // (d, 1, d)
                let div = tpre.broadcast_mul(&eye)?.sum(2)?.sum(0)?;
                return Ok((pre, div));
            }
        }
        Err(Error::Config { field: "hidden", reason: "the MLP has no layers".into() })
    }
}

impl VelocityMlp {
    /// The velocity and its Jacobian–vector products `J_x u · v` for `k`
    /// tangents per row, by forward-mode differentiation (the tangents are
    /// pushed through every layer beside the activations, as in
    /// [`VelocityMlp::velocity_and_divergence`]). First-order ops only, so a
    /// loss on `J v` (the Jacobian penalty) backpropagates exactly.
    /// The cost is that of `k + 1` forward passes.
    ///
    /// # Shapes
    /// - `x`: `(b, d)`, `t`: `(b,)`, `v`: `(k, b, d)`
    /// - returns `u`: `(b, d)` and `J v`: `(k, b, d)`
    ///
    /// Without gradients to track (the Hutchinson likelihood), f32 CPU tensors
    /// go through a graph-free blocked pass on all of candle's threads.
    pub fn velocity_and_jvp(&self, x: &Tensor, t: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, d) = x.dims2()?;
        if d == self.config.dim && t.dims() == [b] {
            if let Some(r) = self.velocity_and_jvp_blocked(x, &t.to_dtype(x.dtype())?, v)? {
                return Ok(r);
            }
        }
        self.velocity_and_jvp_tensors(x, t, v)
    }

    /// [`velocity_and_jvp`](Self::velocity_and_jvp) by candle tensor ops.
    pub(crate) fn velocity_and_jvp_tensors(
        &self,
        x: &Tensor,
        t: &Tensor,
        v: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let (b, d) = x.dims2()?;
        let (k, vb, vd) = v.dims3()?;
        if d != self.config.dim || (vb, vd) != (b, d) {
            return Err(Error::Config {
                field: "dim",
                reason: format!(
                    "the model takes {}-dimensional points; got x {:?} and tangents {:?}",
                    self.config.dim,
                    x.dims(),
                    v.dims()
                ),
            });
        }
        let t = t.to_dtype(x.dtype())?.reshape((b, 1))?;
        let mut h = Tensor::cat(&[&t, x], 1)?;
        // Tangents (k·b, width); the time does not move.
        let mut tangent = v.to_dtype(x.dtype())?.reshape((k * b, d))?;
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            let pre = layer.forward(&h)?;
            let w = layer.weight(); // (width, in)
            let w_in = if i == 0 { w.narrow(1, 1, d)? } else { w.clone() };
            let tpre = tangent.matmul(&w_in.t()?.contiguous()?)?; // (k·b, width)
            if i < last {
                let slope = self.config.activation.derivative(&pre)?; // (b, width)
                let width = pre.dim(1)?;
                tangent = tpre
                    .reshape((k, b, width))?
                    .broadcast_mul(&slope.unsqueeze(0)?)?
                    .reshape((k * b, width))?;
                h = self.config.activation.forward(&pre)?;
            } else {
                return Ok((pre, tpre.reshape((k, b, d))?));
            }
        }
        Err(Error::Config { field: "hidden", reason: "the MLP has no layers".into() })
    }
}

impl fm_core::jacobian::JvpField for VelocityMlp {
    fn velocity_and_jvp(&self, x: &Tensor, t: &Tensor, v: &Tensor) -> fm_core::Result<(Tensor, Tensor)> {
        VelocityMlp::velocity_and_jvp(self, x, t, v).map_err(|e| match e {
            Error::Candle(c) => fm_core::Error::Candle(c),
            Error::Core(c) => c,
            other => fm_core::Error::Shape(other.to_string()),
        })
    }
}

impl fm_core::DivergenceField for VelocityMlp {
    fn velocity_and_divergence(&self, x: &Tensor, t: &Tensor) -> fm_core::Result<(Tensor, Tensor)> {
        VelocityMlp::velocity_and_divergence(self, x, t).map_err(|e| match e {
            Error::Candle(c) => fm_core::Error::Candle(c),
            Error::Core(c) => c,
            other => fm_core::Error::Shape(other.to_string()),
        })
    }
}

impl VelocityField for VelocityMlp {
    fn velocity(&self, x: &Tensor, t: &Tensor) -> fm_core::Result<Tensor> {
        let (b, d) = x.dims2()?;
        if d != self.config.dim {
            return Err(fm_core::Error::Shape(format!(
                "the model takes {}-dimensional points, got shape ({b}, {d})",
                self.config.dim
            )));
        }
        let t = t.to_dtype(x.dtype())?;
        // Inference on f32 CPU tensors: the blocked path (no graph, no full-batch temporaries).
        if let Some(u) = self.velocity_blocked(x, &t)? {
            return Ok(u);
        }
        let input = Tensor::cat(&[&t.reshape((b, 1))?, x], 1)?;
        self.forward_raw(&input).map_err(|e| match e {
            Error::Candle(c) => fm_core::Error::Candle(c),
            Error::Core(c) => c,
            other => fm_core::Error::Shape(other.to_string()),
        })
    }
}

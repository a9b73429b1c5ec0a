//! RealNVP affine coupling layers (Dinh, Sohl-Dickstein & Bengio, arXiv 1605.08803).

use candle::{Device, Tensor};
use candle_nn::{Linear, Module, VarBuilder};
use serde::{Deserialize, Serialize};

use super::{check_input, FlowLayer, Init};
use crate::{limits, Activation, Error, Result};

/// Which coordinates each coupling layer keeps fixed (mask `β = 1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum CouplingMask {
    /// Vectors: layer `k` conditions on the first `⌊d/2⌋` coordinates when
    /// `k` is even and on the others when `k` is odd ([`halves_mask`]).
    Halves,
    /// Images flattened as `(channels, height, width)` in row-major order:
    /// layer `k` conditions on the pixels with `(i + j + k)` even
    /// ([`checkerboard_mask`], the same pattern in every channel).
    Checkerboard {
        /// Image height.
        height: usize,
        /// Image width.
        width: usize,
    },
}

/// The halves mask of length `d`: `β_j = 1` for `j < ⌊d/2⌋`, flipped when `odd`.
///
/// ```
/// assert_eq!(fm_models::flows::halves_mask(5, false), vec![1.0, 1.0, 0.0, 0.0, 0.0]);
/// assert_eq!(fm_models::flows::halves_mask(5, true), vec![0.0, 0.0, 1.0, 1.0, 1.0]);
/// ```
pub fn halves_mask(d: usize, odd: bool) -> Vec<f64> {
    (0..d).map(|j| if (j < d / 2) != odd { 1.0 } else { 0.0 }).collect()
}

/// The checkerboard mask of a `height × width` image, flattened row-major:
/// `β_{ij} = 1` where `i + j` is even, flipped when `odd`.
///
/// ```
/// assert_eq!(fm_models::flows::checkerboard_mask(2, 3, false), vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
/// ```
pub fn checkerboard_mask(height: usize, width: usize, odd: bool) -> Vec<f64> {
    let mut out = Vec::with_capacity(height * width);
    for i in 0..height {
        for j in 0..width {
            out.push(if ((i + j) % 2 == 0) != odd { 1.0 } else { 0.0 });
        }
    }
    out
}

fn default_scale_factor() -> f64 {
    2.0
}

/// Configuration of a RealNVP flow: `layers` affine couplings with alternating
/// masks, each optionally preceded by an [`super::ActNorm`].
///
/// Parameters of layer `k`: `layers.{k}.coupling.net.{2i}.weight` / `.bias`
/// for the conditioner MLP `d → hidden… → 2d` (PyTorch `nn.Sequential`
/// numbering), and with `actnorm`, `layers.{k}.actnorm.log_scale` / `.bias` `(d,)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RealNvpConfig {
    /// The dimension `d` (at least 2).
    pub dim: usize,
    /// The number of coupling layers.
    pub layers: usize,
    /// Hidden widths of each conditioner MLP.
    pub hidden: Vec<usize>,
    /// The conditioner's nonlinearity.
    pub activation: Activation,
    /// The log-scale bound: `s = scale_factor · tanh(raw)`, so each coupling
    /// scales a coordinate by at most `e^{±scale_factor}`.
    #[serde(default = "default_scale_factor")]
    pub scale_factor: f64,
    /// The mask pattern.
    pub mask: CouplingMask,
    /// Whether each coupling is preceded by a learnable per-dimension affine [`super::ActNorm`].
    #[serde(default)]
    pub actnorm: bool,
    /// RealNVP's logit pre-processing with margin `γ` ([`super::LogitLayer`]) at
    /// the data end, for images scaled to `[−1, 1]`; `None` for other data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit: Option<f64>,
}

impl RealNvpConfig {
    /// `layers` couplings on `ℝ^dim` with halves masks, ELU conditioners of
    /// widths `hidden`, `scale_factor = 2`, no ActNorm.
    pub fn new(dim: usize, layers: usize, hidden: &[usize]) -> Self {
        Self {
            dim,
            layers,
            hidden: hidden.to_vec(),
            activation: Activation::Elu,
            scale_factor: default_scale_factor(),
            mask: CouplingMask::Halves,
            actnorm: false,
            logit: None,
        }
    }

    /// Checks the configuration, sizes included ([`crate::limits`]); the error names the field.
    pub fn validate(&self) -> Result<()> {
        if self.dim < 2 {
            return Err(Error::Config {
                field: "dim",
                reason: format!("a coupling layer needs at least 2 dimensions, got {}", self.dim),
            });
        }
        if self.layers == 0 {
            return Err(Error::Config { field: "layers", reason: "a flow needs at least one layer".into() });
        }
        if self.hidden.is_empty() || self.hidden.contains(&0) {
            return Err(Error::Config {
                field: "hidden",
                reason: format!("needs at least one layer and no zero width, got {:?}", self.hidden),
            });
        }
        if !(self.scale_factor.is_finite() && self.scale_factor > 0.0) {
            return Err(Error::Config {
                field: "scale_factor",
                reason: format!("must be finite and positive, got {}", self.scale_factor),
            });
        }
        if let Some(g) = self.logit {
            if !(0.0..0.5).contains(&g) {
                return Err(Error::Config {
                    field: "logit",
                    reason: format!("γ must be in [0, 0.5), got {g}"),
                });
            }
        }
        if let CouplingMask::Checkerboard { height, width } = self.mask {
            let Some(hw) = height.checked_mul(width) else {
                return Err(Error::Config {
                    field: "mask",
                    reason: format!("a {height}×{width} checkerboard has more pixels than a usize counts"),
                });
            };
            if hw < 2 || !self.dim.is_multiple_of(hw) {
                return Err(Error::Config {
                    field: "mask",
                    reason: format!(
                        "a {height}×{width} checkerboard needs dim a multiple of {hw} (≥ 2), got {}",
                        self.dim
                    ),
                });
            }
        }
        // `2 · dim` and the parameter list below stay small.
        limits::check_elements("dim", "the data dimension", Some(self.dim as u64))?;
        limits::check_layers("layers", "coupling layers", Some(self.layers as u64))?;
        limits::check_layers("hidden", "hidden layers of each conditioner", Some(self.hidden.len() as u64))?;
        let per_layer = 2 * (self.hidden.len() as u64 + 1) + if self.actnorm { 2 } else { 0 };
        limits::check_tensor_count("layers", per_layer.checked_mul(self.layers as u64))?;
        limits::check_parameter_sizes(
            self.parameter_shapes().iter().map(|(n, s)| (n.as_str(), s.as_slice())),
            |_| "hidden",
            "layers",
        )
    }

    /// The mask `β` (1 = conditioning, kept fixed) of coupling layer `k`.
    pub fn mask(&self, k: usize) -> Vec<f64> {
        let odd = k % 2 == 1;
        match self.mask {
            CouplingMask::Halves => halves_mask(self.dim, odd),
            CouplingMask::Checkerboard { height, width } => {
                let one = checkerboard_mask(height, width, odd);
                let channels = self.dim / (height * width).max(1);
                one.iter().copied().cycle().take(one.len() * channels).collect()
            }
        }
    }

    /// The parameters' names and shapes, in layer order.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.parameter_inits().into_iter().map(|(n, s, _)| (n, s)).collect()
    }

    /// The number of trainable parameters.
    pub fn num_parameters(&self) -> usize {
        self.parameter_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }

    /// Conditioner widths `[d, h₁, …, h_k, 2d]`.
    fn widths(&self) -> Vec<usize> {
        let mut w = vec![self.dim];
        w.extend(&self.hidden);
        w.push(2 * self.dim);
        w
    }

    /// Names, shapes and initialisation: PyTorch's `nn.Linear` default for the
    /// conditioners (uniform in `±1/√fan_in`), ActNorm at the identity.
    pub(crate) fn parameter_inits(&self) -> Vec<(String, Vec<usize>, Init)> {
        let widths = self.widths();
        let mut out = Vec::new();
        for k in 0..self.layers {
            if self.actnorm {
                out.push((format!("layers.{k}.actnorm.log_scale"), vec![self.dim], Init::Zeros));
                out.push((format!("layers.{k}.actnorm.bias"), vec![self.dim], Init::Zeros));
            }
            for (i, pair) in widths.windows(2).enumerate() {
                let bound = 1.0 / (pair[0] as f64).sqrt();
                out.push((
                    format!("layers.{k}.coupling.net.{}.weight", 2 * i),
                    vec![pair[1], pair[0]],
                    Init::Uniform(bound),
                ));
                out.push((
                    format!("layers.{k}.coupling.net.{}.bias", 2 * i),
                    vec![pair[1]],
                    Init::Uniform(bound),
                ));
            }
        }
        out
    }
}

/// An affine coupling layer with mask `β` (1 = conditioning coordinates):
///
/// `y = β⊙x + (1−β)⊙(x⊙e^{s(β⊙x)} + t(β⊙x))`, `log|det J| = Σ_j (1−β_j) s_j`,
///
/// where `(raw, t) = MLP(β⊙x)` and `s = scale_factor · tanh(raw)` (a bounded
/// log-scale). The inverse is exact: `x = β⊙y + (1−β)⊙(y − t(β⊙y))⊙e^{−s(β⊙y)}`.
///
/// # Shapes
/// - `mask`: `(d,)`; conditioner `d → hidden… → 2d` (first `d` outputs: raw
///   log-scale, last `d`: shift).
///
/// ```
/// use candle::{DType, Device};
/// use fm_core::SeededRng;
/// use fm_models::flows::{FlowLayer, NormalizingFlow};
/// # fn main() -> anyhow::Result<()> {
/// let mut rng = SeededRng::new(0);
/// let (flow, _varmap) = NormalizingFlow::realnvp(4, 2, &[16], &mut rng, DType::F32, &Device::Cpu)?;
/// let x = rng.normal((8, 4), DType::F32, &Device::Cpu)?;
/// let (y, ld) = flow.layers()[0].forward(&x)?;
/// let (x2, ld_inv) = flow.layers()[0].inverse(&y)?;
/// assert!((x2 - &x)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
/// assert!((ld + ld_inv)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-5);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AffineCoupling {
    mask: Tensor,
    free: Tensor,
    /// `1 − β`, as values.
    free_values: Vec<f64>,
    net: Vec<Linear>,
    activation: Activation,
    scale_factor: f64,
    dim: usize,
}

impl AffineCoupling {
    /// A coupling with mask `mask` (values 0/1, length `d`) whose conditioner
    /// `d → hidden… → 2d` is read from `vb` (`net.{2i}.weight`, `net.{2i}.bias`).
    pub fn new(
        mask: &[f64],
        hidden: &[usize],
        activation: Activation,
        scale_factor: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        let dim = mask.len();
        if mask.iter().any(|&m| m != 0.0 && m != 1.0) {
            return Err(Error::Config { field: "mask", reason: "values must be 0 or 1".into() });
        }
        let kept = mask.iter().filter(|&&m| m == 1.0).count();
        if kept == 0 || kept == dim {
            return Err(Error::Config {
                field: "mask",
                reason: format!("must keep some but not all of the {dim} coordinates, keeps {kept}"),
            });
        }
        let device: &Device = vb.device();
        let mask_t = Tensor::new(mask, device)?.to_dtype(vb.dtype())?;
        let free = mask_t.affine(-1.0, 1.0)?;
        let mut widths = vec![dim];
        widths.extend(hidden);
        widths.push(2 * dim);
        let mut net = Vec::new();
        for (i, pair) in widths.windows(2).enumerate() {
            let w = vb.get((pair[1], pair[0]), &format!("net.{}.weight", 2 * i))?;
            let b = vb.get(pair[1], &format!("net.{}.bias", 2 * i))?;
            net.push(Linear::new(w, Some(b)));
        }
        let free_values = mask.iter().map(|m| 1.0 - m).collect();
        Ok(Self {
            mask: mask_t.unsqueeze(0)?,
            free: free.unsqueeze(0)?,
            free_values,
            net,
            activation,
            scale_factor,
            dim,
        })
    }

    /// The conditioner's raw output `(b, 2d)` from the conditioning coordinates.
    fn conditioner(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.broadcast_mul(&self.mask)?;
        let last = self.net.len() - 1;
        for (i, layer) in self.net.iter().enumerate() {
            h = match layer.bias() {
                Some(b) => crate::ops::linear(&h, layer.weight(), b)?,
                None => layer.forward(&h)?,
            };
            if i < last {
                h = self.activation.forward(&h)?;
            }
        }
        Ok(h)
    }

    /// The bounded log-scale `s` `(b, d)` of the free coordinates (zero where `β = 1`).
    fn log_scale(&self, h: &Tensor) -> Result<Tensor> {
        let raw = h.narrow(1, 0, self.dim)?;
        Ok(crate::ops::scaled_tanh(&raw, self.scale_factor)?.broadcast_mul(&self.free)?)
    }

    /// `(s, t)` of the free coordinates from the conditioning ones, both
    /// `(b, d)` and zero where `β = 1`.
    fn scale_shift(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let h = self.conditioner(x)?;
        let s = self.log_scale(&h)?;
        let t = h.narrow(1, self.dim, self.dim)?.broadcast_mul(&self.free)?;
        Ok((s, t))
    }
}

impl FlowLayer for AffineCoupling {
    fn dim(&self) -> usize {
        self.dim
    }

    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        check_input(x, self.dim, "an affine coupling")?;
        let (s, t) = self.scale_shift(x)?;
        // s = t = 0 on the conditioning coordinates, so they pass unchanged.
        let y = ((x * s.exp()?)? + t)?;
        Ok((y, s.sum(1)?))
    }

    fn inverse(&self, y: &Tensor) -> Result<(Tensor, Tensor)> {
        check_input(y, self.dim, "an affine coupling")?;
        let h = self.conditioner(y)?;
        let s = self.log_scale(&h)?;
        // x = (y − t) e^{−s}, one fused op.
        let x = crate::ops::affine_inverse(y, &s, &h, &self.free_values)?;
        Ok((x, s.sum(1)?.neg()?))
    }

    fn has_analytic_inverse(&self) -> bool {
        true
    }
}

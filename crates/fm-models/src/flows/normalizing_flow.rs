//! A stack of flow layers over a standard normal base.

use candle::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use fm_core::SeededRng;

use super::{
    init_varmap, ActNorm, AffineCoupling, FlowLayer, LogitLayer, PlanarConfig, PlanarLayer, RealNvpConfig,
};
use crate::{Error, ModelConfig, Result};

/// A normalizing flow `x = f_K ∘ … ∘ f_1(z₀)`, `z₀ ~ N(0, I_d)`.
///
/// Layers run in the sampling direction (base → data) in
/// [`NormalizingFlow::forward`] and in reverse order through their inverses
/// in [`NormalizingFlow::inverse`] (see the [module docs](super) for the
/// convention). Densities follow docs/reference/flows.md:
/// `log q(x) = log N(f⁻¹(x)) + Σ_k log|det ∂f_k⁻¹/∂·|`, and for a sample
/// `log q(z_K) = log N(z₀) − Σ_k log|det ∂f_k/∂z_{k−1}|`.
///
/// # Cost of [`NormalizingFlow::log_prob`]
/// - RealNVP / ActNorm: one pass, exact.
/// - Planar: each layer solves one scalar monotone equation per row on the
///   CPU in f64 (a few Newton steps), so `log_prob` is exact to round-off and
///   differentiable but slower than sampling and leaves the device once per
///   layer. Planar flows are meant for reverse-KL training
///   ([`NormalizingFlow::reverse_kl_loss`]), which needs forward passes only.
///
/// ```
/// use candle::{DType, Device};
/// use candle_nn::{AdamW, Optimizer, ParamsAdamW};
/// use fm_core::{energy::TestEnergy, SeededRng};
/// use fm_models::flows::NormalizingFlow;
/// # fn main() -> anyhow::Result<()> {
/// let mut rng = SeededRng::new(0);
/// let (flow, varmap) = NormalizingFlow::planar(2, 4, &mut rng, DType::F32, &Device::Cpu)?;
/// let mut opt = AdamW::new(varmap.all_vars(), ParamsAdamW { lr: 1e-2, weight_decay: 0.0, ..Default::default() })?;
/// let loss = flow.reverse_kl_loss(|z| TestEnergy::U1.energy(z), 64, 1.0, &mut rng)?;
/// opt.backward_step(&loss)?;
/// let (x, log_q) = flow.sample_with_log_prob(5, &mut rng)?;
/// assert_eq!((x.dims(), log_q.dims()), (&[5, 2][..], &[5][..]));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct NormalizingFlow {
    layers: Vec<Box<dyn FlowLayer>>,
    dim: usize,
    dtype: DType,
    device: Device,
    config: Option<ModelConfig>,
}

/// The annealing schedule of Rezende & Mohamed: `β_t = min(1, 0.01 + t / steps_to_one)`
/// (the paper uses `steps_to_one = 10⁴`).
///
/// ```
/// assert_eq!(fm_models::flows::annealed_beta(0, 10_000), 0.01);
/// assert_eq!(fm_models::flows::annealed_beta(20_000, 10_000), 1.0);
/// ```
pub fn annealed_beta(step: usize, steps_to_one: usize) -> f64 {
    (0.01 + step as f64 / steps_to_one.max(1) as f64).min(1.0)
}

impl NormalizingFlow {
    /// A flow from explicit layers, all of dimension `dim`; samples are drawn
    /// in `dtype` on `device`.
    pub fn from_layers(
        dim: usize,
        layers: Vec<Box<dyn FlowLayer>>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        if dim == 0 {
            return Err(Error::Config { field: "dim", reason: "must be at least 1".into() });
        }
        if let Some((k, l)) = layers.iter().enumerate().find(|(_, l)| l.dim() != dim) {
            return Err(Error::Shape(format!("layer {k} acts on dimension {}, the flow on {dim}", l.dim())));
        }
        Ok(Self { layers, dim, dtype, device: device.clone(), config: None })
    }

    /// The flow a [`ModelConfig::Planar`] or [`ModelConfig::RealNvp`] describes,
    /// with weights from `vb` (a checkpoint's tensors, or a [`VarMap`]).
    pub fn new(config: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let layers: Vec<Box<dyn FlowLayer>> = match config {
            ModelConfig::Planar(c) => {
                c.validate()?;
                let mut layers: Vec<Box<dyn FlowLayer>> = Vec::new();
                for k in 0..c.layers {
                    layers.push(Box::new(PlanarLayer::new(c.dim, vb.pp(format!("layers.{k}")))?));
                }
                layers
            }
            ModelConfig::RealNvp(c) => {
                c.validate()?;
                let mut layers: Vec<Box<dyn FlowLayer>> = Vec::new();
                for k in 0..c.layers {
                    let vk = vb.pp(format!("layers.{k}"));
                    if c.actnorm {
                        layers.push(Box::new(ActNorm::new(c.dim, vk.pp("actnorm"))?));
                    }
                    layers.push(Box::new(AffineCoupling::new(
                        &c.mask(k),
                        &c.hidden,
                        c.activation,
                        c.scale_factor,
                        vk.pp("coupling"),
                    )?));
                }
                if let Some(gamma) = c.logit {
                    layers.push(Box::new(LogitLayer::new(c.dim, gamma)?));
                }
                layers
            }
            other => {
                return Err(Error::Config {
                    field: "kind",
                    reason: format!("not a normalizing flow configuration: {other:?}"),
                })
            }
        };
        let mut flow = Self::from_layers(config.dim(), layers, vb.dtype(), vb.device())?;
        flow.config = Some(config.clone());
        Ok(flow)
    }

    /// A freshly initialised, trainable flow and the [`VarMap`] holding its
    /// weights, drawn from `rng` (the same seed gives the same weights).
    ///
    /// Planar: `u`, `w`, `b` uniform in `±1/√d`. RealNVP: PyTorch's
    /// `nn.Linear` default for the conditioners, ActNorm at the identity.
    pub fn init(
        config: &ModelConfig,
        rng: &mut SeededRng,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, VarMap)> {
        let inits = match config {
            ModelConfig::Planar(c) => {
                c.validate()?;
                c.parameter_inits()
            }
            ModelConfig::RealNvp(c) => {
                c.validate()?;
                c.parameter_inits()
            }
            other => {
                return Err(Error::Config {
                    field: "kind",
                    reason: format!("not a normalizing flow configuration: {other:?}"),
                })
            }
        };
        let varmap = init_varmap(&inits, rng, dtype, device)?;
        let flow = Self::new(config, VarBuilder::from_varmap(&varmap, dtype, device))?;
        Ok((flow, varmap))
    }

    /// `k` planar layers on `ℝ^dim` ([`PlanarConfig`]), freshly initialised.
    pub fn planar(
        dim: usize,
        k: usize,
        rng: &mut SeededRng,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, VarMap)> {
        Self::init(&ModelConfig::Planar(PlanarConfig { dim, layers: k }), rng, dtype, device)
    }

    /// `k` RealNVP couplings on `ℝ^dim` with conditioners of widths `hidden`
    /// ([`RealNvpConfig::new`]: halves masks, ELU, `scale_factor = 2`), freshly initialised.
    pub fn realnvp(
        dim: usize,
        k: usize,
        hidden: &[usize],
        rng: &mut SeededRng,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, VarMap)> {
        Self::init(&ModelConfig::RealNvp(RealNvpConfig::new(dim, k, hidden)), rng, dtype, device)
    }

    /// The dimension `d`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The layers, in sampling order.
    pub fn layers(&self) -> &[Box<dyn FlowLayer>] {
        &self.layers
    }

    /// The configuration, when the flow was built from one.
    pub fn config(&self) -> Option<&ModelConfig> {
        self.config.as_ref()
    }

    /// The sampling direction: `z₀` `(b, d)` → (`x` `(b, d)`, `Σ log|det ∂f_k|` `(b,)`).
    pub fn forward(&self, z0: &Tensor) -> Result<(Tensor, Tensor)> {
        let b = super::check_input(z0, self.dim, "the flow")?;
        let mut z = z0.clone();
        let mut total = Tensor::zeros(b, z0.dtype(), z0.device())?;
        for layer in &self.layers {
            let (next, ld) = layer.forward(&z)?;
            z = next;
            total = (total + ld)?;
        }
        Ok((z, total))
    }

    /// The density direction: `x` `(b, d)` → (`z₀` `(b, d)`, `Σ log|det ∂f_k⁻¹|` `(b,)`).
    pub fn inverse(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let b = super::check_input(x, self.dim, "the flow")?;
        let mut z = x.clone();
        let mut total = Tensor::zeros(b, x.dtype(), x.device())?;
        for layer in self.layers.iter().rev() {
            let (prev, ld) = layer.inverse(&z)?;
            z = prev;
            total = (total + ld)?;
        }
        Ok((z, total))
    }

    /// `log N(z; 0, I_d)` per row: `(b, d)` → `(b,)`.
    pub fn base_log_prob(&self, z: &Tensor) -> Result<Tensor> {
        let half_log_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
        Ok(z.sqr()?.sum(1)?.affine(-0.5, -(self.dim as f64) * half_log_2pi)?)
    }

    /// `log q(x)` per row: `(b, d)` → `(b,)` (see the type docs for the cost with planar layers).
    pub fn log_prob(&self, x: &Tensor) -> Result<Tensor> {
        let (z0, log_det) = self.inverse(x)?;
        Ok((self.base_log_prob(&z0)? + log_det)?)
    }

    /// `n` samples `(n, d)`, base noise drawn from `rng`.
    pub fn sample(&self, n: usize, rng: &mut SeededRng) -> Result<Tensor> {
        Ok(self.sample_with_log_prob(n, rng)?.0)
    }

    /// `n` samples `(n, d)` and their log-density `(n,)` from forward passes
    /// only; both are differentiable in the parameters (reparametrisation).
    pub fn sample_with_log_prob(&self, n: usize, rng: &mut SeededRng) -> Result<(Tensor, Tensor)> {
        if n == 0 {
            return Err(Error::Shape("cannot draw 0 samples".into()));
        }
        let z0 = rng.normal((n, self.dim), self.dtype, &self.device)?;
        let (x, log_det) = self.forward(&z0)?;
        let log_q = (self.base_log_prob(&z0)? - log_det)?;
        Ok((x, log_q))
    }

    /// Forward KL up to a constant (maximum likelihood): `−mean log q(x)`, a scalar.
    pub fn forward_kl_loss(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.log_prob(x)?.mean_all()?.neg()?)
    }

    /// Reverse KL up to `log Z`: `E_{q}[log q(z_K) + β U(z_K)]` over `n` fresh
    /// samples, a scalar. With `β = 1` it is the free energy
    /// `F ≥ −log Z`, and `KL(q‖p) = F + log Z`.
    ///
    /// `energy` maps `(n, d)` to `(n,)` with differentiable ops (e.g.
    /// [`fm_core::energy::TestEnergy::energy`]).
    pub fn reverse_kl_loss<F, E>(&self, energy: F, n: usize, beta: f64, rng: &mut SeededRng) -> Result<Tensor>
    where
        F: Fn(&Tensor) -> std::result::Result<Tensor, E>,
        Error: From<E>,
    {
        if !beta.is_finite() {
            return Err(Error::Config { field: "beta", reason: format!("must be finite, got {beta}") });
        }
        let (x, log_q) = self.sample_with_log_prob(n, rng)?;
        let u = energy(&x)?;
        if u.dims() != [n] {
            return Err(Error::Shape(format!("the energy must return shape ({n},), got {:?}", u.dims())));
        }
        Ok((log_q + u.to_dtype(x.dtype())?.affine(beta, 0.0)?)?.mean_all()?)
    }
}

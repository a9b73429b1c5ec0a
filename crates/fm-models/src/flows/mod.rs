//! Discrete normalizing flows (docs/reference/flows.md).
//!
//! A flow is a stack of invertible [`FlowLayer`]s on top of a standard
//! normal base `N(0, I_d)`, composed into a [`NormalizingFlow`].
//!
//! # Direction convention
//!
//! Every layer's [`FlowLayer::forward`] is the **sampling direction**
//! (base → data, `z_{k−1} ↦ z_k`), as in Rezende & Mohamed (2015):
//! sampling and the density of the samples need forward passes only, which is
//! what reverse-KL training uses. [`FlowLayer::inverse`] is the **density
//! direction** (data → base), which [`NormalizingFlow::log_prob`] and
//! forward-KL (maximum likelihood) training use.
//!
//! - [`PlanarLayer`]: forward in closed form; the inverse is numerical
//!   (a safeguarded Newton/bisection root find on one scalar per sample, in
//!   f64), exact to round-off and with exact gradients.
//! - [`AffineCoupling`] (RealNVP) and [`ActNorm`]: both directions exact and
//!   equally cheap.
//! - [`LogitLayer`]: RealNVP's parameter-free logit pre-processing for images
//!   in `[−1, 1]`, placed at the data end so its Jacobian is in every density.
//!
//! Log-determinants: `forward` returns `log|det ∂y/∂x|`, `inverse` returns
//! `log|det ∂x/∂y|`, so for `y = f(x)` the two sum to zero.
mod actnorm;
mod logit;
mod normalizing_flow;
mod planar;
mod realnvp;

use candle::Tensor;

pub use actnorm::ActNorm;
pub use logit::LogitLayer;
pub use normalizing_flow::{annealed_beta, NormalizingFlow};
pub use planar::{PlanarConfig, PlanarLayer};
pub use realnvp::{checkerboard_mask, halves_mask, AffineCoupling, CouplingMask, RealNvpConfig};

use crate::{Error, Result};

/// One invertible layer of a normalizing flow.
///
/// Implementations hold their parameters as tensors (usually the [`candle::Var`]s
/// of a [`candle_nn::VarMap`]), so gradients reach them through both methods.
///
/// # Shapes
/// - `forward(x)`: `x` `(b, d)` → `(y (b, d), log|det ∂y/∂x| (b,))`
/// - `inverse(y)`: `y` `(b, d)` → `(x (b, d), log|det ∂x/∂y| (b,))`
pub trait FlowLayer: std::fmt::Debug + Send + Sync {
    /// The dimension `d` the layer acts on.
    fn dim(&self) -> usize;

    /// The sampling direction `y = f(x)` and `log|det ∂f/∂x|` per row.
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)>;

    /// The density direction `x = f⁻¹(y)` and `log|det ∂f⁻¹/∂y|` per row.
    ///
    /// Layers without a closed-form inverse either compute it numerically
    /// (documented on the layer) or return [`Error::NotInvertible`].
    fn inverse(&self, y: &Tensor) -> Result<(Tensor, Tensor)>;

    /// Whether [`FlowLayer::inverse`] is closed-form (`false`: numerical or unavailable).
    fn has_analytic_inverse(&self) -> bool;
}

/// Checks that `x` is `(b, dim)` and returns `b`.
pub(crate) fn check_input(x: &Tensor, dim: usize, who: &str) -> Result<usize> {
    match x.dims() {
        [b, d] if *d == dim => Ok(*b),
        dims => Err(Error::Shape(format!("{who} takes points of shape (b, {dim}), got {dims:?}"))),
    }
}

/// How a parameter is initialised by [`init_varmap`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Init {
    /// Uniform in `±bound`, drawn from the seeded RNG.
    Uniform(f64),
    /// All zeros (no draw).
    Zeros,
}

/// A [`candle_nn::VarMap`] holding freshly initialised parameters, drawn in
/// the given order from `rng` (the same seed gives the same weights).
pub(crate) fn init_varmap(
    params: &[(String, Vec<usize>, Init)],
    rng: &mut fm_core::SeededRng,
    dtype: candle::DType,
    device: &candle::Device,
) -> Result<candle_nn::VarMap> {
    let varmap = candle_nn::VarMap::new();
    {
        let mut data = varmap.data().lock().map_err(|_| Error::Config {
            field: "varmap",
            reason: "the variable map's lock is poisoned".into(),
        })?;
        for (name, shape, init) in params {
            let t = match init {
                Init::Uniform(bound) => rng.uniform(shape.as_slice(), -bound, *bound, dtype, device)?,
                Init::Zeros => Tensor::zeros(shape.as_slice(), dtype, device)?,
            };
            data.insert(name.clone(), candle::Var::from_tensor(&t)?);
        }
    }
    Ok(varmap)
}

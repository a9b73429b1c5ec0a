//! The velocity MLP on a manifold: Riemannian flow matching's training step.

use candle::Tensor;
use fm_core::manifold::{GeodesicPath, Manifold, ManifoldSpec};
use fm_core::{SeededRng, VelocityField};
use serde::{Deserialize, Serialize};

use super::backward::apply_gradients;
use crate::optim::GradientStep;
use crate::{Error, MlpConfig, Result, VelocityMlp};

/// A [`VelocityMlp`] on the embedding coordinates of `manifold`, whose
/// output is projected onto the tangent space (Chen & Lipman's model):
/// `mlp.dim` is the manifold's embedding dimension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiemannianMlpConfig {
    /// The manifold.
    pub manifold: ManifoldSpec,
    /// The network on its embedding coordinates.
    #[serde(flatten)]
    pub mlp: MlpConfig,
}

impl RiemannianMlpConfig {
    /// Checks the manifold and the network, and that the network's dimension
    /// is the manifold's embedding dimension; the error names the field.
    pub fn validate(&self) -> Result<()> {
        self.manifold.validate()?;
        self.mlp.validate()?;
        let n = self.manifold.ambient_dim();
        if self.mlp.dim != n {
            return Err(Error::Config {
                field: "dim",
                reason: format!(
                    "{} is embedded in R^{n}, but the network takes dim {}",
                    self.manifold, self.mlp.dim
                ),
            });
        }
        Ok(())
    }
}

/// One Riemannian flow-matching step of `model` on the data batch `x1`
/// (points of `manifold`, embedding coordinates): `t ~ U(0, 1)` then
/// `x₀` from the base (both from `rng`), `x_t` and `u_t` of the geodesic
/// `path`, and the loss `mean ‖P(x_t) f(x_t, t) − u_t‖²` — the squared norm
/// in the manifold's metric of the projected output's error. Returns that loss.
///
/// Its gradient with respect to the output `f` is `2 (P f − u)/b` (the
/// error is tangent, so `Pᵀ` leaves it unchanged): the explicit backward pass
/// of the Euclidean step runs on the target `f − (P f − u)`.
///
/// # Shapes
/// - `x1`: `(b, n)`
///
/// # Errors
/// [`Error::Core`] naming `loss` if it is not finite (before the weights
/// are touched); shape and tensor errors.
pub fn mlp_riemannian_train_step<O: GradientStep + ?Sized>(
    model: &VelocityMlp,
    manifold: &dyn Manifold,
    path: &GeodesicPath,
    opt: &mut O,
    x1: &Tensor,
    rng: &mut SeededRng,
) -> Result<f64> {
    let b = x1.dim(0)?;
    let t = rng.uniform(b, 0.0, 1.0, x1.dtype(), x1.device())?;
    let x0 = manifold.sample_base(b, x1.dtype(), rng)?.to_device(x1.device())?;
    let ps = path.sample(manifold, &x0, x1, &t)?;
    let f = model.velocity(&ps.x_t, &t)?;
    let error = (manifold.project_tangent(&ps.x_t, &f)? - &ps.dx_t)?;
    let target = (&f - &error)?;
    let input = Tensor::cat(&[&t.reshape((b, 1))?, &ps.x_t], 1)?;
    let g = model.mse_gradients(&input, &target)?;
    // The mean squared error over entries is the metric's loss over n.
    let loss = g.loss * manifold.ambient_dim() as f64;
    if !loss.is_finite() {
        return Err(Error::Core(fm_core::Error::invalid(
            "loss",
            format!("the training loss became {loss}; lower the learning rate"),
        )));
    }
    apply_gradients(&g, opt)?;
    Ok(loss)
}

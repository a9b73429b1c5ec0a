//! The conditional flow matching (CFM) loss, for given draws or for a batch.
//!
//! `L_CFM(θ) = E_{t, x₀, x₁} ‖u_θ(x_t, t) − (α̇_t x₁ + σ̇_t x₀)‖²`, averaged
//! over coordinates and batch (PyTorch's `MSELoss` convention). On the CondOT
//! path the target is `x₁ − x₀`. Its minimum is not 0 but the conditional
//! variance `E‖ẋ_t − u(x_t, t)‖²` (the irreducible floor).

use candle::Tensor;

use crate::path::AffinePath;
use crate::scheduler::Scheduler;
use crate::{Result, SeededRng, VelocityField};

/// The CFM regression loss for given `(x₀, x₁, t)`: a scalar tensor.
///
/// # Shapes
/// - `x0`, `x1`: `(b, ...)`
/// - `t`: `(b,)`
pub fn cfm_loss<V, S>(field: &V, path: &AffinePath<S>, x0: &Tensor, x1: &Tensor, t: &Tensor) -> Result<Tensor>
where
    V: VelocityField + ?Sized,
    S: Scheduler,
{
    let ps = path.sample(x0, x1, t)?;
    let u = field.velocity(&ps.x_t, t)?;
    Ok((u - ps.dx_t)?.sqr()?.mean_all()?)
}

/// Draws the source `x₀ ~ N(0, I)` shaped like `x1` and `t ~ U[0, 1)` per sample,
/// from `rng` (in that order: `t` first, then `x₀`).
pub fn draw_source_and_time(x1: &Tensor, rng: &mut SeededRng) -> Result<(Tensor, Tensor)> {
    let b = x1.dim(0)?;
    let t = rng.uniform(b, 0.0, 1.0, x1.dtype(), x1.device())?;
    let x0 = rng.normal(x1.shape(), x1.dtype(), x1.device())?;
    Ok((x0, t))
}

/// The CFM loss of one training batch: draws `t` and `x₀` from `rng` (as
/// [`draw_source_and_time`]) for the data batch `x1`. The optimiser step is
/// the caller's (`fm_pipeline` runs it; `loss.backward()` gives the gradients).
///
/// # Shapes
/// - `x1`: `(b, ...)`; returns a scalar
pub fn cfm_batch_loss<V, S>(
    field: &V,
    path: &AffinePath<S>,
    x1: &Tensor,
    rng: &mut SeededRng,
) -> Result<Tensor>
where
    V: VelocityField + ?Sized,
    S: Scheduler,
{
    let (x0, t) = draw_source_and_time(x1, rng)?;
    cfm_loss(field, path, &x0, x1, &t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gaussian::GaussianOracle;
    use crate::scheduler::SchedulerKind;
    use candle::{DType, Device};

    /// For Gaussian data the CFM loss of the exact field equals the
    /// conditional variance, which is below the loss of any other field,
    /// e.g. the zero field (whose loss is E‖x₁ − x₀‖² / d).
    #[test]
    fn exact_field_beats_zero_field() -> Result<()> {
        let oracle = GaussianOracle::new(vec![1.0, -1.0], vec![2.0, 0.3, 0.3, 0.5], SchedulerKind::CondOt)?;
        let path = AffinePath::new(SchedulerKind::CondOt);
        let mut rng = SeededRng::new(0);
        let x1 = oracle.sample_data(20_000, &mut rng, DType::F64, &Device::Cpu)?;
        let (x0, t) = draw_source_and_time(&x1, &mut rng)?;
        let exact = cfm_loss(&oracle, &path, &x0, &x1, &t)?.to_scalar::<f64>()?;
        struct Zero;
        impl VelocityField for Zero {
            fn velocity(&self, x: &Tensor, _t: &Tensor) -> Result<Tensor> {
                Ok(x.zeros_like()?)
            }
        }
        let zero = cfm_loss(&Zero, &path, &x0, &x1, &t)?.to_scalar::<f64>()?;
        // E‖x₁ − x₀‖²/d = (‖μ‖² + tr Σ + d)/d = (2 + 2.5 + 2)/2 = 3.25
        assert!((zero - 3.25).abs() < 0.1, "{zero}");
        assert!(exact < zero - 1.0, "exact {exact} vs zero {zero}");
        Ok(())
    }
}

//! Affine probability paths `x_t = α_t x_1 + σ_t x_0` and the conversions
//! between velocity, noise (ε) and data (x₁, denoiser) predictions.

use candle::Tensor;

use crate::scheduler::{Scheduler, SchedulerOutput};
use crate::{to_f64_vec, Error, Result};

/// A point on the conditional path and its conditional velocity.
#[derive(Debug, Clone)]
pub struct PathSample {
    /// `x_t = α_t x_1 + σ_t x_0`, shape of `x_0`.
    pub x_t: Tensor,
    /// The regression target `dx_t/dt = α̇_t x_1 + σ̇_t x_0`, shape of `x_0`.
    pub dx_t: Tensor,
}

/// What a network outputs; every kind converts to the velocity (and back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Prediction {
    /// The velocity `u(x, t)`.
    #[default]
    Velocity,
    /// The source sample `ε = x̂₀` (noise prediction).
    Epsilon,
    /// The data sample `x̂₁ = E[x₁ | x_t]` (denoiser / target prediction).
    Target,
}

/// An affine probability path over a [`Scheduler`].
///
/// ```
/// use candle::{Device, Tensor};
/// use fm_core::{path::AffinePath, scheduler::CondOtScheduler};
/// # fn main() -> fm_core::Result<()> {
/// let path = AffinePath::new(CondOtScheduler);
/// let x0 = Tensor::new(&[[0.0f32, 0.0]], &Device::Cpu)?;
/// let x1 = Tensor::new(&[[2.0f32, 4.0]], &Device::Cpu)?;
/// let t = Tensor::new(&[0.25f32], &Device::Cpu)?;
/// let s = path.sample(&x0, &x1, &t)?;
/// assert_eq!(s.x_t.to_vec2::<f32>()?, vec![vec![0.5, 1.0]]);
/// assert_eq!(s.dx_t.to_vec2::<f32>()?, vec![vec![2.0, 4.0]]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AffinePath<S> {
    /// The path's scheduler.
    pub scheduler: S,
}

/// Per-sample coefficients shaped `(b, 1, …, 1)` to broadcast against `like`.
fn per_sample(values: Vec<f64>, like: &Tensor) -> Result<Tensor> {
    let mut shape = vec![1usize; like.rank()];
    shape[0] = values.len();
    Ok(Tensor::from_vec(values, shape, like.device())?.to_dtype(like.dtype())?)
}

impl<S: Scheduler> AffinePath<S> {
    /// A path over `scheduler`.
    pub fn new(scheduler: S) -> Self {
        Self { scheduler }
    }

    /// The scheduler's coefficients for each entry of `t`.
    fn coefficients(&self, x: &Tensor, t: &Tensor) -> Result<Vec<SchedulerOutput>> {
        let ts = to_f64_vec(t)?;
        if ts.len() != x.dim(0)? {
            return Err(Error::Shape(format!(
                "t has {} entries but the batch has {} (t must be 1-D, one time per sample)",
                ts.len(),
                x.dim(0)?
            )));
        }
        Ok(ts.into_iter().map(|t| self.scheduler.at(t)).collect())
    }

    /// `b_i · f(c_i)` broadcast per sample.
    fn scale(
        &self,
        co: &[SchedulerOutput],
        like: &Tensor,
        f: impl Fn(&SchedulerOutput) -> f64,
    ) -> Result<Tensor> {
        per_sample(co.iter().map(f).collect(), like)
    }

    /// `f(c)·a + g(c)·b` with per-sample coefficients.
    fn combine(
        &self,
        a: &Tensor,
        b: &Tensor,
        t: &Tensor,
        f: impl Fn(&SchedulerOutput) -> f64,
        g: impl Fn(&SchedulerOutput) -> f64,
    ) -> Result<Tensor> {
        if a.dims() != b.dims() {
            return Err(Error::Shape(format!("{:?} vs {:?}", a.dims(), b.dims())));
        }
        let co = self.coefficients(a, t)?;
        let fa = self.scale(&co, a, f)?;
        let gb = self.scale(&co, a, g)?;
        Ok((a.broadcast_mul(&fa)? + b.broadcast_mul(&gb)?)?)
    }

    /// Samples the conditional path at times `t`.
    ///
    /// # Shapes
    /// - `x0`, `x1`: `(b, ...)`
    /// - `t`: `(b,)`
    pub fn sample(&self, x0: &Tensor, x1: &Tensor, t: &Tensor) -> Result<PathSample> {
        let x_t = self.combine(x1, x0, t, |c| c.alpha, |c| c.sigma)?;
        let dx_t = self.combine(x1, x0, t, |c| c.d_alpha, |c| c.d_sigma)?;
        Ok(PathSample { x_t, dx_t })
    }

    /// `u = (σ̇/σ) x + (Δ/σ) x̂₁` (singular at `σ = 0`, i.e. `t = 1`).
    pub fn target_to_velocity(&self, x1_hat: &Tensor, x_t: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.combine(x_t, x1_hat, t, |c| c.d_sigma / c.sigma, |c| c.delta() / c.sigma)
    }

    /// `u = (α̇/α) x − (Δ/α) ε̂` (singular at `α = 0`, i.e. `t = 0`).
    pub fn epsilon_to_velocity(&self, eps_hat: &Tensor, x_t: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.combine(x_t, eps_hat, t, |c| c.d_alpha / c.alpha, |c| -c.delta() / c.alpha)
    }

    /// `x̂₁ = (σ u − σ̇ x) / Δ`.
    pub fn velocity_to_target(&self, u: &Tensor, x_t: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.combine(u, x_t, t, |c| c.sigma / c.delta(), |c| -c.d_sigma / c.delta())
    }

    /// `ε̂ = (α̇ x − α u) / Δ`.
    pub fn velocity_to_epsilon(&self, u: &Tensor, x_t: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.combine(u, x_t, t, |c| -c.alpha / c.delta(), |c| c.d_alpha / c.delta())
    }

    /// `x̂₁ = (x − σ ε̂) / α` (singular at `t = 0`).
    pub fn epsilon_to_target(&self, eps_hat: &Tensor, x_t: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.combine(x_t, eps_hat, t, |c| 1.0 / c.alpha, |c| -c.sigma / c.alpha)
    }

    /// `ε̂ = (x − α x̂₁) / σ` (singular at `t = 1`).
    pub fn target_to_epsilon(&self, x1_hat: &Tensor, x_t: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.combine(x_t, x1_hat, t, |c| 1.0 / c.sigma, |c| -c.alpha / c.sigma)
    }

    /// Converts a network output of kind `from` into a velocity.
    pub fn to_velocity(&self, from: Prediction, out: &Tensor, x_t: &Tensor, t: &Tensor) -> Result<Tensor> {
        match from {
            Prediction::Velocity => Ok(out.clone()),
            Prediction::Epsilon => self.epsilon_to_velocity(out, x_t, t),
            Prediction::Target => self.target_to_velocity(out, x_t, t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::SchedulerKind;
    use crate::SeededRng;
    use candle::{DType, Device};

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        let a = to_f64_vec(a).unwrap_or_default();
        let b = to_f64_vec(b).unwrap_or_default();
        a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
    }

    #[test]
    fn all_six_converters_round_trip() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = SeededRng::new(0);
        for s in [
            SchedulerKind::CondOt,
            SchedulerKind::Cosine,
            SchedulerKind::LinearVp,
            SchedulerKind::Polynomial { n: 2.0 },
            SchedulerKind::Vp { beta_min: 0.1, beta_max: 20.0 },
        ] {
            let path = AffinePath::new(s);
            let x0 = rng.normal((16, 3), DType::F64, &dev)?;
            let x1 = rng.normal((16, 3), DType::F64, &dev)?;
            let t = rng.uniform(16, 0.05, 0.95, DType::F64, &dev)?;
            let ps = path.sample(&x0, &x1, &t)?;
            // The conditional velocity's exact posterior for one pair is the pair itself.
            let u = ps.dx_t.clone();
            let x1_hat = path.velocity_to_target(&u, &ps.x_t, &t)?;
            let eps_hat = path.velocity_to_epsilon(&u, &ps.x_t, &t)?;
            assert!(max_diff(&x1_hat, &x1) < 1e-9, "{s}: velocity→target");
            assert!(max_diff(&eps_hat, &x0) < 1e-9, "{s}: velocity→epsilon");
            assert!(max_diff(&path.target_to_velocity(&x1, &ps.x_t, &t)?, &u) < 1e-9, "{s}");
            assert!(max_diff(&path.epsilon_to_velocity(&x0, &ps.x_t, &t)?, &u) < 1e-9, "{s}");
            assert!(max_diff(&path.epsilon_to_target(&x0, &ps.x_t, &t)?, &x1) < 1e-9, "{s}");
            assert!(max_diff(&path.target_to_epsilon(&x1, &ps.x_t, &t)?, &x0) < 1e-9, "{s}");
        }
        Ok(())
    }

    #[test]
    fn target_is_time_derivative_of_path() -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = SeededRng::new(1);
        let path = AffinePath::new(SchedulerKind::Cosine);
        let x0 = rng.normal((8, 2), DType::F64, &dev)?;
        let x1 = rng.normal((8, 2), DType::F64, &dev)?;
        let t = rng.uniform(8, 0.1, 0.9, DType::F64, &dev)?;
        let h = 1e-6;
        let xp = path.sample(&x0, &x1, &(&t + h)?)?.x_t;
        let xm = path.sample(&x0, &x1, &(&t - h)?)?.x_t;
        let fd = ((xp - xm)? / (2.0 * h))?;
        assert!(max_diff(&fd, &path.sample(&x0, &x1, &t)?.dx_t) < 1e-6);
        Ok(())
    }

    #[test]
    fn rejects_bad_time_shape() -> Result<()> {
        let x = Tensor::zeros((4, 2), DType::F32, &Device::Cpu)?;
        let t = Tensor::zeros(3, DType::F32, &Device::Cpu)?;
        let err = AffinePath::new(SchedulerKind::CondOt).sample(&x, &x, &t).unwrap_err();
        assert!(err.to_string().contains("t has 3 entries"), "{err}");
        Ok(())
    }
}

//! The geodesic conditional path `x_t = exp_{x₀}(κ_t · log_{x₀}(x₁))`.

use candle::Tensor;

use super::Manifold;
use crate::path::PathSample;
use crate::scheduler::{Scheduler, SchedulerKind};
use crate::{Error, Result};

/// Chen & Lipman's geodesic path: from `x₀` along the shortest geodesic to
/// `x₁`, at the fraction `κ_t` of the way (`κ_t = α_t` of a scheduler with
/// `α₀ = 0`, `α₁ = 1`; cond-OT gives constant speed). Its target velocity is
/// `u_t = κ̇_t · γ'(κ_t)` with `γ(s) = exp_{x₀}(s · log_{x₀}(x₁))`, a tangent
/// vector at `x_t` of length `κ̇_t · d(x₀, x₁)`.
///
/// On Euclidean space this is the affine path `x_t = x₀ + κ_t (x₁ − x₀)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeodesicPath {
    scheduler: SchedulerKind,
}

impl GeodesicPath {
    /// The path of `scheduler`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `scheduler` unless `α₀ = 0` and `α₁ = 1`
    /// (variance-preserving schedulers never reach the data).
    pub fn new(scheduler: SchedulerKind) -> Result<Self> {
        let (a0, a1) = (scheduler.at(0.0).alpha, scheduler.at(1.0).alpha);
        if a0.abs() > 1e-12 || (a1 - 1.0).abs() > 1e-12 {
            return Err(Error::invalid(
                "scheduler",
                format!("a geodesic path needs κ₀ = 0 and κ₁ = 1; {scheduler} has α₀ = {a0}, α₁ = {a1}"),
            ));
        }
        Ok(Self { scheduler })
    }

    /// The scheduler.
    pub fn scheduler(&self) -> SchedulerKind {
        self.scheduler
    }

    /// `x_t` and its target `dx_t/dt` on `manifold` for the pairs `(x₀, x₁)` at times `t`.
    ///
    /// # Shapes
    /// - `x0`, `x1`: `(b, n)` embedding coordinates; `t`: `(b,)`
    pub fn sample(
        &self,
        manifold: &dyn Manifold,
        x0: &Tensor,
        x1: &Tensor,
        t: &Tensor,
    ) -> Result<PathSample> {
        let n = manifold.check(x0, "x0")?;
        manifold.check(x1, "x1")?;
        let b = x0.dim(0)?;
        if x1.dim(0)? != b || t.dims() != [b] {
            return Err(Error::Shape(format!("x0 {:?}, x1 {:?}, t {:?}", x0.dims(), x1.dims(), t.dims())));
        }
        let (a, c, ts) = (crate::to_f64_vec(x0)?, crate::to_f64_vec(x1)?, crate::to_f64_vec(t)?);
        let (mut xt, mut ut) = (vec![0.0; b * n], vec![0.0; b * n]);
        let mut v = vec![0.0; n];
        for (i, &t) in ts.iter().enumerate() {
            let r = i * n..(i + 1) * n;
            let k = self.scheduler.at(t);
            manifold.log_point(&a[r.clone()], &c[r.clone()], &mut v);
            manifold.geodesic_point(&a[r.clone()], &v, k.alpha, &mut xt[r.clone()], &mut ut[r.clone()]);
            ut[r].iter_mut().for_each(|u| *u *= k.d_alpha);
        }
        let to = |v: Vec<f64>| -> Result<Tensor> {
            Ok(Tensor::from_vec(v, (b, n), x0.device())?.to_dtype(x0.dtype())?)
        };
        Ok(PathSample { x_t: to(xt)?, dx_t: to(ut)? })
    }
}

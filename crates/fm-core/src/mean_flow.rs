//! MeanFlow (Geng, Deng, Bai, Kolter, He, 2025): a network of the *average*
//! velocity, sampled in one or a few steps (docs/reference/paths-and-losses.md).
//!
//! In fm's convention (`t = 0` noise, `t = 1` data), for `s ≤ t` the average
//! velocity of the flow `ψ` of `u` over `[s, t]` is
//!
//! ```text
//! ū(x_s, s, t) = (ψ_{s→t}(x_s) − x_s) / (t − s),     ū(x, t, t) = u(x, t),
//! ```
//!
//! so `x_t = x_s + (t − s) ū(x_s, s, t)`: one step from noise to data is
//! `x₁ = x₀ + ū(x₀, 0, 1)`. Differentiating in `s` at fixed `t` gives the
//! **MeanFlow identity**
//!
//! ```text
//! ū(x_s, s, t) = u(x_s, s) + (t − s) · d/ds ū(x_s, s, t),   d/ds ū = ∂ₓū · u + ∂ₛū,
//! ```
//!
//! one Jacobian–vector product of the network along `(u, 1, 0)` in `(x, s, t)`.
//! [`mean_flow_loss`] regresses `ū_θ` on `u_c + (t − s)·sg(∂ₓū_θ·u_c + ∂ₛū_θ)`
//! with the conditional velocity `u_c` of the path in place of `u` (an unbiased
//! target, as CFM's), `sg` the stop-gradient.

use candle::{DType, Tensor};

use crate::path::AffinePath;
use crate::scheduler::Scheduler;
use crate::{Error, Result, SeededRng};

/// A network of the average velocity `ū(x, s, t)` (`s ≤ t`).
///
/// # Shapes
/// - `x`: `(b, d)`; `s`, `t`: `(b,)`; returns `(b, d)`
pub trait AverageVelocityField {
    /// `ū(x, s, t)`.
    fn average_velocity(&self, x: &Tensor, s: &Tensor, t: &Tensor) -> Result<Tensor>;

    /// `ū(x, s, t)` and its directional derivative along `(dx, ds, dt)`:
    /// `∂ₓū·dx + ∂ₛū·ds + ∂ₜū·dt` (`dx`: `(b, d)`, `ds`, `dt`: `(b,)`), exact
    /// (forward mode), differentiable with first-order operations.
    fn average_velocity_and_tangent(
        &self,
        x: &Tensor,
        s: &Tensor,
        t: &Tensor,
        dx: &Tensor,
        ds: &Tensor,
        dt: &Tensor,
    ) -> Result<(Tensor, Tensor)>;
}

/// `b` time pairs `s ≤ t`: two uniform draws sorted, and with probability
/// `equal_fraction` `s = t` (where the model learns the instantaneous velocity).
pub fn draw_time_pairs(
    b: usize,
    equal_fraction: f64,
    rng: &mut SeededRng,
    dtype: DType,
    device: &candle::Device,
) -> Result<(Tensor, Tensor)> {
    if !(0.0..=1.0).contains(&equal_fraction) {
        return Err(Error::invalid("equal_fraction", format!("must lie in [0, 1], got {equal_fraction}")));
    }
    let u = rng.uniform_vec(3 * b, 0.0, 1.0);
    let (mut s, mut t) = (Vec::with_capacity(b), Vec::with_capacity(b));
    for k in 0..b {
        let (a, c) = (u[3 * k], u[3 * k + 1]);
        let (lo, hi) = if a <= c { (a, c) } else { (c, a) };
        let equal = u[3 * k + 2] < equal_fraction;
        s.push(if equal { hi } else { lo });
        t.push(hi);
    }
    Ok((Tensor::from_vec(s, b, device)?.to_dtype(dtype)?, Tensor::from_vec(t, b, device)?.to_dtype(dtype)?))
}

/// The MeanFlow loss for pairs `(x₀, x₁)` and times `s ≤ t` on `path`:
/// `mean ‖ū_θ(x_s, s, t) − sg(u_c + (t − s)(∂ₓū_θ·u_c + ∂ₛū_θ))‖²` (mean over
/// the batch and coordinates), with `x_s` and `u_c` the path's sample and
/// conditional velocity at `s`.
pub fn mean_flow_loss<M, S>(
    model: &M,
    path: &AffinePath<S>,
    x0: &Tensor,
    x1: &Tensor,
    s: &Tensor,
    t: &Tensor,
) -> Result<Tensor>
where
    M: AverageVelocityField + ?Sized,
    S: Scheduler,
{
    let sample = path.sample(x0, x1, s)?;
    let ones = s.ones_like()?;
    let zeros = s.zeros_like()?;
    let (avg, tangent) =
        model.average_velocity_and_tangent(&sample.x_t, s, t, &sample.dx_t, &ones, &zeros)?;
    let gap = (t - s)?.unsqueeze(1)?;
    let target = (&sample.dx_t + tangent.broadcast_mul(&gap)?)?.detach();
    Ok((avg - target)?.sqr()?.mean_all()?)
}

/// Few-step sampling: `steps` equal steps `x ← x + (t' − t) ū(x, t, t')` from
/// `x0` at `t = 0` to `t = 1`; returns the samples and the NFE (= steps).
pub fn mean_flow_sample<M: AverageVelocityField + ?Sized>(
    model: &M,
    x0: &Tensor,
    steps: usize,
) -> Result<(Tensor, usize)> {
    let (x, _) = mean_flow_trajectory(model, x0, steps, 0)?;
    Ok((x, steps))
}

/// [`mean_flow_sample`], also keeping the first `rows` samples at every step
/// (the start included; empty when `rows = 0`).
pub fn mean_flow_trajectory<M: AverageVelocityField + ?Sized>(
    model: &M,
    x0: &Tensor,
    steps: usize,
    rows: usize,
) -> Result<(Tensor, Vec<Tensor>)> {
    if steps == 0 {
        return Err(Error::invalid("steps", "MeanFlow sampling needs at least 1 step"));
    }
    let b = x0.dim(0)?;
    let rows = rows.min(b);
    let mut x = x0.clone();
    let mut trajectory = Vec::new();
    if rows > 0 {
        trajectory.push(x.narrow(0, 0, rows)?);
    }
    for k in 0..steps {
        let (s, t) = (k as f64 / steps as f64, (k + 1) as f64 / steps as f64);
        let st = Tensor::full(s, b, x.device())?.to_dtype(x.dtype())?;
        let tt = Tensor::full(t, b, x.device())?.to_dtype(x.dtype())?;
        let avg = model.average_velocity(&x, &st, &tt)?;
        x = (x + (avg * (t - s))?)?;
        if rows > 0 {
            trajectory.push(x.narrow(0, 0, rows)?);
        }
    }
    Ok((x, trajectory))
}

//! Parametrizations: what a network predicts (velocity, noise `ε`, or data
//! `x̂₁`, the denoiser) and how its output becomes a velocity
//! (docs/reference/paths-and-losses.md).
//!
//! On an affine path `x = α_t x̂₁ + σ_t ε̂`, every prediction is an affine
//! function of the velocity, so a network of any kind is a velocity field:
//!
//! ```text
//! velocity:  u = out
//! noise:     u = (α̇/α) x − (Δ/α) ε̂        (singular at α = 0, i.e. t = 0)
//! data:      u = (σ̇/σ) x + (Δ/σ) x̂₁       (singular at σ = 0, i.e. t = 1)
//! ```
//!
//! with `Δ = α̇σ − σ̇α`. The singular coefficients are evaluated at a time
//! clamped to `[CONVERSION_EPS, 1 − CONVERSION_EPS]` (only on the singular
//! side), so solvers that evaluate the field at `t = 0` or `t = 1` stay finite.
//! [`Parametrized`] wraps a network with its kind; it is a
//! [`VelocityField`], a [`DivergenceField`] when the network is one, and a
//! [`JvpField`] when the network is one.
//!
//! The regression target of each kind for a pair `(x₀, x₁)` is
//! [`regression_target`]: `α̇x₁ + σ̇x₀`, `x₀`, or `x₁`.

use std::fmt;
use std::str::FromStr;

use candle::Tensor;

use crate::jacobian::JvpField;
use crate::path::{AffinePath, Prediction};
use crate::scheduler::{Scheduler, SchedulerOutput};
use crate::{to_f64_vec, DivergenceField, Error, Result, VelocityField};

/// The clamp of the time at which singular conversion (and loss-weight)
/// coefficients are evaluated: noise predictions use `t ≥ CONVERSION_EPS`,
/// data predictions `t ≤ 1 − CONVERSION_EPS`.
pub const CONVERSION_EPS: f64 = 1e-3;

impl Prediction {
    /// The names [`FromStr`] accepts (the first of each kind is its canonical name).
    pub const NAMES: &'static [&'static str] =
        &["velocity", "v", "noise", "epsilon", "eps", "data", "target", "x1", "denoiser"];

    /// The canonical name: `velocity`, `noise` or `data`.
    pub fn name(&self) -> &'static str {
        match self {
            Prediction::Velocity => "velocity",
            Prediction::Epsilon => "noise",
            Prediction::Target => "data",
        }
    }

    /// The time at which this kind's conversion coefficients are evaluated
    /// (clamped away from its singular end).
    pub fn conversion_time(&self, t: f64) -> f64 {
        match self {
            Prediction::Velocity => t,
            Prediction::Epsilon => t.max(CONVERSION_EPS),
            Prediction::Target => t.min(1.0 - CONVERSION_EPS),
        }
    }

    /// `(a, b)` with `u = a·x + b·out` for a network output `out` of this kind,
    /// from the scheduler's coefficients `c` (already at the conversion time).
    pub fn to_velocity_coefficients(&self, c: &SchedulerOutput) -> (f64, f64) {
        match self {
            Prediction::Velocity => (0.0, 1.0),
            Prediction::Epsilon => (c.d_alpha / c.alpha, -c.delta() / c.alpha),
            Prediction::Target => (c.d_sigma / c.sigma, c.delta() / c.sigma),
        }
    }
}

impl fmt::Display for Prediction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Prediction {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "velocity" | "v" | "u" => Ok(Prediction::Velocity),
            "noise" | "epsilon" | "eps" => Ok(Prediction::Epsilon),
            "data" | "target" | "x1" | "denoiser" => Ok(Prediction::Target),
            other => Err(Error::invalid(
                "parametrization",
                format!("unknown parametrization `{other}`; valid: velocity, noise (epsilon), data (target, x1, denoiser)"),
            )),
        }
    }
}

/// Per-sample coefficients `(b,)` → a `(b, 1, …, 1)` tensor broadcasting against `like`.
pub(crate) fn per_sample(values: Vec<f64>, like: &Tensor) -> Result<Tensor> {
    let mut shape = vec![1usize; like.rank()];
    shape[0] = values.len();
    Ok(Tensor::from_vec(values, shape, like.device())?.to_dtype(like.dtype())?)
}

/// The times of `t` as `f64`, checked to number one per row of `x`.
pub(crate) fn times_for(x: &Tensor, t: &Tensor) -> Result<Vec<f64>> {
    let ts = to_f64_vec(t)?;
    if ts.len() != x.dim(0)? {
        return Err(Error::Shape(format!(
            "t has {} entries but the batch has {} (t must be 1-D, one time per sample)",
            ts.len(),
            x.dim(0)?
        )));
    }
    Ok(ts)
}

/// The per-sample `(a, b)` of `u = a·x + b·out` for `kind` on `path`.
fn coefficients<S: Scheduler>(
    path: &AffinePath<S>,
    kind: Prediction,
    x: &Tensor,
    t: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (a, b): (Vec<f64>, Vec<f64>) = times_for(x, t)?
        .into_iter()
        .map(|ti| kind.to_velocity_coefficients(&path.scheduler.at(kind.conversion_time(ti))))
        .unzip();
    Ok((per_sample(a, x)?, per_sample(b, x)?))
}

/// Converts a network output of kind `kind` at `(x, t)` into a velocity,
/// with the singular end clamped (see [`CONVERSION_EPS`]).
///
/// # Shapes
/// - `out`, `x`: `(b, ...)`; `t`: `(b,)`; returns the shape of `x`
pub fn output_to_velocity<S: Scheduler>(
    path: &AffinePath<S>,
    kind: Prediction,
    out: &Tensor,
    x: &Tensor,
    t: &Tensor,
) -> Result<Tensor> {
    if kind == Prediction::Velocity {
        return Ok(out.clone());
    }
    if out.dims() != x.dims() {
        return Err(Error::Shape(format!("output {:?} vs x {:?}", out.dims(), x.dims())));
    }
    let (a, b) = coefficients(path, kind, x, t)?;
    Ok((x.broadcast_mul(&a)? + out.broadcast_mul(&b)?)?)
}

/// Converts a velocity (e.g. a regression target such as EFM's `û*_M`) into
/// the space of `kind`: `u`, `ε̂ = (α̇x − αu)/Δ` or `x̂₁ = (σu − σ̇x)/Δ`
/// (never singular).
///
/// # Shapes
/// - `u`, `x`: `(b, ...)`; `t`: `(b,)`; returns the shape of `x`
pub fn velocity_to_output<S: Scheduler>(
    path: &AffinePath<S>,
    kind: Prediction,
    u: &Tensor,
    x: &Tensor,
    t: &Tensor,
) -> Result<Tensor> {
    match kind {
        Prediction::Velocity => Ok(u.clone()),
        Prediction::Epsilon => path.velocity_to_epsilon(u, x, t),
        Prediction::Target => path.velocity_to_target(u, x, t),
    }
}

/// The regression target of `kind` for the pair `(x₀, x₁)`: the conditional
/// velocity `dx_t` (as given by [`AffinePath::sample`]), `x₀` or `x₁`.
pub fn regression_target(kind: Prediction, x0: &Tensor, x1: &Tensor, dx_t: &Tensor) -> Tensor {
    match kind {
        Prediction::Velocity => dx_t.clone(),
        Prediction::Epsilon => x0.clone(),
        Prediction::Target => x1.clone(),
    }
}

/// A network `F` whose output is a prediction of kind `kind`, seen as the
/// velocity field it defines on `path`.
///
/// # Shapes
/// - `x`: `(b, d)`, `t`: `(b,)` → `(b, d)`
///
/// ```
/// use candle::{Device, Tensor};
/// use fm_core::parametrization::Parametrized;
/// use fm_core::path::{AffinePath, Prediction};
/// use fm_core::scheduler::CondOtScheduler;
/// use fm_core::VelocityField;
/// # fn main() -> fm_core::Result<()> {
/// // A "network" that predicts x̂₁ = 0: on CondOT its velocity is −x/(1 − t).
/// struct Zero;
/// impl VelocityField for Zero {
///     fn velocity(&self, x: &Tensor, _t: &Tensor) -> fm_core::Result<Tensor> {
///         Ok(x.zeros_like()?)
///     }
/// }
/// let field = Parametrized::new(Zero, AffinePath::new(CondOtScheduler), Prediction::Target);
/// let x = Tensor::new(&[[1.0f64, -2.0]], &Device::Cpu)?;
/// let u = field.velocity(&x, &Tensor::new(&[0.5f64], &Device::Cpu)?)?;
/// assert_eq!(u.to_vec2::<f64>()?, vec![vec![-2.0, 4.0]]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Parametrized<F, S> {
    net: F,
    path: AffinePath<S>,
    kind: Prediction,
}

impl<F, S: Scheduler> Parametrized<F, S> {
    /// `net`'s output read as a prediction of `kind` on `path`.
    pub fn new(net: F, path: AffinePath<S>, kind: Prediction) -> Self {
        Self { net, path, kind }
    }

    /// The wrapped network.
    pub fn net(&self) -> &F {
        &self.net
    }

    /// What the network predicts.
    pub fn kind(&self) -> Prediction {
        self.kind
    }

    /// The path the prediction lives on.
    pub fn path(&self) -> &AffinePath<S> {
        &self.path
    }
}

impl<F: VelocityField, S: Scheduler> VelocityField for Parametrized<F, S> {
    fn velocity(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let out = self.net.velocity(x, t)?;
        output_to_velocity(&self.path, self.kind, &out, x, t)
    }
}

impl<F: DivergenceField, S: Scheduler> DivergenceField for Parametrized<F, S> {
    /// `∇·u = a·d + b·∇·out` for `u = a·x + b·out`.
    fn velocity_and_divergence(&self, x: &Tensor, t: &Tensor) -> Result<(Tensor, Tensor)> {
        let (out, div) = self.net.velocity_and_divergence(x, t)?;
        if self.kind == Prediction::Velocity {
            return Ok((out, div));
        }
        let d = x.flatten_from(1)?.dim(1)? as f64;
        let (a, b) = coefficients(&self.path, self.kind, x, t)?;
        let u = (x.broadcast_mul(&a)? + out.broadcast_mul(&b)?)?;
        let a1 = a.flatten_all()?;
        let b1 = b.flatten_all()?;
        let div = ((a1 * d)? + div.mul(&b1)?)?;
        Ok((u, div))
    }
}

impl<F: JvpField, S: Scheduler> JvpField for Parametrized<F, S> {
    /// `J_u v = a·v + b·J_out v` for `u = a·x + b·out`.
    fn velocity_and_jvp(&self, x: &Tensor, t: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (out, jv) = self.net.velocity_and_jvp(x, t, v)?;
        let u = output_to_velocity(&self.path, self.kind, &out, x, t)?;
        let jv = jvp_to_velocity(&self.path, self.kind, x, t, v, &jv)?;
        Ok((u, jv))
    }
}

/// Converts the JVPs `J_out v` of a network output of kind `kind` into those
/// of its velocity: `J_u v = a·v + b·J_out v` for `u = a·x + b·out`.
///
/// # Shapes
/// - `x`: `(b, d)`, `t`: `(b,)`, `v`, `jv`: `(k, b, d)`; returns `(k, b, d)`
pub fn jvp_to_velocity<S: Scheduler>(
    path: &AffinePath<S>,
    kind: Prediction,
    x: &Tensor,
    t: &Tensor,
    v: &Tensor,
    jv: &Tensor,
) -> Result<Tensor> {
    if kind == Prediction::Velocity {
        return Ok(jv.clone());
    }
    let (a, b) = coefficients(path, kind, x, t)?;
    // The coefficients are per row of the batch, the middle axis of (k, b, d).
    let a3 = a.flatten_all()?.reshape((1, (), 1))?;
    let b3 = b.flatten_all()?.reshape((1, (), 1))?;
    Ok((v.broadcast_mul(&a3)? + jv.broadcast_mul(&b3)?)?)
}

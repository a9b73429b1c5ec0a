//! Alignment of a velocity field with the conditional velocity: how often
//! does `u(x_t, t)` point along `ẋ_t = α̇ x₁ + σ̇ x₀` (`x₁ − x₀` on CondOT)?
//!
//! For the closed-form empirical field `û*` the cosine jumps to 1 once the
//! posterior over training points collapses onto the `x₁` that generated
//! `x_t`; in high dimension this happens early (Bertrand et al., arXiv
//! 2506.03719, Fig. 2). [`alignment_curve`] measures the fraction of pairs
//! with cosine above a threshold on a time grid, and [`crossing_time`] finds
//! when that fraction first reaches a level.

use candle::{DType, Tensor};

use crate::path::AffinePath;
use crate::scheduler::Scheduler;
use crate::{Error, Result, VelocityField};

/// `cos(u(x_t, t), ẋ_t)` for each pair `(x₀, x₁)`, with `x_t` on `path`.
/// A zero vector gives cosine 0.
///
/// # Shapes
/// - `x0`, `x1`: `(b, ...)`; `t`: `(b,)`
/// - returns: `b` cosines
pub fn cosine_alignment<V, S>(
    field: &V,
    path: &AffinePath<S>,
    x0: &Tensor,
    x1: &Tensor,
    t: &Tensor,
) -> Result<Vec<f64>>
where
    V: VelocityField + ?Sized,
    S: Scheduler,
{
    let ps = path.sample(x0, x1, t)?;
    let u = field.velocity(&ps.x_t, t)?;
    row_cosines(&u, &ps.dx_t)
}

/// Row-wise cosine similarity of two `(b, ...)` tensors, in `f64`.
pub fn row_cosines(a: &Tensor, b: &Tensor) -> Result<Vec<f64>> {
    if a.dims() != b.dims() || a.rank() < 1 {
        return Err(Error::Shape(format!("{:?} vs {:?}", a.dims(), b.dims())));
    }
    let a = a.flatten_from(1)?.to_dtype(DType::F64)?;
    let b = b.flatten_from(1)?.to_dtype(DType::F64)?;
    let dot = (&a * &b)?.sum(1)?.to_vec1::<f64>()?;
    let na = a.sqr()?.sum(1)?.to_vec1::<f64>()?;
    let nb = b.sqr()?.sum(1)?.to_vec1::<f64>()?;
    Ok(dot
        .iter()
        .zip(na.iter().zip(&nb))
        .map(|(d, (x, y))| {
            let den = (x * y).sqrt();
            if den > 0.0 {
                d / den
            } else {
                0.0
            }
        })
        .collect())
}

/// The fraction of `cosines` strictly above `threshold` (0 for an empty slice).
pub fn aligned_fraction(cosines: &[f64], threshold: f64) -> f64 {
    if cosines.is_empty() {
        return 0.0;
    }
    cosines.iter().filter(|&&c| c > threshold).count() as f64 / cosines.len() as f64
}

/// The aligned fraction on a time grid, from [`alignment_curve`].
#[derive(Debug, Clone, PartialEq)]
pub struct AlignmentCurve {
    /// The grid times.
    pub times: Vec<f64>,
    /// The fraction of pairs with cosine above the threshold at each time.
    pub fractions: Vec<f64>,
    /// The mean cosine at each time.
    pub mean_cosines: Vec<f64>,
}

impl AlignmentCurve {
    /// The first time the fraction reaches `level` (see [`crossing_time`]).
    pub fn crossing_time(&self, level: f64) -> Result<Option<f64>> {
        crossing_time(&self.times, &self.fractions, level)
    }
}

/// For every time of `times`, evaluates all pairs `(x₀, x₁)` at that time and
/// records the fraction with `cos(u(x_t, t), ẋ_t) > threshold`.
///
/// Keep the grid below `t = 1`: there `x_t = x₁` exactly and a field with a
/// time clamp (such as [`crate::closed_form::EmpiricalVelocity`]) returns
/// nearly zero, whose direction is meaningless.
///
/// # Shapes
/// - `x0`, `x1`: `(b, ...)`
///
/// ```
/// use candle::{DType, Device};
/// use fm_core::alignment::alignment_curve;
/// use fm_core::closed_form::EmpiricalVelocity;
/// use fm_core::{path::AffinePath, scheduler::CondOtScheduler, SeededRng};
/// # fn main() -> fm_core::Result<()> {
/// let mut rng = SeededRng::new(0);
/// let train = rng.normal((200, 64), DType::F64, &Device::Cpu)?;
/// let field = EmpiricalVelocity::new(&train, CondOtScheduler)?;
/// let x1 = train.narrow(0, 0, 50)?;
/// let x0 = rng.normal((50, 64), DType::F64, &Device::Cpu)?;
/// let times: Vec<f64> = (0..20).map(|k| k as f64 / 20.0).collect(); // 0, 0.05, …, 0.95
/// let curve = alignment_curve(&field, &AffinePath::new(CondOtScheduler), &x0, &x1, &times, 0.9)?;
/// // Little is aligned at t = 0 (cos ≈ 1/√2); everything is once the posterior has collapsed.
/// assert!(curve.fractions[0] < 0.2);
/// assert_eq!(curve.fractions[19], 1.0);
/// let tc = curve.crossing_time(0.5)?.expect("the curve reaches 1/2");
/// assert!(tc > 0.0 && tc < 1.0);
/// # Ok(())
/// # }
/// ```
pub fn alignment_curve<V, S>(
    field: &V,
    path: &AffinePath<S>,
    x0: &Tensor,
    x1: &Tensor,
    times: &[f64],
    threshold: f64,
) -> Result<AlignmentCurve>
where
    V: VelocityField + ?Sized,
    S: Scheduler,
{
    let b = x1.dim(0)?;
    let mut fractions = Vec::with_capacity(times.len());
    let mut mean_cosines = Vec::with_capacity(times.len());
    for &ti in times {
        if !(ti.is_finite() && (0.0..=1.0).contains(&ti)) {
            return Err(Error::invalid("times", format!("must lie in [0, 1], got {ti}")));
        }
        let t = Tensor::full(ti, b, x1.device())?.to_dtype(x1.dtype())?;
        let cos = cosine_alignment(field, path, x0, x1, &t)?;
        fractions.push(aligned_fraction(&cos, threshold));
        mean_cosines.push(cos.iter().sum::<f64>() / cos.len().max(1) as f64);
    }
    Ok(AlignmentCurve { times: times.to_vec(), fractions, mean_cosines })
}

/// The first time at which the piecewise-linear interpolant of
/// `(ts, fractions)` reaches `level` (`ts[0]` if it starts at or above it;
/// `None` if it never does). `ts` must be strictly increasing.
///
/// ```
/// use fm_core::alignment::crossing_time;
/// let tc = crossing_time(&[0.0, 0.5, 1.0], &[0.0, 0.2, 1.0], 0.5).unwrap();
/// assert!((tc.unwrap() - 0.6875).abs() < 1e-12);
/// assert_eq!(crossing_time(&[0.0, 1.0], &[0.0, 0.4], 0.5).unwrap(), None);
/// ```
pub fn crossing_time(ts: &[f64], fractions: &[f64], level: f64) -> Result<Option<f64>> {
    if ts.len() != fractions.len() {
        return Err(Error::Shape(format!("{} times but {} fractions", ts.len(), fractions.len())));
    }
    if ts.is_empty() {
        return Err(Error::invalid("ts", "the grid is empty"));
    }
    if ts.windows(2).any(|w| w[1].partial_cmp(&w[0]) != Some(std::cmp::Ordering::Greater)) {
        return Err(Error::invalid("ts", "times must be strictly increasing"));
    }
    if fractions[0] >= level {
        return Ok(Some(ts[0]));
    }
    for k in 1..ts.len() {
        let (f0, f1) = (fractions[k - 1], fractions[k]);
        if f1 >= level {
            let s = (level - f0) / (f1 - f0);
            return Ok(Some(ts[k - 1] + s * (ts[k] - ts[k - 1])));
        }
    }
    Ok(None)
}

//! Empirical flow matching (EFM): a lower-variance, unbiased regression
//! target for the CFM loss (Bertrand et al., arXiv 2506.03719, Eq. 7–8,
//! App. B.1, Alg. 2; docs/reference/closed-form.md).
//!
//! For each pair `(x₀, x₁)` at time `t`, with `x_t = α_t x₁ + σ_t x₀`, build
//! `M` references: `b⁽¹⁾ = x₁` (the point that generated `x_t`) and
//! `b⁽²⁾ … b⁽ᴹ⁾` drawn uniformly (with replacement) from the training set.
//! The target is the self-normalised estimate of `û*`:
//!
//! ```text
//! w_j    = softmax_j( −‖x_t − α_t b⁽ʲ⁾‖² / 2σ_t² )
//! û*_M   = (σ̇/σ) x_t + (Δ/σ) Σ_j w_j b⁽ʲ⁾
//!        = (α̇ x₁ + σ̇ x₀) + (Δ/σ) Σ_j w_j (b⁽ʲ⁾ − x₁)
//! ```
//!
//! The second form (used here) is the CFM target plus a correction that
//! vanishes when the weights concentrate on `b⁽¹⁾`, so it has no `1/σ`
//! cancellation near `t = 1`. `M = 1` gives exactly the CFM target. Because
//! `b⁽¹⁾` follows the posterior of `x₁` given `x_t`, `E[û*_M | x_t] = û*(x_t, t)`
//! (Prop. 2) and its variance is at most that of the CFM target.
//! The coefficients are evaluated at `min(t, DEFAULT_MAX_TIME)`
//! ([`crate::closed_form::DEFAULT_MAX_TIME`]), where `σ > 0`.

use candle::{DType, Tensor, D};

use crate::closed_form::DEFAULT_MAX_TIME;
use crate::path::AffinePath;
use crate::scheduler::Scheduler;
use crate::{to_f64_vec, Error, Result, SeededRng, VelocityField};

/// The EFM regression target `û*_M` for the pairs `(x₀, x₁)` at times `t`.
///
/// Draws `b · (m − 1)` training indices from `rng`. Memory is `O(b · M · D)`.
///
/// # Shapes
/// - `x0`, `x1`: `(b, ...)`, each row with `D` elements
/// - `t`: `(b,)`
/// - `train_set`: `(n, ...)` with `D` elements per point, same dtype and device as `x1`
/// - returns: the shape of `x1`
///
/// ```
/// use candle::{Device, Tensor};
/// use fm_core::efm::efm_target;
/// use fm_core::{path::AffinePath, scheduler::CondOtScheduler, SeededRng};
/// # fn main() -> fm_core::Result<()> {
/// let dev = Device::Cpu;
/// let train = Tensor::new(&[[1.0f64, 0.0], [0.0, 1.0], [-1.0, 0.0]], &dev)?;
/// let x0 = Tensor::new(&[[0.5f64, -0.5]], &dev)?;
/// let x1 = Tensor::new(&[[1.0f64, 0.0]], &dev)?;
/// let t = Tensor::new(&[0.5f64], &dev)?;
/// let path = AffinePath::new(CondOtScheduler);
/// // M = 1 is the CFM target x₁ − x₀.
/// let u1 = efm_target(&path, &x0, &x1, &t, &train, 1, &mut SeededRng::new(0))?;
/// assert_eq!(u1.to_vec2::<f64>()?, vec![vec![0.5, 0.5]]);
/// // M = 8 averages over 7 extra references: still finite, same shape.
/// let u8 = efm_target(&path, &x0, &x1, &t, &train, 8, &mut SeededRng::new(0))?;
/// assert_eq!(u8.dims(), &[1, 2]);
/// # Ok(())
/// # }
/// ```
pub fn efm_target<S: Scheduler>(
    path: &AffinePath<S>,
    x0: &Tensor,
    x1: &Tensor,
    t: &Tensor,
    train_set: &Tensor,
    m: usize,
    rng: &mut SeededRng,
) -> Result<Tensor> {
    if m == 0 {
        return Err(Error::invalid("m", "the number of references M must be at least 1"));
    }
    if x0.dims() != x1.dims() {
        return Err(Error::Shape(format!("x0 is {:?} but x1 is {:?}", x0.dims(), x1.dims())));
    }
    if x1.rank() < 2 || train_set.rank() < 2 {
        return Err(Error::Shape(format!(
            "x1 and the training set must be (b, ...) and (n, ...), got {:?} and {:?}",
            x1.dims(),
            train_set.dims()
        )));
    }
    let b = x1.dim(0)?;
    let x1f = x1.flatten_from(1)?;
    let x0f = x0.flatten_from(1)?;
    let dim = x1f.dim(1)?;
    let train = train_set.flatten_from(1)?.to_dtype(x1.dtype())?;
    let n = train.dim(0)?;
    if train.dim(1)? != dim {
        return Err(Error::Shape(format!(
            "x1 has {dim} elements per row but the training points have {}",
            train.dim(1)?
        )));
    }
    if n == 0 && m > 1 {
        return Err(Error::invalid("train_set", "is empty but M > 1 needs references from it"));
    }
    let ts = to_f64_vec(t)?;
    if t.rank() != 1 || ts.len() != b {
        return Err(Error::Shape(format!("t must be (b,) = ({b},), got {:?}", t.dims())));
    }
    if let Some(bad) = ts.iter().find(|v| !(v.is_finite() && (0.0..=1.0).contains(*v))) {
        return Err(Error::invalid("t", format!("times must lie in [0, 1], got {bad}")));
    }
    let cfm = path.sample(&x0f, &x1f, t)?.dx_t;
    if m == 1 {
        return Ok(cfm.reshape(x1.shape())?);
    }
    let co: Vec<_> = ts.iter().map(|&ti| path.scheduler.at(ti.min(DEFAULT_MAX_TIME))).collect();
    let column = |v: Vec<f64>| -> Result<Tensor> {
        Ok(Tensor::from_vec(v, (b, 1, 1), x1.device())?.to_dtype(x1.dtype())?)
    };
    // x_t from the unclamped path, so that b⁽¹⁾ = x₁ is the true generator.
    let x_t = path.sample(&x0f, &x1f, t)?.x_t;

    // References (b, M, D): x₁ first, then M − 1 uniform training points.
    let idx: Vec<u32> = (0..b * (m - 1)).map(|_| rand::Rng::random_range(rng.rng(), 0..n) as u32).collect();
    let idx = Tensor::from_vec(idx, b * (m - 1), x1.device())?;
    let drawn = train.index_select(&idx, 0)?.reshape((b, m - 1, dim))?;
    let refs = Tensor::cat(&[&x1f.unsqueeze(1)?, &drawn], 1)?;

    // Logits (b, M): −‖x_t − α b⁽ʲ⁾‖² / 2σ².
    let alpha = column(co.iter().map(|c| c.alpha).collect())?;
    let inv2s2 = column(co.iter().map(|c| -0.5 / (c.sigma * c.sigma)).collect())?;
    let diff = x_t.unsqueeze(1)?.broadcast_sub(&refs.broadcast_mul(&alpha)?)?;
    let logits = diff.sqr()?.sum_keepdim(D::Minus1)?.broadcast_mul(&inv2s2)?; // (b, M, 1)
    let e = logits.broadcast_sub(&logits.max_keepdim(1)?)?.exp()?;
    let w = e.broadcast_div(&e.sum_keepdim(1)?)?; // (b, M, 1)

    // Correction (Δ/σ) Σ_j w_j (b⁽ʲ⁾ − x₁).
    let centered = refs.broadcast_sub(&x1f.unsqueeze(1)?)?;
    let corr = centered.broadcast_mul(&w)?.sum(1)?; // (b, D)
    let scale = column(co.iter().map(|c| c.delta() / c.sigma).collect())?.squeeze(2)?;
    let target = (cfm + corr.broadcast_mul(&scale)?)?;
    Ok(target.reshape(x1.shape())?)
}

/// The EFM loss `mean ‖u_θ(x_t, t) − û*_M(x_t, t)‖²` (averaged over
/// coordinates and batch, like [`crate::loss::cfm_loss`]); the target is detached.
///
/// # Shapes
/// - `x0`, `x1`: `(b, ...)`; `t`: `(b,)`; `train_set`: `(n, ...)`
/// - returns: a scalar tensor
#[allow(clippy::too_many_arguments)]
pub fn efm_loss<V, S>(
    field: &V,
    path: &AffinePath<S>,
    x0: &Tensor,
    x1: &Tensor,
    t: &Tensor,
    train_set: &Tensor,
    m: usize,
    rng: &mut SeededRng,
) -> Result<Tensor>
where
    V: VelocityField + ?Sized,
    S: Scheduler,
{
    let target = efm_target(path, x0, x1, t, train_set, m, rng)?.detach();
    let x_t = path.sample(x0, x1, t)?.x_t;
    let u = field.velocity(&x_t, t)?;
    Ok((u - target)?.sqr()?.mean_all()?)
}

/// The EFM loss of one training batch `x1` (rows of `train_set`): draws `t`
/// and `x₀` from `rng` as [`crate::loss::draw_source_and_time`] does, then
/// the `M − 1` extra references.
pub fn efm_batch_loss<V, S>(
    field: &V,
    path: &AffinePath<S>,
    x1: &Tensor,
    train_set: &Tensor,
    m: usize,
    rng: &mut SeededRng,
) -> Result<Tensor>
where
    V: VelocityField + ?Sized,
    S: Scheduler,
{
    let (x0, t) = crate::loss::draw_source_and_time(x1, rng)?;
    efm_loss(field, path, &x0, x1, &t, train_set, m, rng)
}

/// Total variance `Σ_k Var[v_k]` over the rows of `samples` (`(N, ...)`), in `f64`:
/// a helper to compare estimators (e.g. EFM against CFM targets).
pub fn total_variance(samples: &Tensor) -> Result<f64> {
    let s = samples.flatten_from(1)?.to_dtype(DType::F64)?;
    let n = s.dim(0)?;
    if n < 2 {
        return Err(Error::invalid("samples", "need at least 2 rows for a variance"));
    }
    let mean = s.mean_keepdim(0)?;
    let ss = s.broadcast_sub(&mean)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
    Ok(ss / (n - 1) as f64)
}

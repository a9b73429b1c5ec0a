//! The closed-form empirical velocity `û*`: the exact minimiser of the CFM
//! loss when the data distribution is the empirical measure of `n` training
//! points (Bertrand, Gagneux, Massias, Emonet, arXiv 2506.03719, Prop. 1;
//! docs/reference/closed-form.md).
//!
//! For `q̂ = (1/n) Σᵢ δ_{x⁽ⁱ⁾}` on an affine path `x_t = α_t x₁ + σ_t x₀`,
//!
//! ```text
//! λᵢ(x, t) = softmaxᵢ( −‖x − α_t x⁽ⁱ⁾‖² / 2σ_t² )       (posterior over training points)
//! x̄_λ(x, t) = Σᵢ λᵢ x⁽ⁱ⁾                                (posterior-mean denoiser)
//! û*(x, t)  = (σ̇_t/σ_t) x + (Δ_t/σ_t) x̄_λ,   Δ_t = α̇_t σ_t − σ̇_t α_t
//! ```
//!
//! On CondOT this is `û* = (x̄_λ − x)/(1 − t)`.
//!
//! # Computation
//! With `rᵢ = ‖x⁽ⁱ⁾‖²` precomputed, the logits of query row `q` are
//! `L_qi = ((α/σ²) x_q)·x⁽ⁱ⁾ − (α²/2σ²) rᵢ` (the row constant `−‖x_q‖²/2σ²`
//! cancels in the softmax): one GEMM. The softmax-weighted mean is a second
//! GEMM. Both are streamed over chunks of the training set in one pass with a
//! running log-sum-exp (running max `m`, running sum `s`, running weighted sum
//! `A`, all rescaled by `exp(m − m')` when the max grows), so memory is
//! `O(chunk · b + b · d)` and `n = 60 000 × 784` fits.
//!
//! # Numerics near `t = 1`
//! The logits scale like `1/σ_t²`. The max subtraction keeps every
//! exponential in `[0, 1]` and the running sum `≥ 1`, so nothing overflows in
//! `f32` or `f64`. At `t = 1` itself `σ = 0` and `û*` is undefined, so times
//! are clamped to `t ≤ max_time` (default [`DEFAULT_MAX_TIME`] `= 1 − 1e-4`,
//! configurable with [`EmpiricalVelocity::with_max_time`]); a time above the
//! clamp is evaluated at the clamp. Solvers that evaluate the field at `t = 1`
//! (Heun, RK4, Dopri5) therefore get a finite velocity. The computation runs
//! in the dtype of the training set: store it in `f64` for exact work.

mod stream_f32;

use candle::{CpuStorage, DType, Storage, Tensor, D};

use crate::scheduler::{Scheduler, SchedulerOutput};
use crate::{to_f64_vec, Error, Result, VelocityField};

/// Default clamp on `t`: times above `1 − 1e-4` are evaluated at `1 − 1e-4`.
pub const DEFAULT_MAX_TIME: f64 = 1.0 - 1e-4;

/// Default number of training points processed per chunk.
pub const DEFAULT_CHUNK_SIZE: usize = 4096;

/// Slack allowed on `t ∈ [0, 1]` before an out-of-range time is an error.
const TIME_SLACK: f64 = 1e-9;

/// The closed-form velocity `û*` of the empirical distribution of a training set.
///
/// # Shapes
/// - training set: `(n, ...)`, `n ≥ 1`; each point has `D` elements
/// - queries `x`: `(b, ...)` with `D` elements per row; `t`: `(b,)` (one time per row)
/// - velocity and denoiser: the shape of `x`; weights: `(b, n)`
///
/// ```
/// use candle::{Device, Tensor};
/// use fm_core::closed_form::EmpiricalVelocity;
/// use fm_core::scheduler::CondOtScheduler;
/// use fm_core::AsOde;
/// use fm_solvers::{Euler, OdeSolver, TimeGrid};
/// # fn main() -> anyhow::Result<()> {
/// let data = Tensor::new(&[[1.0f64, 0.0], [-1.0, 2.0], [3.0, 4.0]], &Device::Cpu)?;
/// let field = EmpiricalVelocity::new(&data, CondOtScheduler)?.with_chunk_size(2)?;
/// // At t = 0 the posterior is uniform: one Euler step of size 1 lands on the mean.
/// let x0 = Tensor::new(&[[0.3f64, -0.7]], &Device::Cpu)?;
/// let sol = Euler.solve(&AsOde(&field), &x0, &TimeGrid::uniform(0.0, 1.0, 1)?)?;
/// let x1 = sol.state.to_vec2::<f64>()?;
/// assert!((x1[0][0] - 1.0).abs() < 1e-12 && (x1[0][1] - 2.0).abs() < 1e-12);
/// // Near t = 1 the posterior concentrates on the nearest (scaled) training point.
/// let t = Tensor::new(&[0.99f64], &Device::Cpu)?;
/// let w = field.weights(&Tensor::new(&[[2.9f64, 4.1]], &Device::Cpu)?, &t)?;
/// assert!(w.to_vec2::<f64>()?[0][2] > 0.999);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct EmpiricalVelocity<S> {
    /// `(n, D)`, the training set flattened per point.
    data: Tensor,
    /// `(1, n)`, `‖x⁽ⁱ⁾‖²`.
    sq_norms: Tensor,
    scheduler: S,
    chunk_size: usize,
    max_time: f64,
}

/// Running state of the one-pass log-sum-exp.
struct Streamed {
    /// `(b, D)`: `Σᵢ exp(L_i − m) x⁽ⁱ⁾`.
    acc: Tensor,
    /// `(b, 1)`: `Σᵢ exp(L_i − m)`.
    sum: Tensor,
}

impl<S: Scheduler> EmpiricalVelocity<S> {
    /// The field of the empirical distribution of `data` (`(n, ...)`, `n ≥ 1`,
    /// finite, float dtype) on the path of `scheduler`.
    pub fn new(data: &Tensor, scheduler: S) -> Result<Self> {
        if data.rank() < 2 {
            return Err(Error::Shape(format!(
                "the training set must be (n, ...) with at least 2 dimensions, got {:?}",
                data.dims()
            )));
        }
        if !matches!(data.dtype(), DType::F16 | DType::BF16 | DType::F32 | DType::F64) {
            return Err(Error::invalid("data", format!("must be a float tensor, got {:?}", data.dtype())));
        }
        let n = data.dim(0)?;
        if n == 0 {
            return Err(Error::invalid("data", "the training set is empty"));
        }
        let data = data.flatten_from(1)?.contiguous()?;
        let sq_norms = data.sqr()?.sum(1)?.reshape((1, n))?;
        let norms = to_f64_vec(&sq_norms)?;
        if let Some(i) = norms.iter().position(|r| !r.is_finite()) {
            return Err(Error::invalid("data", format!("training point {i} is not finite")));
        }
        Ok(Self { data, sq_norms, scheduler, chunk_size: DEFAULT_CHUNK_SIZE, max_time: DEFAULT_MAX_TIME })
    }

    /// Sets how many training points are processed at once (memory
    /// `O(chunk · b)`); must be `≥ 1`. The result does not depend on it up to rounding.
    pub fn with_chunk_size(mut self, chunk_size: usize) -> Result<Self> {
        if chunk_size == 0 {
            return Err(Error::invalid("chunk_size", "must be at least 1"));
        }
        self.chunk_size = chunk_size;
        Ok(self)
    }

    /// Sets the clamp `t ≤ max_time` (must lie in `(0, 1)`; default [`DEFAULT_MAX_TIME`]).
    pub fn with_max_time(mut self, max_time: f64) -> Result<Self> {
        if max_time.is_nan() || max_time <= 0.0 || max_time >= 1.0 {
            return Err(Error::invalid("max_time", format!("must lie in (0, 1), got {max_time}")));
        }
        self.max_time = max_time;
        Ok(self)
    }

    /// The number of training points `n`.
    pub fn num_points(&self) -> usize {
        self.data.dims()[0]
    }

    /// The number of elements `D` of one training point.
    pub fn point_dim(&self) -> usize {
        self.data.dims()[1]
    }

    /// The training set, flattened to `(n, D)`.
    pub fn data(&self) -> &Tensor {
        &self.data
    }

    /// The path's scheduler.
    pub fn scheduler(&self) -> &S {
        &self.scheduler
    }

    /// The chunk size.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// The time clamp.
    pub fn max_time(&self) -> f64 {
        self.max_time
    }

    /// Validates `(x, t)`, flattens `x` to `(b, D)` in the data dtype, and
    /// returns the scheduler coefficients at the clamped times.
    fn prepare(&self, x: &Tensor, t: &Tensor) -> Result<(Tensor, Vec<SchedulerOutput>)> {
        if x.rank() < 2 {
            return Err(Error::Shape(format!(
                "x must be (b, ...) with at least 2 dimensions, got {:?}",
                x.dims()
            )));
        }
        let b = x.dim(0)?;
        let flat = x.flatten_from(1)?;
        if flat.dim(1)? != self.point_dim() {
            return Err(Error::Shape(format!(
                "x has {} elements per row but the training points have {}",
                flat.dim(1)?,
                self.point_dim()
            )));
        }
        if t.rank() != 1 || t.dim(0)? != b {
            return Err(Error::Shape(format!("t must be (b,) = ({b},), got {:?}", t.dims())));
        }
        let ts = to_f64_vec(t)?;
        let mut co = Vec::with_capacity(b);
        for &ti in &ts {
            if !(ti.is_finite() && (-TIME_SLACK..=1.0 + TIME_SLACK).contains(&ti)) {
                return Err(Error::invalid("t", format!("times must lie in [0, 1], got {ti}")));
            }
            co.push(self.scheduler.at(ti.clamp(0.0, self.max_time)));
        }
        Ok((flat.to_dtype(self.data.dtype())?.contiguous()?, co))
    }

    /// A `(b, 1)` column in the data dtype.
    fn column(&self, values: Vec<f64>) -> Result<Tensor> {
        let b = values.len();
        Ok(Tensor::from_vec(values, (b, 1), self.data.device())?.to_dtype(self.data.dtype())?)
    }

    /// Logits of one chunk, `(b, len)`, from the pre-scaled queries `a ⊙ x_q`.
    fn chunk_logits(&self, xq_scaled: &Tensor, c: &Tensor, start: usize, len: usize) -> Result<Tensor> {
        let xc = self.data.narrow(0, start, len)?;
        let g = xq_scaled.matmul(&xc.t()?)?;
        let r = self.sq_norms.narrow(1, start, len)?;
        Ok((g + c.broadcast_mul(&r)?)?)
    }

    /// The per-row logit coefficients `a = α/σ²` and `c = −α²/2σ²`, `(b, 1)` each.
    fn logit_coefficients(&self, co: &[SchedulerOutput]) -> Result<(Tensor, Tensor)> {
        let a = co.iter().map(|c| c.alpha / (c.sigma * c.sigma)).collect();
        let c = co.iter().map(|c| -0.5 * c.alpha * c.alpha / (c.sigma * c.sigma)).collect();
        Ok((self.column(a)?, self.column(c)?))
    }

    /// One streaming pass over the training set.
    fn stream(&self, xq: &Tensor, co: &[SchedulerOutput]) -> Result<Streamed> {
        if let Some(s) = self.stream_cpu_f32(xq, co)? {
            return Ok(s);
        }
        let (a, c) = self.logit_coefficients(co)?;
        let xq_scaled = xq.broadcast_mul(&a)?;
        let n = self.num_points();
        let mut state: Option<(Tensor, Streamed)> = None;
        let mut start = 0;
        while start < n {
            let len = self.chunk_size.min(n - start);
            let logits = self.chunk_logits(&xq_scaled, &c, start, len)?;
            let chunk_max = logits.max_keepdim(1)?;
            let xc = self.data.narrow(0, start, len)?;
            state = Some(match state {
                None => {
                    let e = logits.broadcast_sub(&chunk_max)?.exp()?;
                    let sum = e.sum_keepdim(1)?;
                    let acc = e.matmul(&xc)?;
                    (chunk_max, Streamed { acc, sum })
                }
                Some((m, s)) => {
                    let m_new = m.maximum(&chunk_max)?;
                    let rescale = (m - &m_new)?.exp()?;
                    let e = logits.broadcast_sub(&m_new)?.exp()?;
                    let sum = ((s.sum * &rescale)? + e.sum_keepdim(1)?)?;
                    let acc = (s.acc.broadcast_mul(&rescale)? + e.matmul(&xc)?)?;
                    (m_new, Streamed { acc, sum })
                }
            });
            start += len;
        }
        let (_, s) = state.ok_or_else(|| Error::invalid("data", "the training set is empty"))?;
        Ok(s)
    }

    /// [`Self::stream`] on raw f32 slices (see `stream_f32`), where the
    /// training set is f32 on the CPU and nothing tracks gradients; `None`
    /// elsewhere.
    fn stream_cpu_f32(&self, xq: &Tensor, co: &[SchedulerOutput]) -> Result<Option<Streamed>> {
        if self.data.dtype() != DType::F32
            || !self.data.device().is_cpu()
            || self.data.track_op()
            || xq.track_op()
        {
            return Ok(None);
        }
        let (b, d) = (xq.dim(0)?, self.point_dim());
        let mut xq_scaled = xq.flatten_all()?.to_vec1::<f32>()?;
        let mut c = Vec::with_capacity(b);
        for (row, s) in xq_scaled.chunks_exact_mut(d.max(1)).zip(co) {
            let a = (s.alpha / (s.sigma * s.sigma)) as f32;
            row.iter_mut().for_each(|x| *x *= a);
            c.push((-0.5 * s.alpha * s.alpha / (s.sigma * s.sigma)) as f32);
        }
        let sq_norms = self.sq_norms.flatten_all()?.to_vec1::<f32>()?;
        let (storage, layout) = self.data.storage_and_layout();
        let data = match (&*storage, layout.contiguous_offsets()) {
            (Storage::Cpu(CpuStorage::F32(v)), Some((start, end))) => &v[start..end],
            _ => return Ok(None),
        };
        let threads = candle::utils::get_num_threads();
        let s = stream_f32::stream(data, &sq_norms, d, &xq_scaled, &c, self.chunk_size, threads);
        let device = self.data.device();
        Ok(Some(Streamed {
            acc: Tensor::from_vec(s.acc, (b, d), device)?,
            sum: Tensor::from_vec(s.sum, (b, 1), device)?,
        }))
    }

    /// `x̄_λ` flattened to `(b, D)` in the data dtype, and the coefficients.
    fn denoise_flat(&self, x: &Tensor, t: &Tensor) -> Result<(Tensor, Tensor, Vec<SchedulerOutput>)> {
        let (xq, co) = self.prepare(x, t)?;
        let s = self.stream(&xq, &co)?;
        let mean = s.acc.broadcast_div(&s.sum)?;
        Ok((mean, xq, co))
    }

    /// The posterior-mean denoiser `x̄_λ(x, t) = Σᵢ λᵢ x⁽ⁱ⁾ = E[x₁ | x_t = x]`
    /// under the empirical data distribution, shaped like `x`.
    pub fn denoise(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let (mean, _, _) = self.denoise_flat(x, t)?;
        Ok(mean.reshape(x.shape())?.to_dtype(x.dtype())?)
    }

    /// The posterior weights `λ(x, t)`, `(b, n)` in the data dtype (rows sum
    /// to 1). Materialises the full matrix: meant for small `n`.
    pub fn weights(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let (xq, co) = self.prepare(x, t)?;
        let (a, c) = self.logit_coefficients(&co)?;
        let logits = self.chunk_logits(&xq.broadcast_mul(&a)?, &c, 0, self.num_points())?;
        let e = logits.broadcast_sub(&logits.max_keepdim(D::Minus1)?)?.exp()?;
        Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
    }
}

impl<S: Scheduler> VelocityField for EmpiricalVelocity<S> {
    /// `û*(x, t) = (σ̇/σ) x + (Δ/σ) x̄_λ(x, t)`, with `t` clamped to `max_time`.
    fn velocity(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let (mean, xq, co) = self.denoise_flat(x, t)?;
        let fx = self.column(co.iter().map(|c| c.d_sigma / c.sigma).collect())?;
        let fm = self.column(co.iter().map(|c| c.delta() / c.sigma).collect())?;
        let u = (xq.broadcast_mul(&fx)? + mean.broadcast_mul(&fm)?)?;
        Ok(u.reshape(x.shape())?.to_dtype(x.dtype())?)
    }
}

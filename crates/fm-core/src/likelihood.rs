//! Exact log-likelihoods of a flow model by the instantaneous change of variables.
//!
//! Time convention: `t = 0` is the noise `p₀ = N(0, I)`, `t = 1` the data.
//! Along a trajectory of `ẋ = u(x, t)` the log-density obeys
//! `d/dt log p_t(x(t)) = −∇·u(x(t), t)` (Chen et al., arXiv 1806.07366). So
//! (docs/reference/likelihood.md, `flow_matching`'s `compute_likelihood`):
//!
//! - **Backward** ([`log_likelihood`]): integrate the augmented state
//!   `(x, ℓ)` with `ẋ = u(x, t)`, `ℓ̇ = ∇·u(x, t)` from `t = 1` to `t = 0`,
//!   starting at `x(1) = x₁`, `ℓ(1) = 0`. Then `ℓ(0) = −∫₀¹ ∇·u dt` and
//!   `log p₁(x₁) = log p₀(x(0)) + ℓ(0)`, with
//!   `log p₀(z) = −½‖z‖² − (d/2) log 2π`.
//! - **Forward** ([`sample_with_log_likelihood`]): from `x(0) = x₀`,
//!   `ℓ(0) = 0` to `t = 1`: `log p₁(x(1)) = log p₀(x₀) − ℓ(1)`.
//!
//! `x` and `ℓ` travel together as one `(b, d + 1)` tensor, so every solver
//! of `fm-solvers` (the adaptive [`fm_solvers::Dopri5`] included, whose error
//! control then also covers `ℓ`) integrates them.
//!
//! The divergence comes from autograd ([`Divergence::Exact`] or
//! Hutchinson's estimator, see [`crate::divergence`]) or from a closed form
//! ([`log_likelihood_with_divergence`]). Hutchinson probes are drawn once
//! per solve and reused at every step.
//!
//! **Training** a CNF by maximum likelihood ([`cnf_nll_loss`]) back-propagates
//! through the ODE steps *and* through the divergence, which is itself a
//! gradient: that needs second-order autograd, which candle gets silently
//! wrong unless `CANDLE_GRAD_DO_NOT_DETACH` is set before the first backward
//! pass of the thread ([`enable_second_order_gradients`]).
//!
//! ```
//! use candle::{DType, Device, Tensor};
//! use fm_core::divergence::Divergence;
//! use fm_core::likelihood::log_likelihood;
//! use fm_core::{SeededRng, VelocityField};
//! use fm_solvers::{Rk4, TimeGrid};
//!
//! /// u(x, t) = x: the flow x(t) = eᵗ x₀ maps N(0, I) to N(0, e² I).
//! struct Expand;
//! impl VelocityField for Expand {
//!     fn velocity(&self, x: &Tensor, _t: &Tensor) -> fm_core::Result<Tensor> {
//!         Ok(x.affine(1.0, 0.0)?)
//!     }
//! }
//! # fn main() -> fm_core::Result<()> {
//! let x1 = Tensor::new(&[[0.5f64, -1.0]], &Device::Cpu)?;
//! let grid = TimeGrid::uniform(1.0, 0.0, 50)?;
//! let res = log_likelihood(&Expand, &x1, Divergence::Exact, &Rk4, &grid, &mut SeededRng::new(0))?;
//! // log N(x; 0, e² I) in d = 2.
//! let want = -0.5 * (0.25 + 1.0) / 1f64.exp().powi(2) - 2.0 - (2.0 * std::f64::consts::PI).ln();
//! assert!((res.log_p_vec()?[0] - want).abs() < 1e-8);
//! assert_eq!(res.nfe, 200);
//! # Ok(())
//! # }
//! ```

use candle::{DType, Device, Tensor, Var};
use fm_solvers::{OdeSolver, Rk4, TimeGrid};

use crate::divergence::{Divergence, Probe};
use crate::jacobian::JvpField;
use crate::{time_like, to_f64_vec, DivergenceField, Error, Result, SeededRng, VelocityField};

/// The result of a backward likelihood solve ([`log_likelihood`]).
///
/// # Shapes
/// - `log_p`, `divergence_integral`: `(b,)`, in the data's dtype
/// - `x0`: `(b, d)`
#[derive(Debug, Clone)]
pub struct LikelihoodResult {
    /// `log p₁(x₁)` per data point, in nats, in the model's units.
    pub log_p: Tensor,
    /// The noise `x(0)` each data point maps to.
    pub x0: Tensor,
    /// `∫₀¹ ∇·u(x(t), t) dt` along each trajectory (`= −ℓ(0)`).
    pub divergence_integral: Tensor,
    /// Number of evaluations of the velocity (and divergence) in the solve.
    pub nfe: usize,
}

impl LikelihoodResult {
    /// `log_p` as `f64` values.
    pub fn log_p_vec(&self) -> Result<Vec<f64>> {
        to_f64_vec(&self.log_p)
    }

    /// The mean of `log_p` over the batch.
    pub fn mean_log_p(&self) -> Result<f64> {
        let v = self.log_p_vec()?;
        Ok(v.iter().sum::<f64>() / v.len() as f64)
    }
}

/// The result of a forward solve with likelihood ([`sample_with_log_likelihood`]).
///
/// # Shapes
/// - `x1`: `(b, d)`
/// - `log_p`, `divergence_integral`: `(b,)`, in the noise's dtype
#[derive(Debug, Clone)]
pub struct SampleLikelihood {
    /// The generated points `x(1)`.
    pub x1: Tensor,
    /// `log p₁(x(1))` of the generated points under the model, in nats.
    pub log_p: Tensor,
    /// `∫₀¹ ∇·u(x(t), t) dt` along each trajectory.
    pub divergence_integral: Tensor,
    /// Number of evaluations of the velocity (and divergence) in the solve.
    pub nfe: usize,
}

impl SampleLikelihood {
    /// `log_p` as `f64` values.
    pub fn log_p_vec(&self) -> Result<Vec<f64>> {
        to_f64_vec(&self.log_p)
    }
}

/// `log N(z; 0, I) = −½‖z‖² − (d/2) log 2π` per row.
///
/// # Shapes
/// - `z`: `(b, d)`
/// - returns: `(b,)`
pub fn standard_normal_log_density(z: &Tensor) -> Result<Tensor> {
    let d = match z.dims() {
        &[_, d] => d,
        dims => return Err(Error::Shape(format!("expected (batch, dim), got shape {dims:?}"))),
    };
    let c = -0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln();
    Ok(z.sqr()?.sum(1)?.affine(-0.5, c)?)
}

/// Checks that `x` (argument `name`) is a finite, non-empty `(b, d)` float
/// matrix and returns `(b, d)`.
fn check_points(name: &'static str, x: &Tensor) -> Result<(usize, usize)> {
    let (b, d) = match x.dims() {
        &[b, d] => (b, d),
        dims => {
            return Err(Error::Shape(format!("`{name}` must be a (batch, dim) matrix, got shape {dims:?}")))
        }
    };
    if b == 0 || d == 0 {
        return Err(Error::Shape(format!("`{name}` must not be empty, got shape {:?}", x.dims())));
    }
    if !matches!(x.dtype(), DType::F32 | DType::F64) {
        return Err(Error::invalid(
            name,
            format!("must be f32 or f64 for the likelihood ODE, got {:?}", x.dtype()),
        ));
    }
    let values = to_f64_vec(x)?;
    if let Some((k, v)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::invalid(
            name,
            format!(
                "the data must be finite, but row {} column {} is {v} (of a {b}×{d} batch)",
                k / d,
                k % d
            ),
        ));
    }
    Ok((b, d))
}

pub(crate) fn check_grid(grid: &TimeGrid, start: f64, end: f64, what: &str) -> Result<()> {
    if grid.start() != start || grid.end() != end {
        return Err(Error::invalid(
            "grid",
            format!(
                "{what} runs from t = {start} to t = {end}, but the grid runs from {} to {}",
                grid.start(),
                grid.end()
            ),
        ));
    }
    Ok(())
}

/// Turns a solver error back into a typed fm-core error with context: the
/// field's own errors (boxed by the solver) are unboxed.
pub(crate) fn solver_error(e: fm_solvers::Error, context: &str) -> Error {
    let inner = match e {
        fm_solvers::Error::Field(b) => match b.downcast::<Error>() {
            Ok(inner) => *inner,
            Err(b) => Error::Solver(fm_solvers::Error::Field(b)),
        },
        other => Error::Solver(other),
    };
    inner.context(context)
}

/// A closure computing `(u(x, t), ∇·u(x, t))` for `x: (b, d)`, `t: (b,)`.
type VelocityDivergence<'a> = dyn Fn(&Tensor, &Tensor) -> Result<(Tensor, Tensor)> + 'a;

/// Integrates `(x, ℓ)` with `ẋ = u`, `ℓ̇ = ∇·u` from `x(grid.start()) = start`,
/// `ℓ = 0`; returns `x` and `ℓ` at `grid.end()` and the NFE.
fn integrate_augmented(
    vd: &VelocityDivergence<'_>,
    start: &Tensor,
    solver: &dyn OdeSolver,
    grid: &TimeGrid,
    context: &str,
) -> Result<(Tensor, Tensor, usize)> {
    let (b, d) = start.dims2()?;
    let y0 = Tensor::cat(&[start, &Tensor::zeros((b, 1), start.dtype(), start.device())?], 1)?;
    let rhs = |t: f64, y: &Tensor| -> fm_solvers::Result<Tensor> {
        let eval = || -> Result<Tensor> {
            let x = y.narrow(1, 0, d)?.contiguous()?;
            let tt = time_like(&x, t)?;
            let (u, div) = vd(&x, &tt)?;
            if div.dims() != [b] {
                return Err(Error::Shape(format!(
                    "the divergence must have shape [{b}], got {:?}",
                    div.dims()
                )));
            }
            Ok(Tensor::cat(&[&u, &div.unsqueeze(1)?], 1)?)
        };
        eval().map_err(|e| fm_solvers::Error::Field(Box::new(e)))
    };
    let sol = solver.solve(&rhs, &y0, grid).map_err(|e| solver_error(e, context))?;
    let x = sol.state.narrow(1, 0, d)?;
    let ell = sol.state.narrow(1, d, 1)?.squeeze(1)?;
    Ok((x, ell, sol.stats.nfe))
}

/// Backward solve from the validated `x1`; shared by the public entry points.
fn backward(
    vd: &VelocityDivergence<'_>,
    x1: &Tensor,
    solver: &dyn OdeSolver,
    grid: &TimeGrid,
) -> Result<LikelihoodResult> {
    let context = format!("backward likelihood solve ({}, 1 → 0)", solver.name());
    let (x0, ell, nfe) = integrate_augmented(vd, x1, solver, grid, &context)?;
    let log_p = (standard_normal_log_density(&x0)? + &ell)?;
    Ok(LikelihoodResult { log_p, x0, divergence_integral: ell.neg()?, nfe })
}

/// `log p₁(x₁)` of the model `field` at each data point, by integrating the
/// augmented ODE from `t = 1` back to `t = 0` with `solver` over `grid`.
///
/// `grid` must run from exactly 1 to exactly 0 (e.g.
/// `TimeGrid::uniform(1.0, 0.0, n)`). With Hutchinson's estimator the probes
/// are drawn from `rng` once and reused at every step; `rng` is untouched
/// for [`Divergence::Exact`].
///
/// # Shapes
/// - `x1`: `(b, d)`, `f32` or `f64`
/// - result: see [`LikelihoodResult`]
///
/// # Errors
///
/// - [`Error::Shape`] if `x1` is not a non-empty `(b, d)` matrix;
/// - [`Error::InvalidArgument`] naming `x1` if it holds NaN or ±∞ (or is not
///   a float), naming `grid` if it does not run from 1 to 0, naming
///   `num_probes` if it is 0;
/// - [`Error::Context`] around the solver's failure (e.g.
///   [`fm_solvers::Error::MaxStepsExceeded`]) or the field's error.
pub fn log_likelihood<V: VelocityField + ?Sized>(
    field: &V,
    x1: &Tensor,
    divergence: Divergence,
    solver: &dyn OdeSolver,
    grid: &TimeGrid,
    rng: &mut SeededRng,
) -> Result<LikelihoodResult> {
    let (b, d) = check_points("x1", x1)?;
    divergence.validate()?;
    check_grid(grid, 1.0, 0.0, "the backward likelihood solve")?;
    let est = divergence.estimator(b, d, x1.dtype(), x1.device(), rng)?;
    backward(&|x, t| est.velocity_and_divergence(field, x, t), x1, solver, grid)
}

/// [`log_likelihood`] with a caller-supplied divergence `div(x, t)`, e.g. a
/// closed form such as [`crate::gaussian::GaussianOracle::divergence`], or a
/// field whose velocity is not computed with candle ops.
///
/// # Shapes
/// - `x1`: `(b, d)`
/// - `div(x, t)`: `x: (b, d)`, `t: (b,)` → `(b,)`
///
/// # Errors
///
/// As [`log_likelihood`]; [`Error::Shape`] (in context) if `div` returns a
/// shape other than `(b,)`.
pub fn log_likelihood_with_divergence<V, F>(
    field: &V,
    div: F,
    x1: &Tensor,
    solver: &dyn OdeSolver,
    grid: &TimeGrid,
) -> Result<LikelihoodResult>
where
    V: VelocityField + ?Sized,
    F: Fn(&Tensor, &Tensor) -> Result<Tensor>,
{
    check_points("x1", x1)?;
    check_grid(grid, 1.0, 0.0, "the backward likelihood solve")?;
    backward(&|x, t| Ok((field.velocity(x, t)?, div(x, t)?)), x1, solver, grid)
}

/// Generates `x(1)` from the noise `x0` by integrating from `t = 0` to `t = 1`
/// over `grid` (which must run from exactly 0 to exactly 1), together with
/// the model's `log p₁(x(1)) = log p₀(x₀) − ∫₀¹ ∇·u dt` — the likelihood of
/// each generated point at the cost of one solve.
///
/// # Shapes
/// - `x0`: `(b, d)`, `f32` or `f64`
/// - result: see [`SampleLikelihood`]
///
/// # Errors
///
/// As [`log_likelihood`], with `x0` in place of `x1`.
pub fn sample_with_log_likelihood<V: VelocityField + ?Sized>(
    field: &V,
    x0: &Tensor,
    divergence: Divergence,
    solver: &dyn OdeSolver,
    grid: &TimeGrid,
    rng: &mut SeededRng,
) -> Result<SampleLikelihood> {
    let (b, d) = check_points("x0", x0)?;
    divergence.validate()?;
    check_grid(grid, 0.0, 1.0, "sampling")?;
    let est = divergence.estimator(b, d, x0.dtype(), x0.device(), rng)?;
    let context = format!("forward sampling solve with likelihood ({}, 0 → 1)", solver.name());
    let (x1, ell, nfe) =
        integrate_augmented(&|x, t| est.velocity_and_divergence(field, x, t), x0, solver, grid, &context)?;
    let log_p = (standard_normal_log_density(x0)? - &ell)?;
    Ok(SampleLikelihood { x1, log_p, divergence_integral: ell, nfe })
}

/// The environment variable that makes candle keep the graph of gradients.
pub const SECOND_ORDER_ENV: &str = "CANDLE_GRAD_DO_NOT_DETACH";

/// Whether candle computes second-order gradients correctly on this thread.
///
/// candle's `backward` detaches the incoming gradient at every node unless
/// `CANDLE_GRAD_DO_NOT_DETACH` is set (non-empty, not `"0"`); the variable is
/// read **once per thread**, at its first backward pass. This runs a tiny
/// probe on the current thread: the second derivative of `x⁴` at `x = 1`
/// (12 when gradients keep their graph, 4 when they are detached).
pub fn second_order_gradients_active() -> Result<bool> {
    let x = Var::new(1.0f64, &Device::Cpu)?;
    let y = x.as_tensor().sqr()?.sqr()?;
    let g = y.backward()?;
    let Some(dx) = g.get(x.as_tensor()) else { return Ok(false) };
    if !dx.track_op() {
        return Ok(false);
    }
    let g2 = dx.backward()?;
    let Some(dxx) = g2.get(x.as_tensor()) else { return Ok(false) };
    Ok((dxx.to_scalar::<f64>()? - 12.0).abs() < 1e-9)
}

/// Turns on correct second-order gradients in candle by setting
/// `CANDLE_GRAD_DO_NOT_DETACH=1`, and checks that it took effect on the
/// calling thread.
///
/// Call it at the start of the program (or of each thread that trains a
/// CNF) **before any backward pass on that thread**: candle reads the
/// variable once per thread. Setting it from the shell
/// (`CANDLE_GRAD_DO_NOT_DETACH=1 cargo run ...`) works as well. It changes
/// the process environment, so other threads that have not yet run a
/// backward pass see it too. Keeping gradient graphs costs memory in
/// ordinary first-order training, which is why it is off by default.
///
/// # Errors
///
/// [`Error::InvalidArgument`] naming `CANDLE_GRAD_DO_NOT_DETACH` if this
/// thread already ran a backward pass without it (the setting is then
/// frozen for the thread).
pub fn enable_second_order_gradients() -> Result<()> {
    // The crate is edition 2021, where `set_var` is a safe function. The
    // race it can cause is with C code reading the environment concurrently;
    // Rust's own readers (candle included) take std's environment lock.
    std::env::set_var(SECOND_ORDER_ENV, "1");
    if second_order_gradients_active()? {
        Ok(())
    } else {
        Err(Error::invalid(
            SECOND_ORDER_ENV,
            "it was set, but this thread already ran a backward pass without it and candle reads it \
             once per thread; call enable_second_order_gradients() before any backward pass, or set \
             the variable before the program starts",
        ))
    }
}

/// The negative mean log-likelihood of `x1` under the CNF `field`, through
/// `steps` RK4 steps from `t = 1` to `0`, for a field with its own exact,
/// first-order divergence ([`DivergenceField`]): differentiable with plain
/// (first-order) backpropagation, so it needs no `CANDLE_GRAD_DO_NOT_DETACH`.
///
/// # Shapes
/// - `x1`: `(b, d)`; returns a scalar
///
/// # Errors
/// As [`cnf_nll_loss`], without the second-order requirement.
pub fn cnf_nll_loss_exact<F: DivergenceField + ?Sized>(
    field: &F,
    x1: &Tensor,
    steps: usize,
) -> Result<Tensor> {
    check_points("x1", x1)?;
    if steps == 0 {
        return Err(Error::invalid("steps", "the likelihood solve needs at least 1 step"));
    }
    let grid = TimeGrid::uniform(1.0, 0.0, steps)?;
    let res = backward(&|x, t| field.velocity_and_divergence(x, t), x1, &Rk4, &grid)?;
    Ok(res.log_p.mean_all()?.neg()?)
}

/// [`log_likelihood`] for a field that computes its own exact divergence
/// ([`DivergenceField`]), e.g. `fm_models::VelocityMlp` by forward-mode
/// tangents: usually much cheaper than autograd's one backward pass per dimension.
///
/// # Errors
/// As [`log_likelihood`].
pub fn log_likelihood_exact<F: DivergenceField + ?Sized>(
    field: &F,
    x1: &Tensor,
    solver: &dyn OdeSolver,
    grid: &TimeGrid,
) -> Result<LikelihoodResult> {
    check_points("x1", x1)?;
    check_grid(grid, 1.0, 0.0, "the backward likelihood solve")?;
    backward(&|x, t| field.velocity_and_divergence(x, t), x1, solver, grid)
}

/// [`log_likelihood`] with Hutchinson's estimator for a field that pushes
/// tangents forward ([`JvpField`], e.g. `fm_models::VelocityMlp`): each
/// evaluation is one forward pass carrying the probes as tangents,
/// `ε̂ = (1/k) Σ_k ε_kᵀ (J ε_k)`, with no autograd graph and no backward
/// pass. The probes are drawn from `rng` exactly as [`log_likelihood`]
/// draws them for `Divergence::hutchinson(probe, num_probes)`, so both give
/// the same estimate up to rounding (`εᵀ J ε` is the same number whether
/// `J ε` comes forward or `εᵀ J` backward).
///
/// # Shapes
/// - `x1`: `(b, d)`; result as [`log_likelihood`]
///
/// # Errors
/// As [`log_likelihood`].
pub fn log_likelihood_hutchinson_jvp<F: JvpField + ?Sized>(
    field: &F,
    x1: &Tensor,
    probe: Probe,
    num_probes: usize,
    solver: &dyn OdeSolver,
    grid: &TimeGrid,
    rng: &mut SeededRng,
) -> Result<LikelihoodResult> {
    let (b, d) = check_points("x1", x1)?;
    let divergence = Divergence::hutchinson(probe, num_probes);
    divergence.validate()?;
    check_grid(grid, 1.0, 0.0, "the backward likelihood solve")?;
    let est = divergence.estimator(b, d, x1.dtype(), x1.device(), rng)?;
    let probes = Tensor::stack(est.probes(), 0)?; // (k, b, d)
    let k = num_probes as f64;
    backward(
        &|x, t| {
            let (u, jv) = field.velocity_and_jvp(x, t, &probes)?;
            let div = (jv * &probes)?.sum(2)?.sum(0)?;
            Ok((u, if num_probes == 1 { div } else { div.affine(1.0 / k, 0.0)? }))
        },
        x1,
        solver,
        grid,
    )
}

/// The differentiable negative mean log-likelihood `−(1/b) Σ log p₁(x₁)` of
/// a CNF, for training by maximum likelihood: a scalar tensor whose
/// gradient with respect to the field's parameters flows through `steps`
/// fixed RK4 steps from `t = 1` to `t = 0` and through the divergence.
///
/// The divergence is itself a gradient, so this needs second-order
/// autograd: call [`enable_second_order_gradients`] first (without it
/// candle's gradients would be silently wrong, so this function refuses to
/// run). Hutchinson probes are drawn from `rng` once per call.
///
/// Cost: each of the `4 · steps` evaluations runs `d + 1` small backward
/// passes (the Jacobian of that evaluation, and the gradient of its
/// divergence; see [`DivergenceEstimator::with_graph`]), and the graph kept
/// for the final backward grows linearly with `steps`. Only first
/// derivatives of the loss are exact.
///
/// [`DivergenceEstimator::with_graph`]: crate::divergence::DivergenceEstimator::with_graph
///
/// ```
/// use candle::{DType, Device, Tensor};
/// use candle_nn::{Module, VarBuilder, VarMap};
/// use fm_core::divergence::Divergence;
/// use fm_core::likelihood::{cnf_nll_loss, enable_second_order_gradients};
/// use fm_core::{SeededRng, VelocityField};
///
/// struct Field(candle_nn::Linear);
/// impl VelocityField for Field {
///     fn velocity(&self, x: &Tensor, _t: &Tensor) -> fm_core::Result<Tensor> {
///         Ok(self.0.forward(x)?.tanh()?)
///     }
/// }
/// # fn main() -> fm_core::Result<()> {
/// enable_second_order_gradients()?;
/// let vm = VarMap::new();
/// let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
/// let field = Field(candle_nn::linear(2, 2, vb)?);
/// let x1 = Tensor::new(&[[0.5f64, -1.0], [2.0, 0.1]], &Device::Cpu)?;
/// let loss = cnf_nll_loss(&field, &x1, 4, Divergence::Exact, &mut SeededRng::new(0))?;
/// let grads = loss.backward()?;
/// assert!(vm.all_vars().iter().all(|v| grads.get(v.as_tensor()).is_some()));
/// # Ok(())
/// # }
/// ```
///
/// # Shapes
/// - `x1`: `(b, d)`, `f32` or `f64` (use `f64` to check gradients)
/// - returns: a scalar
///
/// # Errors
///
/// [`Error::InvalidArgument`] naming `CANDLE_GRAD_DO_NOT_DETACH` if
/// second-order gradients are not active on this thread, naming `steps` if
/// it is 0; otherwise as [`log_likelihood`].
pub fn cnf_nll_loss<V: VelocityField + ?Sized>(
    field: &V,
    x1: &Tensor,
    steps: usize,
    divergence: Divergence,
    rng: &mut SeededRng,
) -> Result<Tensor> {
    if !second_order_gradients_active()? {
        return Err(Error::invalid(
            SECOND_ORDER_ENV,
            "second-order gradients are off, so the gradient of the likelihood loss would be \
             silently wrong; call fm_core::likelihood::enable_second_order_gradients() before the \
             first backward pass (or set CANDLE_GRAD_DO_NOT_DETACH=1)",
        ));
    }
    let (b, d) = check_points("x1", x1)?;
    divergence.validate()?;
    if steps == 0 {
        return Err(Error::invalid("steps", "the likelihood solve needs at least 1 step"));
    }
    let grid = TimeGrid::uniform(1.0, 0.0, steps)?;
    let est = divergence.estimator(b, d, x1.dtype(), x1.device(), rng)?.with_graph(true);
    let res = backward(&|x, t| est.velocity_and_divergence(field, x, t), x1, &Rk4, &grid)?;
    Ok(res.log_p.mean_all()?.neg()?)
}

//! The likelihood of a manifold model: the instantaneous change of variables
//! with the Riemannian divergence, integrated backwards on the manifold.

use candle::{DType, Tensor};
use fm_solvers::{OdeFunction, OdeSolver, TimeGrid};

use super::{dot, Manifold};
use crate::divergence::Divergence;
use crate::jacobian::JvpField;
use crate::likelihood::LikelihoodResult;
use crate::{time_like, Error, Result, SeededRng};

/// `log p₁(x₁)` (nats, with respect to the Riemannian volume) of the model
/// whose velocity is the projected field `V = P(x) f(x, t)` of the network
/// `net`: the augmented ODE `ẋ = V`, `ℓ̇ = div_M V` from `t = 1` back to
/// `t = 0` over `grid`, each step retracted onto the manifold (projection),
/// then `log p₁(x₁) = log p₀(x(0)) + ℓ(0)` with the base density of `manifold`.
///
/// The Riemannian divergence of `V` on an embedded manifold is
/// `tr(P J_V) = Σⱼ eⱼ·(P J_V eⱼ)`; on a sphere factor it is
/// `tr(P J_f) − (x·f)·d` (see [`Manifold::projected_jvp_point`]). It is
/// computed from the network's forward-mode Jacobian–vector products:
/// - [`Divergence::Exact`]: the `n` ambient basis vectors as tangents (one
///   forward pass carrying `n` tangents per evaluation);
/// - Hutchinson: `k` probes `ε` drawn once from `rng` in the ambient space and
///   projected at each evaluation, `z = P(x) ε`, so that `E[z zᵀ] = P` and
///   `E[z·(P J_V z)] = tr(P J_V)`.
///
/// # Shapes
/// - `x1`: `(b, n)` points of the manifold (embedding coordinates)
///
/// # Errors
/// [`Error::Shape`] for a wrong `x1`; [`Error::InvalidArgument`] naming
/// `grid` unless it runs from 1 to 0, or `num_probes` if it is 0; the solver's
/// and the network's errors with context.
pub fn riemannian_log_likelihood<F: JvpField + ?Sized>(
    manifold: &dyn Manifold,
    net: &F,
    x1: &Tensor,
    divergence: Divergence,
    solver: &dyn OdeSolver,
    grid: &TimeGrid,
    rng: &mut SeededRng,
) -> Result<LikelihoodResult> {
    let n = manifold.check(x1, "x1")?;
    let b = x1.dim(0)?;
    crate::likelihood::check_grid(grid, 1.0, 0.0, "the backward likelihood solve")?;
    divergence.validate()?;
    let probes = match divergence {
        Divergence::Exact => None,
        Divergence::Hutchinson { probe, num_probes } => {
            Some(probe.draw(rng, (num_probes, b, n), DType::F64, x1.device())?)
        }
    };
    let ode = Augmented { manifold, net, n, probes };
    let y0 = Tensor::cat(&[&manifold.project(x1)?, &Tensor::zeros((b, 1), x1.dtype(), x1.device())?], 1)?;
    let sol = solver.solve(&ode, &y0, grid).map_err(|e| {
        crate::likelihood::solver_error(
            e,
            &format!("backward likelihood solve on {} ({}, 1 → 0)", manifold.spec(), solver.name()),
        )
    })?;
    let x0 = sol.state.narrow(1, 0, n)?;
    let ell = sol.state.narrow(1, n, 1)?.squeeze(1)?;
    let log_p = (manifold.base_log_density(&x0)? + &ell)?;
    Ok(LikelihoodResult { log_p, x0, divergence_integral: ell.neg()?, nfe: sol.stats.nfe })
}

/// The augmented right-hand side `(V, div_M V)`, its `x` part retracted.
struct Augmented<'a, F: ?Sized> {
    manifold: &'a dyn Manifold,
    net: &'a F,
    n: usize,
    /// Ambient Hutchinson probes `(k, b, n)` in `f64`; `None`: exact.
    probes: Option<Tensor>,
}

impl<F: JvpField + ?Sized> Augmented<'_, F> {
    fn rhs(&self, t: f64, y: &Tensor) -> Result<Tensor> {
        let x = y.narrow(1, 0, self.n)?.contiguous()?;
        let (u, div) = riemannian_divergence(self.manifold, self.net, &x, t, self.probes.as_ref())?;
        Ok(Tensor::cat(&[&u, &div.unsqueeze(1)?], 1)?.to_dtype(y.dtype())?)
    }
}

/// The projected velocity `V = P(x) f(π(x), t)` `(b, n)` and its Riemannian
/// divergence `(b,)` at the projections `π(x)` of the rows of `x`: exact
/// (`probes = None`: the trace over the ambient basis) or Hutchinson's
/// estimate with the ambient probes `(k, b, n)` projected at each point
/// (see [`riemannian_log_likelihood`]). Both in `f64`.
///
/// # Errors
/// [`Error::Shape`] for a wrong `x` or `probes`; the network's errors.
pub fn riemannian_divergence<F: JvpField + ?Sized>(
    manifold: &dyn Manifold,
    net: &F,
    x: &Tensor,
    t: f64,
    probes: Option<&Tensor>,
) -> Result<(Tensor, Tensor)> {
    let m = manifold;
    let n = m.check(x, "x")?;
    let b = x.dim(0)?;
    let x = m.project(x)?;
    let xs = crate::to_f64_vec(&x)?;
    // Tangents: the basis (exact) or the probes projected at x.
    let tangents: Vec<f64> = match probes {
        None => (0..n)
            .flat_map(|j| (0..b).flat_map(move |_| (0..n).map(move |i| f64::from(u8::from(i == j)))))
            .collect(),
        Some(p) => {
            if p.rank() != 3 || p.dim(1)? != b || p.dim(2)? != n {
                return Err(Error::Shape(format!("probes must be (k, {b}, {n}), got {:?}", p.dims())));
            }
            let mut e = crate::to_f64_vec(p)?;
            for z in e.chunks_mut(b * n) {
                for (row, x) in z.chunks_mut(n).zip(xs.chunks(n)) {
                    m.project_tangent_point(x, row);
                }
            }
            e
        }
    };
    let k = tangents.len() / (b * n);
    let v = Tensor::from_vec(tangents.clone(), (k, b, n), x.device())?.to_dtype(x.dtype())?;
    let tt = time_like(&x, t)?;
    let (f, jv) = net.velocity_and_jvp(&x, &tt, &v)?;
    let (fs, jvs) = (crate::to_f64_vec(&f)?, crate::to_f64_vec(&jv)?);
    let mut u = fs.clone();
    let mut div = vec![0.0; b];
    let mut out = vec![0.0; n];
    for (i, d) in div.iter_mut().enumerate() {
        let r = i * n..(i + 1) * n;
        m.project_tangent_point(&xs[r.clone()], &mut u[r.clone()]);
        for p in 0..k {
            let q = p * b * n + i * n..p * b * n + (i + 1) * n;
            m.projected_jvp_point(
                &xs[r.clone()],
                &fs[r.clone()],
                &jvs[q.clone()],
                &tangents[q.clone()],
                &mut out,
            );
            *d += dot(&tangents[q], &out);
        }
        if probes.is_some() {
            *d /= k as f64;
        }
    }
    Ok((Tensor::from_vec(u, (b, n), x.device())?, Tensor::from_vec(div, b, x.device())?))
}

impl<F: JvpField + ?Sized> OdeFunction for Augmented<'_, F> {
    fn eval(&self, t: f64, y: &Tensor) -> fm_solvers::Result<Tensor> {
        self.rhs(t, y).map_err(|e| fm_solvers::Error::Field(Box::new(e)))
    }

    fn retract(&self, _from: &Tensor, to: Tensor) -> fm_solvers::Result<Tensor> {
        let n = self.n;
        (|| -> Result<Tensor> {
            let x = self.manifold.project(&to.narrow(1, 0, n)?.contiguous()?)?;
            Ok(Tensor::cat(&[&x, &to.narrow(1, n, 1)?], 1)?)
        })()
        .map_err(|e| fm_solvers::Error::Field(Box::new(e)))
    }
}

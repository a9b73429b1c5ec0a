//! The Gaussian oracle: exact flow-matching quantities for Gaussian data.
//!
//! For a source `x₀ ~ N(0, I)` and data `x₁ ~ N(μ, Σ)` on an affine path,
//! the marginal `p_t = N(α_t μ, α_t² Σ + σ_t² I)` and everything derived from
//! it has a closed form: the exact velocity `u*`, the flow map, the denoiser,
//! the score, the divergence and the log-density. Because `u*` is affine in
//! `x`, any Runge–Kutta solve maps the source Gaussian to a Gaussian, so the
//! exact W2 of what a solver *produces* is computable too
//! ([`GaussianOracle::sampling_w2`]). These are the oracles the tests of fm's
//! solvers, likelihoods and samplers are checked against.

use candle::{DType, Device, Tensor};
use fm_solvers::{OdeSolver, TimeGrid};

use crate::linalg::{symmetric_eigen, SymmetricEigen};
use crate::scheduler::{Scheduler, SchedulerKind, SchedulerOutput};
use crate::{to_f64_vec, AsOde, Error, Result, VelocityField};

/// Exact flow-matching quantities for `N(0, I) → N(μ, Σ)` on an affine path.
///
/// ```
/// use fm_core::gaussian::GaussianOracle;
/// use fm_core::scheduler::SchedulerKind;
/// # fn main() -> fm_core::Result<()> {
/// let oracle = GaussianOracle::new(vec![1.0, -1.0], vec![3.694337, 0.988124, 0.988124, 0.805663], SchedulerKind::CondOt)?;
/// // ∫₀¹ div u* dt = ½ log det Σ = ½ log 2
/// assert!((oracle.integrated_divergence(0.0, 1.0) - 0.5 * 2f64.ln()).abs() < 1e-6);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct GaussianOracle {
    mean: Vec<f64>,
    eigen: SymmetricEigen,
    scheduler: SchedulerKind,
}

impl GaussianOracle {
    /// An oracle for data `N(mean, cov)` (`cov` row-major `d × d`, symmetric positive definite).
    pub fn new(mean: Vec<f64>, cov: Vec<f64>, scheduler: SchedulerKind) -> Result<Self> {
        let d = mean.len();
        if d == 0 {
            return Err(Error::invalid("mean", "must not be empty"));
        }
        let eigen = symmetric_eigen(&cov, d)?;
        if eigen.values[0] <= 0.0 {
            return Err(Error::NotPositiveDefinite(format!(
                "smallest eigenvalue of the covariance is {}",
                eigen.values[0]
            )));
        }
        Ok(Self { mean, eigen, scheduler })
    }

    /// The data dimension `d`.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// The data mean `μ`.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// Eigenvalues of `Σ`, ascending.
    pub fn eigenvalues(&self) -> &[f64] {
        &self.eigen.values
    }

    /// The covariance `Σ`, row-major.
    pub fn covariance(&self) -> Vec<f64> {
        self.eigen.map(|l| l)
    }

    /// The path's scheduler.
    pub fn scheduler(&self) -> SchedulerKind {
        self.scheduler
    }

    /// Mean and covariance of the marginal `p_t`.
    pub fn marginal(&self, t: f64) -> (Vec<f64>, Vec<f64>) {
        let c = self.scheduler.at(t);
        let m = self.mean.iter().map(|m| c.alpha * m).collect();
        (m, self.eigen.map(|l| c.alpha * c.alpha * l + c.sigma * c.sigma))
    }

    /// Applies `x ↦ offset(c) + U diag(g(c, λ)) Uᵀ (x − α μ)` row by row,
    /// each row `x` at its own time.
    fn affine_in_eigenbasis(
        &self,
        x: &[f64],
        ts: &[f64],
        offset: impl Fn(&SchedulerOutput, f64) -> f64,
        gain: impl Fn(&SchedulerOutput, f64) -> f64,
    ) -> Vec<f64> {
        let d = self.dim();
        let mut centered = x.to_vec();
        for (row, &t) in centered.chunks_exact_mut(d).zip(ts) {
            let a = self.scheduler.at(t).alpha;
            for (v, m) in row.iter_mut().zip(&self.mean) {
                *v -= a * m;
            }
        }
        let mut y = self.eigen.to_eigenbasis(&centered);
        for (row, &t) in y.chunks_exact_mut(d).zip(ts) {
            let c = self.scheduler.at(t);
            for (v, &l) in row.iter_mut().zip(&self.eigen.values) {
                *v *= gain(&c, l);
            }
        }
        let mut out = self.eigen.from_eigenbasis(&y);
        for (row, &t) in out.chunks_exact_mut(d).zip(ts) {
            let c = self.scheduler.at(t);
            for (v, &m) in row.iter_mut().zip(&self.mean) {
                *v += offset(&c, m);
            }
        }
        out
    }

    fn check_rows(&self, x: &[f64], ts: &[f64]) -> Result<()> {
        if x.len() != ts.len() * self.dim() {
            return Err(Error::Shape(format!(
                "{} values for {} times in dimension {}",
                x.len(),
                ts.len(),
                self.dim()
            )));
        }
        Ok(())
    }

    /// The exact marginal velocity `u*(x, t) = α̇μ + (α̇αΣ + σ̇σI) Σ_t⁻¹ (x − α_t μ)`,
    /// for row-major `x` (`n × d`) and one time per row.
    pub fn velocity_rows(&self, x: &[f64], ts: &[f64]) -> Result<Vec<f64>> {
        self.check_rows(x, ts)?;
        Ok(self.affine_in_eigenbasis(
            x,
            ts,
            |c, m| c.d_alpha * m,
            |c, l| {
                (c.d_alpha * c.alpha * l + c.d_sigma * c.sigma) / (c.alpha * c.alpha * l + c.sigma * c.sigma)
            },
        ))
    }

    /// The exact denoiser `E[x₁ | x_t = x] = μ + α Σ Σ_t⁻¹ (x − α μ)`.
    pub fn denoiser_rows(&self, x: &[f64], ts: &[f64]) -> Result<Vec<f64>> {
        self.check_rows(x, ts)?;
        Ok(self.affine_in_eigenbasis(
            x,
            ts,
            |_, m| m,
            |c, l| c.alpha * l / (c.alpha * c.alpha * l + c.sigma * c.sigma),
        ))
    }

    /// The score `∇ log p_t(x) = −Σ_t⁻¹ (x − α μ)`.
    pub fn score_rows(&self, x: &[f64], ts: &[f64]) -> Result<Vec<f64>> {
        self.check_rows(x, ts)?;
        Ok(self.affine_in_eigenbasis(
            x,
            ts,
            |_, _| 0.0,
            |c, l| -1.0 / (c.alpha * c.alpha * l + c.sigma * c.sigma),
        ))
    }

    /// The exact flow map `ψ_{s→t}(x) = α_t μ + Σ_t^{1/2} Σ_s^{-1/2} (x − α_s μ)` for row-major `x`.
    pub fn flow_map_rows(&self, x: &[f64], s: f64, t: f64) -> Result<Vec<f64>> {
        let n = x.len() / self.dim();
        let ss = vec![s; n];
        self.check_rows(x, &ss)?;
        let (cs, ct) = (self.scheduler.at(s), self.scheduler.at(t));
        Ok(self.affine_in_eigenbasis(
            x,
            &ss,
            |_, m| ct.alpha * m,
            |_, l| {
                ((ct.alpha * ct.alpha * l + ct.sigma * ct.sigma)
                    / (cs.alpha * cs.alpha * l + cs.sigma * cs.sigma))
                    .sqrt()
            },
        ))
    }

    /// The exact average velocity `ū(x, s, t) = (ψ_{s→t}(x) − x)/(t − s)`
    /// over `[s, t]` (MeanFlow's target, [`crate::mean_flow`]); at `s = t` the
    /// velocity `u*(x, t)`.
    pub fn average_velocity_rows(&self, x: &[f64], s: f64, t: f64) -> Result<Vec<f64>> {
        if s == t {
            return self.velocity_rows(x, &vec![t; x.len() / self.dim()]);
        }
        let y = self.flow_map_rows(x, s, t)?;
        Ok(y.iter().zip(x).map(|(a, b)| (a - b) / (t - s)).collect())
    }

    /// `div u*(·, t) = Σᵢ (α̇αλᵢ + σ̇σ) / (α²λᵢ + σ²)` (independent of `x`).
    pub fn divergence(&self, t: f64) -> f64 {
        let c = self.scheduler.at(t);
        self.eigen
            .values
            .iter()
            .map(|&l| {
                (c.d_alpha * c.alpha * l + c.d_sigma * c.sigma) / (c.alpha * c.alpha * l + c.sigma * c.sigma)
            })
            .sum()
    }

    /// `∫_s^t div u* dr = ½ Σᵢ log((α_t²λᵢ + σ_t²) / (α_s²λᵢ + σ_s²))`.
    pub fn integrated_divergence(&self, s: f64, t: f64) -> f64 {
        let (cs, ct) = (self.scheduler.at(s), self.scheduler.at(t));
        self.eigen
            .values
            .iter()
            .map(|&l| {
                0.5 * ((ct.alpha * ct.alpha * l + ct.sigma * ct.sigma)
                    / (cs.alpha * cs.alpha * l + cs.sigma * cs.sigma))
                    .ln()
            })
            .sum()
    }

    /// `log p_t(x)` of the marginal at time `t` for each row of `x` (`t = 1`: the data density).
    pub fn log_density_rows(&self, x: &[f64], t: f64) -> Result<Vec<f64>> {
        let d = self.dim();
        let ts = vec![t; x.len() / d];
        self.check_rows(x, &ts)?;
        let c = self.scheduler.at(t);
        let vars: Vec<f64> =
            self.eigen.values.iter().map(|&l| c.alpha * c.alpha * l + c.sigma * c.sigma).collect();
        let log_det: f64 = vars.iter().map(|v| v.ln()).sum();
        let mut centered = x.to_vec();
        for row in centered.chunks_exact_mut(d) {
            for (v, m) in row.iter_mut().zip(&self.mean) {
                *v -= c.alpha * m;
            }
        }
        let y = self.eigen.to_eigenbasis(&centered);
        Ok(y.chunks_exact(d)
            .map(|row| {
                let q: f64 = row.iter().zip(&vars).map(|(v, s)| v * v / s).sum();
                -0.5 * (q + log_det + d as f64 * (2.0 * std::f64::consts::PI).ln())
            })
            .collect())
    }

    /// The exact W2 between the data `N(μ, Σ)` and what `solver` produces from
    /// `N(0, I)` on `grid` (from `t = grid.start()` to `grid.end()`) with `u*` as the field.
    ///
    /// The solve is affine in `x₀`, so it is run in `f64` on the `d + 1` points
    /// `0, e₁, …, e_d` to read off the map `x₀ ↦ A x₀ + c`; the output is
    /// `N(c, A Aᵀ)`. `A` commutes with `Σ` for the exact field, so the W2 is
    /// taken in `Σ`'s eigenbasis, `W2² = ‖c − μ‖² + Σᵢ (|sᵢ| − √λᵢ)²` with
    /// `sᵢ = uᵢᵀ A uᵢ`, which keeps full relative precision for tiny errors.
    /// Returns the W2 and the solver's NFE for one solve.
    pub fn sampling_w2(&self, solver: &dyn OdeSolver, grid: &TimeGrid) -> Result<(f64, usize)> {
        let d = self.dim();
        let (c, a, nfe) = self.solve_affine(solver, grid)?;
        let c = &c[..];
        // B = Uᵀ A U; its diagonal gives the amplification per eigen-direction.
        let u = &self.eigen.vectors;
        let au = crate::linalg::matmul(&a, u, d, d, d);
        let b = crate::linalg::matmul(&crate::linalg::transpose(u, d, d), &au, d, d, d);
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).map(move |j| (i, j)))
            .filter(|(i, j)| i != j)
            .map(|(i, j)| b[i * d + j].abs())
            .fold(0.0, f64::max);
        let dm: f64 = c.iter().zip(&self.mean).map(|(x, m)| (x - m) * (x - m)).sum();
        let w2 = if off < 1e-9 {
            let spread: f64 =
                (0..d).map(|i| (b[i * d + i].abs() - self.eigen.values[i].sqrt()).powi(2)).sum();
            (dm + spread).sqrt()
        } else {
            let cov = crate::linalg::matmul(&a, &crate::linalg::transpose(&a, d, d), d, d, d);
            crate::linalg::gaussian_w2(c, &cov, &self.mean, &self.covariance())?
        };
        Ok((w2, nfe))
    }

    /// Runs `solver` on `grid` with `u*` from the `d + 1` points `0, e₁, …, e_d`
    /// (in `f64`) and reads off the affine map `x₀ ↦ A x₀ + c`. Returns `c`,
    /// `A` row-major and the NFE of one solve.
    fn solve_affine(&self, solver: &dyn OdeSolver, grid: &TimeGrid) -> Result<(Vec<f64>, Vec<f64>, usize)> {
        let d = self.dim();
        let mut pts = vec![0.0; (d + 1) * d];
        for i in 0..d {
            pts[(i + 1) * d + i] = 1.0;
        }
        let x0 = Tensor::from_vec(pts, (d + 1, d), &Device::Cpu)?;
        let sol = solver.solve(&AsOde(self), &x0, grid)?;
        let out = to_f64_vec(&sol.state)?;
        let c = out[..d].to_vec();
        let mut a = vec![0.0; d * d]; // a[i*d + j] = A_ij = (solve(e_j) - c)_i
        for j in 0..d {
            for i in 0..d {
                a[i * d + j] = out[(j + 1) * d + i] - c[i];
            }
        }
        Ok((c, a, sol.stats.nfe))
    }

    /// The Gaussian that `solver` produces from `N(0, I)` on `grid` with `u*`
    /// as the field: its mean `c` and covariance `A Aᵀ` (row-major), exactly
    /// (the solve is affine in `x₀`; see [`Self::sampling_w2`]), and the NFE.
    /// Compare it with any other Gaussian with [`crate::linalg::gaussian_w2`].
    pub fn sampled_gaussian(
        &self,
        solver: &dyn OdeSolver,
        grid: &TimeGrid,
    ) -> Result<(Vec<f64>, Vec<f64>, usize)> {
        let d = self.dim();
        let (c, a, nfe) = self.solve_affine(solver, grid)?;
        let cov = crate::linalg::matmul(&a, &crate::linalg::transpose(&a, d, d), d, d, d);
        Ok((c, cov, nfe))
    }

    fn apply_tensor(
        &self,
        x: &Tensor,
        t: &Tensor,
        f: impl Fn(&[f64], &[f64]) -> Result<Vec<f64>>,
    ) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        if dims.len() != 2 || dims[1] != self.dim() {
            return Err(Error::Shape(format!(
                "the oracle is {}-dimensional, x has shape {:?}",
                self.dim(),
                dims
            )));
        }
        let out = f(&to_f64_vec(x)?, &to_f64_vec(t)?)?;
        Ok(Tensor::from_vec(out, dims, x.device())?.to_dtype(x.dtype())?)
    }

    /// The denoiser on tensors (`x`: `(b, d)`, `t`: `(b,)`).
    pub fn denoiser(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.apply_tensor(x, t, |x, t| self.denoiser_rows(x, t))
    }

    /// Draws `n` samples of the data distribution `N(μ, Σ)`.
    pub fn sample_data(
        &self,
        n: usize,
        rng: &mut crate::SeededRng,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let d = self.dim();
        let z = rng.normal_vec(n * d);
        let scaled: Vec<f64> = z
            .chunks_exact(d)
            .flat_map(|row| row.iter().zip(&self.eigen.values).map(|(v, l)| v * l.sqrt()).collect::<Vec<_>>())
            .collect();
        let mut x = self.eigen.from_eigenbasis(&scaled);
        for row in x.chunks_exact_mut(d) {
            for (v, m) in row.iter_mut().zip(&self.mean) {
                *v += m;
            }
        }
        Ok(Tensor::from_vec(x, (n, d), device)?.to_dtype(dtype)?)
    }
}

impl VelocityField for GaussianOracle {
    fn velocity(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        self.apply_tensor(x, t, |x, t| self.velocity_rows(x, t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> Result<GaussianOracle> {
        GaussianOracle::new(
            vec![1.0, -1.0],
            vec![3.694337, 0.988124, 0.988124, 0.805663],
            SchedulerKind::CondOt,
        )
    }

    #[test]
    fn velocity_endpoint_checks() -> Result<()> {
        let o = reference()?;
        let x = [0.3, -0.7, 2.0, 1.0];
        let u0 = o.velocity_rows(&x, &[0.0, 0.0])?;
        let u1 = o.velocity_rows(&x, &[1.0, 1.0])?;
        for i in 0..4 {
            assert!((u0[i] - (o.mean()[i % 2] - x[i])).abs() < 1e-9, "u*(x,0) = μ − x");
            assert!((u1[i] - x[i]).abs() < 1e-9, "u*(x,1) = x");
        }
        Ok(())
    }

    #[test]
    fn denoiser_is_x_plus_one_minus_t_times_velocity_on_condot() -> Result<()> {
        let o = reference()?;
        let x = [0.3, -0.7, 2.0, 1.0];
        let ts = [0.3, 0.8];
        let u = o.velocity_rows(&x, &ts)?;
        let den = o.denoiser_rows(&x, &ts)?;
        for i in 0..4 {
            assert!((den[i] - (x[i] + (1.0 - ts[i / 2]) * u[i])).abs() < 1e-9);
        }
        Ok(())
    }

    #[test]
    fn divergence_matches_finite_differences_and_endpoints() -> Result<()> {
        let o = reference()?;
        assert!((o.divergence(0.0) + 2.0).abs() < 1e-9 && (o.divergence(1.0) - 2.0).abs() < 1e-9);
        let t = 0.37;
        let h = 1e-6;
        let x = [0.1, 0.2];
        let mut div = 0.0;
        for i in 0..2 {
            let (mut p, mut m) = (x, x);
            p[i] += h;
            m[i] -= h;
            div += (o.velocity_rows(&p, &[t])?[i] - o.velocity_rows(&m, &[t])?[i]) / (2.0 * h);
        }
        assert!((div - o.divergence(t)).abs() < 1e-6);
        // Trapezoid integral of the divergence against the closed form.
        let n = 20_000;
        let integral: f64 = (0..n)
            .map(|k| {
                0.5 * (o.divergence(k as f64 / n as f64) + o.divergence((k + 1) as f64 / n as f64)) / n as f64
            })
            .sum();
        assert!((integral - 0.346_573_6).abs() < 1e-6, "{integral}");
        Ok(())
    }

    #[test]
    fn flow_map_solves_the_ode() -> Result<()> {
        let o = reference()?;
        let x0 = [0.5, -1.5];
        let (s, t, h) = (0.2, 0.6, 1e-6);
        let xt = o.flow_map_rows(&x0, s, t)?;
        let xth = o.flow_map_rows(&x0, s, t + h)?;
        let u = o.velocity_rows(&xt, &[t])?;
        for i in 0..2 {
            assert!(((xth[i] - xt[i]) / h - u[i]).abs() < 1e-4);
        }
        // From 0 to 1 it is the Brenier map μ + Σ^{1/2} x₀.
        let x1 = o.flow_map_rows(&x0, 0.0, 1.0)?;
        let s12 = o.eigen.map(|l| l.sqrt());
        for i in 0..2 {
            let want = o.mean()[i] + s12[i * 2] * x0[0] + s12[i * 2 + 1] * x0[1];
            assert!((x1[i] - want).abs() < 1e-9);
        }
        Ok(())
    }

    #[test]
    fn log_density_at_one_is_the_data_density() -> Result<()> {
        let o = reference()?;
        // Direct evaluation with the explicit inverse of the 2x2 covariance.
        let c = o.covariance();
        let det = c[0] * c[3] - c[1] * c[2];
        let x = [0.4, 0.1];
        let dx = [x[0] - 1.0, x[1] + 1.0];
        let q = (c[3] * dx[0] * dx[0] - 2.0 * c[1] * dx[0] * dx[1] + c[0] * dx[1] * dx[1]) / det;
        let want = -0.5 * (q + (det * (2.0 * std::f64::consts::PI).powi(2)).ln());
        assert!((o.log_density_rows(&x, 1.0)?[0] - want).abs() < 1e-9);
        Ok(())
    }

    #[test]
    fn rejects_indefinite_covariance() {
        assert!(GaussianOracle::new(vec![0.0, 0.0], vec![1.0, 2.0, 2.0, 1.0], SchedulerKind::CondOt).is_err());
    }
}

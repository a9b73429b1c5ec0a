//! The von Mises–Fisher distribution on `S²` and mixtures of it fitted by EM:
//! known densities for tests, and the classical baseline of density
//! estimation on the sphere.

use rand::Rng;

use super::dot;
use crate::{Error, Result, SeededRng};

/// `vMF(μ, κ)` on `S² ⊂ R³`: density `C(κ) exp(κ μ·x)` with respect to area,
/// `C(κ) = κ / (4π sinh κ)` (uniform `1/(4π)` at `κ = 0`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VonMisesFisher {
    /// The mean direction (a unit vector).
    pub mean: [f64; 3],
    /// The concentration `κ ≥ 0`.
    pub kappa: f64,
}

/// `log C(κ)`, stable for large `κ`.
fn log_normalizer(kappa: f64) -> f64 {
    let four_pi = 4.0 * std::f64::consts::PI;
    if kappa < 1e-8 {
        return -four_pi.ln();
    }
    // log sinh κ = κ + log(1 − e^(−2κ)) − log 2
    kappa.ln() - four_pi.ln() - (kappa + (-(-2.0 * kappa).exp()).ln_1p() - std::f64::consts::LN_2)
}

impl VonMisesFisher {
    /// `vMF(mean/|mean|, kappa)`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `mean` (zero or not finite) or `kappa` (negative or not finite).
    pub fn new(mean: [f64; 3], kappa: f64) -> Result<Self> {
        let n = dot(&mean, &mean).sqrt();
        if !(n > 0.0 && n.is_finite()) {
            return Err(Error::invalid("mean", "the mean direction must be a non-zero finite vector"));
        }
        if !(kappa >= 0.0 && kappa.is_finite()) {
            return Err(Error::invalid(
                "kappa",
                format!("the concentration must be finite and ≥ 0, got {kappa}"),
            ));
        }
        Ok(Self { mean: mean.map(|m| m / n), kappa })
    }

    /// `log p(x)` for a unit vector `x`.
    pub fn log_density(&self, x: &[f64]) -> f64 {
        log_normalizer(self.kappa) + self.kappa * dot(&self.mean, x)
    }

    /// The differential entropy `−E[log p]` in nats.
    pub fn entropy(&self) -> f64 {
        // E[μ·x] = A(κ) = coth κ − 1/κ.
        let a = if self.kappa < 1e-8 { 0.0 } else { 1.0 / self.kappa.tanh() - 1.0 / self.kappa };
        -(log_normalizer(self.kappa) + self.kappa * a)
    }

    /// `n` draws, row-major `(n, 3)`: `w = μ·x` by inversion of its CDF,
    /// `w = 1 + log(u + (1 − u) e^(−2κ)) / κ`, and a uniform direction around `μ`.
    pub fn sample(&self, n: usize, rng: &mut SeededRng) -> Vec<f64> {
        let mu = self.mean;
        // An orthonormal basis (e1, e2) of the plane orthogonal to μ.
        let a = if mu[0].abs() < 0.9 { [1.0, 0.0, 0.0] } else { [0.0, 1.0, 0.0] };
        let c = dot(&a, &mu);
        let mut e1 = [a[0] - c * mu[0], a[1] - c * mu[1], a[2] - c * mu[2]];
        let l = dot(&e1, &e1).sqrt();
        e1.iter_mut().for_each(|v| *v /= l);
        let e2 =
            [mu[1] * e1[2] - mu[2] * e1[1], mu[2] * e1[0] - mu[0] * e1[2], mu[0] * e1[1] - mu[1] * e1[0]];
        let mut out = Vec::with_capacity(3 * n);
        for _ in 0..n {
            let u: f64 = rng.rng().random();
            let w = if self.kappa < 1e-8 {
                2.0 * u - 1.0
            } else {
                (1.0 + (u + (1.0 - u) * (-2.0 * self.kappa).exp()).ln() / self.kappa).clamp(-1.0, 1.0)
            };
            let phi = 2.0 * std::f64::consts::PI * rng.rng().random::<f64>();
            let s = (1.0 - w * w).max(0.0).sqrt();
            for i in 0..3 {
                out.push(w * mu[i] + s * (phi.cos() * e1[i] + phi.sin() * e2[i]));
            }
        }
        out
    }
}

/// A mixture `Σ πₖ vMF(μₖ, κₖ)` on `S²`.
#[derive(Debug, Clone, PartialEq)]
pub struct VonMisesFisherMixture {
    /// The components.
    pub components: Vec<VonMisesFisher>,
    /// Their weights (summing to 1).
    pub weights: Vec<f64>,
}

/// `κ` with `A(κ) = coth κ − 1/κ = r`, `r ∈ [0, 1)`: Banerjee et al.'s
/// approximation refined by Newton's method; capped at `10⁶`.
fn kappa_of_mean_resultant(r: f64) -> f64 {
    let r = r.clamp(0.0, 1.0 - 1e-12);
    if r < 1e-9 {
        return 0.0;
    }
    let mut k = (r * (3.0 - r * r) / (1.0 - r * r)).min(1e6);
    for _ in 0..20 {
        let a = 1.0 / k.tanh() - 1.0 / k;
        let sh = k.sinh();
        let da = 1.0 / (k * k) - if sh.is_finite() { 1.0 / (sh * sh) } else { 0.0 };
        if da <= 0.0 || !da.is_finite() {
            break;
        }
        let next = (k - (a - r) / da).clamp(1e-9, 1e6);
        if (next - k).abs() < 1e-12 * k {
            k = next;
            break;
        }
        k = next;
    }
    k
}

impl VonMisesFisherMixture {
    /// `log p(x)` for a unit vector `x`.
    pub fn log_density(&self, x: &[f64]) -> f64 {
        let terms: Vec<f64> =
            self.components.iter().zip(&self.weights).map(|(c, w)| w.ln() + c.log_density(x)).collect();
        log_sum_exp(&terms)
    }

    /// The mean of `log p` over `points` (row-major `(n, 3)`).
    pub fn mean_log_density(&self, points: &[f64]) -> f64 {
        let n = points.len() / 3;
        points.chunks(3).map(|x| self.log_density(x)).sum::<f64>() / n as f64
    }

    /// Fits `k` components to `points` (row-major `(n, 3)` unit vectors) by
    /// `iters` EM iterations (Banerjee et al., 2005), starting from `k`
    /// distinct data points drawn from `rng` with `κ = 10` and equal weights.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `points` (fewer than `k` rows, not
    /// rows of 3) or `components` (0).
    pub fn fit(points: &[f64], k: usize, iters: usize, rng: &mut SeededRng) -> Result<Self> {
        if k == 0 {
            return Err(Error::invalid("components", "need at least one component"));
        }
        if !points.len().is_multiple_of(3) || points.len() / 3 < k {
            return Err(Error::invalid("points", format!("need at least {k} rows of 3 coordinates")));
        }
        let n = points.len() / 3;
        let perm = rng.permutation(n);
        let mut mix = Self {
            components: perm[..k]
                .iter()
                .map(|&i| VonMisesFisher::new([points[3 * i], points[3 * i + 1], points[3 * i + 2]], 10.0))
                .collect::<Result<_>>()?,
            weights: vec![1.0 / k as f64; k],
        };
        let mut resp = vec![0.0; n * k];
        for _ in 0..iters {
            for (x, r) in points.chunks(3).zip(resp.chunks_mut(k)) {
                for (j, (c, w)) in mix.components.iter().zip(&mix.weights).enumerate() {
                    r[j] = w.ln() + c.log_density(x);
                }
                let l = log_sum_exp(r);
                r.iter_mut().for_each(|v| *v = (*v - l).exp());
            }
            for j in 0..k {
                let mut s = [0.0; 3];
                let mut total = 0.0;
                for (x, r) in points.chunks(3).zip(resp.chunks(k)) {
                    total += r[j];
                    (0..3).for_each(|i| s[i] += r[j] * x[i]);
                }
                if total < 1e-12 {
                    continue; // an empty component keeps its parameters
                }
                let len = dot(&s, &s).sqrt();
                mix.weights[j] = total / n as f64;
                if len > 0.0 {
                    mix.components[j] = VonMisesFisher::new(s, kappa_of_mean_resultant(len / total))?;
                }
            }
            let sum: f64 = mix.weights.iter().sum();
            mix.weights.iter_mut().for_each(|w| *w = (*w / sum).max(1e-300));
        }
        Ok(mix)
    }
}

fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_density_integrates_to_one_and_the_entropy_is_minus_the_mean_log_density() {
        // ∫ p dA = 2π ∫₋₁¹ C(κ) e^(κw) dw by Gauss–Legendre-free midpoint quadrature in w.
        for kappa in [0.0, 0.5, 10.0, 200.0] {
            let v = VonMisesFisher::new([0.0, 0.0, 1.0], kappa).unwrap();
            let m = 200_000;
            let total: f64 = (0..m)
                .map(|i| {
                    let w = -1.0 + (i as f64 + 0.5) * 2.0 / m as f64;
                    v.log_density(&[(1.0 - w * w).sqrt(), 0.0, w]).exp()
                })
                .sum::<f64>()
                * 2.0
                / m as f64
                * 2.0
                * std::f64::consts::PI;
            assert!((total - 1.0).abs() < 1e-6, "κ = {kappa}: {total}");
            let draws = v.sample(100_000, &mut SeededRng::new(1));
            let mean: f64 = draws.chunks(3).map(|x| v.log_density(x)).sum::<f64>() / 100_000.0;
            assert!((mean + v.entropy()).abs() < 0.02, "κ = {kappa}: {mean} vs {}", -v.entropy());
            assert!(draws.chunks(3).all(|x| (dot(x, x) - 1.0).abs() < 1e-12));
        }
    }

    #[test]
    fn em_recovers_two_separated_components() {
        let a = VonMisesFisher::new([1.0, 0.0, 0.0], 20.0).unwrap();
        let b = VonMisesFisher::new([0.0, 0.0, -1.0], 50.0).unwrap();
        let mut rng = SeededRng::new(3);
        let mut pts = a.sample(6000, &mut rng);
        pts.extend(b.sample(4000, &mut rng));
        let mix = VonMisesFisherMixture::fit(&pts, 2, 50, &mut SeededRng::new(4)).unwrap();
        let (i, j) = if mix.components[0].mean[0] > 0.5 { (0, 1) } else { (1, 0) };
        assert!((mix.weights[i] - 0.6).abs() < 0.02, "{mix:?}");
        assert!(
            (mix.components[i].kappa - 20.0).abs() < 2.0 && (mix.components[j].kappa - 50.0).abs() < 5.0,
            "{mix:?}"
        );
        assert!(dot(&mix.components[j].mean, &[0.0, 0.0, -1.0]) > 0.999);
    }
}

//! The Fréchet distance between two feature sets: the squared 2-Wasserstein
//! distance between the Gaussians fitted to them (FID when the features are
//! Inception's; here, those of a small classifier).

use candle::Tensor;

use super::cloud::{cloud_pair, Cloud, Points};
use crate::linalg::{matmul, symmetric_eigen};
use crate::{Error, Result};

/// Mean and covariance of a feature set: the Gaussian fit that the Fréchet
/// distance compares. Accumulated in `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureStats {
    /// The mean, `d` values.
    pub mean: Vec<f64>,
    /// The covariance, row-major `d × d`, symmetric positive semi-definite.
    pub cov: Vec<f64>,
    /// The number of points it was estimated from (0 when given exactly).
    pub n: usize,
}

impl FeatureStats {
    /// Exact statistics (e.g. of a known Gaussian).
    ///
    /// # Errors
    /// [`Error::Shape`] if `cov` is not `d × d` for `d = mean.len() ≥ 1`;
    /// [`Error::InvalidArgument`] if a value is not finite or `cov` is not symmetric.
    pub fn new(mean: Vec<f64>, cov: Vec<f64>) -> Result<Self> {
        let d = mean.len();
        if d == 0 || cov.len() != d * d {
            return Err(Error::Shape(format!(
                "feature statistics need a d × d covariance for a mean of d ≥ 1 values, got {} and {}",
                d,
                cov.len()
            )));
        }
        if mean.iter().chain(&cov).any(|v| !v.is_finite()) {
            return Err(Error::invalid("cov", "feature statistics must be finite"));
        }
        let scale = cov.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for i in 0..d {
            for j in 0..i {
                if (cov[i * d + j] - cov[j * d + i]).abs() > 1e-10 * scale {
                    return Err(Error::invalid("cov", format!("not symmetric at ({i}, {j})")));
                }
            }
        }
        Ok(Self { mean, cov, n: 0 })
    }

    /// The sample mean and the unbiased sample covariance (divisor `n − 1`, as
    /// `numpy.cov` in pytorch-fid and clean-fid) of a `(n, d)` feature tensor.
    ///
    /// # Shapes
    /// - `features`: `(n, d)` with `n ≥ 2`, any float dtype (read as `f64`)
    ///
    /// # Errors
    /// [`Error::Shape`] if not rank 2; [`Error::InvalidArgument`] if `n < 2`
    /// or a value is not finite.
    pub fn from_features(features: &Tensor) -> Result<Self> {
        Self::from_points(Cloud::from_tensor(features, "features")?.points())
    }

    /// [`FeatureStats::from_features`] on validated points.
    pub(crate) fn from_points(x: Points<'_>) -> Result<Self> {
        let (n, d) = (x.n(), x.d);
        if n < 2 {
            return Err(Error::invalid(
                "features",
                format!("a covariance needs at least 2 feature vectors, got {n}"),
            ));
        }
        let mut mean = vec![0.0; d];
        for row in x.rows() {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        for m in &mut mean {
            *m /= n as f64;
        }
        // Upper triangle of Σ (x − μ)(x − μ)ᵀ, then mirrored: exactly symmetric.
        let mut cov = vec![0.0; d * d];
        let mut centred = vec![0.0; d];
        for row in x.rows() {
            for ((c, v), m) in centred.iter_mut().zip(row).zip(&mean) {
                *c = v - m;
            }
            for i in 0..d {
                let ci = centred[i];
                if ci == 0.0 {
                    continue;
                }
                let out = &mut cov[i * d + i..(i + 1) * d];
                for (o, cj) in out.iter_mut().zip(&centred[i..]) {
                    *o += ci * cj;
                }
            }
        }
        let denom = (n - 1) as f64;
        for i in 0..d {
            for j in i..d {
                let v = cov[i * d + j] / denom;
                cov[i * d + j] = v;
                cov[j * d + i] = v;
            }
        }
        Ok(Self { mean, cov, n })
    }

    /// The feature dimension `d`.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }
}

/// The Fréchet distance between the Gaussian fits of two feature sets:
/// `‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2})`, the squared
/// 2-Wasserstein distance between `N(μ₁, Σ₁)` and `N(μ₂, Σ₂)`.
///
/// Computed in `f64` from two symmetric eigendecompositions (Jacobi):
/// `Σ₁^{1/2}` from the first, then the eigenvalues of the symmetric PSD matrix
/// `Σ₁^{1/2} Σ₂ Σ₁^{1/2}`, whose square roots sum to the trace term. Round-off
/// can make eigenvalues of these PSD matrices slightly negative; they are
/// clamped to 0, as is the result. Unlike `scipy.linalg.sqrtm` on the
/// non-symmetric `Σ₁Σ₂` (pytorch-fid), this never produces complex values or
/// needs an `ε I` offset for singular covariances. `O(d³)`: a few
/// milliseconds for `d = 128` in release builds.
///
/// ```
/// use fm_core::metrics::{frechet_distance_stats, FeatureStats};
///
/// # fn main() -> fm_core::Result<()> {
/// // Diagonal (commuting) covariances: ‖Δμ‖² + Σ (√a − √b)².
/// let a = FeatureStats::new(vec![0.0, 0.0], vec![4.0, 0.0, 0.0, 1.0])?;
/// let b = FeatureStats::new(vec![3.0, 4.0], vec![1.0, 0.0, 0.0, 9.0])?;
/// assert!((frechet_distance_stats(&a, &b)? - (25.0 + 1.0 + 4.0)).abs() < 1e-12);
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`Error::Shape`] if the dimensions differ.
pub fn frechet_distance_stats(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    let d = a.dim();
    if b.dim() != d || a.cov.len() != d * d || b.cov.len() != d * d {
        return Err(Error::Shape(format!(
            "Fréchet distance between features of dimension {} and {}",
            a.dim(),
            b.dim()
        )));
    }
    let mean_term: f64 = a.mean.iter().zip(&b.mean).map(|(x, y)| (x - y) * (x - y)).sum();
    let trace = |c: &[f64]| (0..d).map(|i| c[i * d + i]).sum::<f64>();
    let e1 = symmetric_eigen(&a.cov, d)?;
    let s1 = e1.map(|l| l.max(0.0).sqrt());
    let mid = matmul(&matmul(&s1, &b.cov, d, d, d), &s1, d, d, d);
    // Symmetrise away the round-off of the products before the eigensolver.
    let sym: Vec<f64> = (0..d * d).map(|k| 0.5 * (mid[k] + mid[(k % d) * d + k / d])).collect();
    let em = symmetric_eigen(&sym, d)?;
    let tr_sqrt: f64 = em.values.iter().map(|l| l.max(0.0).sqrt()).sum();
    Ok((mean_term + trace(&a.cov) + trace(&b.cov) - 2.0 * tr_sqrt).max(0.0))
}

/// The Fréchet distance between two feature sets `x` and `y` (their sample
/// means and unbiased covariances; see [`frechet_distance_stats`]).
///
/// It is 0 for a set and itself (up to round-off: about `√ε` times the largest
/// eigenvalue), `‖v‖²` for a translation `y = x + v`, and
/// `(1 − c)² (‖μ‖² + tr Σ)` for a scaling `y = c x`, `c > 0`.
///
/// # Shapes
/// - `x`: `(n, d)`, `n ≥ 2`, any float dtype (computed in `f64`)
/// - `y`: `(m, d)`, `m ≥ 2`
///
/// # Errors
/// [`Error::Shape`] if either is not rank 2 or the dimensions differ;
/// [`Error::InvalidArgument`] if either has fewer than 2 rows or a
/// non-finite value.
pub fn frechet_distance(x: &Tensor, y: &Tensor) -> Result<f64> {
    let (x, y) = cloud_pair(x, "x", y, "y")?;
    let sx = FeatureStats::from_points(x.points())?;
    let sy = FeatureStats::from_points(y.points())?;
    frechet_distance_stats(&sx, &sy)
}

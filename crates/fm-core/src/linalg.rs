//! Small dense linear algebra in `f64` for the Gaussian oracle (row-major `d × d`).

use crate::{Error, Result};

/// Eigendecomposition of a symmetric matrix: `A = U diag(λ) Uᵀ`.
#[derive(Debug, Clone, PartialEq)]
pub struct SymmetricEigen {
    /// Eigenvalues, ascending.
    pub values: Vec<f64>,
    /// Eigenvectors as the columns of a row-major `d × d` matrix.
    pub vectors: Vec<f64>,
    /// The dimension `d`.
    pub dim: usize,
}

/// Eigendecomposition of a symmetric `d × d` matrix by cyclic Jacobi rotations
/// (accurate to a few ulps of the largest eigenvalue).
pub fn symmetric_eigen(a: &[f64], d: usize) -> Result<SymmetricEigen> {
    if a.len() != d * d || d == 0 {
        return Err(Error::Shape(format!("expected a {d}x{d} matrix, got {} entries", a.len())));
    }
    if a.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid("matrix", "contains NaN or Inf"));
    }
    let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
    for i in 0..d {
        for j in 0..i {
            if (a[i * d + j] - a[j * d + i]).abs() > 1e-10 * scale {
                return Err(Error::invalid("matrix", format!("not symmetric at ({i}, {j})")));
            }
        }
    }
    let mut m = a.to_vec();
    let mut v = vec![0.0; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * d + j] * m[i * d + j])
            .sum();
        if off <= (1e-30 * scale * scale) {
            break;
        }
        for p in 0..d {
            for q in (p + 1)..d {
                let apq = m[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (m[q * d + q] - m[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let mkp = m[k * d + p];
                    let mkq = m[k * d + q];
                    m[k * d + p] = c * mkp - s * mkq;
                    m[k * d + q] = s * mkp + c * mkq;
                }
                for k in 0..d {
                    let mpk = m[p * d + k];
                    let mqk = m[q * d + k];
                    m[p * d + k] = c * mpk - s * mqk;
                    m[q * d + k] = s * mpk + c * mqk;
                }
                for k in 0..d {
                    let vkp = v[k * d + p];
                    let vkq = v[k * d + q];
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&i, &j| m[i * d + i].total_cmp(&m[j * d + j]));
    let values = order.iter().map(|&i| m[i * d + i]).collect();
    let mut vectors = vec![0.0; d * d];
    for (new, &old) in order.iter().enumerate() {
        for k in 0..d {
            vectors[k * d + new] = v[k * d + old];
        }
    }
    Ok(SymmetricEigen { values, vectors, dim: d })
}

impl SymmetricEigen {
    /// `U diag(f(λ)) Uᵀ`.
    pub fn map(&self, f: impl Fn(f64) -> f64) -> Vec<f64> {
        let d = self.dim;
        let fl: Vec<f64> = self.values.iter().map(|&l| f(l)).collect();
        let mut out = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..d {
                out[i * d + j] =
                    (0..d).map(|k| self.vectors[i * d + k] * fl[k] * self.vectors[j * d + k]).sum();
            }
        }
        out
    }

    /// `Uᵀ x` for each row `x` of a row-major `n × d` matrix.
    pub fn to_eigenbasis(&self, x: &[f64]) -> Vec<f64> {
        let d = self.dim;
        let mut out = vec![0.0; x.len()];
        for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            for (k, ok) in o.iter_mut().enumerate() {
                *ok = (0..d).map(|i| self.vectors[i * d + k] * row[i]).sum();
            }
        }
        out
    }

    /// `U y` for each row `y` of a row-major `n × d` matrix.
    pub fn from_eigenbasis(&self, y: &[f64]) -> Vec<f64> {
        let d = self.dim;
        let mut out = vec![0.0; y.len()];
        for (row, o) in y.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            for (i, oi) in o.iter_mut().enumerate() {
                *oi = (0..d).map(|k| self.vectors[i * d + k] * row[k]).sum();
            }
        }
        out
    }
}

/// `A B` for row-major `n × k` and `k × m` matrices.
pub fn matmul(a: &[f64], b: &[f64], n: usize, k: usize, m: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * m];
    for i in 0..n {
        for p in 0..k {
            let aip = a[i * k + p];
            for j in 0..m {
                out[i * m + j] += aip * b[p * m + j];
            }
        }
    }
    out
}

/// `Aᵀ` of a row-major `n × m` matrix.
pub fn transpose(a: &[f64], n: usize, m: usize) -> Vec<f64> {
    let mut out = vec![0.0; n * m];
    for i in 0..n {
        for j in 0..m {
            out[j * n + i] = a[i * m + j];
        }
    }
    out
}

/// The exact 2-Wasserstein distance between `N(m1, C1)` and `N(m2, C2)`:
/// `W2² = ‖m1 − m2‖² + tr(C1 + C2 − 2 (C2^{1/2} C1 C2^{1/2})^{1/2})`.
///
/// When the two covariances are close this formula cancels catastrophically
/// (its error is about `√ε` of the trace); prefer a closed form in a shared
/// eigenbasis when one exists, as [`crate::gaussian::GaussianOracle`] does.
pub fn gaussian_w2(m1: &[f64], c1: &[f64], m2: &[f64], c2: &[f64]) -> Result<f64> {
    let d = m1.len();
    if m2.len() != d || c1.len() != d * d || c2.len() != d * d {
        return Err(Error::Shape("gaussian_w2: inconsistent dimensions".into()));
    }
    let e2 = symmetric_eigen(c2, d)?;
    if e2.values[0] < -1e-12 * e2.values[d - 1].abs() {
        return Err(Error::NotPositiveDefinite("second covariance has a negative eigenvalue".into()));
    }
    let s2 = e2.map(|l| l.max(0.0).sqrt());
    let mid = matmul(&matmul(&s2, c1, d, d, d), &s2, d, d, d);
    let sym: Vec<f64> = (0..d * d).map(|k| 0.5 * (mid[k] + mid[(k % d) * d + k / d])).collect();
    let em = symmetric_eigen(&sym, d)?;
    let tr_sqrt: f64 = em.values.iter().map(|l| l.max(0.0).sqrt()).sum();
    let tr1: f64 = (0..d).map(|i| c1[i * d + i]).sum();
    let tr2: f64 = (0..d).map(|i| c2[i * d + i]).sum();
    let dm: f64 = m1.iter().zip(m2).map(|(a, b)| (a - b) * (a - b)).sum();
    Ok((dm + tr1 + tr2 - 2.0 * tr_sqrt).max(0.0).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigen_reconstructs() -> Result<()> {
        let a = [4.0, 1.0, 0.5, 1.0, 3.0, -0.2, 0.5, -0.2, 1.0];
        let e = symmetric_eigen(&a, 3)?;
        let back = e.map(|l| l);
        for (x, y) in a.iter().zip(&back) {
            assert!((x - y).abs() < 1e-12);
        }
        assert!(e.values.windows(2).all(|w| w[0] <= w[1]));
        // Orthonormal eigenvectors.
        let utu = matmul(&transpose(&e.vectors, 3, 3), &e.vectors, 3, 3, 3);
        for i in 0..3 {
            for j in 0..3 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((utu[i * 3 + j] - want).abs() < 1e-12);
            }
        }
        Ok(())
    }

    #[test]
    fn reference_covariance_has_stated_spectrum() -> Result<()> {
        let e = symmetric_eigen(&[3.694337, 0.988124, 0.988124, 0.805663], 2)?;
        assert!((e.values[0] - 0.5).abs() < 1e-5 && (e.values[1] - 4.0).abs() < 1e-5, "{:?}", e.values);
        Ok(())
    }

    #[test]
    fn gaussian_w2_known_values() -> Result<()> {
        // Commuting diagonal covariances: sum of (sqrt a - sqrt b)^2 plus the mean term.
        let w = gaussian_w2(&[0.0, 0.0], &[4.0, 0.0, 0.0, 1.0], &[3.0, 4.0], &[1.0, 0.0, 0.0, 9.0])?;
        assert!((w - (25.0f64 + 1.0 + 4.0).sqrt()).abs() < 1e-12);
        assert!(gaussian_w2(&[1.0], &[2.0], &[1.0], &[2.0])? < 1e-7);
        Ok(())
    }

    #[test]
    fn rejects_asymmetric() {
        assert!(symmetric_eigen(&[1.0, 2.0, 0.0, 1.0], 2).is_err());
    }
}

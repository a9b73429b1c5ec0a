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

/// The most sweeps [`symmetric_eigen`] takes; Jacobi's convergence is
/// quadratic, and a 128 × 128 covariance needs about ten.
pub const JACOBI_MAX_SWEEPS: usize = 100;

/// The off-diagonal norm, relative to the largest entry and per dimension,
/// below which [`symmetric_eigen`]'s result is accepted: `64 ε`.
const JACOBI_ACCURACY: f64 = 64.0 * f64::EPSILON;

/// Eigendecomposition of a symmetric `d × d` matrix by cyclic Jacobi rotations
/// (accurate to a few ulps of the largest eigenvalue).
///
/// It sweeps until the off-diagonal part's Frobenius norm is at most `1e-15`
/// times the largest entry's magnitude `s`, or for [`JACOBI_MAX_SWEEPS`]
/// sweeps (round-off holds larger matrices near `d ε s / 4`), and returns the
/// result when that norm is at most `64 d ε s`, which bounds the error of
/// every eigenvalue.
///
/// # Errors
/// [`Error::Shape`] if `a` is not `d × d` with `d ≥ 1`;
/// [`Error::InvalidArgument`] if an entry is not finite or `a` is not
/// symmetric; [`Error::NotConverged`], with the off-diagonal norm reached,
/// when [`JACOBI_MAX_SWEEPS`] sweeps do not bring it to `64 d ε s` or a
/// rotation overflows (entries near `f64::MAX`), rather than an inaccurate result.
pub fn symmetric_eigen(a: &[f64], d: usize) -> Result<SymmetricEigen> {
    symmetric_eigen_with(a, d, JACOBI_MAX_SWEEPS)
}

/// [`symmetric_eigen`] with at most `max_sweeps` sweeps.
pub(crate) fn symmetric_eigen_with(a: &[f64], d: usize, max_sweeps: usize) -> Result<SymmetricEigen> {
    if d.checked_mul(d) != Some(a.len()) || d == 0 {
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
    let mut sweeps = 0;
    loop {
        let (done, rel) = off_diagonal(&m, d, scale);
        if done || sweeps >= max_sweeps || !rel.is_finite() {
            break;
        }
        sweeps += 1;
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
    // The sweeps aim at 1e-15, which round-off keeps out of reach beyond
    // d ≈ 30 (the norm settles near d·ε/4); the result is accurate when the
    // norm is within a wide margin of that level.
    let (_, rel) = off_diagonal(&m, d, scale);
    let accuracy = JACOBI_ACCURACY * d as f64;
    if rel.is_nan() || rel > accuracy {
        return Err(Error::NotConverged {
            what: format!("Jacobi eigendecomposition of a {d}×{d} symmetric matrix"),
            iterations: sweeps,
            off_diagonal: rel * scale,
            tolerance: accuracy * scale,
        });
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

/// Whether the sweeps are done (the off-diagonal sum of squares of the
/// row-major `d × d` matrix `m` at most `(1e-15 · scale)²`) and the
/// off-diagonal Frobenius norm relative to `scale`. Computed on the raw
/// entries, as always, unless their squares overflow or underflow; then on
/// the entries divided by `scale`.
fn off_diagonal(m: &[f64], d: usize, scale: f64) -> (bool, f64) {
    let pairs = || (0..d).flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| i * d + j));
    let off: f64 = pairs().map(|k| m[k] * m[k]).sum();
    let tol = 1e-30 * scale * scale;
    if off.is_finite() && tol.is_finite() && tol > 0.0 {
        return (off <= tol, off.sqrt() / scale);
    }
    let rel: f64 = pairs().map(|k| (m[k] / scale) * (m[k] / scale)).sum();
    (rel <= 1e-30, rel.sqrt())
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

/// Mean and covariance (row-major `d × d`, denominator `n − ddof`: 0 for the
/// maximum-likelihood estimate, 1 for the unbiased one) of the rows of `x`
/// (`n × d`, row-major). The covariance is accumulated on its upper triangle
/// and mirrored, so it is exactly symmetric.
///
/// # Errors
/// [`Error::Shape`] unless `x` holds `n > ddof` whole rows of `d ≥ 1` values.
pub fn sample_moments(x: &[f64], d: usize, ddof: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    if d == 0 || !x.len().is_multiple_of(d) || x.len() / d <= ddof {
        return Err(Error::Shape(format!(
            "sample_moments: {} values do not make more than {ddof} rows of dimension {d}",
            x.len()
        )));
    }
    let n = x.len() / d;
    let mut mean = vec![0.0; d];
    for r in x.chunks_exact(d) {
        mean.iter_mut().zip(r).for_each(|(m, v)| *m += v);
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut cov = vec![0.0; d * d];
    for r in x.chunks_exact(d) {
        for i in 0..d {
            let ci = r[i] - mean[i];
            let row = &mut cov[i * d..(i + 1) * d];
            for j in i..d {
                row[j] += ci * (r[j] - mean[j]);
            }
        }
    }
    let denom = (n - ddof) as f64;
    for i in 0..d {
        for j in i..d {
            let v = cov[i * d + j] / denom;
            cov[i * d + j] = v;
            cov[j * d + i] = v;
        }
    }
    Ok((mean, cov))
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
    fn sample_moments_by_hand() -> Result<()> {
        // Rows (0, 1), (2, 1), (4, 4): mean (2, 2); centred (−2, −1), (0, −1), (2, 2).
        let x = [0.0, 1.0, 2.0, 1.0, 4.0, 4.0];
        let (m, c) = sample_moments(&x, 2, 1)?;
        assert_eq!(m, vec![2.0, 2.0]);
        assert_eq!(c, vec![4.0, 3.0, 3.0, 3.0]);
        let (_, c0) = sample_moments(&x, 2, 0)?;
        assert_eq!(c0, vec![8.0 / 3.0, 2.0, 2.0, 2.0]);
        assert!(sample_moments(&x[..2], 2, 1).is_err() && sample_moments(&x[..5], 2, 0).is_err());
        Ok(())
    }

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

    /// A deterministic stream of values in `[-1, 1)` (SplitMix64).
    fn uniform(seed: u64) -> impl FnMut() -> f64 {
        let mut state = seed;
        move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        }
    }

    /// `Q diag(λ) Qᵀ` for the Householder reflection `Q = I − 2 v vᵀ / vᵀv`
    /// (symmetric and orthogonal, so its columns are the eigenvectors).
    fn householder(v: &[f64], lambda: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let d = v.len();
        let vv: f64 = v.iter().map(|x| x * x).sum();
        let q: Vec<f64> = (0..d * d)
            .map(|k| (if k / d == k % d { 1.0 } else { 0.0 }) - 2.0 * v[k / d] * v[k % d] / vv)
            .collect();
        let a = (0..d * d)
            .map(|k| (0..d).map(|j| q[(k / d) * d + j] * lambda[j] * q[(k % d) * d + j]).sum())
            .collect();
        (a, q)
    }

    #[test]
    fn known_eigendecomposition_is_recovered() -> Result<()> {
        let v = [1.0, -2.0, 0.5, 3.0, 1.5];
        let lambda = [-2.0, 0.5, 1.0, 3.0, 7.0]; // ascending, distinct
        let (a, q) = householder(&v, &lambda);
        let e = symmetric_eigen(&a, 5)?;
        for (got, want) in e.values.iter().zip(&lambda) {
            assert!((got - want).abs() < 1e-12, "{:?} vs {lambda:?}", e.values);
        }
        // Each eigenvector is Q's column up to its sign.
        for j in 0..5 {
            let dot: f64 = (0..5).map(|i| e.vectors[i * 5 + j] * q[i * 5 + j]).sum();
            let sign = dot.signum();
            for i in 0..5 {
                assert!((e.vectors[i * 5 + j] - sign * q[i * 5 + j]).abs() < 1e-12, "column {j}");
            }
        }
        // Repeated eigenvalues converge too.
        let (a, _) = householder(&v, &[1.0, 1.0, 1.0, 2.0, 2.0]);
        let e = symmetric_eigen(&a, 5)?;
        for (got, want) in e.values.iter().zip([1.0, 1.0, 1.0, 2.0, 2.0]) {
            assert!((got - want).abs() < 1e-12, "{:?}", e.values);
        }
        Ok(())
    }

    /// Covariance-like matrices (`XᵀX / n`, low rank included) of the sizes the
    /// Fréchet distance sees are accepted: from `d ≈ 30` the sweeps run to the
    /// limit at round-off, which is accurate.
    #[test]
    fn covariances_are_accepted_at_round_off() -> Result<()> {
        let mut next = uniform(7);
        for (d, n) in [(1, 3), (2, 5), (8, 4), (32, 100), (64, 10), (128, 300)] {
            let x: Vec<f64> = (0..n * d).map(|_| next()).collect();
            let c: Vec<f64> =
                matmul(&transpose(&x, n, d), &x, d, n, d).iter().map(|v| v / n as f64).collect();
            // Exactly symmetric, as the callers make it.
            let c: Vec<f64> = (0..d * d).map(|k| 0.5 * (c[k] + c[(k % d) * d + k / d])).collect();
            let e = symmetric_eigen(&c, d)?;
            let back = e.map(|l| l);
            let scale = c.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (x, y) in c.iter().zip(&back) {
                assert!((x - y).abs() < 1e-12 * scale.max(1.0), "d = {d}");
            }
        }
        Ok(())
    }

    #[test]
    fn non_convergence_is_an_error_naming_the_off_diagonal_norm() {
        let mut next = uniform(3);
        let d = 8;
        let x: Vec<f64> = (0..d * d).map(|_| next()).collect();
        let a: Vec<f64> = (0..d * d).map(|k| x[k] + x[(k % d) * d + k / d]).collect();
        // The full limit converges; one sweep does not.
        assert!(symmetric_eigen_with(&a, d, JACOBI_MAX_SWEEPS).is_ok());
        for sweeps in [0, 1] {
            match symmetric_eigen_with(&a, d, sweeps) {
                Err(Error::NotConverged { what, iterations, off_diagonal, tolerance }) => {
                    assert!(what.contains("Jacobi") && what.contains("8×8"), "{what}");
                    assert_eq!(iterations, sweeps);
                    assert!(off_diagonal.is_finite() && off_diagonal > tolerance && tolerance > 0.0);
                    let msg = symmetric_eigen_with(&a, d, sweeps).err().map(|e| e.to_string());
                    assert!(msg
                        .is_some_and(|m| m.contains("did not converge") && m.contains("off-diagonal norm")));
                }
                other => panic!("{sweeps} sweeps: expected NotConverged, got {other:?}"),
            }
        }
        // A diagonal matrix needs no sweep at all.
        assert!(symmetric_eigen_with(&[2.0, 0.0, 0.0, 1.0], 2, 0).is_ok());
    }

    /// Entries near `f64::MAX` overflow the rotations: an error, where the
    /// sum of squares used to overflow to `inf ≤ inf` and stop at once with the
    /// diagonal as the "eigenvalues".
    #[test]
    fn overflowing_rotations_are_an_error() {
        let big = 1e308;
        match symmetric_eigen(&[big, big, big, -big], 2) {
            Err(Error::NotConverged { off_diagonal, .. }) => assert!(!off_diagonal.is_finite()),
            other => panic!("expected NotConverged, got {other:?}"),
        }
        // Large but representable entries (beyond 1e154, where squares overflow) still work.
        let e = symmetric_eigen(&[3e200, 1e200, 1e200, 3e200], 2);
        assert!(e.is_ok_and(
            |e| (e.values[0] / 2e200 - 1.0).abs() < 1e-12 && (e.values[1] / 4e200 - 1.0).abs() < 1e-12
        ));
    }

    #[test]
    fn rejects_non_finite_and_bad_shapes() {
        assert!(matches!(
            symmetric_eigen(&[1.0, f64::NAN, f64::NAN, 1.0], 2),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(symmetric_eigen(&[f64::INFINITY], 1), Err(Error::InvalidArgument { .. })));
        assert!(matches!(symmetric_eigen(&[1.0], usize::MAX), Err(Error::Shape(_))));
        assert!(matches!(symmetric_eigen(&[], 0), Err(Error::Shape(_))));
    }

    #[test]
    fn rejects_asymmetric() {
        assert!(symmetric_eigen(&[1.0, 2.0, 0.0, 1.0], 2).is_err());
    }
}

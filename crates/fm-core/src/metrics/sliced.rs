//! The sliced 2-Wasserstein distance.

use candle::Tensor;

use super::cloud::{cloud_pair, Points};
use crate::{Error, Result, SeededRng};

/// The sliced 2-Wasserstein distance
/// `SW2(x, y) = ( mean_k W2²(⟨u_k, x⟩, ⟨u_k, y⟩) )^{1/2}`
/// over `n_projections` directions `u_k` drawn uniformly on the unit sphere
/// (normalised Gaussian vectors from `rng`).
///
/// Each 1-D `W2²` is computed **exactly** between the two projected empirical
/// measures as `∫₀¹ (F⁻¹(t) − G⁻¹(t))² dt` of their sorted quantile
/// functions, so `n ≠ m` is allowed (the step functions are merged at the
/// breakpoints `i/n` and `j/m`; for `n = m` this is the mean squared
/// difference of the sorted projections).
///
/// Scale: for a pure translation `y = x + v`, each slice contributes
/// `(u·v)²` and `E[(u·v)²] = ‖v‖²/d`, so `SW2 → ‖v‖ / √d` as
/// `n_projections → ∞`, whereas the exact `W2` is `‖v‖`.
/// `O(n_projections · ((n + m) d + n log n + m log m))` time.
///
/// # Shapes
/// - `x`: `(n, d)`, any float dtype (computed in `f64`)
/// - `y`: `(m, d)`
///
/// # Errors
/// [`Error::Shape`] if either is not rank 2 or the dimensions differ;
/// [`Error::InvalidArgument`] if either is empty or non-finite, or
/// `n_projections == 0`.
pub fn sliced_wasserstein2(x: &Tensor, y: &Tensor, n_projections: usize, rng: &mut SeededRng) -> Result<f64> {
    let (x, y) = cloud_pair(x, "x", y, "y")?;
    sliced_points(x.points(), y.points(), n_projections, rng)
}

/// [`sliced_wasserstein2`] on validated points.
pub(crate) fn sliced_points(
    x: Points<'_>,
    y: Points<'_>,
    n_projections: usize,
    rng: &mut SeededRng,
) -> Result<f64> {
    if n_projections == 0 {
        return Err(Error::invalid("n_projections", "must be at least 1"));
    }
    let d = x.d;
    let mut px = vec![0.0; x.n()];
    let mut py = vec![0.0; y.n()];
    let mut total = 0.0;
    for _ in 0..n_projections {
        let u = random_direction(d, rng);
        project(x, &u, &mut px);
        project(y, &u, &mut py);
        px.sort_unstable_by(f64::total_cmp);
        py.sort_unstable_by(f64::total_cmp);
        total += w2_squared_sorted_1d(&px, &py);
    }
    Ok((total / n_projections as f64).sqrt())
}

/// A uniformly random unit vector in `R^d`.
fn random_direction(d: usize, rng: &mut SeededRng) -> Vec<f64> {
    loop {
        let mut u = rng.normal_vec(d);
        let norm = u.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm > 1e-12 {
            u.iter_mut().for_each(|v| *v /= norm);
            return u;
        }
    }
}

/// `out[i] = ⟨points_i, u⟩`.
fn project(points: Points<'_>, u: &[f64], out: &mut [f64]) {
    for (o, p) in out.iter_mut().zip(points.rows()) {
        *o = p.iter().zip(u).map(|(a, b)| a * b).sum();
    }
}

/// The exact squared 2-Wasserstein distance between the uniform empirical
/// measures on sorted `a` (n atoms) and sorted `b` (m atoms):
/// `∫₀¹ (F_a⁻¹(t) − F_b⁻¹(t))² dt`, merging the quantile steps exactly in
/// integer units of `1 / (n m)`.
pub(crate) fn w2_squared_sorted_1d(a: &[f64], b: &[f64]) -> f64 {
    let (n, m) = (a.len() as u128, b.len() as u128);
    if n == 0 || m == 0 {
        return 0.0;
    }
    let (mut i, mut j) = (0usize, 0usize);
    let mut t: u128 = 0;
    let mut total = 0.0;
    while i < a.len() && j < b.len() {
        // Atom i of a covers [i m, (i+1) m); atom j of b covers [j n, (j+1) n).
        let end_a = (i as u128 + 1) * m;
        let end_b = (j as u128 + 1) * n;
        let end = end_a.min(end_b);
        let diff = a[i] - b[j];
        total += (end - t) as f64 * diff * diff;
        t = end;
        if end_a == end {
            i += 1;
        }
        if end_b == end {
            j += 1;
        }
    }
    total / (n * m) as f64
}

#[cfg(test)]
mod tests {
    use super::w2_squared_sorted_1d;

    #[test]
    fn one_dimensional_w2_equal_and_unequal_sizes() {
        // Equal sizes: mean squared difference of sorted values.
        assert!((w2_squared_sorted_1d(&[0.0, 1.0], &[2.0, 3.0]) - 4.0).abs() < 1e-15);
        // {0} vs {1, 3}: half the mass moves 1, half moves 3 → (1 + 9) / 2.
        assert!((w2_squared_sorted_1d(&[0.0], &[1.0, 3.0]) - 5.0).abs() < 1e-15);
        // {0, 1, 2} vs {0, 2}: quantiles [0,1/3)→0|0, [1/3,1/2)→1|0,
        // [1/2,2/3)→1|2, [2/3,1)→2|2 → (1/6)·1 + (1/6)·1 = 1/3.
        assert!((w2_squared_sorted_1d(&[0.0, 1.0, 2.0], &[0.0, 2.0]) - 1.0 / 3.0).abs() < 1e-15);
        // Symmetric.
        assert_eq!(
            w2_squared_sorted_1d(&[0.0, 1.0, 2.0], &[0.0, 2.0]),
            w2_squared_sorted_1d(&[0.0, 2.0], &[0.0, 1.0, 2.0])
        );
    }
}

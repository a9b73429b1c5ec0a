//! Tests of the Fréchet distance (`fm_core::metrics::frechet_distance`)
//! against exact closed forms.

use candle::{Device, Tensor};
use fm_core::linalg::{gaussian_w2, matmul, symmetric_eigen, transpose};
use fm_core::metrics::{frechet_distance, frechet_distance_stats, FeatureStats};
use fm_core::{Error, SeededRng};

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

/// A random orthogonal `d × d` matrix (the eigenvectors of a random symmetric one).
fn rotation(rng: &mut SeededRng, d: usize) -> anyhow::Result<Vec<f64>> {
    let g = rng.normal_vec(d * d);
    let sym: Vec<f64> = (0..d * d).map(|k| g[k] + g[(k % d) * d + k / d]).collect();
    Ok(symmetric_eigen(&sym, d)?.vectors)
}

/// `U diag(l) Uᵀ`, exactly symmetrised.
fn with_spectrum(u: &[f64], l: &[f64]) -> Vec<f64> {
    let d = l.len();
    let mut ul = u.to_vec();
    for i in 0..d {
        for k in 0..d {
            ul[i * d + k] *= l[k];
        }
    }
    let c = matmul(&ul, &transpose(u, d, d), d, d, d);
    (0..d * d).map(|k| 0.5 * (c[k] + c[(k % d) * d + k / d])).collect()
}

/// `n` points of dimension `d` with very different scales per direction, a
/// constant coordinate (zero variance) and a duplicated one (a singular covariance).
fn features(rng: &mut SeededRng, n: usize, d: usize) -> anyhow::Result<Tensor> {
    let mut v = rng.normal_vec(n * d);
    for row in v.chunks_exact_mut(d) {
        for (j, x) in row.iter_mut().enumerate() {
            *x = *x * (0.05 + j as f64 * 0.3) + j as f64 * 0.1;
        }
        row[0] = 1.5;
        row[d - 1] = row[d - 2];
    }
    Ok(Tensor::from_vec(v, (n, d), &Device::Cpu)?)
}

#[test]
fn diagonal_covariances_give_the_sum_of_root_differences() -> anyhow::Result<()> {
    let mut rng = SeededRng::new(1);
    let d = 7;
    let a = rng.uniform_vec(d, 0.0, 5.0);
    let b = rng.uniform_vec(d, 0.0, 5.0);
    let (m1, m2) = (rng.normal_vec(d), rng.normal_vec(d));
    let diag = |l: &[f64]| {
        let mut c = vec![0.0; d * d];
        for i in 0..d {
            c[i * d + i] = l[i];
        }
        c
    };
    let want: f64 = m1.iter().zip(&m2).map(|(x, y)| (x - y).powi(2)).sum::<f64>()
        + a.iter().zip(&b).map(|(x, y)| (x.sqrt() - y.sqrt()).powi(2)).sum::<f64>();
    let s1 = FeatureStats::new(m1, diag(&a))?;
    let s2 = FeatureStats::new(m2, diag(&b))?;
    let got = frechet_distance_stats(&s1, &s2)?;
    assert!(close(got, want, 1e-12), "{got} vs {want}");
    Ok(())
}

#[test]
fn commuting_covariances_in_a_rotated_basis() -> anyhow::Result<()> {
    // Σ₁ = U diag(a) Uᵀ and Σ₂ = U diag(b) Uᵀ commute: the trace term is Σ √(a_i b_i).
    let mut rng = SeededRng::new(2);
    let d = 9;
    let u = rotation(&mut rng, d)?;
    let mut a = rng.uniform_vec(d, 0.01, 4.0);
    let b = rng.uniform_vec(d, 0.01, 4.0);
    a[3] = 0.0; // singular Σ₁
    let want: f64 = a.iter().zip(&b).map(|(x, y)| (x.sqrt() - y.sqrt()).powi(2)).sum();
    let s1 = FeatureStats::new(vec![0.0; d], with_spectrum(&u, &a))?;
    let s2 = FeatureStats::new(vec![0.0; d], with_spectrum(&u, &b))?;
    let got = frechet_distance_stats(&s1, &s2)?;
    // The zero eigenvalue of Σ₁ comes back as ±ε·λ_max, whose square root (≈ 1e-8) is
    // the documented √ε error of matrix square roots of singular matrices.
    assert!(close(got, want, 1e-7), "{got} vs {want}");
    Ok(())
}

#[test]
fn non_commuting_two_by_two_matches_the_closed_form() -> anyhow::Result<()> {
    // For 2 × 2 PSD M, tr √M = √(tr M + 2 √det M); here M = Σ₁^{1/2} Σ₂ Σ₁^{1/2}
    // has tr M = tr(Σ₁Σ₂) and det M = det Σ₁ det Σ₂.
    let c1 = [3.694337f64, 0.988124, 0.988124, 0.805663];
    let c2 = [1.0, -0.7, -0.7, 2.5];
    let (m1, m2) = ([1.0f64, -1.0], [0.25f64, 2.0]);
    let tr12 = c1[0] * c2[0] + c1[1] * c2[2] + c1[2] * c2[1] + c1[3] * c2[3];
    let det = |c: &[f64; 4]| c[0] * c[3] - c[1] * c[2];
    let tr_sqrt = (tr12 + 2.0 * (det(&c1) * det(&c2)).sqrt()).sqrt();
    let want =
        (m1[0] - m2[0]).powi(2) + (m1[1] - m2[1]).powi(2) + c1[0] + c1[3] + c2[0] + c2[3] - 2.0 * tr_sqrt;
    let s1 = FeatureStats::new(m1.to_vec(), c1.to_vec())?;
    let s2 = FeatureStats::new(m2.to_vec(), c2.to_vec())?;
    let got = frechet_distance_stats(&s1, &s2)?;
    assert!(close(got, want, 1e-12), "{got} vs {want}");
    // Symmetric in its arguments although the formula is not written so.
    assert!(close(frechet_distance_stats(&s2, &s1)?, want, 1e-12));
    Ok(())
}

#[test]
fn equals_the_squared_gaussian_w2() -> anyhow::Result<()> {
    let mut rng = SeededRng::new(3);
    let d = 6;
    for _ in 0..5 {
        let (u1, u2) = (rotation(&mut rng, d)?, rotation(&mut rng, d)?);
        let c1 = with_spectrum(&u1, &rng.uniform_vec(d, 0.1, 3.0));
        let c2 = with_spectrum(&u2, &rng.uniform_vec(d, 0.1, 3.0));
        let (m1, m2) = (rng.normal_vec(d), rng.normal_vec(d));
        let w2 = gaussian_w2(&m1, &c1, &m2, &c2)?;
        let fd = frechet_distance_stats(&FeatureStats::new(m1, c1)?, &FeatureStats::new(m2, c2)?)?;
        assert!(close(fd, w2 * w2, 1e-9), "{fd} vs {}", w2 * w2);
    }
    Ok(())
}

#[test]
fn sample_statistics_are_the_mean_and_unbiased_covariance() -> anyhow::Result<()> {
    let x = Tensor::new(&[[0.0f64, 0.0], [2.0, 0.0], [1.0, 3.0]], &Device::Cpu)?;
    let s = FeatureStats::from_features(&x)?;
    assert_eq!(s.n, 3);
    assert!(close(s.mean[0], 1.0, 1e-15) && close(s.mean[1], 1.0, 1e-15));
    // Centred: (−1, −1), (1, −1), (0, 2); sums of products / (n − 1).
    let want = [1.0, 0.0, 0.0, 3.0];
    for (g, w) in s.cov.iter().zip(want) {
        assert!((g - w).abs() < 1e-14, "{:?}", s.cov);
    }
    Ok(())
}

#[test]
fn a_set_and_itself_are_at_distance_zero() -> anyhow::Result<()> {
    // 128-d, the size of the classifier's features, with a singular covariance.
    let x = features(&mut SeededRng::new(4), 400, 128)?;
    let s = FeatureStats::from_features(&x)?;
    let trace: f64 = (0..128).map(|i| s.cov[i * 128 + i]).sum();
    let fd = frechet_distance(&x, &x)?;
    assert!((0.0..=1e-8 * trace).contains(&fd), "FD(x, x) = {fd}, tr Σ = {trace}");
    Ok(())
}

#[test]
fn translation_adds_the_squared_shift() -> anyhow::Result<()> {
    let mut rng = SeededRng::new(5);
    let (n, d) = (300, 16);
    let x = features(&mut rng, n, d)?;
    let v = rng.normal_vec(d);
    let shift = Tensor::from_vec(v.clone(), (1, d), &Device::Cpu)?;
    let y = x.broadcast_add(&shift)?;
    let want: f64 = v.iter().map(|a| a * a).sum();
    let got = frechet_distance(&x, &y)?;
    assert!(close(got, want, 1e-7), "{got} vs {want}");
    Ok(())
}

#[test]
fn scaling_gives_the_closed_form() -> anyhow::Result<()> {
    // y = c x: μ₂ = c μ, Σ₂ = c² Σ, so FD = (1 − c)² (‖μ‖² + tr Σ).
    let x = features(&mut SeededRng::new(6), 250, 12)?;
    let s = FeatureStats::from_features(&x)?;
    let base: f64 =
        s.mean.iter().map(|m| m * m).sum::<f64>() + (0..12).map(|i| s.cov[i * 12 + i]).sum::<f64>();
    for c in [0.5, 0.9, 1.1, 3.0] {
        let got = frechet_distance(&x, &(&x * c)?)?;
        let want = (1.0 - c) * (1.0 - c) * base;
        assert!(close(got, want, 1e-7), "c = {c}: {got} vs {want}");
    }
    Ok(())
}

#[test]
fn grows_with_the_distance_between_gaussian_samples() -> anyhow::Result<()> {
    // Samples of N(0, I) and N(m·1, I) in d = 8: FD → 8 m² as n grows. The mean term's
    // standard deviation is about 2 m √(2d/n) ≈ 0.13 m; the covariance term's bias ≈ 0.01.
    let mut rng = SeededRng::new(7);
    let (n, d) = (4000, 8);
    let x = Tensor::from_vec(rng.normal_vec(n * d), (n, d), &Device::Cpu)?;
    let mut last = 0.0;
    for m in [0.0f64, 0.25, 0.5, 1.0] {
        let v: Vec<f64> = rng.normal_vec(n * d).into_iter().map(|z| z + m).collect();
        let y = Tensor::from_vec(v, (n, d), &Device::Cpu)?;
        let fd = frechet_distance(&x, &y)?;
        assert!((fd - 8.0 * m * m).abs() < 0.05 + 0.4 * m, "m = {m}: {fd}");
        assert!(fd >= last);
        last = fd;
    }
    Ok(())
}

#[test]
fn bad_input_gives_typed_errors() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let one = Tensor::new(&[[1.0f64, 2.0]], &dev)?;
    let two = Tensor::new(&[[1.0f64, 2.0], [0.0, 1.0]], &dev)?;
    let three_d = Tensor::new(&[[1.0f64, 2.0, 3.0], [0.0, 1.0, 2.0]], &dev)?;
    let nan = Tensor::new(&[[1.0f64, f64::NAN], [0.0, 1.0]], &dev)?;
    assert!(matches!(frechet_distance(&one, &two), Err(Error::InvalidArgument { .. })));
    assert!(matches!(frechet_distance(&two, &three_d), Err(Error::Shape(_))));
    assert!(matches!(frechet_distance(&two, &nan), Err(Error::InvalidArgument { .. })));
    assert!(matches!(FeatureStats::new(vec![0.0; 2], vec![1.0; 3]), Err(Error::Shape(_))));
    assert!(matches!(
        FeatureStats::new(vec![0.0; 2], vec![1.0, 0.5, 0.0, 1.0]),
        Err(Error::InvalidArgument { .. })
    ));
    let a = FeatureStats::new(vec![0.0], vec![1.0])?;
    let b = FeatureStats::new(vec![0.0; 2], vec![1.0, 0.0, 0.0, 1.0])?;
    assert!(matches!(frechet_distance_stats(&a, &b), Err(Error::Shape(_))));
    Ok(())
}

/// Statistics whose eigendecomposition cannot converge (entries near
/// `f64::MAX` overflow the Jacobi rotations) give a typed error naming the
/// eigensolver and the off-diagonal norm it reached, not a wrong distance.
#[test]
fn an_eigensolver_that_does_not_converge_is_an_error() -> anyhow::Result<()> {
    let big = 1e308;
    let a = FeatureStats::new(vec![0.0; 2], vec![big, big, big, -big])?;
    let b = FeatureStats::new(vec![0.0; 2], vec![1.0, 0.0, 0.0, 1.0])?;
    let err = frechet_distance_stats(&a, &b).err();
    assert!(matches!(err, Some(Error::NotConverged { .. })), "{err:?}");
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("Jacobi") && msg.contains("off-diagonal norm"), "{msg}");
    Ok(())
}

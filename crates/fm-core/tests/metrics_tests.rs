//! Tests of the sample-quality metrics in `fm_core::metrics`.

use candle::{DType, Device, Tensor};
use fm_core::assignment::linear_sum_assignment;
use fm_core::metrics::{
    energy_distance, median_heuristic_bandwidth, mmd_rbf, nearest_neighbor_distances, sliced_wasserstein2,
    wasserstein2_exact, SampleMetrics, SLICED_PROJECTIONS,
};
use fm_core::{Error, SeededRng};

/// A `(n, d)` f64 tensor from row-major values.
fn cloud(values: &[f64], n: usize, d: usize) -> anyhow::Result<Tensor> {
    Ok(Tensor::from_vec(values.to_vec(), (n, d), &Device::Cpu)?)
}

/// `n` draws of `N(mean · 1, I_d)`.
fn gaussian(rng: &mut SeededRng, n: usize, d: usize, mean: f64) -> anyhow::Result<Tensor> {
    let v: Vec<f64> = rng.normal_vec(n * d).into_iter().map(|z| z + mean).collect();
    cloud(&v, n, d)
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

#[test]
fn tiny_one_dimensional_sets_have_hand_computed_values() -> anyhow::Result<()> {
    let x = cloud(&[0.0, 1.0], 2, 1)?;
    let y = cloud(&[2.0, 3.0], 2, 1)?;
    // E|X−Y| = (2+3+1+2)/4 = 2, E|X−X'| = E|Y−Y'| = (0+1+1+0)/4 = 1/2.
    assert!(close(energy_distance(&x, &y)?, 3.0, 1e-15));
    // Matching 0→2, 1→3: mean squared cost 4.
    assert_eq!(wasserstein2_exact(&x, &y)?, 2.0);
    // In 1-D every direction is ±1 and each slice is the exact W2.
    let sw = sliced_wasserstein2(&x, &y, 10, &mut SeededRng::new(0))?;
    assert!(close(sw, 2.0, 1e-14), "{sw}");
    // MMD² = 1 + k(1)/2 − k(2) − k(3)/2, k(r) = exp(−r²/(2h²)).
    for h in [0.5, 1.0, 2.3] {
        let k = |r: f64| (-r * r / (2.0 * h * h)).exp();
        let expected = 1.0 + k(1.0) / 2.0 - k(2.0) - k(3.0) / 2.0;
        assert!(close(mmd_rbf(&x, &y, h)?, expected, 1e-14), "h = {h}");
    }
    // Pooled {0,1,2,3}: distances 1,1,1,2,2,3 → median 1.5.
    assert_eq!(median_heuristic_bandwidth(&x, &y)?, 1.5);

    // Unequal sizes: {0} vs {1, 3}: 2·2 − 0 − (0+2+2+0)/4 = 3.
    let a = cloud(&[0.0], 1, 1)?;
    let b = cloud(&[1.0, 3.0], 2, 1)?;
    assert!(close(energy_distance(&a, &b)?, 3.0, 1e-15));
    // W2² in 1-D with unequal sizes: half the mass moves 1, half moves 3.
    let sw = sliced_wasserstein2(&a, &b, 3, &mut SeededRng::new(1))?;
    assert!(close(sw, 5f64.sqrt(), 1e-14), "{sw}");
    Ok(())
}

#[test]
fn identical_sets_give_exactly_zero() -> anyhow::Result<()> {
    let mut rng = SeededRng::new(3);
    let x = gaussian(&mut rng, 120, 3, 0.5)?;
    assert_eq!(energy_distance(&x, &x)?, 0.0);
    assert_eq!(mmd_rbf(&x, &x, 0.8)?, 0.0);
    assert_eq!(wasserstein2_exact(&x, &x)?, 0.0);
    assert_eq!(sliced_wasserstein2(&x, &x, 16, &mut rng)?, 0.0);
    // A reordered copy: exact W2 and SW2 are still exactly 0.
    let perm: Vec<u32> = rng.permutation(120).into_iter().map(|i| i as u32).collect();
    let shuffled = x.index_select(&Tensor::new(perm.as_slice(), &Device::Cpu)?, 0)?;
    assert_eq!(wasserstein2_exact(&x, &shuffled)?, 0.0);
    assert_eq!(sliced_wasserstein2(&x, &shuffled, 16, &mut rng)?, 0.0);
    assert!(energy_distance(&x, &shuffled)? < 1e-12);
    assert!(mmd_rbf(&x, &shuffled, 0.8)? < 1e-12);
    Ok(())
}

#[test]
fn translation_gives_exact_w2_norm_and_sliced_norm_over_sqrt_d() -> anyhow::Result<()> {
    let mut rng = SeededRng::new(7);
    let (n, d) = (200, 4);
    let v = [1.0, -2.0, 0.5, 3.0];
    let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
    let xv = rng.normal_vec(n * d);
    // Shift and reorder: y_{p(i)} = x_i + v.
    let p = rng.permutation(n);
    let mut yv = vec![0.0; n * d];
    for i in 0..n {
        for k in 0..d {
            yv[p[i] * d + k] = xv[i * d + k] + v[k];
        }
    }
    let (x, y) = (cloud(&xv, n, d)?, cloud(&yv, n, d)?);
    // The identity coupling is optimal for a translation: W2 = ‖v‖.
    let w2 = wasserstein2_exact(&x, &y)?;
    assert!(close(w2, norm, 1e-12), "{w2} vs {norm}");
    // Each slice contributes (u·v)², and E[(u·v)²] = ‖v‖²/d for uniform unit u.
    let sw = sliced_wasserstein2(&x, &y, 20_000, &mut rng)?;
    let expected = norm / (d as f64).sqrt();
    assert!((sw / expected - 1.0).abs() < 0.02, "{sw} vs {expected}");
    Ok(())
}

#[test]
fn metrics_order_same_and_shifted_gaussians() -> anyhow::Result<()> {
    let mut rng = SeededRng::new(11);
    let (n, d) = (300, 2);
    let x = gaussian(&mut rng, n, d, 0.0)?;
    let same = gaussian(&mut rng, n, d, 0.0)?;
    let shifted = gaussian(&mut rng, n, d, 1.0)?;
    let h = median_heuristic_bandwidth(&x, &same)?;
    // The median distance of N(0, I₂) pairs is 2·sqrt(ln 4) ≈ 1.67.
    assert!((h - 1.665).abs() < 0.15, "{h}");

    let m_same = SampleMetrics::compute(&x, &same, 1, n, h)?;
    let m_shift = SampleMetrics::compute(&x, &shifted, 1, n, h)?;
    assert!(m_same.energy_distance < 0.05, "{m_same:?}");
    assert!(m_same.mmd_rbf < 0.02, "{m_same:?}");
    assert!(m_same.sliced_w2 < 0.2, "{m_same:?}");
    assert!(m_same.exact_w2.is_some_and(|w| w < 0.4), "{m_same:?}");

    assert!(m_shift.energy_distance > 5.0 * m_same.energy_distance, "{m_shift:?}");
    assert!(m_shift.mmd_rbf > 5.0 * m_same.mmd_rbf, "{m_shift:?}");
    assert!(m_shift.sliced_w2 > 3.0 * m_same.sliced_w2, "{m_shift:?}");
    // Exact W2 of the populations is ‖(1, 1)‖ = √2; sliced is about √2/√2 = 1.
    let w = m_shift.exact_w2.unwrap_or(f64::NAN);
    assert!((w - 2f64.sqrt()).abs() < 0.3, "{m_shift:?}");
    assert!((m_shift.sliced_w2 - 1.0).abs() < 0.2, "{m_shift:?}");
    Ok(())
}

#[test]
fn metrics_are_symmetric() -> anyhow::Result<()> {
    let mut rng = SeededRng::new(13);
    let x = gaussian(&mut rng, 70, 3, 0.0)?;
    let y = gaussian(&mut rng, 90, 3, 0.4)?;
    let y_eq = gaussian(&mut rng, 70, 3, 0.4)?;
    assert!(close(energy_distance(&x, &y)?, energy_distance(&y, &x)?, 1e-12));
    assert!(close(mmd_rbf(&x, &y, 1.3)?, mmd_rbf(&y, &x, 1.3)?, 1e-12));
    assert!(close(median_heuristic_bandwidth(&x, &y)?, median_heuristic_bandwidth(&y, &x)?, 1e-12));
    // Same seed, same directions: sliced W2 is symmetric exactly.
    assert_eq!(
        sliced_wasserstein2(&x, &y, 32, &mut SeededRng::new(5))?,
        sliced_wasserstein2(&y, &x, 32, &mut SeededRng::new(5))?
    );
    assert!(close(wasserstein2_exact(&x, &y_eq)?, wasserstein2_exact(&y_eq, &x)?, 1e-12));
    Ok(())
}

#[test]
fn nearest_neighbor_distances_match_brute_force() -> anyhow::Result<()> {
    let mut rng = SeededRng::new(17);
    let (n, m, d) = (40, 3000, 5); // several reference blocks
    let q = rng.normal_vec(n * d);
    let mut r = rng.normal_vec(m * d);
    // Query 3 is a copy of reference point 2500 (a "memorised" sample).
    r[2500 * d..2501 * d].copy_from_slice(&q[3 * d..4 * d]);
    let got = nearest_neighbor_distances(&cloud(&q, n, d)?, &cloud(&r, m, d)?)?;
    assert_eq!(got.len(), n);
    for i in 0..n {
        let brute = (0..m)
            .map(|j| (0..d).map(|k| (q[i * d + k] - r[j * d + k]).powi(2)).sum::<f64>().sqrt())
            .fold(f64::INFINITY, f64::min);
        assert!(close(got[i], brute, 1e-12), "query {i}: {} vs {brute}", got[i]);
    }
    assert_eq!(got[3], 0.0);
    // Wide points (d not a multiple of 4, block of one point per few rows).
    let (n, m, d) = (7, 30, 4099);
    let q = rng.normal_vec(n * d);
    let r = rng.normal_vec(m * d);
    let got = nearest_neighbor_distances(&cloud(&q, n, d)?, &cloud(&r, m, d)?)?;
    for i in 0..n {
        let brute = (0..m)
            .map(|j| (0..d).map(|k| (q[i * d + k] - r[j * d + k]).powi(2)).sum::<f64>().sqrt())
            .fold(f64::INFINITY, f64::min);
        assert!(close(got[i], brute, 1e-12));
    }
    Ok(())
}

#[test]
fn f32_and_f64_inputs_agree() -> anyhow::Result<()> {
    let mut rng = SeededRng::new(19);
    let x64 = gaussian(&mut rng, 60, 3, 0.0)?;
    let y64 = gaussian(&mut rng, 60, 3, 0.7)?;
    let (x32, y32) = (x64.to_dtype(DType::F32)?, y64.to_dtype(DType::F32)?);
    // The f32 values, widened: exactly the same inputs, so the same bits.
    let (xw, yw) = (x32.to_dtype(DType::F64)?, y32.to_dtype(DType::F64)?);
    let a = SampleMetrics::compute(&x32, &y32, 4, 60, 1.0)?;
    let b = SampleMetrics::compute(&xw, &yw, 4, 60, 1.0)?;
    assert_eq!(a, b);
    // Against the original f64 data: within f32 rounding.
    let c = SampleMetrics::compute(&x64, &y64, 4, 60, 1.0)?;
    assert!(close(a.energy_distance, c.energy_distance, 1e-5));
    assert!(close(a.mmd_rbf, c.mmd_rbf, 1e-5));
    assert!(close(a.sliced_w2, c.sliced_w2, 1e-5));
    assert!(close(a.exact_w2.unwrap_or(0.0), c.exact_w2.unwrap_or(1.0), 1e-5));
    // Half precision works too, more loosely.
    let (x16, y16) = (x64.to_dtype(DType::F16)?, y64.to_dtype(DType::BF16)?);
    assert!(close(energy_distance(&x16, &y16)?, c.energy_distance, 0.05));
    let nn32 = nearest_neighbor_distances(&x32, &y32)?;
    let nn64 = nearest_neighbor_distances(&x64, &y64)?;
    for (p, q) in nn32.iter().zip(&nn64) {
        assert!(close(*p, *q, 1e-5));
    }
    Ok(())
}

#[test]
fn sample_metrics_match_the_individual_metrics() -> anyhow::Result<()> {
    fn is_serialize<T: serde::Serialize>(_: &T) {}
    let mut rng = SeededRng::new(23);
    let x = gaussian(&mut rng, 50, 2, 0.0)?;
    let y = gaussian(&mut rng, 80, 2, 0.3)?;
    let m = SampleMetrics::compute(&x, &y, 9, 30, 0.9)?;
    is_serialize(&m);
    assert_eq!(m.energy_distance, energy_distance(&x, &y)?);
    assert_eq!(m.mmd_rbf, mmd_rbf(&x, &y, 0.9)?);
    assert_eq!(m.mmd_bandwidth, 0.9);
    let sw = sliced_wasserstein2(&x, &y, SLICED_PROJECTIONS, &mut SeededRng::new(9))?;
    assert_eq!(m.sliced_w2, sw);
    // Exact W2 on the first 30 points of each.
    let w = wasserstein2_exact(&x.narrow(0, 0, 30)?, &y.narrow(0, 0, 30)?)?;
    assert_eq!(m.exact_w2, Some(w));
    // Limit 0: none; limit above n: the first n = 50 of each.
    assert_eq!(SampleMetrics::compute(&x, &y, 9, 0, 0.9)?.exact_w2, None);
    let w50 = wasserstein2_exact(&x, &y.narrow(0, 0, 50)?)?;
    assert_eq!(SampleMetrics::compute(&x, &y, 9, 1000, 0.9)?.exact_w2, Some(w50));
    // Reference smaller than min(n, limit): the first m = 50 of each.
    let w_small_ref = wasserstein2_exact(&y.narrow(0, 0, 50)?, &x)?;
    assert_eq!(SampleMetrics::compute(&y, &x, 9, 60, 0.9)?.exact_w2, Some(w_small_ref));
    // Same seed, same result.
    assert_eq!(SampleMetrics::compute(&x, &y, 9, 30, 0.9)?, m);
    Ok(())
}

#[test]
fn invalid_inputs_are_errors() -> anyhow::Result<()> {
    let x = cloud(&[0.0, 1.0, 2.0, 3.0], 2, 2)?;
    let x3 = cloud(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0], 2, 3)?;
    let empty = Tensor::zeros((0, 2), DType::F64, &Device::Cpu)?;
    let nan = cloud(&[0.0, f64::NAN, 2.0, 3.0], 2, 2)?;
    let inf = cloud(&[0.0, 1.0, f64::INFINITY, 3.0], 2, 2)?;
    let rank1 = Tensor::new(&[0.0f64, 1.0], &Device::Cpu)?;
    let mut rng = SeededRng::new(0);

    // Dimension mismatch: a shape error naming both shapes.
    match energy_distance(&x, &x3) {
        Err(Error::Shape(msg)) => assert!(msg.contains("[2, 2]") && msg.contains("[2, 3]"), "{msg}"),
        other => panic!("expected a shape error, got {other:?}"),
    }
    assert!(matches!(mmd_rbf(&x, &x3, 1.0), Err(Error::Shape(_))));
    assert!(matches!(sliced_wasserstein2(&x, &x3, 4, &mut rng), Err(Error::Shape(_))));
    assert!(matches!(wasserstein2_exact(&x, &x3), Err(Error::Shape(_))));
    assert!(matches!(nearest_neighbor_distances(&x, &x3), Err(Error::Shape(_))));
    assert!(matches!(SampleMetrics::compute(&x, &x3, 0, 2, 1.0), Err(Error::Shape(_))));
    assert!(matches!(energy_distance(&x, &rank1), Err(Error::Shape(_))));

    // Empty and non-finite inputs.
    for bad in [&empty, &nan, &inf] {
        assert!(matches!(energy_distance(&x, bad), Err(Error::InvalidArgument { .. })));
        assert!(matches!(mmd_rbf(bad, &x, 1.0), Err(Error::InvalidArgument { .. })));
        assert!(matches!(median_heuristic_bandwidth(bad, &x), Err(Error::InvalidArgument { .. })));
        assert!(matches!(sliced_wasserstein2(&x, bad, 4, &mut rng), Err(Error::InvalidArgument { .. })));
        assert!(matches!(wasserstein2_exact(bad, &x), Err(Error::InvalidArgument { .. })));
        assert!(matches!(nearest_neighbor_distances(bad, &x), Err(Error::InvalidArgument { .. })));
        assert!(matches!(SampleMetrics::compute(&x, bad, 0, 2, 1.0), Err(Error::InvalidArgument { .. })));
    }

    // Exact W2 needs equal sizes, and says which.
    let x1 = cloud(&[0.0, 1.0], 1, 2)?;
    match wasserstein2_exact(&x, &x1) {
        Err(Error::InvalidArgument { reason, .. }) => {
            assert!(reason.contains("n = 2") && reason.contains("m = 1"), "{reason}")
        }
        other => panic!("expected an invalid-argument error, got {other:?}"),
    }
    // Bad parameters.
    for h in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(mmd_rbf(&x, &x, h).is_err());
        assert!(SampleMetrics::compute(&x, &x, 0, 2, h).is_err());
    }
    assert!(sliced_wasserstein2(&x, &x, 0, &mut rng).is_err());
    // All points coincide: no median-heuristic bandwidth.
    let zeros = Tensor::zeros((3, 2), DType::F32, &Device::Cpu)?;
    assert!(median_heuristic_bandwidth(&zeros, &zeros).is_err());
    Ok(())
}

#[test]
fn exact_w2_of_a_thousand_points() -> anyhow::Result<()> {
    // The size the metrics are used at; also a check that the solver is fast.
    let mut rng = SeededRng::new(29);
    let (n, d) = (1000, 2);
    let x = gaussian(&mut rng, n, d, 0.0)?;
    let y = gaussian(&mut rng, n, d, 0.5)?;
    let start = std::time::Instant::now();
    let w = wasserstein2_exact(&x, &y)?;
    let elapsed = start.elapsed();
    eprintln!("exact W2, n = {n}: {w:.4} in {elapsed:?}");
    // Populations are √0.5 ≈ 0.707 apart; the empirical W2 is a bit above.
    assert!(w > 0.6 && w < 1.0, "{w}");
    // It is no worse than the identity or a random coupling.
    let (xv, yv) = (x.to_vec2::<f64>()?, y.to_vec2::<f64>()?);
    let coupling_cost = |p: &[usize]| -> f64 {
        let s: f64 = (0..n).map(|i| (0..d).map(|k| (xv[i][k] - yv[p[i]][k]).powi(2)).sum::<f64>()).sum();
        (s / n as f64).sqrt()
    };
    assert!(w <= coupling_cost(&(0..n).collect::<Vec<_>>()));
    assert!(w <= coupling_cost(&rng.permutation(n)));
    // Same as solving the assignment directly.
    let cost: Vec<f64> = (0..n)
        .flat_map(|i| {
            let (xv, yv) = (&xv, &yv);
            (0..n).map(move |j| (0..d).map(|k| (xv[i][k] - yv[j][k]).powi(2)).sum::<f64>())
        })
        .collect();
    let a = linear_sum_assignment(&cost, n, n)?;
    assert!(close((a.cost / n as f64).sqrt(), w, 1e-12));
    Ok(())
}

//! Likelihood, divergence and bits/dim against exact oracles
//! (docs/reference/gaussian-oracle.md, docs/reference/likelihood.md).

mod common;

use candle::{DType, Device, Tensor};
use common::{mlp, GaussField, MU, SIGMA};
use fm_core::dequantization::{bits_per_dim, dequantize, Preprocessing};
use fm_core::divergence::{exact_divergence, hutchinson_divergence, Divergence, Probe};
use fm_core::gaussian::GaussianOracle;
use fm_core::likelihood::{
    cnf_nll_loss, log_likelihood, log_likelihood_with_divergence, sample_with_log_likelihood,
};
use fm_core::scheduler::SchedulerKind;
use fm_core::{time_like, to_f64_vec, Error, Result, SeededRng, VelocityField};
use fm_solvers::{Dopri5, Rk4, TimeGrid};

fn oracle() -> Result<GaussianOracle> {
    GaussianOracle::new(MU.to_vec(), SIGMA.to_vec(), SchedulerKind::CondOt)
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Half the log-determinant of Σ (= ½ log 2 for the reference Σ).
fn half_log_det() -> f64 {
    0.5 * (SIGMA[0] * SIGMA[3] - SIGMA[1] * SIGMA[2]).ln()
}

fn closed_form_div<'a>(o: &'a GaussianOracle) -> impl Fn(&Tensor, &Tensor) -> Result<Tensor> + 'a {
    move |x: &Tensor, t: &Tensor| {
        let ts = to_f64_vec(t)?;
        let v: Vec<f64> = ts.iter().map(|&t| o.divergence(t)).collect();
        Ok(Tensor::from_vec(v, ts.len(), x.device())?.to_dtype(x.dtype())?)
    }
}

#[test]
fn oracle_backward_likelihood_rk4_100_steps() -> Result<()> {
    let o = oracle()?;
    let x1 = o.sample_data(16, &mut SeededRng::new(1), DType::F64, &Device::Cpu)?;
    let want = o.log_density_rows(&to_f64_vec(&x1)?, 1.0)?;
    let grid = TimeGrid::uniform(1.0, 0.0, 100)?;

    // Exact velocity (the oracle) and closed-form divergence.
    let res = log_likelihood_with_divergence(&o, closed_form_div(&o), &x1, &Rk4, &grid)?;
    let err = max_abs_diff(&res.log_p_vec()?, &want);
    println!("oracle + closed-form div, rk4-100: max |Δ log p| = {err:e}");
    assert!(err < 1e-6, "{err}");
    assert_eq!(res.nfe, 400);
    let integral = to_f64_vec(&res.divergence_integral)?;
    let ierr = integral.iter().map(|v| (v - half_log_det()).abs()).fold(0.0, f64::max);
    println!("∫ div u* = {} (½ log det Σ = {}), err {ierr:e}", integral[0], half_log_det());
    assert!(ierr < 1e-6 && (half_log_det() - 0.346_573_6).abs() < 1e-6);

    // The same exact velocity written with candle ops, divergence by autograd.
    let res = log_likelihood(&GaussField, &x1, Divergence::Exact, &Rk4, &grid, &mut SeededRng::new(0))?;
    let err = max_abs_diff(&res.log_p_vec()?, &want);
    println!("autograd field + exact div, rk4-100: max |Δ log p| = {err:e}");
    assert!(err < 1e-6, "{err}");
    // x(0) is the Brenier preimage: μ + Σ^{1/2} x₀ = x₁.
    let back = o.flow_map_rows(&to_f64_vec(&res.x0)?, 0.0, 1.0)?;
    assert!(max_abs_diff(&back, &to_f64_vec(&x1)?) < 1e-6);
    Ok(())
}

#[test]
fn oracle_backward_likelihood_dopri5() -> Result<()> {
    let o = oracle()?;
    let x1 = o.sample_data(16, &mut SeededRng::new(2), DType::F64, &Device::Cpu)?;
    let want = o.log_density_rows(&to_f64_vec(&x1)?, 1.0)?;
    let solver = Dopri5::new(1e-8, 1e-8)?;
    let grid = TimeGrid::uniform(1.0, 0.0, 1)?;
    let res = log_likelihood_with_divergence(&o, closed_form_div(&o), &x1, &solver, &grid)?;
    let err = max_abs_diff(&res.log_p_vec()?, &want);
    println!("oracle + closed-form div, dopri5 1e-8: max |Δ log p| = {err:e}, nfe {}", res.nfe);
    assert!(err < 2e-6, "{err}");
    let res = log_likelihood(&GaussField, &x1, Divergence::Exact, &solver, &grid, &mut SeededRng::new(0))?;
    let err = max_abs_diff(&res.log_p_vec()?, &want);
    println!("autograd field + exact div, dopri5 1e-8: max |Δ log p| = {err:e}, nfe {}", res.nfe);
    assert!(err < 2e-6, "{err}");
    Ok(())
}

#[test]
fn autograd_divergence_of_exact_field_is_the_closed_form() -> Result<()> {
    let o = oracle()?;
    let x = SeededRng::new(3).normal((5, 2), DType::F64, &Device::Cpu)?;
    for t in [0.0, 0.3, 0.77, 1.0] {
        let div = to_f64_vec(&exact_divergence(&GaussField, &x, &time_like(&x, t)?)?)?;
        for v in div {
            assert!((v - o.divergence(t)).abs() < 1e-10, "t = {t}: {v} vs {}", o.divergence(t));
        }
    }
    Ok(())
}

#[test]
fn forward_and_backward_likelihoods_agree() -> Result<()> {
    let (field, _vm) = mlp(2, 16, 1.5, 7)?;
    let x0 = SeededRng::new(4).normal((8, 2), DType::F64, &Device::Cpu)?;
    let mut rng = SeededRng::new(0);
    let fwd = sample_with_log_likelihood(
        &field,
        &x0,
        Divergence::Exact,
        &Rk4,
        &TimeGrid::uniform(0.0, 1.0, 100)?,
        &mut rng,
    )?;
    let bwd = log_likelihood(
        &field,
        &fwd.x1,
        Divergence::Exact,
        &Rk4,
        &TimeGrid::uniform(1.0, 0.0, 100)?,
        &mut rng,
    )?;
    let err = max_abs_diff(&fwd.log_p_vec()?, &bwd.log_p_vec()?);
    let xerr = max_abs_diff(&to_f64_vec(&bwd.x0)?, &to_f64_vec(&x0)?);
    let spread = max_abs_diff(&fwd.log_p_vec()?, &[fwd.log_p_vec()?[0]; 8]);
    println!("MLP forward vs backward: max |Δ log p| = {err:e}, max |Δ x0| = {xerr:e}, spread {spread}");
    assert!(err < 1e-6 && xerr < 1e-6, "{err} {xerr}");
    // Non-trivial: the divergence integral is not negligible.
    assert!(to_f64_vec(&fwd.divergence_integral)?.iter().any(|v| v.abs() > 0.05));

    // With the exact Gaussian field the forward log p is the true density.
    let o = oracle()?;
    let fwd = sample_with_log_likelihood(
        &GaussField,
        &x0,
        Divergence::Exact,
        &Rk4,
        &TimeGrid::uniform(0.0, 1.0, 100)?,
        &mut rng,
    )?;
    let want = o.log_density_rows(&to_f64_vec(&fwd.x1)?, 1.0)?;
    let err = max_abs_diff(&fwd.log_p_vec()?, &want);
    println!("Gaussian forward log p vs oracle: {err:e}");
    assert!(err < 1e-6, "{err}");
    Ok(())
}

/// ∂uᵢ/∂xᵢ by central differences in f64.
fn fd_trace(field: &dyn VelocityField, x: &[f64], d: usize, t: f64) -> Result<Vec<f64>> {
    let b = x.len() / d;
    let h = 1e-5;
    let mut tr = vec![0.0; b];
    let tt = Tensor::full(t, b, &Device::Cpu)?;
    for i in 0..d {
        let (mut p, mut m) = (x.to_vec(), x.to_vec());
        for r in 0..b {
            p[r * d + i] += h;
            m[r * d + i] -= h;
        }
        let up = to_f64_vec(&field.velocity(&Tensor::from_vec(p, (b, d), &Device::Cpu)?, &tt)?)?;
        let um = to_f64_vec(&field.velocity(&Tensor::from_vec(m, (b, d), &Device::Cpu)?, &tt)?)?;
        for r in 0..b {
            tr[r] += (up[r * d + i] - um[r * d + i]) / (2.0 * h);
        }
    }
    Ok(tr)
}

#[test]
fn exact_divergence_is_the_jacobian_trace() -> Result<()> {
    let d = 3;
    let (field, _vm) = mlp(d, 32, 1.5, 11)?;
    let x = SeededRng::new(5).normal((6, d), DType::F64, &Device::Cpu)?;
    let t = 0.4;
    let div = to_f64_vec(&exact_divergence(&field, &x, &time_like(&x, t)?)?)?;
    let fd = fd_trace(&field, &to_f64_vec(&x)?, d, t)?;
    let err = max_abs_diff(&div, &fd);
    println!("exact divergence vs FD trace: {err:e} (values {div:?})");
    assert!(err < 1e-7, "{err}");
    assert!(div.iter().any(|v| v.abs() > 0.1), "a trivial divergence proves nothing: {div:?}");
    Ok(())
}

#[test]
fn hutchinson_is_unbiased_with_the_predicted_variance() -> Result<()> {
    let d = 3;
    let (field, _vm) = mlp(d, 32, 1.5, 13)?;
    let point = [0.3, -0.8, 1.1];
    let t = 0.6;
    let x1 = Tensor::new(&point, &Device::Cpu)?.unsqueeze(0)?;
    let exact = to_f64_vec(&exact_divergence(&field, &x1, &time_like(&x1, t)?)?)?[0];
    // The Jacobian by central differences, for the predicted variances.
    let h = 1e-5;
    let mut jac = vec![0.0; d * d]; // jac[i*d + j] = ∂uᵢ/∂xⱼ
    for j in 0..d {
        let (mut p, mut m) = (point, point);
        p[j] += h;
        m[j] -= h;
        let tt = time_like(&x1, t)?;
        let up = to_f64_vec(&field.velocity(&Tensor::new(&p, &Device::Cpu)?.unsqueeze(0)?, &tt)?)?;
        let um = to_f64_vec(&field.velocity(&Tensor::new(&m, &Device::Cpu)?.unsqueeze(0)?, &tt)?)?;
        for i in 0..d {
            jac[i * d + j] = (up[i] - um[i]) / (2.0 * h);
        }
    }
    let mut fro = 0.0;
    let mut diag = 0.0;
    for i in 0..d {
        for j in 0..d {
            let s = 0.5 * (jac[i * d + j] + jac[j * d + i]);
            fro += s * s;
        }
        diag += jac[i * d + i] * jac[i * d + i];
    }
    let n = 10_000;
    let x = x1.repeat((n, 1))?;
    let tt = time_like(&x, t)?;
    for (probe, var_pred) in [(Probe::Rademacher, 2.0 * (fro - diag)), (Probe::Gaussian, 2.0 * fro)] {
        let eps = probe.draw(&mut SeededRng::new(17), (n, d), DType::F64, &Device::Cpu)?;
        let est = to_f64_vec(&hutchinson_divergence(&field, &x, &tt, &eps)?)?;
        let mean = est.iter().sum::<f64>() / n as f64;
        let var = est.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let se = (var / n as f64).sqrt();
        println!(
            "{}: mean {mean:.5} vs exact {exact:.5} ({:.2} s.e.), var {var:.4} vs predicted {var_pred:.4}",
            probe.name(),
            (mean - exact) / se
        );
        assert!((mean - exact).abs() < 3.0 * se, "{} {mean} {exact} {se}", probe.name());
        assert!((var / var_pred - 1.0).abs() < 0.1, "{} variance {var} vs {var_pred}", probe.name());
    }
    Ok(())
}

#[test]
fn hutchinson_likelihood_is_unbiased_and_reproducible() -> Result<()> {
    let o = oracle()?;
    let point = [0.5, -0.2];
    let want = o.log_density_rows(&point, 1.0)?[0];
    let n = 2000;
    let x1 = Tensor::new(&point, &Device::Cpu)?.unsqueeze(0)?.repeat((n, 1))?;
    let grid = TimeGrid::uniform(1.0, 0.0, 20)?;
    for probe in [Probe::Rademacher, Probe::Gaussian] {
        let div = Divergence::hutchinson(probe, 2);
        let res = log_likelihood(&GaussField, &x1, div, &Rk4, &grid, &mut SeededRng::new(5))?;
        let lp = res.log_p_vec()?;
        let mean = lp.iter().sum::<f64>() / n as f64;
        let se = (lp.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / ((n - 1) * n) as f64).sqrt();
        println!("hutchinson {} x2 likelihood: mean {mean:.5} vs {want:.5}, se {se:.2e}", probe.name());
        assert!((mean - want).abs() < 3.0 * se + 1e-4 && se > 0.0);
        assert_eq!(res.nfe, 80);
        // The same seed gives the same probes and the same result.
        let again = log_likelihood(&GaussField, &x1, div, &Rk4, &grid, &mut SeededRng::new(5))?;
        assert_eq!(again.log_p_vec()?, lp);
    }
    // With probes reused across steps the adaptive solver runs as usual.
    let x1 = x1.narrow(0, 0, 4)?;
    let res = log_likelihood(
        &GaussField,
        &x1,
        Divergence::hutchinson(Probe::Rademacher, 1),
        &Dopri5::new(1e-6, 1e-6)?,
        &grid,
        &mut SeededRng::new(5),
    )?;
    assert!(res.log_p_vec()?.iter().all(|v| v.is_finite()));
    Ok(())
}

#[test]
fn rejects_bad_data_and_reports_solver_failures() -> Result<()> {
    let grid = TimeGrid::uniform(1.0, 0.0, 4)?;
    let mut rng = SeededRng::new(0);
    let exact = Divergence::Exact;
    for bad in [f64::NAN, f64::INFINITY] {
        let x = Tensor::new(&[[0.0f64, 1.0], [bad, 2.0]], &Device::Cpu)?;
        let err = log_likelihood(&GaussField, &x, exact, &Rk4, &grid, &mut rng).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { name: "x1", .. }), "{err}");
        assert!(err.to_string().contains("row 1 column 0"), "{err}");
        let err = sample_with_log_likelihood(
            &GaussField,
            &x,
            exact,
            &Rk4,
            &TimeGrid::uniform(0.0, 1.0, 2)?,
            &mut rng,
        )
        .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { name: "x0", .. }), "{err}");
    }
    // Wrong ranks, empty batch, dimension mismatch with the field.
    for x in [
        Tensor::zeros(3, DType::F64, &Device::Cpu)?,
        Tensor::zeros((2, 2, 2), DType::F64, &Device::Cpu)?,
        Tensor::zeros((0, 2), DType::F64, &Device::Cpu)?,
    ] {
        let err = log_likelihood(&GaussField, &x, exact, &Rk4, &grid, &mut rng).unwrap_err();
        assert!(matches!(err, Error::Shape(_)), "{err}");
    }
    let x3 = Tensor::zeros((2, 3), DType::F64, &Device::Cpu)?;
    let err = log_likelihood(&oracle()?, &x3, exact, &Rk4, &grid, &mut rng).unwrap_err();
    assert!(matches!(err.root(), Error::Shape(_)), "{err}");
    // Integer data.
    let xi = Tensor::zeros((2, 2), DType::U32, &Device::Cpu)?;
    assert!(matches!(
        log_likelihood(&GaussField, &xi, exact, &Rk4, &grid, &mut rng),
        Err(Error::InvalidArgument { name: "x1", .. })
    ));
    // Grids in the wrong direction, zero probes.
    let x = Tensor::zeros((2, 2), DType::F64, &Device::Cpu)?;
    let fwd = TimeGrid::uniform(0.0, 1.0, 4)?;
    assert!(matches!(
        log_likelihood(&GaussField, &x, exact, &Rk4, &fwd, &mut rng),
        Err(Error::InvalidArgument { name: "grid", .. })
    ));
    assert!(matches!(
        sample_with_log_likelihood(&GaussField, &x, exact, &Rk4, &grid, &mut rng),
        Err(Error::InvalidArgument { name: "grid", .. })
    ));
    assert!(matches!(
        log_likelihood(&GaussField, &x, Divergence::hutchinson(Probe::Gaussian, 0), &Rk4, &grid, &mut rng),
        Err(Error::InvalidArgument { name: "num_probes", .. })
    ));
    // A field that autograd cannot see (plain numbers) is an error, not a zero divergence.
    let err = log_likelihood(&oracle()?, &x, exact, &Rk4, &grid, &mut rng).unwrap_err();
    assert!(matches!(err.root(), Error::InvalidArgument { name: "field", .. }), "{err}");
    // A solver that fails: Dopri5 with a budget of 2 steps.
    let tight = Dopri5::new(1e-10, 1e-10)?.with_max_steps(2);
    let err = log_likelihood(&GaussField, &x, exact, &tight, &grid, &mut rng).unwrap_err();
    println!("solver failure: {err}");
    assert!(matches!(err, Error::Context { .. }), "{err}");
    assert!(matches!(err.root(), Error::Solver(fm_solvers::Error::MaxStepsExceeded { .. })), "{err}");
    assert!(err.to_string().contains("backward likelihood solve"), "{err}");
    // A field returning the wrong shape.
    struct Bad;
    impl VelocityField for Bad {
        fn velocity(&self, x: &Tensor, _t: &Tensor) -> Result<Tensor> {
            Ok(x.narrow(1, 0, 1)?.affine(2.0, 0.0)?)
        }
    }
    let err = log_likelihood(&Bad, &x, exact, &Rk4, &grid, &mut rng).unwrap_err();
    assert!(matches!(err.root(), Error::Shape(_)), "{err}");
    Ok(())
}

#[test]
fn cnf_loss_refuses_to_run_without_second_order_gradients() -> Result<()> {
    // This test binary never enables them (see cnf_training_tests.rs); a
    // caller's environment that did would make the loss run instead.
    let (field, _vm) = mlp(2, 8, 1.0, 1)?;
    let x = Tensor::zeros((2, 2), DType::F64, &Device::Cpu)?;
    if std::env::var_os(fm_core::likelihood::SECOND_ORDER_ENV).is_some() {
        let loss = cnf_nll_loss(&field, &x, 2, Divergence::Exact, &mut SeededRng::new(0))?;
        assert!(loss.to_scalar::<f64>()?.is_finite());
        return Ok(());
    }
    let err = cnf_nll_loss(&field, &x, 2, Divergence::Exact, &mut SeededRng::new(0)).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { name: "CANDLE_GRAD_DO_NOT_DETACH", .. }), "{err}");
    Ok(())
}

#[test]
fn bits_per_dim_hand_computations() -> Result<()> {
    // Uniform density on [−1, 1]^D after z = 2y − 1: exactly 8 bits/dim.
    for d in [1usize, 2, 784, 3072] {
        let affine = Preprocessing::Affine { scale: 2.0, shift: -1.0 };
        let log_p_z = -(d as f64) * 2f64.ln();
        let bpd = bits_per_dim(log_p_z + affine.affine_log_abs_det(d)?, d)?;
        assert!((bpd - 8.0).abs() < 1e-12, "{bpd}");
        // bpd = −log p_z/(D log 2) + 7 for models on [−1, 1].
        let lpz = -1.234 * d as f64;
        let bpd = bits_per_dim(lpz + affine.affine_log_abs_det(d)?, d)?;
        assert!((bpd - (-lpz / (d as f64 * 2f64.ln()) + 7.0)).abs() < 1e-12);
    }
    // The uniform density on [0, 1)^D itself: log p_y = 0, 8 bits.
    assert_eq!(bits_per_dim(0.0, 5)?, 8.0);
    assert!(bits_per_dim(0.0, 0).is_err());

    // Logit: y = 0.5 in D = 1, γ = 0.05: s = 0.5, log|det| = log 0.9 − 2 log 0.5.
    let logit = Preprocessing::Logit { gamma: 0.05 };
    let y = Tensor::new(&[[0.5f64], [0.1]], &Device::Cpu)?;
    let ld = to_f64_vec(&logit.log_abs_det(&y)?)?;
    assert!((ld[0] - (0.9f64.ln() - 2.0 * 0.5f64.ln())).abs() < 1e-12);
    // Against the derivative of z = logit(s(y)) by central differences.
    let h = 1e-6;
    let z =
        |v: f64| -> Result<f64> { Ok(to_f64_vec(&logit.apply(&Tensor::new(&[[v]], &Device::Cpu)?)?)?[0]) };
    let dz = (z(0.1 + h)? - z(0.1 - h)?) / (2.0 * h);
    assert!((ld[1] - dz.ln()).abs() < 1e-7, "{} vs {}", ld[1], dz.ln());
    assert!(Preprocessing::Logit { gamma: 0.5 }.log_abs_det(&y).is_err());
    assert!(Preprocessing::Affine { scale: 0.0, shift: 0.0 }.affine_log_abs_det(2).is_err());

    // Dequantization lands each value in its own bin of [0, 1).
    let x = Tensor::new(&[[0.0f64, 255.0, 17.0]], &Device::Cpu)?;
    let y = to_f64_vec(&dequantize(&x, &mut SeededRng::new(0))?)?;
    for (yv, xv) in y.iter().zip([0.0, 255.0, 17.0]) {
        assert!(*yv >= xv / 256.0 && *yv < (xv + 1.0) / 256.0, "{yv} {xv}");
    }
    assert!(dequantize(&Tensor::new(&[256.0f64], &Device::Cpu)?, &mut SeededRng::new(0)).is_err());
    assert!(dequantize(&Tensor::new(&[1.5f64], &Device::Cpu)?, &mut SeededRng::new(0)).is_err());
    Ok(())
}

/// The probes are drawn once per solve: for the exact Gaussian field,
/// `J = A(t)` does not depend on `x`, so with one probe `ε` per row the
/// integrated estimate is exactly `εᵀ (∫₀¹ A dt) ε = ½ εᵀ log(Σ) ε`.
/// Fresh probes at every step would not give this.
#[test]
fn hutchinson_probes_are_reused_at_every_step() -> Result<()> {
    // log Σ by the spectral projectors of the 2×2 matrix.
    let (a, b, c) = (SIGMA[0], SIGMA[1], SIGMA[3]);
    let (m, r) = ((a + c) / 2.0, (((a - c) / 2.0).powi(2) + b * b).sqrt());
    let (l1, l2) = (m + r, m - r);
    let p1 = [(a - l2) / (l1 - l2), b / (l1 - l2), b / (l1 - l2), (c - l2) / (l1 - l2)];
    let log_sigma: Vec<f64> =
        (0..4).map(|k| l1.ln() * p1[k] + l2.ln() * ([1.0, 0.0, 0.0, 1.0][k] - p1[k])).collect();
    let n = 6;
    let x1 = SeededRng::new(8).normal((n, 2), DType::F64, &Device::Cpu)?;
    let grid = TimeGrid::uniform(1.0, 0.0, 100)?;
    for probe in [Probe::Rademacher, Probe::Gaussian] {
        let div = Divergence::hutchinson(probe, 1);
        let res = log_likelihood(&GaussField, &x1, div, &Rk4, &grid, &mut SeededRng::new(31))?;
        let est = div.estimator(n, 2, DType::F64, &Device::Cpu, &mut SeededRng::new(31))?;
        let eps = to_f64_vec(&est.probes()[0])?;
        let got = to_f64_vec(&res.divergence_integral)?;
        for r in 0..n {
            let e = [eps[2 * r], eps[2 * r + 1]];
            let q = e[0] * (log_sigma[0] * e[0] + log_sigma[1] * e[1])
                + e[1] * (log_sigma[2] * e[0] + log_sigma[3] * e[1]);
            assert!((got[r] - 0.5 * q).abs() < 1e-6, "{} row {r}: {} vs {}", probe.name(), got[r], 0.5 * q);
        }
    }
    Ok(())
}

#[test]
fn f32_data_gives_f32_likelihoods() -> Result<()> {
    let o = oracle()?;
    let x1 = o.sample_data(4, &mut SeededRng::new(1), DType::F32, &Device::Cpu)?;
    let want = o.log_density_rows(&to_f64_vec(&x1)?, 1.0)?;
    let grid = TimeGrid::uniform(1.0, 0.0, 50)?;
    let res = log_likelihood(&GaussField, &x1, Divergence::Exact, &Rk4, &grid, &mut SeededRng::new(0))?;
    assert_eq!(res.log_p.dtype(), DType::F32);
    assert_eq!(res.x0.dtype(), DType::F32);
    let err = max_abs_diff(&res.log_p_vec()?, &want);
    assert!(err < 1e-4, "{err}");
    Ok(())
}

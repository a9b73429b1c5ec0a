//! The Gaussian oracle against the reference table derived in
//! docs/reference/gaussian-oracle.md: exact W2 of each fixed-step solver's
//! output with u* as the field.

use candle::{DType, Device};
use fm_core::gaussian::GaussianOracle;
use fm_core::scheduler::SchedulerKind;
use fm_core::{AsOde, SeededRng};
use fm_solvers::{Dopri5, Euler, Heun, Heun3, Midpoint, OdeSolver, Rk4, Rk4ThreeEighths, TimeGrid};

fn reference() -> anyhow::Result<GaussianOracle> {
    Ok(GaussianOracle::new(
        vec![1.0, -1.0],
        vec![3.694337, 0.988124, 0.988124, 0.805663],
        SchedulerKind::CondOt,
    )?)
}

const STEPS: [usize; 7] = [1, 2, 4, 8, 16, 32, 100];

fn check_row(solver: &dyn OdeSolver, table: [f64; 7], evals_per_step: usize) -> anyhow::Result<()> {
    let oracle = reference()?;
    for (n, want) in STEPS.into_iter().zip(table) {
        let (w2, nfe) = oracle.sampling_w2(solver, &TimeGrid::uniform(0.0, 1.0, n)?)?;
        let rel = (w2 - want).abs() / want;
        assert!(
            rel < 0.01,
            "{} N={n}: W2 {w2:.4e}, table {want:.4e} ({:.2}% off)",
            solver.name(),
            100.0 * rel
        );
        assert_eq!(nfe, n * evals_per_step, "{} N={n}", solver.name());
    }
    Ok(())
}

#[test]
fn euler_matches_table() -> anyhow::Result<()> {
    check_row(&Euler, [2.121, 1.257, 0.6699, 0.3579, 0.1861, 0.09503, 0.03087], 1)
}

#[test]
fn midpoint_matches_table() -> anyhow::Result<()> {
    check_row(&Midpoint, [0.4020, 2.464e-2, 7.039e-3, 9.202e-4, 1.167e-4, 1.464e-5, 4.801e-7], 2)
}

#[test]
fn heun_matches_table() -> anyhow::Result<()> {
    check_row(&Heun, [1.514, 0.4717, 9.028e-2, 1.917e-2, 4.264e-3, 9.961e-4, 9.704e-5], 2)
}

#[test]
fn rk4_matches_table() -> anyhow::Result<()> {
    check_row(&Rk4, [9.806e-2, 9.165e-3, 8.239e-4, 2.547e-5, 1.163e-6, 5.982e-8, 5.390e-10], 4)
}

#[test]
fn rk4_three_eighths_matches_table() -> anyhow::Result<()> {
    check_row(&Rk4ThreeEighths, [0.1324, 2.245e-2, 3.526e-4, 2.071e-5, 9.316e-7, 4.548e-8, 3.819e-10], 4)
}

#[test]
fn heun3_matches_table() -> anyhow::Result<()> {
    check_row(&Heun3, [4.534e-2, 3.247e-2, 2.586e-3, 3.366e-4, 4.236e-5, 5.304e-6, 1.739e-7], 3)
}

#[test]
fn one_euler_step_lands_on_the_mean() -> anyhow::Result<()> {
    let oracle = reference()?;
    let (w2, _) = oracle.sampling_w2(&Euler, &TimeGrid::uniform(0.0, 1.0, 1)?)?;
    // Every x0 maps to μ: W2 = sqrt(tr Σ).
    assert!((w2 - (3.694337f64 + 0.805663).sqrt()).abs() < 1e-9);
    Ok(())
}

#[test]
fn dopri5_meets_its_tolerance() -> anyhow::Result<()> {
    let oracle = reference()?;
    let (w2, nfe) = oracle.sampling_w2(&Dopri5::new(1e-5, 1e-5)?, &TimeGrid::uniform(0.0, 1.0, 1)?)?;
    assert!(w2 < 1e-4, "dopri5 W2 {w2:e}");
    let (w2_tight, nfe_tight) =
        oracle.sampling_w2(&Dopri5::new(1e-8, 1e-8)?, &TimeGrid::uniform(0.0, 1.0, 1)?)?;
    assert!(
        w2_tight < w2 && nfe_tight > nfe,
        "tighter tolerance: W2 {w2_tight:e} NFE {nfe_tight} vs {w2:e} {nfe}"
    );
    Ok(())
}

/// RK4 at 100 steps with u* pushes samples of N(0, I) onto N(μ, Σ): check the
/// moments of 40,000 pushed samples against μ and Σ within Monte-Carlo error.
#[test]
fn rk4_pushes_noise_onto_the_data_distribution() -> anyhow::Result<()> {
    let oracle = reference()?;
    let n = 40_000;
    let x0 = SeededRng::new(0).normal((n, 2), DType::F64, &Device::Cpu)?;
    let sol = Rk4.solve(&AsOde(&oracle), &x0, &TimeGrid::uniform(0.0, 1.0, 100)?)?;
    let x = sol.state.to_vec2::<f64>()?;
    let mean =
        [x.iter().map(|r| r[0]).sum::<f64>() / n as f64, x.iter().map(|r| r[1]).sum::<f64>() / n as f64];
    let cov = |i: usize, j: usize| {
        x.iter().map(|r| (r[i] - mean[i]) * (r[j] - mean[j])).sum::<f64>() / (n - 1) as f64
    };
    let sigma = oracle.covariance();
    for i in 0..2 {
        let se = (sigma[i * 2 + i] / n as f64).sqrt();
        assert!(
            (mean[i] - oracle.mean()[i]).abs() < 4.0 * se,
            "mean {i}: {} vs {}",
            mean[i],
            oracle.mean()[i]
        );
        for j in 0..2 {
            let se = ((sigma[i * 2 + i] * sigma[j * 2 + j] + sigma[i * 2 + j].powi(2)) / n as f64).sqrt();
            assert!(
                (cov(i, j) - sigma[i * 2 + j]).abs() < 4.0 * se,
                "cov ({i},{j}): {} vs {}",
                cov(i, j),
                sigma[i * 2 + j]
            );
        }
    }
    // The same map is exactly the Brenier map μ + Σ^{1/2} x0 (W2 table: 5.39e-10).
    let exact = oracle.flow_map_rows(&x0.flatten_all()?.to_vec1::<f64>()?, 0.0, 1.0)?;
    let max_err = x.iter().flatten().zip(&exact).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(max_err < 1e-8, "RK4-100 vs exact flow map: {max_err:e}");
    Ok(())
}

/// Every scheduler's exact field transports N(0, I) (approximately, for VP) to the data.
#[test]
fn other_schedulers_transport_to_the_data() -> anyhow::Result<()> {
    // (Linear-VP is left out: its σ̇ is singular at t = 1, where RK4 evaluates the field.)
    for s in
        [SchedulerKind::Cosine, SchedulerKind::Polynomial { n: 2.0 }, SchedulerKind::Polynomial { n: 3.0 }]
    {
        let oracle = GaussianOracle::new(vec![0.5, 2.0], vec![2.0, 0.4, 0.4, 0.7], s)?;
        let (w2, _) = oracle.sampling_w2(&Rk4, &TimeGrid::uniform(0.0, 1.0, 200)?)?;
        assert!(w2 < 1e-5, "{s}: W2 {w2:e}");
    }
    Ok(())
}

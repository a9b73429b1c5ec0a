//! The score view, the marginal-preserving samplers and the exact Gaussian
//! error of the whole pipeline: checked against finite differences, the ODE
//! oracle and Monte Carlo.

use candle::{DType, Device, Tensor};
use fm_core::gaussian::GaussianOracle;
use fm_core::gaussian_pipeline::{LinearScoreModel, PipelineSampler};
use fm_core::path::{AffinePath, Prediction};
use fm_core::scheduler::{Scheduler, SchedulerKind};
use fm_core::score::{output_to_score, score_to_velocity, velocity_to_denoiser, velocity_to_source_mean};
use fm_core::stochastic::{Diffusion, Langevin, StochasticSampler};
use fm_core::{to_f64_vec, Result, SeededRng};
use fm_solvers::{Euler, Heun, SdeMethod, TimeGrid};

fn oracle(scheduler: SchedulerKind) -> Result<GaussianOracle> {
    // A 3-d Gaussian with a non-diagonal covariance (eigenvalues 0.05 … 3).
    let c = [1.2, 0.6, -0.3, 0.6, 1.5, 0.4, -0.3, 0.4, 0.45];
    GaussianOracle::new(vec![0.5, -1.0, 0.25], c.to_vec(), scheduler)
}

fn sde(diffusion: Diffusion, method: SdeMethod, steps: usize, noise_floor: f64) -> StochasticSampler {
    StochasticSampler { diffusion, method, steps, noise_floor, corrector: None }
}

#[test]
fn every_prediction_gives_the_score_of_the_gaussian_marginal() -> Result<()> {
    for scheduler in [SchedulerKind::CondOt, SchedulerKind::Cosine, "vp".parse()?] {
        let o = oracle(scheduler)?;
        let path = AffinePath::new(scheduler);
        let x = Tensor::new(&[[0.3f64, -0.2, 0.9], [-1.0, 0.5, 0.1]], &Device::Cpu)?;
        let t = Tensor::new(&[0.35f64, 0.8], &Device::Cpu)?;
        let ts = to_f64_vec(&t)?;
        let xs = to_f64_vec(&x)?;
        let u = Tensor::from_vec(o.velocity_rows(&xs, &ts)?, (2, 3), &Device::Cpu)?;
        let eps = path.to_velocity(Prediction::Velocity, &u, &x, &t)?; // identity
        let eps = path.velocity_to_epsilon(&eps, &x, &t)?;
        let x1 = path.velocity_to_target(&u, &x, &t)?;
        // The score by central differences of log p_t.
        let h = 1e-5;
        let mut fd = vec![0.0; 6];
        for r in 0..2 {
            for i in 0..3 {
                let (mut p, mut m) = (xs[r * 3..r * 3 + 3].to_vec(), xs[r * 3..r * 3 + 3].to_vec());
                p[i] += h;
                m[i] -= h;
                fd[r * 3 + i] =
                    (o.log_density_rows(&p, ts[r])?[0] - o.log_density_rows(&m, ts[r])?[0]) / (2.0 * h);
            }
        }
        for (kind, out) in
            [(Prediction::Velocity, &u), (Prediction::Epsilon, &eps), (Prediction::Target, &x1)]
        {
            let s = to_f64_vec(&output_to_score(&scheduler, kind, out, &x, &t)?)?;
            for (a, b) in s.iter().zip(&fd) {
                assert!((a - b).abs() < 1e-6, "{scheduler:?} {kind}: score {a} vs finite differences {b}");
            }
            let exact = o.score_rows(&xs, &ts)?;
            for (a, b) in s.iter().zip(&exact) {
                assert!((a - b).abs() < 1e-9, "{scheduler:?} {kind}: {a} vs {b}");
            }
        }
        // Back to the velocity, and the posterior means.
        let s = output_to_score(&scheduler, Prediction::Velocity, &u, &x, &t)?;
        let back = to_f64_vec(&score_to_velocity(&scheduler, &s, &x, &t)?)?;
        for (a, b) in back.iter().zip(to_f64_vec(&u)?) {
            assert!((a - b).abs() < 1e-9);
        }
        let den = to_f64_vec(&velocity_to_denoiser(&scheduler, &u, &x, &t)?)?;
        for (a, b) in den.iter().zip(o.denoiser_rows(&xs, &ts)?) {
            assert!((a - b).abs() < 1e-9);
        }
        let x0 = to_f64_vec(&velocity_to_source_mean(&scheduler, &u, &x, &t)?)?;
        for (a, b) in x0.iter().zip(to_f64_vec(&eps)?) {
            assert!((a - b).abs() < 1e-9);
        }
    }
    Ok(())
}

#[test]
fn no_diffusion_reproduces_the_ode_oracle() -> Result<()> {
    let o = oracle(SchedulerKind::CondOt)?;
    for steps in [4, 16, 64] {
        for (method, ode) in [
            (SdeMethod::EulerMaruyama, &Euler as &dyn fm_solvers::OdeSolver),
            (SdeMethod::StochasticHeun, &Heun),
        ] {
            let sampler = PipelineSampler::Sde(sde(Diffusion::None, method, steps, 0.0));
            let e = o.pipeline_error(&LinearScoreModel::default(), &sampler, &mut SeededRng::new(0))?;
            let (w2, nfe) = o.sampling_w2(ode, &TimeGrid::uniform(0.0, 1.0, steps)?)?;
            assert!((e.w2 - w2).abs() < 1e-12, "{method:?} {steps}: {} vs {w2}", e.w2);
            assert_eq!(e.nfe, nfe);
        }
    }
    Ok(())
}

/// Sample moments per eigen-direction of the oracle, against the predicted law.
fn assert_matches_law(o: &GaussianOracle, samples: &Tensor, means: &[f64], variances: &[f64]) -> Result<()> {
    let n = samples.dim(0)?;
    let x = to_f64_vec(samples)?;
    let eigen = fm_core::linalg::symmetric_eigen(&o.covariance(), 3)?;
    let y = eigen.to_eigenbasis(&x);
    for i in 0..3 {
        let col: Vec<f64> = y.iter().skip(i).step_by(3).copied().collect();
        let m = col.iter().sum::<f64>() / n as f64;
        let v = col.iter().map(|c| (c - m).powi(2)).sum::<f64>() / (n - 1) as f64;
        let se_m = (variances[i] / n as f64).sqrt();
        let se_v = variances[i] * (2.0 / (n - 1) as f64).sqrt();
        assert!((m - means[i]).abs() < 5.0 * se_m, "direction {i}: mean {m} vs {}", means[i]);
        assert!((v - variances[i]).abs() < 5.0 * se_v, "direction {i}: variance {v} vs {}", variances[i]);
    }
    Ok(())
}

#[test]
fn the_exact_law_matches_monte_carlo() -> Result<()> {
    // Coarse grids, so that the discretization bias is far above the sampling error.
    let cases = [
        (SchedulerKind::CondOt, sde(Diffusion::Sigma(1.5), SdeMethod::EulerMaruyama, 8, 0.05)),
        (SchedulerKind::CondOt, sde(Diffusion::Constant(0.7), SdeMethod::StochasticHeun, 6, 0.1)),
        (
            SchedulerKind::CondOt,
            StochasticSampler {
                corrector: Some(Langevin { steps: 2, step_ratio: 0.3 }),
                ..sde(Diffusion::None, SdeMethod::EulerMaruyama, 5, 0.05)
            },
        ),
        ("vp".parse()?, sde(Diffusion::Path, SdeMethod::EulerMaruyama, 20, 0.02)),
    ];
    for (scheduler, sampler) in cases {
        let o = oracle(scheduler)?;
        let e = o.pipeline_error(
            &LinearScoreModel::default(),
            &PipelineSampler::Sde(sampler),
            &mut SeededRng::new(0),
        )?;
        let mut rng = SeededRng::new(11);
        let x0 = rng.normal((100_000, 3), DType::F64, &Device::Cpu)?;
        let out = sampler.sample(&o, scheduler, &x0, &mut rng, false)?;
        assert_eq!(out.nfe, e.nfe);
        assert_matches_law(&o, &out.state, &e.means, &e.variances)?;
        assert!(e.w2 > 1e-2, "{sampler:?}: the test needs a visible bias, W2 = {}", e.w2);
    }
    // Langevin alone.
    let o = oracle(SchedulerKind::CondOt)?;
    let (steps, step, noise_floor) = (6, 0.2, 0.1);
    let e = o.pipeline_error(
        &LinearScoreModel::default(),
        &PipelineSampler::Langevin { steps, step, noise_floor },
        &mut SeededRng::new(0),
    )?;
    let mut rng = SeededRng::new(12);
    let x0 = rng.normal((100_000, 3), DType::F64, &Device::Cpu)?;
    let out =
        StochasticSampler::langevin_only(&o, SchedulerKind::CondOt, &x0, steps, step, noise_floor, &mut rng)?;
    assert_matches_law(&o, &out.state, &e.means, &e.variances)
}

#[test]
fn the_split_over_eigenvalues_sums_to_w2_and_each_error_behaves() -> Result<()> {
    let o = oracle(SchedulerKind::CondOt)?;
    let exact = LinearScoreModel::default();
    let w2 = |model: &LinearScoreModel, s: StochasticSampler| -> Result<f64> {
        let e = o.pipeline_error(model, &PipelineSampler::Sde(s), &mut SeededRng::new(3))?;
        if let Some(c) = &e.contributions {
            assert!((c.iter().sum::<f64>() - e.w2 * e.w2).abs() < 1e-12 * (1.0 + e.w2 * e.w2));
            assert!(c.iter().all(|v| *v >= 0.0));
        }
        Ok(e.w2)
    };
    // Discretization: Euler–Maruyama's W2 halves with the step (no noise floor: σ-diffusion allows δ = 0).
    let errs: Vec<f64> = [100, 200, 400]
        .iter()
        .map(|&n| w2(&exact, sde(Diffusion::Sigma(1.0), SdeMethod::EulerMaruyama, n, 0.0)))
        .collect::<Result<_>>()?;
    for p in errs.windows(2) {
        let order = (p[0] / p[1]).log2();
        assert!((order - 1.0).abs() < 0.1, "Euler–Maruyama W2 order {order} ({errs:?})");
    }
    // Optimisation: more gradient steps, smaller error, down to the fully trained model's.
    let s = sde(Diffusion::Sigma(1.0), SdeMethod::StochasticHeun, 200, 1e-3);
    let trained = |k| LinearScoreModel { samples: None, training: Some((k, 0.2)) };
    let by_k: Vec<f64> =
        [1u64, 10, 100, 100_000].iter().map(|&k| w2(&trained(k), s)).collect::<Result<_>>()?;
    assert!(by_k.windows(2).all(|p| p[1] < p[0]), "{by_k:?}");
    let full = w2(&exact, s)?;
    assert!((by_k[3] - full).abs() < 1e-3 * full.max(1e-3), "{by_k:?} vs {full}");
    // Generalization: the error of N samples falls like N^{-1/2} on average.
    let mean_w2 = |n| -> Result<f64> {
        let model = LinearScoreModel { samples: Some(n), training: None };
        let total: f64 = (0..20)
            .map(|seed| {
                o.pipeline_error(&model, &PipelineSampler::Sde(s), &mut SeededRng::new(seed)).map(|e| e.w2)
            })
            .sum::<Result<f64>>()?;
        Ok(total / 20.0)
    };
    let (w100, w1600) = (mean_w2(100)?, mean_w2(1600)?);
    assert!((w100 / w1600 - 4.0).abs() < 1.2, "N = 100: {w100}, N = 1600: {w1600}");
    // Noise floor: at δ = 0.1 its error dominates (below δ = 0.01 the
    // remaining discretization error does).
    let by_delta: Vec<f64> = [1e-3, 1e-2, 1e-1]
        .iter()
        .map(|&d| w2(&exact, sde(Diffusion::Sigma(1.0), SdeMethod::StochasticHeun, 2000, d)))
        .collect::<Result<_>>()?;
    assert!(by_delta[2] > 10.0 * by_delta[1].max(by_delta[0]), "{by_delta:?}");
    Ok(())
}

#[test]
fn sde_samples_keep_the_marginals_at_every_diffusion_level() -> Result<()> {
    // With the exact field and fine grids, every diffusion samples the data.
    let o = oracle(SchedulerKind::CondOt)?;
    for diffusion in [Diffusion::None, Diffusion::Sigma(2.0), Diffusion::Constant(1.0)] {
        let s = sde(diffusion, SdeMethod::StochasticHeun, 400, 1e-3);
        let e =
            o.pipeline_error(&LinearScoreModel::default(), &PipelineSampler::Sde(s), &mut SeededRng::new(0))?;
        assert!(e.w2 < 0.02, "{diffusion}: W2 {}", e.w2);
    }
    Ok(())
}

#[test]
fn bad_options_are_named_errors() -> Result<()> {
    let o = oracle(SchedulerKind::CondOt)?;
    let x0 = Tensor::zeros((4, 3), DType::F64, &Device::Cpu)?;
    let mut rng = SeededRng::new(0);
    let cases: [(StochasticSampler, &str); 5] = [
        (sde(Diffusion::Constant(1.0), SdeMethod::EulerMaruyama, 10, 0.0), "noise-floor"),
        (sde(Diffusion::Path, SdeMethod::EulerMaruyama, 10, 0.01), "diffusion"),
        (sde(Diffusion::Sigma(1.0), SdeMethod::EulerMaruyama, 0, 0.01), "steps"),
        (sde(Diffusion::Sigma(1.0), SdeMethod::EulerMaruyama, 10, 1.0), "noise-floor"),
        (sde(Diffusion::Sigma(f64::NAN), SdeMethod::EulerMaruyama, 10, 0.1), "diffusion"),
    ];
    for (s, name) in cases {
        let err = s.sample(&o, SchedulerKind::CondOt, &x0, &mut rng, false).unwrap_err().to_string();
        assert!(err.contains(name), "{s:?}: {err}");
    }
    for bad in ["loud", "sigma:x", "constant:-1", "sigma:inf"] {
        assert!(bad.parse::<Diffusion>().is_err(), "{bad}");
    }
    for good in ["none", "sigma:0.5", "constant:2", "path"] {
        let d: Diffusion = good.parse()?;
        assert_eq!(d.to_string().parse::<Diffusion>()?, d);
    }
    let err = o
        .pipeline_error(
            &LinearScoreModel { samples: None, training: Some((0, 0.1)) },
            &PipelineSampler::Sde(sde(Diffusion::None, SdeMethod::EulerMaruyama, 4, 0.0)),
            &mut rng,
        )
        .unwrap_err();
    assert!(err.to_string().contains("training"), "{err}");
    // The VP path's own diffusion is finite at t = 0.
    let vp: SchedulerKind = "vp".parse()?;
    assert!(Diffusion::Path.g(&vp.at(0.0)).is_finite());
    Ok(())
}

#[test]
fn an_unstable_scheme_has_an_infinite_error() -> Result<()> {
    // Gradient descent with η·h > 2 diverges: the model, and the law, overflow.
    let o = oracle(SchedulerKind::CondOt)?;
    let s = sde(Diffusion::Sigma(1.0), SdeMethod::EulerMaruyama, 20, 1e-2);
    let model = LinearScoreModel { samples: None, training: Some((5000, 10.0)) };
    let e = o.pipeline_error(&model, &PipelineSampler::Sde(s), &mut SeededRng::new(0))?;
    assert!(e.w2.is_infinite() && e.contributions.is_none(), "{e:?}");
    Ok(())
}

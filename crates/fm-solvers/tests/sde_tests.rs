//! SDE schemes: weak orders measured exactly on a linear SDE, moments by
//! Monte Carlo, NFE counts, reproducibility and bad input.

use candle::{DType, Device, Tensor};
use fm_solvers::{EulerMaruyama, SdeMethod, SdeSolver, StochasticHeun, TimeGrid};

type R<T> = fm_solvers::Result<T>;

/// A small seeded normal generator (xorshift64* + Box–Muller), so the tests
/// need nothing but this crate.
struct Normals(u64);

impl Normals {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn draw(&mut self, like: &Tensor) -> R<Tensor> {
        let n = like.elem_count();
        let v: Vec<f64> = (0..n)
            .map(|_| {
                let (u1, u2) = (self.uniform(), self.uniform());
                (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            })
            .collect();
        Ok(Tensor::from_vec(v, like.dims(), like.device())?.to_dtype(like.dtype())?)
    }
}

/// One step of `solver` on `dy = a y dt + g dW` over `[t, t + h]`, read off
/// as the affine map `y' = A y + B + C ξ` (the scheme is affine in `(y, ξ)`):
/// rows `(y, ξ) = (0, 0), (1, 0), (0, 1)` in one call.
fn one_step_map(solver: &dyn SdeSolver, a: f64, g: f64, t: f64, h: f64) -> R<(f64, f64, f64)> {
    let drift = move |_t: f64, y: &Tensor| -> R<Tensor> { Ok((y * a)?) };
    let sde = (drift, move |_t: f64| g);
    let y0 = Tensor::new(&[0.0f64, 1.0, 0.0], &Device::Cpu)?;
    let mut unit_noise = |_: &Tensor| -> R<Tensor> { Ok(Tensor::new(&[0.0f64, 0.0, 1.0], &Device::Cpu)?) };
    let out = solver.solve(&sde, &y0, &TimeGrid::from_points(vec![t, t + h])?, &mut unit_noise)?;
    let v = out.state.to_vec1::<f64>()?;
    Ok((v[1] - v[0], v[0], v[2] - v[0]))
}

/// The exact mean and variance of the scheme's output at `t = 1` from `y0 = 1`.
fn scheme_moments(solver: &dyn SdeSolver, a: f64, g: f64, steps: usize) -> R<(f64, f64)> {
    let h = 1.0 / steps as f64;
    let (mut m, mut v) = (1.0, 0.0);
    for k in 0..steps {
        let (aa, b, c) = one_step_map(solver, a, g, k as f64 * h, h)?;
        m = aa * m + b;
        v = aa * aa * v + c * c;
    }
    Ok((m, v))
}

#[test]
fn weak_orders_on_an_ornstein_uhlenbeck_process_are_one_and_two() -> R<()> {
    let (a, g) = (-1.5f64, 0.8f64);
    let exact_m = a.exp();
    let exact_v = g * g * ((2.0 * a).exp() - 1.0) / (2.0 * a);
    let second_moment = exact_v + exact_m * exact_m;
    for (solver, order) in [(&EulerMaruyama as &dyn SdeSolver, 1.0), (&StochasticHeun, 2.0)] {
        let errors: Vec<f64> = [20, 40, 80, 160]
            .iter()
            .map(|&n| scheme_moments(solver, a, g, n).map(|(m, v)| (v + m * m - second_moment).abs()))
            .collect::<R<_>>()?;
        for w in errors.windows(2) {
            let observed = (w[0] / w[1]).log2();
            assert!(
                (observed - order).abs() < 0.15,
                "{}: observed weak order {observed:.3}, expected {order} (errors {errors:?})",
                solver.name()
            );
        }
    }
    Ok(())
}

#[test]
fn zero_diffusion_is_the_ode_solver() -> R<()> {
    // With g = 0, Euler–Maruyama is Euler (bit for bit) and stochastic Heun
    // is Heun (to rounding: the weights are applied in another order).
    let drift = |t: f64, y: &Tensor| -> R<Tensor> { Ok((y.sin()? * (1.0 + t))?) };
    let sde = (drift, |_t: f64| 0.0);
    let mut never = |_: &Tensor| -> R<Tensor> { panic!("no noise is drawn when g = 0") };
    let y0 = Tensor::new(&[0.3f64, -1.2, 2.0], &Device::Cpu)?;
    let grid = TimeGrid::uniform(0.0, 1.0, 17)?;
    for (sde_solver, ode_solver) in [
        (&EulerMaruyama as &dyn SdeSolver, &fm_solvers::Euler as &dyn fm_solvers::OdeSolver),
        (&StochasticHeun, &fm_solvers::Heun),
    ] {
        let s = sde_solver.solve(&sde, &y0, &grid, &mut never)?;
        let o = ode_solver.solve(&drift, &y0, &grid)?;
        for (a, b) in s.state.to_vec1::<f64>()?.iter().zip(o.state.to_vec1::<f64>()?) {
            assert!((a - b).abs() <= 1e-14 * b.abs().max(1.0), "{}: {a} vs {b}", sde_solver.name());
        }
        assert_eq!(s.stats.nfe, o.stats.nfe);
    }
    Ok(())
}

#[test]
fn monte_carlo_moments_of_ornstein_uhlenbeck() -> R<()> {
    // dy = −y dt + √2 dW keeps N(0, 1); from y0 = 2: mean 2e^{−t}, variance 1 − e^{−2t}.
    let n = 100_000;
    let drift = |_t: f64, y: &Tensor| -> R<Tensor> { Ok(y.neg()?) };
    let sde = (drift, |_t: f64| 2f64.sqrt());
    let y0 = Tensor::full(2.0f64, n, &Device::Cpu)?;
    let grid = TimeGrid::uniform(0.0, 1.0, 400)?;
    for solver in SdeMethod::ALL.map(|m| m.as_solver()) {
        let mut rng = Normals(0x9E37_79B9_7F4A_7C15);
        let mut noise = |like: &Tensor| rng.draw(like);
        let sol = solver.solve(&sde, &y0, &grid, &mut noise)?;
        assert_eq!(sol.stats.nfe, 400 * solver.evals_per_step());
        let y = sol.state.to_vec1::<f64>()?;
        let mean = y.iter().sum::<f64>() / n as f64;
        let var = y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let (m, v) = (2.0 * (-1f64).exp(), 1.0 - (-2f64).exp());
        // Sampling error (4 standard errors) plus the O(h) bias of Euler–Maruyama.
        assert!(
            (mean - m).abs() < 4.0 * (v / n as f64).sqrt() + 2e-3,
            "{}: mean {mean} vs {m}",
            solver.name()
        );
        assert!(
            (var - v).abs() < 4.0 * v * (2.0 / n as f64).sqrt() + 3e-3,
            "{}: var {var} vs {v}",
            solver.name()
        );
    }
    Ok(())
}

#[test]
fn backward_grids_scale_the_noise_by_the_step_length() -> R<()> {
    // Pure Brownian motion run from t = 1 to t = 0: the variance is still 1.
    let drift = |_t: f64, y: &Tensor| -> R<Tensor> { Ok(y.zeros_like()?) };
    let sde = (drift, |_t: f64| 1.0);
    let y0 = Tensor::zeros(1, DType::F64, &Device::Cpu)?;
    let grid = TimeGrid::uniform(1.0, 0.0, 4)?;
    let mut ones = |like: &Tensor| -> R<Tensor> { Ok(like.ones_like()?) };
    let sol = EulerMaruyama.solve(&sde, &y0, &grid, &mut ones)?;
    assert!((sol.state.to_vec1::<f64>()?[0] - 4.0 * 0.5).abs() < 1e-15); // 4 steps of √0.25
    Ok(())
}

#[test]
fn same_noise_same_path_and_f32_states() -> R<()> {
    let drift = |_t: f64, y: &Tensor| -> R<Tensor> { Ok((y * -0.5)?) };
    let sde = (drift, |t: f64| 1.0 - 0.5 * t);
    let y0 = Tensor::new(&[1.0f32, 2.0, 3.0], &Device::Cpu)?;
    let grid = TimeGrid::uniform(0.0, 1.0, 10)?;
    let run = |seed| -> R<Vec<f32>> {
        let mut rng = Normals(seed);
        let mut noise = |like: &Tensor| rng.draw(like);
        let sol = StochasticHeun.integrate(&sde, &y0, &grid, &mut noise, true)?;
        assert_eq!(sol.trajectory.len(), 11);
        assert_eq!(sol.state.dtype(), DType::F32);
        Ok(sol.state.to_vec1::<f32>()?)
    };
    assert_eq!(run(7)?, run(7)?);
    assert_ne!(run(7)?, run(8)?);
    Ok(())
}

#[test]
fn bad_diffusion_and_noise_shapes_are_errors() -> R<()> {
    let drift = |_t: f64, y: &Tensor| -> R<Tensor> { Ok(y.clone()) };
    let y0 = Tensor::new(&[1.0f64, 2.0], &Device::Cpu)?;
    let grid = TimeGrid::uniform(0.0, 1.0, 2)?;
    let mut ones = |like: &Tensor| -> R<Tensor> { Ok(like.ones_like()?) };
    let negative = (drift, |_t: f64| -1.0);
    let err = EulerMaruyama.solve(&negative, &y0, &grid, &mut ones).unwrap_err();
    assert!(err.to_string().contains("diffusion"), "{err}");
    let nan = (drift, |_t: f64| f64::NAN);
    assert!(EulerMaruyama.solve(&nan, &y0, &grid, &mut ones).is_err());
    let ok = (drift, |_t: f64| 1.0);
    let mut wrong = |_: &Tensor| -> R<Tensor> { Ok(Tensor::new(&[1.0f64], &Device::Cpu)?) };
    let err = StochasticHeun.solve(&ok, &y0, &grid, &mut wrong).unwrap_err();
    assert!(err.to_string().contains("shape"), "{err}");
    let blow_up = (|_t: f64, y: &Tensor| -> R<Tensor> { Ok((y.sqr()? * 1e200)?) }, |_t: f64| 0.0);
    let mut none = |like: &Tensor| -> R<Tensor> { Ok(like.zeros_like()?) };
    assert!(matches!(
        EulerMaruyama.solve(&blow_up, &y0, &grid, &mut none),
        Err(fm_solvers::Error::NonFinite { .. })
    ));
    assert!(SdeMethod::from_name("heun").is_ok() && SdeMethod::from_name("rk4").is_err());
    Ok(())
}

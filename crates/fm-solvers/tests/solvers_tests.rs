//! Integration tests of the solvers against analytic solutions.

use std::cell::RefCell;
use std::f64::consts::PI;

use candle::{DType, Device, Tensor, Var};
use fm_solvers::{
    Dopri5, Error, Euler, Heun, Heun3, Method, Midpoint, OdeFunction, OdeSolver, Rk4, Rk4ThreeEighths,
    TimeGrid,
};

type FieldResult = fm_solvers::Result<Tensor>;

/// Every fixed-step method with its evaluations per step and its order.
fn fixed_methods() -> Vec<(Box<dyn OdeSolver>, usize, f64)> {
    vec![
        (Box::new(Euler), 1, 1.0),
        (Box::new(Midpoint), 2, 2.0),
        (Box::new(Heun), 2, 2.0),
        (Box::new(Heun3), 3, 3.0),
        (Box::new(Rk4), 4, 4.0),
        (Box::new(Rk4ThreeEighths), 4, 4.0),
    ]
}

/// Every method, fixed and adaptive.
fn all_methods() -> Vec<Box<dyn OdeSolver>> {
    let mut v: Vec<Box<dyn OdeSolver>> = fixed_methods().into_iter().map(|(m, _, _)| m).collect();
    v.push(Box::new(Dopri5::new(1e-7, 1e-7).expect("valid tolerances")));
    v
}

fn values(t: &Tensor) -> anyhow::Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
}

fn max_abs_diff(a: &Tensor, b: &[f64]) -> anyhow::Result<f64> {
    let a = values(a)?;
    assert_eq!(a.len(), b.len());
    Ok(a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max))
}

fn tensor(v: &[f64], shape: &[usize], dtype: DType) -> anyhow::Result<Tensor> {
    Ok(Tensor::from_slice(v, shape, &Device::Cpu)?.to_dtype(dtype)?)
}

/// Accuracy to expect of `order` with step `h` on a smooth O(1) problem.
fn expected_tol(order: f64, h: f64, dtype: DType) -> f64 {
    let floor = if dtype == DType::F32 { 2e-5 } else { 1e-12 };
    (2.0 * h.powf(order)).max(floor)
}

#[test]
fn constant_field_is_exact_forwards_and_backwards() -> anyhow::Result<()> {
    for dtype in [DType::F64, DType::F32] {
        let f = |_t: f64, y: &Tensor| -> FieldResult { Ok((y.ones_like()? * 2.0)?) };
        let y0 = tensor(&[1.0, -1.0, 0.5, 0.0], &[2, 2], dtype)?;
        for m in all_methods() {
            let fwd = m.solve(&f, &y0, &TimeGrid::uniform(0.0, 1.0, 5)?)?;
            assert_eq!(fwd.state.dims(), &[2, 2]);
            assert_eq!(fwd.state.dtype(), dtype);
            assert!(max_abs_diff(&fwd.state, &[3.0, 1.0, 2.5, 2.0])? < 1e-5, "{} {dtype:?}", m.name());
            let bwd = m.solve(&f, &y0, &TimeGrid::uniform(1.0, 0.0, 5)?)?;
            assert!(max_abs_diff(&bwd.state, &[-1.0, -3.0, -1.5, -2.0])? < 1e-5, "{} {dtype:?}", m.name());
        }
    }
    Ok(())
}

#[test]
fn exponential_growth_forwards_and_backwards() -> anyhow::Result<()> {
    let a = 0.7;
    let f = move |_t: f64, y: &Tensor| -> FieldResult { Ok(y.affine(a, 0.0)?) };
    let n = 50;
    let h = 1.0 / n as f64;
    for dtype in [DType::F64, DType::F32] {
        let y0 = tensor(&[1.0, -2.0], &[2], dtype)?;
        let y1 = tensor(&[a.exp(), -2.0 * a.exp()], &[2], dtype)?;
        for (m, _, order) in fixed_methods() {
            let tol = 2.0 * expected_tol(order, h, dtype);
            let fwd = m.solve(&f, &y0, &TimeGrid::uniform(0.0, 1.0, n)?)?;
            let err = max_abs_diff(&fwd.state, &[a.exp(), -2.0 * a.exp()])?;
            assert!(err < tol, "{} {dtype:?} forwards: {err:e} >= {tol:e}", m.name());
            let bwd = m.solve(&f, &y1, &TimeGrid::uniform(1.0, 0.0, n)?)?;
            let err = max_abs_diff(&bwd.state, &[1.0, -2.0])?;
            assert!(err < tol, "{} {dtype:?} backwards: {err:e} >= {tol:e}", m.name());
        }
    }
    Ok(())
}

#[test]
fn three_t_squared_gives_x_plus_one_for_every_method() -> anyhow::Result<()> {
    let f = |t: f64, y: &Tensor| -> FieldResult { Ok((y.ones_like()? * (3.0 * t * t))?) };
    for dtype in [DType::F64, DType::F32] {
        let x = [0.0, 1.0, -2.5];
        let y0 = tensor(&x, &[3, 1], dtype)?;
        let y1 = tensor(&x.map(|v| v + 1.0), &[3, 1], dtype)?;
        for m in all_methods() {
            // Euler's error is about 1.5 h here: 200 steps keep it below 1e-2.
            let fwd = m.solve(&f, &y0, &TimeGrid::uniform(0.0, 1.0, 200)?)?;
            assert!(max_abs_diff(&fwd.state, &x.map(|v| v + 1.0))? < 1e-2, "{} {dtype:?}", m.name());
            let bwd = m.solve(&f, &y1, &TimeGrid::uniform(1.0, 0.0, 200)?)?;
            assert!(max_abs_diff(&bwd.state, &x)? < 1e-2, "{} {dtype:?} backwards", m.name());
        }
    }
    Ok(())
}

/// `dy/dt = (-y2, y1)` for a batch of 2D points: a rotation by `t`.
fn rotation_field(y: &Tensor) -> FieldResult {
    let m = Tensor::new(&[[0.0f64, 1.0], [-1.0, 0.0]], y.device())?.to_dtype(y.dtype())?;
    Ok(y.matmul(&m)?)
}

fn rotated(points: &[[f64; 2]], angle: f64) -> Vec<f64> {
    let (s, c) = angle.sin_cos();
    points.iter().flat_map(|[x, y]| [c * x - s * y, s * x + c * y]).collect()
}

#[test]
fn rotation_forwards_and_backwards() -> anyhow::Result<()> {
    let f = |_t: f64, y: &Tensor| -> FieldResult { rotation_field(y) };
    let pts = [[1.0, 0.0], [0.0, 2.0], [-0.5, 0.3]];
    let flat: Vec<f64> = pts.iter().flatten().copied().collect();
    let n = 40;
    let h = (PI / 2.0) / n as f64;
    for dtype in [DType::F64, DType::F32] {
        let y0 = tensor(&flat, &[3, 2], dtype)?;
        for (m, _, order) in fixed_methods() {
            let tol = 4.0 * expected_tol(order, h, dtype);
            let fwd = m.solve(&f, &y0, &TimeGrid::uniform(0.0, PI / 2.0, n)?)?;
            let err = max_abs_diff(&fwd.state, &rotated(&pts, PI / 2.0))?;
            assert!(err < tol, "{} {dtype:?}: {err:e} >= {tol:e}", m.name());
            let bwd = m.solve(&f, &y0, &TimeGrid::uniform(0.0, -PI / 2.0, n)?)?;
            let err = max_abs_diff(&bwd.state, &rotated(&pts, -PI / 2.0))?;
            assert!(err < tol, "{} {dtype:?} backwards: {err:e} >= {tol:e}", m.name());
        }
    }
    Ok(())
}

/// Observed order `log2(e_N / e_2N)` on `dy/dt = cos(t) y` (`y = exp(sin t)`),
/// forwards on `[0, 2]` and backwards on `[2, 0]`.
#[test]
fn fixed_methods_converge_at_their_order() -> anyhow::Result<()> {
    let f = |t: f64, y: &Tensor| -> FieldResult { Ok(y.affine(t.cos(), 0.0)?) };
    let exact = |t: f64| t.sin().exp();
    for (m, _, order) in fixed_methods() {
        for (t0, t1) in [(0.0, 2.0), (2.0, 0.0)] {
            let y0 = Tensor::new(&[exact(t0)], &Device::Cpu)?;
            let err = |n: usize| -> anyhow::Result<f64> {
                let sol = m.solve(&f, &y0, &TimeGrid::uniform(t0, t1, n)?)?;
                max_abs_diff(&sol.state, &[exact(t1)])
            };
            // Asymptotic regime, yet far above round-off even for RK4 (~1e-10).
            let n = 64;
            let (e1, e2) = (err(n)?, err(2 * n)?);
            let observed = (e1 / e2).log2();
            assert!(
                (observed - order).abs() <= 0.3,
                "{} [{t0}, {t1}]: observed order {observed:.3} (errors {e1:e}, {e2:e}), expected {order}",
                m.name()
            );
        }
    }
    Ok(())
}

#[test]
fn fixed_methods_count_nfe_exactly_and_record_the_trajectory() -> anyhow::Result<()> {
    let f = |_t: f64, y: &Tensor| -> FieldResult { Ok(y.neg()?) };
    let y0 = Tensor::new(&[1.0f32, 2.0], &Device::Cpu)?;
    for (m, evals, _) in fixed_methods() {
        for n in [1, 3, 7] {
            let grid = TimeGrid::uniform(0.0, 1.0, n)?;
            let sol = m.solve(&f, &y0, &grid)?;
            assert_eq!(sol.stats.nfe, n * evals, "{}", m.name());
            assert_eq!(sol.stats.accepted_steps, n);
            assert_eq!(sol.stats.rejected_steps, 0);
            assert!(sol.trajectory.is_empty());
            assert_eq!(sol.times, grid.points());

            let with = m.solve_with_trajectory(&f, &y0, &grid)?;
            assert_eq!(with.trajectory.len(), n + 1);
            assert_eq!(values(&with.trajectory[0])?, values(&y0)?);
            assert_eq!(values(&with.trajectory[n])?, values(&sol.state)?);
            assert_eq!(with.stats, sol.stats);
        }
    }
    Ok(())
}

#[test]
fn fixed_methods_evaluate_at_the_grid_times() -> anyhow::Result<()> {
    let seen = RefCell::new(Vec::new());
    let f = |t: f64, y: &Tensor| -> FieldResult {
        seen.borrow_mut().push(t);
        Ok(y.zeros_like()?)
    };
    let y0 = Tensor::new(&[0.0f64], &Device::Cpu)?;
    let grid = TimeGrid::from_points(vec![1.0, 0.7, 0.2, 0.0])?;
    Rk4.solve(&f, &y0, &grid)?;
    let expected = [1.0, 0.85, 0.85, 0.7, 0.7, 0.45, 0.45, 0.2, 0.2, 0.1, 0.1, 0.0];
    let seen = seen.into_inner();
    assert_eq!(seen.len(), expected.len());
    for (s, e) in seen.iter().zip(expected) {
        assert!((s - e).abs() < 1e-15, "{seen:?}");
    }
    // Stages at c = 1 land exactly on the next grid time.
    assert_eq!(seen[3], 0.7);
    assert_eq!(seen[11], 0.0);
    Ok(())
}

#[test]
fn gradients_flow_through_a_fixed_step_solve() -> anyhow::Result<()> {
    let a = -0.8;
    let f = move |_t: f64, y: &Tensor| -> FieldResult { Ok(y.affine(a, 0.0)?) };
    let y0 = Var::new(&[1.0f64, 3.0], &Device::Cpu)?;
    let sol = Rk4.solve(&f, y0.as_tensor(), &TimeGrid::uniform(0.0, 1.0, 20)?)?;
    let grads = sol.state.sum_all()?.backward()?;
    let g = grads.get(y0.as_tensor()).ok_or_else(|| anyhow::anyhow!("no gradient for y0"))?;
    for v in values(g)? {
        assert!((v - a.exp()).abs() < 1e-6, "d y(1) / d y0 = {v}, expected {}", a.exp());
    }
    Ok(())
}

#[test]
fn dopri5_meets_its_tolerance_on_exponentials() -> anyhow::Result<()> {
    let a = 1.5;
    let f = move |_t: f64, y: &Tensor| -> FieldResult { Ok(y.affine(a, 0.0)?) };
    for (dtype, tol) in [(DType::F64, 1e-7), (DType::F64, 1e-4), (DType::F32, 1e-4)] {
        let d = Dopri5::new(tol, tol)?;
        let x = [1.0, -0.5, 0.0];
        let y0 = tensor(&x, &[3], dtype)?;
        let sol = d.solve(&f, &y0, &TimeGrid::uniform(0.0, 2.0, 1)?)?;
        let exact: Vec<f64> = x.iter().map(|v| v * (2.0 * a).exp()).collect();
        let got = values(&sol.state)?;
        for (g, e) in got.iter().zip(&exact) {
            let bound = 10.0 * (tol + tol * e.abs());
            assert!((g - e).abs() < bound, "{dtype:?} tol {tol:e}: {g} vs {e}");
        }
        assert!(sol.stats.nfe > 0);
        assert_eq!(sol.stats.nfe, 2 + 6 * (sol.stats.accepted_steps + sol.stats.rejected_steps));

        // Backwards from the exact end state.
        let y1 = tensor(&exact, &[3], dtype)?;
        let back = d.solve(&f, &y1, &TimeGrid::uniform(2.0, 0.0, 1)?)?;
        for (g, e) in values(&back.state)?.iter().zip(&x) {
            let bound = 10.0 * (tol + tol * e.abs()) * (2.0 * a).exp();
            assert!((g - e).abs() < bound, "{dtype:?} tol {tol:e} backwards: {g} vs {e}");
        }
    }
    Ok(())
}

#[test]
fn dopri5_meets_its_tolerance_on_rotations() -> anyhow::Result<()> {
    let f = |_t: f64, y: &Tensor| -> FieldResult { rotation_field(y) };
    let pts = [[1.0, 0.0], [0.0, 2.0], [-0.5, 0.3]];
    let flat: Vec<f64> = pts.iter().flatten().copied().collect();
    for (dtype, tol) in [(DType::F64, 1e-8), (DType::F32, 1e-5)] {
        let y0 = tensor(&flat, &[3, 2], dtype)?;
        let d = Dopri5::new(tol, tol)?;
        for angle in [2.0 * PI, -2.0 * PI] {
            let sol = d.solve(&f, &y0, &TimeGrid::uniform(0.0, angle, 1)?)?;
            let err = max_abs_diff(&sol.state, &rotated(&pts, angle))?;
            assert!(err < 10.0 * (tol + tol * 2.0), "{dtype:?} angle {angle}: {err:e}");
        }
    }
    Ok(())
}

#[test]
fn dopri5_tighter_tolerance_costs_more_evaluations() -> anyhow::Result<()> {
    let f = |t: f64, y: &Tensor| -> FieldResult { Ok(y.affine(t.cos(), 0.0)?) };
    let y0 = Tensor::new(&[1.0f64], &Device::Cpu)?;
    let grid = TimeGrid::uniform(0.0, 5.0, 1)?;
    let mut last_nfe = 0;
    let mut last_err = f64::INFINITY;
    for tol in [1e-3, 1e-6, 1e-9] {
        let sol = Dopri5::new(tol, tol)?.solve(&f, &y0, &grid)?;
        let err = max_abs_diff(&sol.state, &[5.0f64.sin().exp()])?;
        assert!(sol.stats.nfe > last_nfe, "tol {tol:e}: NFE {} after {last_nfe}", sol.stats.nfe);
        assert!(err < last_err);
        last_nfe = sol.stats.nfe;
        last_err = err;
    }
    Ok(())
}

#[test]
fn dopri5_counts_a_given_first_step_honestly() -> anyhow::Result<()> {
    let f = |_t: f64, y: &Tensor| -> FieldResult { Ok(y.neg()?) };
    let y0 = Tensor::new(&[1.0f64], &Device::Cpu)?;
    let d = Dopri5::default().with_first_step(Some(0.01));
    let sol = d.solve(&f, &y0, &TimeGrid::uniform(0.0, 1.0, 1)?)?;
    assert_eq!(sol.stats.nfe, 1 + 6 * (sol.stats.accepted_steps + sol.stats.rejected_steps));
    assert!((values(&sol.state)?[0] - (-1.0f64).exp()).abs() < 1e-4);
    Ok(())
}

#[test]
fn dopri5_hits_every_grid_point() -> anyhow::Result<()> {
    let seen = RefCell::new(Vec::new());
    let f = |t: f64, y: &Tensor| -> FieldResult {
        seen.borrow_mut().push(t);
        Ok(y.affine(0.9, 0.0)?)
    };
    for points in [vec![0.0, 0.1, 0.35, 0.5, 0.500001, 1.0, 3.0], vec![3.0, 1.0, 0.5, 0.35, 0.1, 0.0]] {
        seen.borrow_mut().clear();
        let grid = TimeGrid::from_points(points.clone())?;
        let t0 = grid.start();
        let y0 = Tensor::new(&[1.0f64, 2.0], &Device::Cpu)?;
        let sol = Dopri5::new(1e-7, 1e-7)?.solve_with_trajectory(&f, &y0, &grid)?;
        assert_eq!(sol.trajectory.len(), points.len());
        assert_eq!(sol.times, points);
        for (y, &t) in sol.trajectory.iter().zip(&points) {
            let e = (0.9 * (t - t0)).exp();
            assert!(max_abs_diff(y, &[e, 2.0 * e])? < 1e-5 * (1.0 + 2.0 * e), "t = {t}");
            assert!(seen.borrow().contains(&t), "t = {t} never evaluated");
        }
        assert_eq!(values(&sol.state)?, values(&sol.trajectory[points.len() - 1])?);
        assert_eq!(sol.stats.nfe, seen.borrow().len());
        // No evaluation outside the grid's span.
        let (lo, hi) = (t0.min(grid.end()), t0.max(grid.end()));
        assert!(seen.borrow().iter().all(|t| (lo..=hi).contains(t)));
    }
    Ok(())
}

#[test]
fn dopri5_reports_max_steps_exceeded() -> anyhow::Result<()> {
    let f = |_t: f64, y: &Tensor| -> FieldResult { Ok(y.neg()?) };
    let y0 = Tensor::new(&[1.0f64], &Device::Cpu)?;
    let d = Dopri5::new(1e-10, 1e-10)?.with_max_steps(3);
    match d.solve(&f, &y0, &TimeGrid::uniform(0.0, 10.0, 1)?) {
        Err(Error::MaxStepsExceeded { max_steps, t_reached, t_end }) => {
            assert_eq!(max_steps, 3);
            assert_eq!(t_end, 10.0);
            assert!((0.0..10.0).contains(&t_reached));
        }
        other => panic!("expected MaxStepsExceeded, got {other:?}"),
    }
    Ok(())
}

#[test]
fn dopri5_reports_step_size_underflow_at_a_jump() -> anyhow::Result<()> {
    // A jump of 1e30 at t = 0.5 cannot be resolved by any representable step.
    let f = |t: f64, y: &Tensor| -> FieldResult { Ok((y.ones_like()? * if t < 0.5 { 0.0 } else { 1e30 })?) };
    let y0 = Tensor::new(&[0.0f64], &Device::Cpu)?;
    let d = Dopri5::default().with_max_steps(1_000_000);
    match d.solve(&f, &y0, &TimeGrid::uniform(0.0, 1.0, 1)?) {
        Err(Error::StepSizeUnderflow { t, h }) => {
            assert!((t - 0.5).abs() < 1e-10, "t = {t}");
            assert!(h.abs() < 1e-12, "h = {h}");
        }
        other => panic!("expected StepSizeUnderflow, got {other:?}"),
    }
    Ok(())
}

#[test]
fn dopri5_reports_non_finite_states() -> anyhow::Result<()> {
    let f =
        |t: f64, y: &Tensor| -> FieldResult { Ok((y.ones_like()? * if t < 0.3 { 1.0 } else { f64::NAN })?) };
    let y0 = Tensor::new(&[0.0f64, 1.0], &Device::Cpu)?;
    let r = Dopri5::default().solve(&f, &y0, &TimeGrid::uniform(0.0, 1.0, 1)?);
    assert!(matches!(r, Err(Error::NonFinite { .. })), "{r:?}");
    let r = Dopri5::default().solve(&f, &y0, &TimeGrid::uniform(0.5, 1.0, 1)?);
    assert!(matches!(r, Err(Error::NonFinite { t }) if t == 0.5), "{r:?}");
    Ok(())
}

#[test]
fn dopri5_handles_pure_relative_tolerance_and_zero_states() -> anyhow::Result<()> {
    let f = |_t: f64, y: &Tensor| -> FieldResult { Ok(y.neg()?) };
    let y0 = Tensor::new(&[0.0f32, 1.0], &Device::Cpu)?;
    let sol = Dopri5::new(1e-5, 0.0)?.solve(&f, &y0, &TimeGrid::uniform(0.0, 1.0, 1)?)?;
    assert!(max_abs_diff(&sol.state, &[0.0, (-1.0f64).exp()])? < 1e-4);

    let empty = Tensor::zeros((0, 2), DType::F64, &Device::Cpu)?;
    let sol = Dopri5::default().solve(&f, &empty, &TimeGrid::uniform(0.0, 1.0, 1)?)?;
    assert_eq!(sol.state.dims(), &[0, 2]);
    Ok(())
}

#[test]
fn field_errors_propagate() -> anyhow::Result<()> {
    let f = |t: f64, y: &Tensor| -> FieldResult {
        if t > 0.5 {
            Err(Error::Field("model exploded".into()))
        } else {
            Ok(y.clone())
        }
    };
    let y0 = Tensor::new(&[1.0f64], &Device::Cpu)?;
    for m in all_methods() {
        let r = m.solve(&f, &y0, &TimeGrid::uniform(0.0, 1.0, 4)?);
        assert!(matches!(r, Err(Error::Field(_))), "{}", m.name());
    }
    // A field returning the wrong shape is a tensor error, not a panic.
    let bad = |_t: f64, _y: &Tensor| -> FieldResult { Ok(Tensor::new(&[1.0f64, 2.0], &Device::Cpu)?) };
    for m in all_methods() {
        let r = m.solve(&bad, &y0, &TimeGrid::uniform(0.0, 1.0, 4)?);
        assert!(matches!(r, Err(Error::Candle(_))), "{}", m.name());
    }
    Ok(())
}

#[test]
fn dopri5_rejects_invalid_options() {
    for (rtol, atol, name) in [
        (0.0, 1e-5, "rtol"),
        (-1e-3, 1e-5, "rtol"),
        (f64::NAN, 1e-5, "rtol"),
        (f64::INFINITY, 1e-5, "rtol"),
        (1e-5, -1.0, "atol"),
        (1e-5, f64::NAN, "atol"),
    ] {
        match Dopri5::new(rtol, atol) {
            Err(Error::InvalidOption { name: n, .. }) => assert_eq!(n, name, "rtol {rtol} atol {atol}"),
            other => panic!("rtol {rtol} atol {atol}: expected InvalidOption, got {other:?}"),
        }
    }
    // Options set through the builder are checked when solving.
    let f = |_t: f64, y: &Tensor| -> FieldResult { Ok(y.clone()) };
    let y0 = Tensor::new(&[1.0f64], &Device::Cpu).expect("tensor");
    let grid = TimeGrid::uniform(0.0, 1.0, 1).expect("grid");
    let r = Dopri5::default().with_max_steps(0).solve(&f, &y0, &grid);
    assert!(matches!(r, Err(Error::InvalidOption { name: "max_steps", .. })), "{r:?}");
}

#[test]
fn invalid_grids_are_rejected() {
    for points in [vec![0.0, 0.5, 0.4, 1.0], vec![0.0, 0.0], vec![1.0], vec![], vec![0.0, f64::NAN]] {
        assert!(matches!(TimeGrid::from_points(points.clone()), Err(Error::InvalidGrid(_))), "{points:?}");
    }
    assert!(matches!(TimeGrid::uniform(0.0, 1.0, 0), Err(Error::InvalidGrid(_))));
    assert!(matches!(TimeGrid::uniform(1.0, 1.0, 3), Err(Error::InvalidGrid(_))));
}

#[test]
fn method_names_round_trip() -> anyhow::Result<()> {
    for name in Method::NAMES {
        let m: Method = name.parse()?;
        assert_eq!(m.to_string(), name);
        assert_eq!(m.name(), name);
        assert_eq!(m.is_adaptive(), name == "dopri5");
    }
    assert_eq!("heun2".parse::<Method>()?, Method::Heun);
    assert_eq!("rk38".parse::<Method>()?, Method::Rk4ThreeEighths);
    assert_eq!(" RK4 ".parse::<Method>()?, Method::Rk4);
    assert_eq!("dopri5".parse::<Method>()?, Method::Dopri5(Dopri5::default()));
    assert_eq!(Method::from(Dopri5::default()), Method::Dopri5(Dopri5::default()));

    let err = "rk5".parse::<Method>().err().ok_or_else(|| anyhow::anyhow!("rk5 parsed"))?;
    assert!(matches!(err, Error::InvalidOption { name: "method", .. }));
    let msg = err.to_string();
    assert!(msg.contains("rk5"), "{msg}");
    for name in Method::NAMES {
        assert!(msg.contains(name), "{msg} lacks {name}");
    }
    Ok(())
}

#[test]
fn methods_delegate_and_report_evals_per_step() -> anyhow::Result<()> {
    let f = |_t: f64, y: &Tensor| -> FieldResult { Ok(y.neg()?) };
    let y0 = Tensor::new(&[1.0f64], &Device::Cpu)?;
    let grid = TimeGrid::uniform(0.0, 1.0, 6)?;
    for name in Method::NAMES {
        let m: Box<dyn OdeSolver> = Box::new(name.parse::<Method>()?);
        let sol = m.solve_with_trajectory(&f, &y0, &grid)?;
        assert_eq!(sol.trajectory.len(), 7);
        match name.parse::<Method>()?.evals_per_step() {
            Some(k) => assert_eq!(sol.stats.nfe, 6 * k, "{name}"),
            None => assert_eq!(name, "dopri5"),
        }
        assert!((values(&sol.state)?[0] - (-1.0f64).exp()).abs() < 5e-2, "{name}");
    }
    Ok(())
}

#[test]
fn backward_then_forward_returns_the_start() -> anyhow::Result<()> {
    // A nonlinear, time-dependent field.
    let f = |t: f64, y: &Tensor| -> FieldResult { Ok((y.sin()? + t)?) };
    let x = [0.3, -1.2, 2.0, 0.0];
    let y1 = Tensor::new(&x, &Device::Cpu)?.reshape((2, 2))?;
    let n = 64;
    for (m, _, order) in fixed_methods() {
        let back = m.solve(&f, &y1, &TimeGrid::uniform(1.0, 0.0, n)?)?;
        let again = m.solve(&f, &back.state, &TimeGrid::uniform(0.0, 1.0, n)?)?;
        let err = max_abs_diff(&again.state, &x)?;
        let tol = 10.0 * expected_tol(order, 1.0 / n as f64, DType::F64);
        assert!(err < tol, "{}: {err:e} >= {tol:e}", m.name());
    }
    let d = Dopri5::new(1e-8, 1e-8)?;
    let back = d.solve(&f, &y1, &TimeGrid::uniform(1.0, 0.0, 1)?)?;
    let again = d.solve(&f, &back.state, &TimeGrid::uniform(0.0, 1.0, 1)?)?;
    assert!(max_abs_diff(&again.state, &x)? < 1e-6);
    Ok(())
}

/// Rotation `ẏ = (−y₂, y₁)` on the unit circle with a projecting retraction.
struct CircleRotation;

impl OdeFunction for CircleRotation {
    fn eval(&self, _t: f64, y: &Tensor) -> fm_solvers::Result<Tensor> {
        let a = y.narrow(1, 0, 1)?;
        let b = y.narrow(1, 1, 1)?;
        Ok(Tensor::cat(&[&b.neg()?, &a], 1)?)
    }

    fn retract(&self, _from: &Tensor, to: Tensor) -> fm_solvers::Result<Tensor> {
        let norm = to.sqr()?.sum_keepdim(1)?.sqrt()?;
        Ok(to.broadcast_div(&norm)?)
    }
}

#[test]
fn retraction_keeps_every_solver_on_the_circle_and_each_step_projected_euler_turns_by_atan_h() {
    let y0 = Tensor::new(&[[1.0f64, 0.0]], &Device::Cpu).unwrap();
    let grid = TimeGrid::uniform(0.0, 1.0, 10).unwrap();
    // Projected Euler: each step maps angle θ to θ + atan(h), exactly.
    let sol = Euler.solve(&CircleRotation, &y0, &grid).unwrap();
    let y = sol.state.to_vec2::<f64>().unwrap()[0].clone();
    let angle = 10.0 * 0.1f64.atan();
    assert!((y[0] - angle.cos()).abs() < 1e-14 && (y[1] - angle.sin()).abs() < 1e-14, "{y:?}");
    // Without the retraction Euler leaves the circle: |y| = (1 + h²)^(n/2).
    let free = |_t: f64, y: &Tensor| CircleRotation.eval(0.0, y);
    let y = Euler.solve(&free, &y0, &grid).unwrap().state.to_vec2::<f64>().unwrap()[0].clone();
    let norm = (y[0] * y[0] + y[1] * y[1]).sqrt();
    assert!((norm - 1.01f64.powf(5.0)).abs() < 1e-12, "{norm}");
    // Every fixed method and Dopri5 end on the circle, near the exact angle 1.
    let solvers: [(&str, &dyn OdeSolver, f64); 2] = [("midpoint", &Midpoint, 3e-3), ("rk4", &Rk4, 1e-5)];
    for (method, solver, tol) in solvers {
        let y = solver.solve(&CircleRotation, &y0, &grid).unwrap().state.to_vec2::<f64>().unwrap()[0].clone();
        assert!(((y[0] * y[0] + y[1] * y[1]).sqrt() - 1.0).abs() < 1e-14);
        assert!((y[1].atan2(y[0]) - 1.0).abs() < tol, "{method}: {y:?}");
    }
    let y = Dopri5::default().solve(&CircleRotation, &y0, &grid).unwrap().state.to_vec2::<f64>().unwrap()[0]
        .clone();
    assert!(((y[0] * y[0] + y[1] * y[1]).sqrt() - 1.0).abs() < 1e-14);
    assert!((y[1].atan2(y[0]) - 1.0).abs() < 1e-5, "{y:?}");
}

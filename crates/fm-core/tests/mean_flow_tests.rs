//! MeanFlow's mathematics on the Gaussian oracle, whose average velocity is exact.

use candle::{DType, Device, Tensor};
use fm_core::gaussian::GaussianOracle;
use fm_core::mean_flow::{draw_time_pairs, mean_flow_sample, AverageVelocityField};
use fm_core::scheduler::SchedulerKind;
use fm_core::{to_f64_vec, Result, SeededRng};

fn oracle(scheduler: SchedulerKind) -> Result<GaussianOracle> {
    GaussianOracle::new(vec![1.0, -1.0], vec![3.694337, 0.988124, 0.988124, 0.805663], scheduler)
}

#[test]
fn the_mean_flow_identity_holds_for_the_exact_average_velocity() -> Result<()> {
    // ū(x_s, s, t) = u(x_s, s) + (t − s)(∂ₓū·u + ∂ₛū), derivatives by central differences.
    for scheduler in [SchedulerKind::CondOt, SchedulerKind::Cosine] {
        let o = oracle(scheduler)?;
        let x = [0.4, -0.3];
        for (s, t) in [(0.1, 0.9), (0.3, 0.5), (0.002, 1.0), (0.45, 0.8)] {
            let avg = o.average_velocity_rows(&x, s, t)?;
            let u = o.velocity_rows(&x, &[s])?;
            let h = 1e-5;
            let ds = {
                let p = o.average_velocity_rows(&x, s + h, t)?;
                let m = o.average_velocity_rows(&x, (s - h).max(0.0), t)?;
                let width = s + h - (s - h).max(0.0);
                [(p[0] - m[0]) / width, (p[1] - m[1]) / width]
            };
            let dx_u = {
                let p = o.average_velocity_rows(&[x[0] + h * u[0], x[1] + h * u[1]], s, t)?;
                let m = o.average_velocity_rows(&[x[0] - h * u[0], x[1] - h * u[1]], s, t)?;
                [(p[0] - m[0]) / (2.0 * h), (p[1] - m[1]) / (2.0 * h)]
            };
            for i in 0..2 {
                let rhs = u[i] + (t - s) * (dx_u[i] + ds[i]);
                assert!((avg[i] - rhs).abs() < 2e-5, "{scheduler:?} s={s} t={t}: ū {} vs {rhs}", avg[i]);
            }
        }
        // At s = t the average velocity is the velocity (and continuous there).
        let near = o.average_velocity_rows(&x, 0.5, 0.5 + 1e-7)?;
        let u = o.velocity_rows(&x, &[0.5])?;
        assert!((near[0] - u[0]).abs() < 1e-5 && (near[1] - u[1]).abs() < 1e-5);
    }
    Ok(())
}

/// The oracle's exact average velocity as a model (its tangent is not needed here).
struct ExactAverage(GaussianOracle);

impl AverageVelocityField for ExactAverage {
    fn average_velocity(&self, x: &Tensor, s: &Tensor, t: &Tensor) -> Result<Tensor> {
        let (s, t) = (to_f64_vec(s)?[0], to_f64_vec(t)?[0]);
        let v = self.0.average_velocity_rows(&to_f64_vec(x)?, s, t)?;
        Ok(Tensor::from_vec(v, x.dims(), x.device())?)
    }
    fn average_velocity_and_tangent(
        &self,
        _x: &Tensor,
        _s: &Tensor,
        _t: &Tensor,
        _dx: &Tensor,
        _ds: &Tensor,
        _dt: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        unimplemented!("not used")
    }
}

#[test]
fn one_step_with_the_exact_average_velocity_is_the_flow_map() -> Result<()> {
    let o = oracle(SchedulerKind::CondOt)?;
    let x0 = SeededRng::new(3).normal((50, 2), DType::F64, &Device::Cpu)?;
    let want = o.flow_map_rows(&to_f64_vec(&x0)?, 0.0, 1.0)?;
    let model = ExactAverage(o);
    for steps in [1, 2, 5] {
        let (x1, nfe) = mean_flow_sample(&model, &x0, steps)?;
        assert_eq!(nfe, steps);
        for (a, b) in to_f64_vec(&x1)?.iter().zip(&want) {
            assert!((a - b).abs() < 1e-9, "{steps} steps: {a} vs {b}");
        }
    }
    assert!(mean_flow_sample(&model, &x0, 0).is_err());
    Ok(())
}

#[test]
fn time_pairs_are_ordered_with_the_asked_share_of_equal_times() -> Result<()> {
    let (s, t) = draw_time_pairs(20_000, 0.75, &mut SeededRng::new(0), DType::F64, &Device::Cpu)?;
    let (s, t) = (to_f64_vec(&s)?, to_f64_vec(&t)?);
    assert!(s.iter().zip(&t).all(|(a, b)| a <= b && *a >= 0.0 && *b <= 1.0));
    let equal = s.iter().zip(&t).filter(|(a, b)| a == b).count() as f64 / 20_000.0;
    assert!((equal - 0.75).abs() < 0.015, "{equal}");
    assert!(draw_time_pairs(4, 1.5, &mut SeededRng::new(0), DType::F64, &Device::Cpu).is_err());
    Ok(())
}

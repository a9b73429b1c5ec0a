//! The MLP's forward-mode JVPs and the Jacobian penalty built on them:
//! JVPs equal the autograd Jacobian, Hutchinson's estimate is unbiased for the
//! exact ‖∂u/∂x‖²_F, and the penalty's weight gradients are exact (first order).

use candle::{DType, Device, Tensor};
use fm_core::divergence::Probe;
use fm_core::jacobian::{exact_jacobian_sq, hutchinson_jacobian_sq, jacobian_autograd, JvpField};
use fm_core::objective::{objective_loss, JacobianReg, ObjectiveSpec};
use fm_core::parametrization::Parametrized;
use fm_core::path::{AffinePath, Prediction};
use fm_core::scheduler::SchedulerKind;
use fm_core::{to_f64_vec, SeededRng};
use fm_models::{Activation, MlpConfig, VelocityMlp};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f64> {
    let (a, b) = (to_f64_vec(a)?, to_f64_vec(b)?);
    assert_eq!(a.len(), b.len());
    Ok(a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max))
}

/// `J v` by forward mode equals the reverse-mode Jacobian times `v`, for every
/// activation, also through a data parametrization.
#[test]
fn forward_mode_jvp_equals_the_autograd_jacobian() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mut rng = SeededRng::new(0);
    for act in [Activation::Elu, Activation::Selu, Activation::Silu, Activation::Tanh] {
        let cfg = MlpConfig { dim: 3, hidden: vec![16, 16], activation: act };
        let (mlp, _vm) = VelocityMlp::init(&cfg, &mut rng, DType::F64, &dev)?;
        let x = rng.normal((5, 3), DType::F64, &dev)?;
        let t = rng.uniform(5, 0.1, 0.9, DType::F64, &dev)?;
        let v = rng.normal((2, 5, 3), DType::F64, &dev)?;
        let path = AffinePath::new(SchedulerKind::Cosine);
        let wrapped = Parametrized::new(&mlp, path, Prediction::Target);
        for (name, field) in
            [("mlp", &mlp as &dyn JvpField), ("data-parametrized", &wrapped as &dyn JvpField)]
        {
            let (u, jv) = field.velocity_and_jvp(&x, &t, &v)?;
            assert!(max_abs_diff(&u, &field.velocity(&x, &t)?)? < 1e-12, "{act:?} {name}: u");
            let jac = jacobian_autograd(field, &x, &t)?; // (b, d, d)
                                                         // (J v_k)_b = J_b v_kb
            let expect = jac.unsqueeze(0)?.broadcast_mul(&v.unsqueeze(2)?)?.sum(3)?;
            let e = max_abs_diff(&jv, &expect)?;
            assert!(e < 1e-10, "{act:?} {name}: JVP off by {e}");
        }
    }
    Ok(())
}

/// Hutchinson's estimate is unbiased: the mean of many probes lies within
/// 4 standard errors of the exact ‖J‖²_F (d JVPs, checked against autograd),
/// for Rademacher and Gaussian probes, on a small MLP.
#[test]
fn hutchinson_estimate_is_unbiased_for_the_frobenius_norm() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mut rng = SeededRng::new(1);
    let cfg = MlpConfig { dim: 4, hidden: vec![32, 32], activation: Activation::Elu };
    let (mlp, _vm) = VelocityMlp::init(&cfg, &mut rng, DType::F64, &dev)?;
    let x = rng.normal((3, 4), DType::F64, &dev)?;
    let t = rng.uniform(3, 0.0, 1.0, DType::F64, &dev)?;
    let exact = to_f64_vec(&exact_jacobian_sq(&mlp, &x, &t)?)?;
    let auto = to_f64_vec(&jacobian_autograd(&mlp, &x, &t)?.sqr()?.sum((1, 2))?)?;
    for (e, a) in exact.iter().zip(&auto) {
        assert!((e - a).abs() < 1e-10 * a, "{e} vs {a}");
    }
    let k = 4000;
    for probe in [Probe::Rademacher, Probe::Gaussian] {
        let v = probe.draw(&mut rng, (k, 3, 4), DType::F64, &dev)?;
        let (_, jv) = mlp.velocity_and_jvp(&x, &t, &v)?;
        let per_probe = jv.sqr()?.sum(2)?; // (k, b)
        let mean = to_f64_vec(&per_probe.mean(0)?)?;
        let var = to_f64_vec(&per_probe.broadcast_sub(&per_probe.mean_keepdim(0)?)?.sqr()?.mean(0)?)?;
        let (_, est) = hutchinson_jacobian_sq(&mlp, &x, &t, &v)?;
        for i in 0..3 {
            let se = (var[i] / k as f64).sqrt();
            assert!(
                (mean[i] - exact[i]).abs() < 4.0 * se,
                "{probe:?} row {i}: mean {} vs exact {} (se {se})",
                mean[i],
                exact[i]
            );
            assert!((to_f64_vec(&est)?[i] - mean[i]).abs() < 1e-9 * mean[i]);
            // Not trivially exact: the probes do vary.
            assert!(se > 0.0);
        }
    }
    Ok(())
}

/// The penalty is built from first-order ops: every parameter gets a
/// gradient, and it matches central finite differences (no second-order
/// autograd, which candle would silently get wrong).
#[test]
fn jacobian_penalty_gradient_matches_finite_differences() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mut rng = SeededRng::new(2);
    let cfg = MlpConfig { dim: 2, hidden: vec![8, 8], activation: Activation::Silu };
    let (mlp, varmap) = VelocityMlp::init(&cfg, &mut rng, DType::F64, &dev)?;
    let path = AffinePath::new(SchedulerKind::CondOt);
    let x0 = rng.normal((16, 2), DType::F64, &dev)?;
    let x1 = rng.normal((16, 2), DType::F64, &dev)?;
    let t = rng.uniform(16, 0.05, 0.95, DType::F64, &dev)?;
    let reg = JacobianReg { weight: 1.0, probe: Probe::Rademacher, probes: 2 };
    let spec =
        ObjectiveSpec { parametrization: Prediction::Epsilon, jacobian: Some(reg), ..Default::default() };
    // The Jacobian part alone, with the same probes every time (seeded).
    let penalty = || -> anyhow::Result<Tensor> {
        let l = objective_loss(&mlp, &path, &spec, &x0, &x1, &t, None, &mut SeededRng::new(7))?;
        l.jacobian.ok_or_else(|| anyhow::anyhow!("no penalty"))
    };
    let p = penalty()?;
    assert!(p.track_op(), "the penalty must be part of the autograd graph");
    let grads = p.backward()?;
    let vars = varmap.data().lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    let mut checked = 0;
    for (name, var) in &vars {
        // The last bias does not move the Jacobian: it is not in the graph
        // (gradient 0, checked against finite differences below); every other
        // parameter gets a non-zero gradient.
        let g = match grads.get(var) {
            Some(g) => g.flatten_all()?.to_vec1::<f64>()?,
            None if name == "net.4.bias" => vec![0.0; var.elem_count()],
            None => anyhow::bail!("no gradient for {name}"),
        };
        if name != "net.4.bias" {
            assert!(g.iter().any(|v| *v != 0.0), "{name} gets a non-zero gradient");
        }
        let base = var.as_tensor().flatten_all()?.to_vec1::<f64>()?;
        for k in [0, base.len() / 2] {
            let h = 1e-6;
            let at = |delta: f64| -> anyhow::Result<f64> {
                let mut v = base.clone();
                v[k] += delta;
                var.set(&Tensor::from_vec(v, var.shape(), &dev)?)?;
                Ok(penalty()?.to_scalar::<f64>()?)
            };
            let fd = (at(h)? - at(-h)?) / (2.0 * h);
            var.set(&Tensor::from_vec(base.clone(), var.shape(), &dev)?)?;
            assert!((fd - g[k]).abs() < 1e-6 * (1.0 + fd.abs()), "{name}[{k}]: autograd {} vs FD {fd}", g[k]);
            checked += 1;
        }
    }
    assert_eq!(checked, 12);
    Ok(())
}

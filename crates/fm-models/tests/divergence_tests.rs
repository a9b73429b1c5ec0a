//! The MLP's forward-mode divergence against autograd, and the exact CNF loss's
//! gradient against finite differences (no second-order autograd involved).

use candle::{DType, Device, Tensor};
use fm_core::divergence::exact_divergence;
use fm_core::divergence::{Divergence, Probe};
use fm_core::likelihood::{
    cnf_nll_loss_exact, log_likelihood, log_likelihood_exact, log_likelihood_hutchinson_jvp,
};
use fm_core::{DivergenceField, SeededRng};
use fm_models::{Activation, MlpConfig, VelocityMlp};
use fm_solvers::{Rk4, TimeGrid};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f64> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

#[test]
fn forward_mode_divergence_equals_autograd_for_every_activation() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    for activation in
        [Activation::Elu, Activation::Silu, Activation::Selu, Activation::Relu, Activation::Tanh]
    {
        for dim in [2, 5] {
            let cfg = MlpConfig { dim, hidden: vec![16, 12, 8], activation };
            let mut rng = SeededRng::new(dim as u64);
            let (model, _vars) = VelocityMlp::init(&cfg, &mut rng, DType::F64, &dev)?;
            let x = rng.normal((7, dim), DType::F64, &dev)?;
            let t = rng.uniform(7, 0.0, 1.0, DType::F64, &dev)?;
            let (u, div) = DivergenceField::velocity_and_divergence(&model, &x, &t)?;
            let u_ref = fm_core::VelocityField::velocity(&model, &x, &t)?;
            let div_ref = exact_divergence(&model, &x, &t)?;
            assert!(max_abs_diff(&u, &u_ref)? < 1e-12, "{activation} d={dim}: velocity");
            assert!(max_abs_diff(&div, &div_ref)? < 1e-10, "{activation} d={dim}: divergence");
        }
    }
    Ok(())
}

#[test]
fn exact_likelihood_matches_the_autograd_likelihood() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mut rng = SeededRng::new(3);
    let (model, _vars) = VelocityMlp::init(&MlpConfig::guide(2), &mut rng, DType::F64, &dev)?;
    let x = rng.normal((20, 2), DType::F64, &dev)?;
    let grid = TimeGrid::uniform(1.0, 0.0, 20)?;
    let a = log_likelihood_exact(&model, &x, &Rk4, &grid)?;
    let b = log_likelihood(&model, &x, Default::default(), &Rk4, &grid, &mut rng)?;
    assert!(max_abs_diff(&a.log_p, &b.log_p)? < 1e-10);
    assert_eq!(a.nfe, 80);
    Ok(())
}

/// The graph-free Hutchinson likelihood (probes pushed forward as tangents)
/// draws the same probes and gives the same numbers as the autograd one,
/// for one and for several probes, Rademacher and Gaussian.
#[test]
fn hutchinson_jvp_likelihood_matches_the_autograd_one() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mut rng = SeededRng::new(5);
    let (model, _vars) = VelocityMlp::init(&MlpConfig::guide(3), &mut rng, DType::F64, &dev)?;
    let model = model.detached()?;
    let x = rng.normal((17, 3), DType::F64, &dev)?;
    let grid = TimeGrid::uniform(1.0, 0.0, 6)?;
    for (probe, k) in [(Probe::Rademacher, 1), (Probe::Gaussian, 3)] {
        let (mut ra, mut rb) = (SeededRng::new(9), SeededRng::new(9));
        let a = log_likelihood_hutchinson_jvp(&model, &x, probe, k, &Rk4, &grid, &mut ra)?;
        let b = log_likelihood(&model, &x, Divergence::hutchinson(probe, k), &Rk4, &grid, &mut rb)?;
        assert_eq!(ra.position(), rb.position(), "{probe:?}: same draws");
        assert!(max_abs_diff(&a.log_p, &b.log_p)? < 1e-10, "{probe:?} × {k}");
        assert_eq!(a.nfe, b.nfe);
        // An estimate, not the exact value: it must differ somewhere.
        let exact = log_likelihood_exact(&model, &x, &Rk4, &grid)?;
        assert!(max_abs_diff(&a.log_p, &exact.log_p)? > 1e-6);
    }
    Ok(())
}

#[test]
fn exact_cnf_loss_gradient_matches_finite_differences() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let cfg = MlpConfig { dim: 2, hidden: vec![8, 8], activation: Activation::Elu };
    let mut rng = SeededRng::new(11);
    let (model, varmap) = VelocityMlp::init(&cfg, &mut rng, DType::F64, &dev)?;
    let x = rng.normal((16, 2), DType::F64, &dev)?;
    let loss = cnf_nll_loss_exact(&model, &x, 3)?;
    let grads = loss.backward()?;
    let vars = varmap.data().lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    let mut checked = 0;
    for (name, var) in &vars {
        let g = grads.get(var).ok_or_else(|| anyhow::anyhow!("no gradient for {name}"))?;
        let g = g.flatten_all()?.to_vec1::<f64>()?;
        assert!(g.iter().any(|v| *v != 0.0), "{name} gets a non-zero gradient");
        let base = var.as_tensor().flatten_all()?.to_vec1::<f64>()?;
        for k in [0, base.len() / 2] {
            let h = 1e-6;
            let at = |delta: f64| -> anyhow::Result<f64> {
                let mut v = base.clone();
                v[k] += delta;
                var.set(&Tensor::from_vec(v, var.shape(), &dev)?)?;
                Ok(cnf_nll_loss_exact(&model, &x, 3)?.to_scalar::<f64>()?)
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

//! Maximum-likelihood CNF training needs second-order gradients, which
//! require `CANDLE_GRAD_DO_NOT_DETACH`: a process-wide setting, so these
//! tests live in their own test binary (each test enables it on its thread
//! before any backward pass).

mod common;

use candle::{DType, Device, Tensor};
use common::{mlp, sorted_vars};
use fm_core::divergence::{Divergence, Probe};
use fm_core::likelihood::{cnf_nll_loss, enable_second_order_gradients, log_likelihood};
use fm_core::{Result, SeededRng};
use fm_solvers::{Rk4, TimeGrid};

fn check_gradient(divergence: Divergence) -> Result<()> {
    enable_second_order_gradients()?;
    let (field, vm) = mlp(2, 8, 1.5, 21)?;
    let x1 = SeededRng::new(9).normal((6, 2), DType::F64, &Device::Cpu)?.affine(1.5, 0.3)?;
    let steps = 3;
    let loss_at = || -> Result<f64> {
        Ok(cnf_nll_loss(&field, &x1, steps, divergence, &mut SeededRng::new(4))?.to_scalar::<f64>()?)
    };
    let loss = cnf_nll_loss(&field, &x1, steps, divergence, &mut SeededRng::new(4))?;
    // The loss is the negative mean of the evaluation-mode likelihood.
    let eval = log_likelihood(
        &field,
        &x1,
        divergence,
        &Rk4,
        &TimeGrid::uniform(1.0, 0.0, steps)?,
        &mut SeededRng::new(4),
    )?;
    assert!((loss.to_scalar::<f64>()? + eval.mean_log_p()?).abs() < 1e-12);
    let grads = loss.backward()?;
    let h = 1e-5;
    let mut worst: f64 = 0.0;
    let mut checked = 0;
    for (name, var) in sorted_vars(&vm) {
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
        let g = g.flatten_all()?.to_vec1::<f64>()?;
        let orig = var.as_tensor().flatten_all()?.to_vec1::<f64>()?;
        // A few entries of every parameter.
        for k in [0, orig.len() / 2, orig.len() - 1] {
            let set = |v: f64| -> Result<()> {
                let mut w = orig.clone();
                w[k] = v;
                var.set(&Tensor::from_vec(w, var.as_tensor().shape(), &Device::Cpu)?)?;
                Ok(())
            };
            set(orig[k] + h)?;
            let lp = loss_at()?;
            set(orig[k] - h)?;
            let lm = loss_at()?;
            set(orig[k])?;
            let fd = (lp - lm) / (2.0 * h);
            let rel = (g[k] - fd).abs() / fd.abs().max(1e-3);
            worst = worst.max(rel);
            checked += 1;
            assert!(rel < 1e-5, "{name}[{k}]: autograd {} vs finite difference {fd}", g[k]);
        }
    }
    println!("{divergence:?}: {checked} gradient entries, worst relative error vs central FD {worst:e}");
    Ok(())
}

#[test]
fn cnf_loss_gradient_matches_finite_differences_exact() -> Result<()> {
    check_gradient(Divergence::Exact)
}

#[test]
fn cnf_loss_gradient_matches_finite_differences_hutchinson() -> Result<()> {
    check_gradient(Divergence::hutchinson(Probe::Gaussian, 2))
}

#[test]
fn a_few_adam_steps_lower_the_nll() -> Result<()> {
    use candle_nn::Optimizer;
    enable_second_order_gradients()?;
    let (field, vm) = mlp(2, 16, 1.0, 3)?;
    // Data: N((1, −1), diag(0.25, 0.25)).
    let x1 = SeededRng::new(1).normal((64, 2), DType::F64, &Device::Cpu)?.affine(0.5, 0.0)?;
    let x1 = x1.broadcast_add(&Tensor::new(&[1.0f64, -1.0], &Device::Cpu)?)?;
    let mut opt = candle_nn::AdamW::new(
        vm.all_vars(),
        candle_nn::ParamsAdamW { lr: 1e-2, weight_decay: 0.0, ..Default::default() },
    )?;
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..30 {
        let loss = cnf_nll_loss(&field, &x1, 4, Divergence::Exact, &mut SeededRng::new(0))?;
        last = loss.to_scalar::<f64>()?;
        first.get_or_insert(last);
        opt.backward_step(&loss)?;
    }
    let first = first.unwrap_or(f64::NAN);
    println!("NLL {first:.4} → {last:.4} after 30 AdamW steps");
    assert!(last < first - 0.3, "{first} → {last}");
    Ok(())
}

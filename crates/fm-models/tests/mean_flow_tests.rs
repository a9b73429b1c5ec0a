//! The MeanFlow MLP's forward-mode tangent against finite differences, in f64.

use candle::{DType, Device, Tensor};
use fm_core::mean_flow::{mean_flow_loss, AverageVelocityField};
use fm_core::path::AffinePath;
use fm_core::scheduler::CondOtScheduler;
use fm_core::{to_f64_vec, SeededRng, VelocityField};
use fm_models::checkpoint::ModelConfig;
use fm_models::{Activation, MeanFlowConfig, MeanFlowMlp};

#[test]
fn the_tangent_is_the_directional_derivative_in_x_s_and_t() -> anyhow::Result<()> {
    for activation in [Activation::Elu, Activation::Silu, Activation::Tanh] {
        let config = MeanFlowConfig { dim: 3, hidden: vec![16, 16], activation };
        let (net, _) = MeanFlowMlp::init(&config, &mut SeededRng::new(1), DType::F64, &Device::Cpu)?;
        let mut rng = SeededRng::new(2);
        let x = rng.normal((4, 3), DType::F64, &Device::Cpu)?;
        let s = Tensor::new(&[0.1f64, 0.3, 0.5, 0.7], &Device::Cpu)?;
        let t = Tensor::new(&[0.2f64, 0.9, 0.5, 1.0], &Device::Cpu)?;
        let dx = rng.normal((4, 3), DType::F64, &Device::Cpu)?;
        let ds = Tensor::new(&[1.0f64, 0.5, -1.0, 2.0], &Device::Cpu)?;
        let dt = Tensor::new(&[0.0f64, 1.0, 0.3, -0.5], &Device::Cpu)?;
        let (out, tangent) = net.average_velocity_and_tangent(&x, &s, &t, &dx, &ds, &dt)?;
        let h = 1e-6;
        let at = |e: f64| -> anyhow::Result<Vec<f64>> {
            let xe = (&x + (&dx * e)?)?;
            let se = (&s + (&ds * e)?)?;
            let te = (&t + (&dt * e)?)?;
            Ok(to_f64_vec(&net.average_velocity(&xe, &se, &te)?)?)
        };
        let (p, m) = (at(h)?, at(-h)?);
        for ((a, b), c) in to_f64_vec(&tangent)?.iter().zip(&p).zip(&m) {
            let fd = (b - c) / (2.0 * h);
            assert!((a - fd).abs() < 1e-7 * (1.0 + fd.abs()), "{activation:?}: {a} vs {fd}");
        }
        assert_eq!(to_f64_vec(&out)?, to_f64_vec(&net.average_velocity(&x, &s, &t)?)?);
        // The instantaneous velocity is ū(x, t, t).
        assert_eq!(to_f64_vec(&net.velocity(&x, &t)?)?, to_f64_vec(&net.average_velocity(&x, &t, &t)?)?);
    }
    Ok(())
}

#[test]
fn the_loss_trains_and_the_configuration_is_checked() -> anyhow::Result<()> {
    let config = MeanFlowConfig { dim: 2, hidden: vec![32, 32], activation: Activation::Silu };
    assert_eq!(config.num_parameters(), (4 * 32 + 32) + (32 * 32 + 32) + (32 * 2 + 2));
    let (net, varmap) = MeanFlowMlp::init(&config, &mut SeededRng::new(0), DType::F64, &Device::Cpu)?;
    let mut rng = SeededRng::new(5);
    let x0 = rng.normal((64, 2), DType::F64, &Device::Cpu)?;
    let x1 = rng.normal((64, 2), DType::F64, &Device::Cpu)?.affine(0.1, 2.0)?;
    let s = Tensor::full(0.2f64, 64, &Device::Cpu)?;
    let t = Tensor::full(0.8f64, 64, &Device::Cpu)?;
    let path = AffinePath::new(CondOtScheduler);
    let loss = mean_flow_loss(&net, &path, &x0, &x1, &s, &t)?;
    let grads = loss.backward()?;
    // Every weight gets a gradient (the target is detached, the output is not).
    assert!(varmap.all_vars().iter().all(|v| grads.get(v).is_some()));
    let bad = ModelConfig::MeanFlow(MeanFlowConfig { dim: 0, hidden: vec![8], activation: Activation::Elu });
    assert!(bad.validate().unwrap_err().to_string().contains("dim"));
    let bad = ModelConfig::MeanFlow(MeanFlowConfig { dim: 2, hidden: vec![], activation: Activation::Elu });
    assert!(bad.validate().unwrap_err().to_string().contains("hidden"));
    Ok(())
}

/// Records the gradient of every variable instead of stepping.
struct Capture<'a>(&'a [candle::Var], Vec<Option<Tensor>>);

impl fm_models::optim::GradientStep for Capture<'_> {
    fn step_with_grads(&mut self, grad_of: &dyn Fn(&Tensor) -> Option<Tensor>) -> fm_models::Result<()> {
        self.1 = self.0.iter().map(|v| grad_of(v.as_tensor())).collect();
        Ok(())
    }
}

#[test]
fn the_explicit_step_has_the_autograd_loss_and_gradients() -> anyhow::Result<()> {
    for activation in [Activation::Silu, Activation::Elu, Activation::Tanh] {
        let config = MeanFlowConfig { dim: 3, hidden: vec![24, 24], activation };
        let (net, varmap) = MeanFlowMlp::init(&config, &mut SeededRng::new(3), DType::F64, &Device::Cpu)?;
        let mut rng = SeededRng::new(4);
        let x0 = rng.normal((32, 3), DType::F64, &Device::Cpu)?;
        let x1 = rng.normal((32, 3), DType::F64, &Device::Cpu)?;
        let (s, t) = fm_core::mean_flow::draw_time_pairs(32, 0.5, &mut rng, DType::F64, &Device::Cpu)?;
        let path = AffinePath::new(CondOtScheduler);
        let loss = mean_flow_loss(&net, &path, &x0, &x1, &s, &t)?;
        let grads = loss.backward()?;
        let vars = varmap.all_vars();
        let mut capture = Capture(&vars, Vec::new());
        let explicit = fm_models::mean_flow_train_step(&net, &path, &mut capture, &x0, &x1, &s, &t)?;
        assert!((explicit - loss.to_scalar::<f64>()?).abs() < 1e-12, "{activation:?}");
        for (v, g) in vars.iter().zip(&capture.1) {
            let want = to_f64_vec(grads.get(v).expect("autograd gradient"))?;
            let got = to_f64_vec(g.as_ref().expect("explicit gradient"))?;
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-10 * (1.0 + b.abs()), "{activation:?}: {a} vs {b}");
            }
        }
    }
    Ok(())
}

//! The CFM training step of a [`VelocityMlp`] with an explicit backward pass.
//!
//! candle's autograd allocates a zero-filled buffer for every gradient it
//! accumulates, adds the incoming gradient into it, and reaches the weights'
//! gradients through transposes. For an MLP the backward pass is short enough
//! to write out: `dW = dzᵀ h`, `db = Σ_rows dz`, `dh = dz W`, `dz = dh ⊙ σ'(z)`
//! (fused), with no graph, no zero buffers and contiguous weight gradients.
//! The step draws its randomness exactly as [`fm_core::loss::cfm_batch_loss`]
//! does and minimises the same loss; the gradients agree with autograd's to
//! rounding (tested).

use candle::{DType, Tensor};
use fm_core::loss::draw_source_and_time;
use fm_core::path::{AffinePath, PathSample};
use fm_core::scheduler::Scheduler;
use fm_core::SeededRng;

use crate::optim::GradientStep;
use crate::{Activation, Error, Result, VelocityMlp};

/// The CFM loss of one batch and the gradient of every weight and bias.
#[derive(Debug)]
pub struct MlpGradients {
    /// The loss `mean((u_θ(x_t, t) − target)²)`.
    pub loss: f64,
    /// `(weight, d loss/d weight)` and `(bias, d loss/d bias)` for every layer,
    /// keyed by the model's own parameter tensors.
    pub grads: Vec<(Tensor, Tensor)>,
}

impl VelocityMlp {
    /// The mean squared error of the network on `input` against `target`
    /// and its gradients by an explicit backward pass (no autograd graph).
    ///
    /// # Shapes
    /// - `input`: `(b, d + 1)` (`concat(t, x)`), `target`: `(b, d)`
    ///
    /// f32 on the CPU takes the blocked, multi-threaded path of
    /// `mlp::backward_blocked` (same loss and gradients up to f32 rounding).
    pub fn mse_gradients(&self, input: &Tensor, target: &Tensor) -> Result<MlpGradients> {
        mse_gradients(self.layers(), self.config().activation, input, target)
    }
}

/// [`VelocityMlp::mse_gradients`] for any stack of linear `layers` with `act`
/// between them (shared with the MeanFlow MLP).
pub(crate) fn mse_gradients(
    layers: &[candle_nn::Linear],
    act: Activation,
    input: &Tensor,
    target: &Tensor,
) -> Result<MlpGradients> {
    if let Some(g) = super::backward_blocked::mse_gradients_blocked(layers, act, input, target)? {
        return Ok(g);
    }
    let last = layers.len() - 1;
    // Forward, keeping each layer's input h and pre-activation z.
    let mut inputs = Vec::with_capacity(layers.len());
    let mut pres = Vec::with_capacity(layers.len());
    let mut h = input.detach();
    for (k, layer) in layers.iter().enumerate() {
        let w = layer.weight().detach();
        let mut z = h.matmul(&w.t()?)?;
        if let Some(b) = layer.bias() {
            z = z.broadcast_add(&b.detach())?;
        }
        inputs.push(h);
        h = if k < last { activate(act, &z)? } else { z.clone() };
        pres.push(z);
    }
    let out = h;
    let diff = (out - target.detach())?;
    let n = diff.elem_count();
    let loss = diff.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()? / n as f64;
    // Backward.
    let mut dz = (diff * (2.0 / n as f64))?;
    let mut grads = Vec::with_capacity(2 * layers.len());
    for k in (0..layers.len()).rev() {
        let layer = &layers[k];
        let dw = dz.t()?.matmul(&inputs[k])?;
        grads.push((layer.weight().clone(), dw));
        if let Some(b) = layer.bias() {
            grads.push((b.clone(), dz.sum(0)?));
        }
        if k > 0 {
            let dh = dz.matmul(&layer.weight().detach())?;
            dz = activation_backward(act, &pres[k - 1], &inputs[k], &dh)?;
        }
    }
    Ok(MlpGradients { loss, grads })
}

fn activate(act: Activation, z: &Tensor) -> Result<Tensor> {
    act.forward(z)
}

/// `dh ⊙ σ'(z)`, given `h = σ(z)`.
pub(crate) fn activation_backward(act: Activation, z: &Tensor, h: &Tensor, dh: &Tensor) -> Result<Tensor> {
    Ok(match act {
        Activation::Silu => crate::ops::silu_grad(z, h, dh)?,
        Activation::Elu => crate::ops::elu_grad(z, h, dh, 1.0)?,
        _ => (dh * act.derivative(z)?)?,
    })
}

/// One CFM step of `model` with `opt` (Adam, or Adam with warm-up/clipping/EMA) on the data batch `x1`: the same random
/// draws (`t`, then `x₀`, from `rng`) and loss as [`fm_core::loss::cfm_batch_loss`],
/// with the gradients of [`VelocityMlp::mse_gradients`]. Returns the batch loss.
///
/// # Shapes
/// - `x1`: `(b, d)`
///
/// # Errors
/// [`Error::Core`] naming `loss` if the loss is NaN or infinite (before the
/// weights are touched); tensor errors.
pub fn mlp_cfm_train_step<S: Scheduler, O: GradientStep + ?Sized>(
    model: &VelocityMlp,
    path: &AffinePath<S>,
    opt: &mut O,
    x1: &Tensor,
    rng: &mut SeededRng,
) -> Result<f64> {
    let (x0, t) = draw_source_and_time(x1, rng)?;
    let ps = path.sample(&x0, x1, &t)?;
    regression_step(model, &t, &ps, opt)
}

/// One CFM step on given couplings `(x₀, x₁)` (reflow's pairs): `t ~ U(0, 1)`
/// from `rng`, then the explicit-backward regression of
/// [`mlp_cfm_train_step`]. Returns the batch loss.
///
/// # Shapes
/// - `x0`, `x1`: `(b, d)`
///
/// # Errors
/// As [`mlp_cfm_train_step`].
pub fn mlp_coupled_cfm_train_step<S: Scheduler, O: GradientStep + ?Sized>(
    model: &VelocityMlp,
    path: &AffinePath<S>,
    opt: &mut O,
    x0: &Tensor,
    x1: &Tensor,
    rng: &mut SeededRng,
) -> Result<f64> {
    let t = rng.uniform(x1.dim(0)?, 0.0, 1.0, x1.dtype(), x1.device())?;
    let ps = path.sample(x0, x1, &t)?;
    regression_step(model, &t, &ps, opt)
}

/// One step of **one-step distillation** on given couplings `(x₀, x₁)` (the
/// pairs of a k-rectified flow, Liu et al. 2023 §3.2): the regression of
/// `u_θ(x₀, 0)` on `x₁ − x₀`, so that one Euler step `x₀ + u_θ(x₀, 0)`
/// reproduces the pair's `x₁`, whatever the path. Returns the batch loss.
///
/// # Shapes
/// - `x0`, `x1`: `(b, d)`
///
/// # Errors
/// As [`mlp_cfm_train_step`].
pub fn mlp_one_step_distill_train_step<O: GradientStep + ?Sized>(
    model: &VelocityMlp,
    opt: &mut O,
    x0: &Tensor,
    x1: &Tensor,
) -> Result<f64> {
    let t = Tensor::zeros(x1.dim(0)?, x1.dtype(), x1.device())?;
    let ps = PathSample { x_t: x0.clone(), dx_t: (x1 - x0)? };
    regression_step(model, &t, &ps, opt)
}

/// One explicit-backward optimiser step regressing `u_θ(x_t, t)` on `ẋ_t`
/// of a sampled path; the batch loss. Shared by the CFM and OT-CFM steps.
///
/// # Shapes
/// - `t`: `(b,)`; `ps.x_t`, `ps.dx_t`: `(b, d)`
///
/// # Errors
/// [`Error::Core`] naming `loss` if the loss is NaN or infinite (before the
/// weights are touched); tensor errors.
pub(crate) fn regression_step<O: GradientStep + ?Sized>(
    model: &VelocityMlp,
    t: &Tensor,
    ps: &PathSample,
    opt: &mut O,
) -> Result<f64> {
    let g = regression_gradients(model, t, ps)?;
    apply_gradients(&g, opt)?;
    Ok(g.loss)
}

/// The loss and gradients of [`regression_step`], checked finite, before
/// any weight is touched.
pub(crate) fn regression_gradients(model: &VelocityMlp, t: &Tensor, ps: &PathSample) -> Result<MlpGradients> {
    let b = ps.x_t.dim(0)?;
    let input = Tensor::cat(&[&t.to_dtype(ps.x_t.dtype())?.reshape((b, 1))?, &ps.x_t], 1)?;
    let g = model.mse_gradients(&input, &ps.dx_t)?;
    if !g.loss.is_finite() {
        return Err(Error::Core(fm_core::Error::invalid(
            "loss",
            format!("the training loss became {}; lower the learning rate", g.loss),
        )));
    }
    Ok(g)
}

/// The optimiser step of [`regression_step`] with the gradients `g`.
pub(crate) fn apply_gradients<O: GradientStep + ?Sized>(g: &MlpGradients, opt: &mut O) -> Result<()> {
    opt.step_with_grads(&|var| g.grads.iter().find(|(p, _)| p.id() == var.id()).map(|(_, d)| d.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MlpConfig;
    use candle::Device;
    use fm_core::scheduler::SchedulerKind;

    /// The explicit gradients equal autograd's (f64, to rounding) for every
    /// parameter, for each activation, fused or not.
    #[test]
    fn gradients_match_autograd() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        for act in [Activation::Silu, Activation::Elu, Activation::Selu, Activation::Tanh, Activation::Relu] {
            let config = MlpConfig { dim: 2, hidden: vec![16, 8], activation: act };
            let (model, varmap) = VelocityMlp::init(&config, &mut SeededRng::new(3), DType::F64, &dev)?;
            let mut rng = SeededRng::new(5);
            let input = rng.normal((33, 3), DType::F64, &dev)?;
            let target = rng.normal((33, 2), DType::F64, &dev)?;
            let ours = model.mse_gradients(&input, &target)?;
            let loss = (model.forward_raw(&input)? - &target)?.sqr()?.mean_all()?;
            assert!((loss.to_scalar::<f64>()? - ours.loss).abs() < 1e-12);
            let auto = loss.backward()?;
            assert_eq!(ours.grads.len(), varmap.all_vars().len());
            for var in varmap.all_vars() {
                let (_, g) = ours
                    .grads
                    .iter()
                    .find(|(p, _)| p.id() == var.id())
                    .expect("every parameter has a gradient");
                let a = auto.get(&var).expect("autograd gradient");
                let err = (g - a)?.abs()?.max_all()?.to_scalar::<f64>()?;
                let scale = a.abs()?.max_all()?.to_scalar::<f64>()?;
                assert!(err <= 1e-12 * scale.max(1.0), "{act}: {err} vs scale {scale}");
                assert!(scale > 0.0 || act == Activation::Relu, "{act}: zero gradient");
            }
        }
        Ok(())
    }

    /// The step draws the same randomness as fm-core's generic step and
    /// lowers the loss like it.
    #[test]
    fn step_consumes_rng_like_the_generic_step() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let config = MlpConfig::guide(2);
        let path = AffinePath::new(SchedulerKind::CondOt);
        let x1 = SeededRng::new(1).normal((64, 2), DType::F32, &dev)?;
        let (a, va) = VelocityMlp::init(&config, &mut SeededRng::new(0), DType::F32, &dev)?;
        let (b, vb) = VelocityMlp::init(&config, &mut SeededRng::new(0), DType::F32, &dev)?;
        let mut oa = crate::optim::Adam::new(&va, crate::optim::AdamParams::with_lr(1e-2))?;
        let mut ob = crate::optim::Adam::new(&vb, crate::optim::AdamParams::with_lr(1e-2))?;
        let (mut ra, mut rb) = (SeededRng::new(7), SeededRng::new(7));
        let mut losses = Vec::new();
        for _ in 0..40 {
            let la = mlp_cfm_train_step(&a, &path, &mut oa, &x1, &mut ra)?;
            let loss = fm_core::loss::cfm_batch_loss(&b, &path, &x1, &mut rb)?;
            let lb = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            ob.backward_step(&loss)?;
            assert!((la - lb).abs() <= 1e-3 * lb.abs().max(1.0), "{la} vs {lb}");
            losses.push(la);
        }
        assert_eq!(ra.position(), rb.position());
        let (first, last) = (losses[..5].iter().sum::<f64>(), losses[35..].iter().sum::<f64>());
        assert!(last < first, "{first} → {last}");
        Ok(())
    }
}

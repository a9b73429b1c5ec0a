//! Adam with named, saveable state, so a resumed run continues bit-identically.
//!
//! The update is candle's `AdamW` operation for operation (PyTorch's Adam when
//! `weight_decay = 0`), but the moments and the step count can be exported as
//! named tensors and loaded back, which `candle_nn::AdamW` does not allow.

use std::collections::BTreeMap;

use candle::backprop::GradStore;
use candle::{DType, Tensor, Var};
use candle_nn::VarMap;

use crate::fused_adam::{adam_step_cpu, AdamCoefficients};
use crate::{Error, Result};

/// Adam's hyper-parameters (defaults: PyTorch's, with no weight decay).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamParams {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to `√v̂` in the denominator.
    pub eps: f64,
    /// Decoupled weight decay (AdamW); 0 gives Adam.
    pub weight_decay: f64,
}

impl Default for AdamParams {
    fn default() -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

impl AdamParams {
    /// The defaults with learning rate `lr`.
    pub fn with_lr(lr: f64) -> Self {
        Self { lr, ..Self::default() }
    }
}

struct Slot {
    name: String,
    var: Var,
    m: Var,
    v: Var,
}

/// Adam over the named variables of a [`VarMap`].
///
/// ```
/// use candle::{DType, Device, Tensor};
/// use candle_nn::{Init, VarMap};
/// use fm_models::optim::{Adam, AdamParams};
///
/// # fn main() -> anyhow::Result<()> {
/// let varmap = VarMap::new();
/// let w = varmap.get(2, "w", Init::Const(1.0), DType::F32, &Device::Cpu)?;
/// let mut opt = Adam::new(&varmap, AdamParams::with_lr(0.1))?;
/// opt.backward_step(&w.sqr()?.sum_all()?)?;
/// // Adam's first step moves every coordinate by lr against the gradient's sign.
/// assert!((w.to_vec1::<f32>()?[0] - 0.9).abs() < 1e-6);
/// let state = opt.state_tensors()?; // moments and step, for a checkpoint
/// assert_eq!(state.len(), 3);
/// # Ok(())
/// # }
/// ```
pub struct Adam {
    params: AdamParams,
    slots: Vec<Slot>,
    step: u64,
}

impl Adam {
    /// Adam over every float variable of `varmap`, in name order.
    pub fn new(varmap: &VarMap, params: AdamParams) -> Result<Self> {
        check_params(&params)?;
        let data =
            varmap.data().lock().map_err(|_| Error::Optimizer("the variable map is poisoned".into()))?;
        let named: BTreeMap<&String, &Var> = data.iter().collect();
        let mut slots = Vec::with_capacity(named.len());
        for (name, var) in named {
            if !var.dtype().is_float() {
                continue;
            }
            let m = Var::zeros(var.shape(), var.dtype(), var.device())?;
            let v = Var::zeros(var.shape(), var.dtype(), var.device())?;
            slots.push(Slot { name: name.clone(), var: var.clone(), m, v });
        }
        Ok(Self { params, slots, step: 0 })
    }

    /// The hyper-parameters.
    pub fn params(&self) -> AdamParams {
        self.params
    }

    /// Changes the learning rate (for schedules).
    pub fn set_lr(&mut self, lr: f64) {
        self.params.lr = lr;
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// One update from the gradients in `grads`; variables without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step_scaled(grads, 1.0)
    }

    /// One update from the gradients in `grads` multiplied by `scale` (gradient
    /// clipping); `scale = 1` is [`Adam::step`] exactly.
    pub fn step_scaled(&mut self, grads: &GradStore, scale: f64) -> Result<()> {
        self.step_scaled_with(|var| grads.get(var).cloned(), scale)
    }

    /// One update with the gradients that `grad_of` returns for each variable
    /// (e.g. from an explicit backward pass, without a [`GradStore`]);
    /// variables for which it returns `None` are left alone.
    pub fn step_with(&mut self, grad_of: impl Fn(&Tensor) -> Option<Tensor>) -> Result<()> {
        self.step_scaled_with(grad_of, 1.0)
    }

    /// [`Adam::step_with`] with every gradient multiplied by `scale` (clipping).
    pub fn step_scaled_with(
        &mut self,
        grad_of: impl Fn(&Tensor) -> Option<Tensor>,
        scale: f64,
    ) -> Result<()> {
        self.step += 1;
        let AdamParams { lr, beta1, beta2, eps, weight_decay } = self.params;
        let t = i32::try_from(self.step).unwrap_or(i32::MAX);
        let scale_m = 1.0 / (1.0 - beta1.powi(t));
        let scale_v = 1.0 / (1.0 - beta2.powi(t));
        let coefficients = AdamCoefficients { beta1, beta2, eps, lr, weight_decay, scale_m, scale_v };
        for s in &self.slots {
            let Some(g) = grad_of(s.var.as_tensor()) else { continue };
            let g = if scale == 1.0 { g } else { (g * scale)? };
            let g = &g;
            // One in-place pass on the CPU, bit-identical to the ops below.
            if adam_step_cpu(s.var.as_tensor(), s.m.as_tensor(), s.v.as_tensor(), g, coefficients)? {
                continue;
            }
            let next_m = ((s.m.as_tensor() * beta1)? + (g * (1.0 - beta1))?)?;
            let next_v = ((s.v.as_tensor() * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
            let m_hat = (&next_m * scale_m)?;
            let v_hat = (&next_v * scale_v)?;
            let theta = if weight_decay == 0.0 {
                s.var.as_tensor().clone()
            } else {
                (s.var.as_tensor() * (1.0 - lr * weight_decay))?
            };
            let update = ((m_hat / (v_hat.sqrt()? + eps)?)? * lr)?;
            s.m.set(&next_m)?;
            s.v.set(&next_v)?;
            s.var.set(&(theta - update)?)?;
        }
        Ok(())
    }

    /// Backpropagates `loss` and takes one step.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    /// The optimiser state as named tensors: `adam.m.NAME`, `adam.v.NAME`, and
    /// `adam.step` (a one-element `i64` tensor).
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(2 * self.slots.len() + 1);
        for s in &self.slots {
            out.push((format!("adam.m.{}", s.name), s.m.as_tensor().copy()?));
            out.push((format!("adam.v.{}", s.name), s.v.as_tensor().copy()?));
        }
        let device = self.slots.first().map(|s| s.var.device().clone()).unwrap_or(candle::Device::Cpu);
        out.push(("adam.step".into(), Tensor::new(&[self.step as i64], &device)?));
        Ok(out)
    }

    /// Restores the state written by [`Adam::state_tensors`]; every moment must be
    /// present with its variable's shape.
    pub fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        let step = tensors
            .get("adam.step")
            .ok_or_else(|| Error::Optimizer("state: missing `adam.step`".into()))?
            .to_dtype(DType::I64)?
            .flatten_all()?
            .to_vec1::<i64>()?;
        let step = match step.as_slice() {
            [s] if *s >= 0 => *s as u64,
            _ => return Err(Error::Optimizer("state: `adam.step` must be one non-negative count".into())),
        };
        for s in &self.slots {
            for (kind, dst) in [("m", &s.m), ("v", &s.v)] {
                let key = format!("adam.{kind}.{}", s.name);
                let src =
                    tensors.get(&key).ok_or_else(|| Error::Optimizer(format!("state: missing `{key}`")))?;
                if src.dims() != dst.dims() {
                    return Err(Error::Optimizer(format!(
                        "state: `{key}` has shape {:?}, the model needs {:?}",
                        src.dims(),
                        dst.dims()
                    )));
                }
                dst.set(&src.to_dtype(dst.dtype())?.to_device(dst.device())?)?;
            }
        }
        self.step = step;
        Ok(())
    }
}

impl candle_nn::Optimizer for Adam {
    type Config = AdamParams;

    /// Unnamed variables are named by position (`0`, `1`, …); prefer [`Adam::new`].
    fn new(vars: Vec<Var>, params: AdamParams) -> candle::Result<Self> {
        check_params(&params).map_err(candle::Error::wrap)?;
        let mut slots = Vec::with_capacity(vars.len());
        for (i, var) in vars.into_iter().filter(|v| v.dtype().is_float()).enumerate() {
            let m = Var::zeros(var.shape(), var.dtype(), var.device())?;
            let v = Var::zeros(var.shape(), var.dtype(), var.device())?;
            slots.push(Slot { name: i.to_string(), var, m, v });
        }
        Ok(Self { params, slots, step: 0 })
    }

    fn step(&mut self, grads: &GradStore) -> candle::Result<()> {
        Adam::step(self, grads).map_err(candle::Error::wrap)
    }

    fn learning_rate(&self) -> f64 {
        self.params.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.params.lr = lr;
    }
}

fn check_params(p: &AdamParams) -> Result<()> {
    let ok = p.lr.is_finite()
        && p.lr > 0.0
        && (0.0..1.0).contains(&p.beta1)
        && (0.0..1.0).contains(&p.beta2)
        && p.eps.is_finite()
        && p.eps > 0.0
        && p.weight_decay.is_finite()
        && p.weight_decay >= 0.0;
    if ok {
        Ok(())
    } else {
        Err(Error::Optimizer(format!(
            "Adam needs lr > 0, 0 ≤ beta1, beta2 < 1, eps > 0 and weight_decay ≥ 0; got {p:?}"
        )))
    }
}

/// An optimiser that takes a step from per-variable gradients given by a
/// function: [`Adam`] and [`crate::training::TrainingOptimizer`], for training
/// steps with an explicit backward pass (no [`GradStore`]).
pub trait GradientStep {
    /// One update; `grad_of` returns each variable's gradient, `None` to leave it alone.
    fn step_with_grads(&mut self, grad_of: &dyn Fn(&Tensor) -> Option<Tensor>) -> Result<()>;
}

impl GradientStep for Adam {
    fn step_with_grads(&mut self, grad_of: &dyn Fn(&Tensor) -> Option<Tensor>) -> Result<()> {
        self.step_with(grad_of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::Device;
    use candle_nn::{Init, Optimizer, ParamsAdamW};

    fn quadratic(w: &Var) -> candle::Result<Tensor> {
        let target = Tensor::new(&[0.5f32, -2.0, 3.0], w.device())?;
        (w.as_tensor() - target)?.sqr()?.sum_all()
    }

    #[test]
    fn matches_candle_adamw_bit_for_bit() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let (a, b) = (VarMap::new(), VarMap::new());
        let wa = a.get(3, "w", Init::Const(1.0), DType::F32, &dev)?;
        let wb = b.get(3, "w", Init::Const(1.0), DType::F32, &dev)?;
        let mut ours = Adam::new(&a, AdamParams::with_lr(0.05))?;
        let mut theirs = candle_nn::AdamW::new(
            b.all_vars(),
            ParamsAdamW { lr: 0.05, weight_decay: 0.0, ..Default::default() },
        )?;
        let (va, vb) = (a.data().lock().unwrap()["w"].clone(), b.data().lock().unwrap()["w"].clone());
        for _ in 0..20 {
            ours.backward_step(&quadratic(&va)?)?;
            theirs.backward_step(&quadratic(&vb)?)?;
        }
        assert_eq!(wa.to_vec1::<f32>()?, wb.to_vec1::<f32>()?);
        Ok(())
    }

    /// The fused in-place update against candle's `AdamW` op by op, with weight
    /// decay, in f32 and f64, on a parameter with mixed-sign gradients and zeros.
    #[test]
    fn fused_update_matches_candle_adamw_with_weight_decay() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::F64] {
            let init: Vec<f64> =
                (0..37).map(|i| ((i as f64) * 0.61).sin() * if i % 5 == 0 { 0.0 } else { 1.0 }).collect();
            let target =
                Tensor::from_vec((0..37).map(|i| (i as f64 * 1.3).cos()).collect::<Vec<_>>(), 37, &dev)?
                    .to_dtype(dtype)?;
            let (a, b) = (VarMap::new(), VarMap::new());
            for map in [&a, &b] {
                let t = Tensor::from_vec(init.clone(), 37, &dev)?.to_dtype(dtype)?;
                map.data().lock().unwrap().insert("w".into(), Var::from_tensor(&t)?);
            }
            let params = AdamParams { lr: 0.03, weight_decay: 0.01, ..Default::default() };
            let mut ours = Adam::new(&a, params)?;
            let mut theirs = candle_nn::AdamW::new(
                b.all_vars(),
                ParamsAdamW { lr: 0.03, weight_decay: 0.01, ..Default::default() },
            )?;
            let (va, vb) = (a.data().lock().unwrap()["w"].clone(), b.data().lock().unwrap()["w"].clone());
            let loss =
                |w: &Var| -> candle::Result<Tensor> { (w.as_tensor() - &target)?.powf(4.0)?.sum_all() };
            for _ in 0..25 {
                ours.backward_step(&loss(&va)?)?;
                theirs.backward_step(&loss(&vb)?)?;
            }
            let (x, y) =
                (va.to_dtype(DType::F64)?.to_vec1::<f64>()?, vb.to_dtype(DType::F64)?.to_vec1::<f64>()?);
            assert_eq!(x, y, "{dtype:?}");
            assert_ne!(x, init, "{dtype:?}: the weights must have moved");
        }
        Ok(())
    }

    #[test]
    fn saved_state_resumes_identically() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let full = VarMap::new();
        full.get(3, "w", Init::Const(1.0), DType::F32, &dev)?;
        let w_full = full.data().lock().unwrap()["w"].clone();
        let mut opt = Adam::new(&full, AdamParams::with_lr(0.05))?;
        for _ in 0..10 {
            opt.backward_step(&quadratic(&w_full)?)?;
        }
        let state: BTreeMap<String, Tensor> = opt.state_tensors()?.into_iter().collect();
        let snapshot = w_full.as_tensor().copy()?;
        for _ in 0..10 {
            opt.backward_step(&quadratic(&w_full)?)?;
        }

        let resumed = VarMap::new();
        resumed.get(3, "w", Init::Const(0.0), DType::F32, &dev)?;
        let w_res = resumed.data().lock().unwrap()["w"].clone();
        w_res.set(&snapshot)?;
        let mut opt2 = Adam::new(&resumed, AdamParams::with_lr(0.05))?;
        opt2.load_state(&state)?;
        assert_eq!(opt2.step_count(), 10);
        for _ in 0..10 {
            opt2.backward_step(&quadratic(&w_res)?)?;
        }
        assert_eq!(w_full.to_vec1::<f32>()?, w_res.to_vec1::<f32>()?);

        let mut missing = state.clone();
        missing.remove("adam.v.w");
        let e = opt2.load_state(&missing).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("adam.v.w"), "{e}");
        Ok(())
    }

    #[test]
    fn rejects_nonsensical_hyper_parameters() {
        let varmap = VarMap::new();
        for p in [
            AdamParams::with_lr(0.0),
            AdamParams::with_lr(f64::NAN),
            AdamParams { beta1: 1.0, ..Default::default() },
            AdamParams { eps: 0.0, ..Default::default() },
        ] {
            assert!(Adam::new(&varmap, p).is_err(), "{p:?}");
        }
    }

    #[test]
    fn implements_candle_optimizer() -> anyhow::Result<()> {
        let varmap = VarMap::new();
        let w = varmap.get(3, "w", Init::Const(1.0), DType::F32, &Device::Cpu)?;
        let mut opt = <Adam as Optimizer>::new(varmap.all_vars(), AdamParams::with_lr(0.1))?;
        let before = w.to_vec1::<f32>()?;
        let var = varmap.data().lock().unwrap()["w"].clone();
        Optimizer::backward_step(&mut opt, &quadratic(&var)?)?;
        assert_ne!(before, w.to_vec1::<f32>()?);
        assert_eq!(opt.state_tensors()?.len(), 3);
        Ok(())
    }
}

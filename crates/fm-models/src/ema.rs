//! An exponential moving average (EMA) of a model's weights.
//!
//! After every optimiser step, `θ̄ ← d θ̄ + (1 − d) θ` with
//! `d = min(decay, (1 + n) / (10 + n))`, `n` the number of updates so far
//! (the usual warm-up of the decay, so that short runs are not dominated by
//! the initial weights; torchcfm applies `decay` from the first step). The
//! average starts from the initial weights and is saved with a run, so a
//! resumed run continues it bit-identically.
//!
//! ```
//! use candle::{DType, Device, Tensor};
//! use candle_nn::{Init, VarMap};
//! use fm_models::ema::Ema;
//! # fn main() -> anyhow::Result<()> {
//! let varmap = VarMap::new();
//! let w = varmap.get(2, "w", Init::Const(0.0), DType::F32, &Device::Cpu)?;
//! let mut ema = Ema::new(&varmap, 0.9)?;
//! varmap.data().lock().unwrap()["w"].set(&Tensor::new(&[1.0f32, 1.0], &Device::Cpu)?)?;
//! ema.update()?; // n = 0: d = min(0.9, 1/10) = 0.1
//! let avg = ema.tensors()?[0].1.to_vec1::<f32>()?;
//! assert!((avg[0] - 0.9).abs() < 1e-6);
//! # let _ = w;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;

use candle::{DType, Tensor, Var};
use candle_nn::VarMap;

use crate::{Error, Result};

/// The EMA of the float variables of a [`VarMap`], by name.
#[derive(Debug)]
pub struct Ema {
    decay: f64,
    updates: u64,
    slots: Vec<(String, Var, Tensor)>,
}

impl Ema {
    /// An average of `varmap`'s variables (in name order), starting at their current values.
    pub fn new(varmap: &VarMap, decay: f64) -> Result<Self> {
        if !(decay.is_finite() && (0.0..1.0).contains(&decay)) {
            return Err(Error::Optimizer(format!("--ema-decay must lie in [0, 1), got {decay}")));
        }
        let data =
            varmap.data().lock().map_err(|_| Error::Optimizer("the variable map is poisoned".into()))?;
        let named: BTreeMap<&String, &Var> = data.iter().collect();
        let mut slots = Vec::with_capacity(named.len());
        for (name, var) in named {
            if var.dtype().is_float() {
                slots.push((name.clone(), var.clone(), var.as_tensor().copy()?.detach()));
            }
        }
        Ok(Self { decay, updates: 0, slots })
    }

    /// The configured decay.
    pub fn decay(&self) -> f64 {
        self.decay
    }

    /// Updates taken so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The decay of the next update, `min(decay, (1 + n) / (10 + n))`.
    pub fn current_decay(&self) -> f64 {
        let n = self.updates as f64;
        self.decay.min((1.0 + n) / (10.0 + n))
    }

    /// One update towards the variables' current values.
    pub fn update(&mut self) -> Result<()> {
        let d = self.current_decay();
        for (_, var, avg) in &mut self.slots {
            // Detached: an average that kept its op history would hold every
            // earlier average in memory (0.7 MB a step for a 45k-parameter U-Net).
            *avg = ((&*avg * d)? + (var.as_tensor().detach() * (1.0 - d))?)?.detach();
        }
        self.updates += 1;
        Ok(())
    }

    /// The averaged weights, sorted by name (what a checkpoint's `model.safetensors` holds).
    pub fn tensors(&self) -> Result<Vec<(String, Tensor)>> {
        Ok(self.slots.iter().map(|(n, _, a)| (n.clone(), a.clone())).collect())
    }

    /// The state as named tensors: `ema.NAME` and `ema.updates` (one `i64`).
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out: Vec<(String, Tensor)> =
            self.slots.iter().map(|(n, _, a)| (format!("ema.{n}"), a.clone())).collect();
        let device = self.slots.first().map(|s| s.1.device().clone()).unwrap_or(candle::Device::Cpu);
        out.push(("ema.updates".into(), Tensor::new(&[self.updates as i64], &device)?));
        Ok(out)
    }

    /// Restores a state written by [`Ema::state_tensors`].
    pub fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        let missing = |k: &str| Error::Optimizer(format!("EMA state: missing `{k}`"));
        let n = tensors.get("ema.updates").ok_or_else(|| missing("ema.updates"))?;
        let n = n.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()?;
        let n = match n.as_slice() {
            [v] if *v >= 0 => *v as u64,
            _ => {
                return Err(Error::Optimizer(
                    "EMA state: `ema.updates` must be one non-negative count".into(),
                ))
            }
        };
        for (name, var, avg) in &mut self.slots {
            let key = format!("ema.{name}");
            let t = tensors.get(&key).ok_or_else(|| missing(&key))?;
            if t.dims() != var.dims() {
                return Err(Error::Optimizer(format!(
                    "EMA state: `{key}` has shape {:?}, the model needs {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            *avg = t.to_dtype(var.dtype())?.to_device(var.device())?;
        }
        self.updates = n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle::{DType, Device};
    use candle_nn::Init;

    /// The average holds values, not a graph: no op history links one
    /// update's tensors to the previous ones (which would keep them all alive).
    #[test]
    fn the_average_keeps_no_op_history() -> Result<()> {
        let vm = VarMap::new();
        vm.get(4, "w", Init::Const(1.0), DType::F32, &Device::Cpu)?;
        let mut ema = Ema::new(&vm, 0.9)?;
        let var = vm.data().lock().map_err(|_| Error::Optimizer("lock".into()))?["w"].clone();
        for k in 1..=5 {
            var.set(&Tensor::full(k as f32, 4, &Device::Cpu)?)?;
            ema.update()?;
        }
        let t = ema.tensors()?;
        assert!(t.iter().all(|(_, a)| !a.track_op()), "the average tracks ops");
        // The weights went 1, 2, …, 5; (1 + n)/(10 + n) caps the decay early on,
        // so the average followed them part of the way.
        let v = t[0].1.to_vec1::<f32>()?;
        assert!(v[0] > 2.0 && v[0] < 5.0, "{v:?}");
        Ok(())
    }
}

//! OT-CFM training steps of a [`VelocityMlp`] with the exact coupling of the
//! next batch solved on a second thread while the current step runs.
//!
//! Each step pairs its batch by the exact minibatch OT permutation
//! ([`Coupling::ExactOt`]), then takes the explicit-backward CFM step of
//! [`VelocityMlp::mse_gradients`]. The assignment needs only the batch and its
//! noise, which are known as soon as they are drawn, so with `overlap` the
//! pipeline draws batch `k + 1` (data, `t`, `x₀`, in the same order as a
//! sequential run draws them) at the start of step `k` and solves its
//! coupling on a scoped-out thread beside step `k`'s forward, backward and
//! optimiser passes. The results are bit-identical to the sequential order
//! (same draws, same deterministic solver); only the random streams run one
//! batch ahead between steps.

use std::thread::JoinHandle;

use candle::Tensor;
use fm_core::coupling::{Coupled, Coupling};
use fm_core::loss::draw_source_and_time;
use fm_core::path::AffinePath;
use fm_core::scheduler::Scheduler;
use fm_core::SeededRng;

use crate::optim::GradientStep;
use crate::{Error, Result, VelocityMlp};

/// A drawn batch whose coupling is solved or being solved.
struct Pending {
    t: Tensor,
    coupling: Solve,
}

enum Solve {
    Done(Coupled),
    Running(JoinHandle<fm_core::Result<Coupled>>),
}

impl Solve {
    fn finish(self) -> Result<Coupled> {
        match self {
            Solve::Done(c) => Ok(c),
            Solve::Running(h) => h
                .join()
                .map_err(|_| Error::Config {
                    field: "coupling",
                    reason: "the OT solver thread panicked".into(),
                })?
                .map_err(Error::Core),
        }
    }
}

/// Exact OT-CFM training with the coupling solved one batch ahead (see the
/// module documentation).
///
/// ```
/// use candle::{DType, Device};
/// use fm_core::{path::AffinePath, scheduler::SchedulerKind, SeededRng};
/// use fm_models::optim::{Adam, AdamParams};
/// use fm_models::{MlpConfig, OtCfmPipeline, VelocityMlp};
/// # fn main() -> anyhow::Result<()> {
/// let dev = Device::Cpu;
/// let (model, varmap) = VelocityMlp::init(&MlpConfig::guide(2), &mut SeededRng::new(0), DType::F32, &dev)?;
/// let mut opt = Adam::new(&varmap, AdamParams::with_lr(1e-3))?;
/// let path = AffinePath::new(SchedulerKind::CondOt);
/// let mut data = SeededRng::new(1);
/// let mut rng = SeededRng::new(2);
/// let mut ot = OtCfmPipeline::new(true);
/// for _ in 0..3 {
///     let mut batch = || -> fm_models::Result<_> { Ok(data.normal((32, 2), DType::F32, &dev)?) };
///     let loss = ot.step(&model, &path, &mut opt, &mut batch, &mut rng)?;
///     assert!(loss.is_finite());
/// }
/// # Ok(())
/// # }
/// ```
pub struct OtCfmPipeline {
    overlap: bool,
    next: Option<Pending>,
}

impl OtCfmPipeline {
    /// A pipeline; with `overlap` the next batch's coupling is solved on a
    /// second thread during each step (worth it with two or more cores),
    /// without it each step solves its own coupling first.
    pub fn new(overlap: bool) -> Self {
        Self { overlap, next: None }
    }

    /// Draws one batch (`x1` from `next_batch`, then `t` and `x₀` from
    /// `rng`, as [`draw_source_and_time`]) and starts its coupling.
    fn prepare(
        &self,
        next_batch: &mut dyn FnMut() -> Result<Tensor>,
        rng: &mut SeededRng,
    ) -> Result<Pending> {
        let x1 = next_batch()?;
        let (x0, t) = draw_source_and_time(&x1, rng)?;
        let solve = move || Coupling::ExactOt.couple(&x0, &x1, None, false, &mut SeededRng::new(0));
        let coupling =
            if self.overlap { Solve::Running(std::thread::spawn(solve)) } else { Solve::Done(solve()?) };
        Ok(Pending { t, coupling })
    }

    /// One OT-CFM step: the loss `mean((u_θ(x_t, t) − ẋ_t)²)` of the coupled
    /// batch, with the optimiser step taken. `next_batch` supplies data
    /// batches `(b, d)` in order (it is called once per step, one step ahead
    /// with `overlap`).
    ///
    /// # Errors
    /// [`Error::Core`] naming `loss` if the loss is not finite (the weights
    /// are then untouched); the coupling's errors (non-finite data);
    /// tensor errors.
    pub fn step<S: Scheduler, O: GradientStep + ?Sized>(
        &mut self,
        model: &VelocityMlp,
        path: &AffinePath<S>,
        opt: &mut O,
        next_batch: &mut dyn FnMut() -> Result<Tensor>,
        rng: &mut SeededRng,
    ) -> Result<f64> {
        let current = match self.next.take() {
            Some(p) => p,
            None => self.prepare(next_batch, rng)?,
        };
        if self.overlap {
            // The following batch, drawn now (the draw order is unchanged),
            // coupled on another thread while this step computes.
            self.next = Some(self.prepare(next_batch, rng)?);
        }
        let t = current.t;
        let c = current.coupling.finish()?;
        let ps = path.sample(&c.x0, &c.x1, &t)?;
        let b = c.x1.dim(0)?;
        let input = Tensor::cat(&[&t.to_dtype(ps.x_t.dtype())?.reshape((b, 1))?, &ps.x_t], 1)?;
        let g = model.mse_gradients(&input, &ps.dx_t)?;
        if !g.loss.is_finite() {
            return Err(Error::Core(fm_core::Error::invalid(
                "loss",
                format!("the training loss became {}; lower the learning rate", g.loss),
            )));
        }
        opt.step_with_grads(&|var| g.grads.iter().find(|(p, _)| p.id() == var.id()).map(|(_, d)| d.clone()))?;
        Ok(g.loss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{Adam, AdamParams};
    use crate::MlpConfig;
    use candle::{DType, Device};
    use fm_core::scheduler::SchedulerKind;

    /// Losses, sorted weights, and the data and noise streams' positions after a run.
    type Run = (Vec<f64>, Vec<Vec<f32>>, u128, u128);

    /// Overlapped and sequential pipelines give bit-identical losses and
    /// weights, and the sequential one is the textbook OT-CFM step.
    #[test]
    fn overlap_is_bit_identical_to_the_sequential_order() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let config = MlpConfig { dim: 2, hidden: vec![32, 32], activation: crate::Activation::Silu };
        let path = AffinePath::new(SchedulerKind::CondOt);
        let run = |overlap: bool| -> anyhow::Result<Run> {
            let (model, varmap) = VelocityMlp::init(&config, &mut SeededRng::new(0), DType::F32, &dev)?;
            let mut opt = Adam::new(&varmap, AdamParams::with_lr(1e-2))?;
            let mut data = SeededRng::new(1);
            let mut rng = SeededRng::new(2);
            let mut ot = OtCfmPipeline::new(overlap);
            let mut losses = Vec::new();
            for _ in 0..6 {
                let mut batch =
                    || -> Result<Tensor> { Ok(data.normal((48, 2), DType::F32, &dev)?.affine(0.5, 3.0)?) };
                losses.push(ot.step(&model, &path, &mut opt, &mut batch, &mut rng)?);
            }
            let mut weights = Vec::new();
            for v in varmap.all_vars() {
                weights.push(v.as_tensor().flatten_all()?.to_vec1::<f32>()?);
            }
            weights.sort_by(|a, b| a.len().cmp(&b.len()).then(a.partial_cmp(b).expect("finite")));
            Ok((losses, weights, data.position(), rng.position()))
        };
        let (la, wa, da, ra) = run(false)?;
        let (lb, wb, db, rb) = run(true)?;
        assert_eq!(la, lb);
        assert_eq!(wa, wb);
        // The overlapped run has drawn one batch more (the prefetched one).
        assert!(db > da && rb > ra);

        // The first sequential step equals the step written out by hand.
        let (model, varmap) = VelocityMlp::init(&config, &mut SeededRng::new(0), DType::F32, &dev)?;
        let mut opt = Adam::new(&varmap, AdamParams::with_lr(1e-2))?;
        let x1 = SeededRng::new(1).normal((48, 2), DType::F32, &dev)?.affine(0.5, 3.0)?;
        let mut rng = SeededRng::new(2);
        let (x0, t) = draw_source_and_time(&x1, &mut rng)?;
        let c = Coupling::ExactOt.couple(&x0, &x1, None, false, &mut SeededRng::new(0))?;
        assert_ne!(c.index, (0..48).collect::<Vec<_>>(), "the coupling re-pairs the batch");
        let ps = path.sample(&c.x0, &c.x1, &t)?;
        let input = Tensor::cat(&[&t.reshape((48, 1))?, &ps.x_t], 1)?;
        let g = model.mse_gradients(&input, &ps.dx_t)?;
        opt.step_with_grads(&|var| g.grads.iter().find(|(p, _)| p.id() == var.id()).map(|(_, d)| d.clone()))?;
        assert_eq!(g.loss, la[0]);
        Ok(())
    }
}

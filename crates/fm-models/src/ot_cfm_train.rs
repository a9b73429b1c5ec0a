//! OT-CFM training steps of a [`VelocityMlp`] with the exact coupling of the
//! next batch solved on a second thread while the current step finishes.
//!
//! Each step pairs its batch by the exact minibatch OT permutation
//! ([`Coupling::ExactOt`]), samples the matcher's path (drawing `ε`), and
//! takes the explicit-backward step of [`VelocityMlp::mse_gradients`]. The
//! assignment needs only the batch and its noise, which are known as soon as
//! they are drawn, so the pipeline holds one batch ahead: the caller draws
//! batch `k + 1` (data, `t`, `x₀`) and [`push`](OtCfmPipeline::push)es it
//! before step `k`. With `overlap`, its coupling starts on another thread
//! once step `k`'s gradients are computed (that pass uses every thread the
//! model is given) and runs beside the single-threaded rest: the optimiser
//! update, the caller's next draw and the next path sample. The draw order is
//! the same with and without `overlap` and the solver is deterministic, so
//! both give bit-identical results.
//!
//! To resume such a run bit-identically, save the random streams' positions
//! from before the queued batch was drawn as well as the current ones; on
//! resume, draw the queued batch again from the first and continue from the
//! second (`fm train` does this).

use std::collections::VecDeque;
use std::thread::JoinHandle;

use candle::Tensor;
use fm_core::coupling::{Coupled, Coupling};
use fm_core::matcher::Matcher;
use fm_core::SeededRng;

use crate::optim::GradientStep;
use crate::{Error, Result, VelocityMlp};

/// One drawn training batch before its coupling: source points `x0`, data
/// `x1` (both `(b, d)`) and times `t` `(b,)`.
#[derive(Debug, Clone)]
pub struct DrawnBatch {
    /// Source samples `(b, d)`.
    pub x0: Tensor,
    /// Data samples `(b, d)`.
    pub x1: Tensor,
    /// Times `(b,)` in `[0, 1]`.
    pub t: Tensor,
}

/// A queued batch whose coupling is solved or being solved.
struct Pending {
    t: Tensor,
    coupling: Solve,
}

enum Solve {
    /// Not started: waits for the current step's gradients to be computed.
    Queued(Tensor, Tensor),
    Running(JoinHandle<fm_core::Result<Coupled>>),
    Done(Coupled),
}

/// The exact OT coupling of a drawn batch (deterministic: no draws).
fn solve(x0: &Tensor, x1: &Tensor) -> fm_core::Result<Coupled> {
    Coupling::ExactOt.couple(x0, x1, None, false, &mut SeededRng::new(0))
}

impl Solve {
    /// Starts a queued solve on its own thread.
    fn start(self) -> Self {
        match self {
            Solve::Queued(x0, x1) => Solve::Running(std::thread::spawn(move || solve(&x0, &x1))),
            other => other,
        }
    }

    fn finish(self) -> Result<Coupled> {
        match self {
            Solve::Queued(x0, x1) => solve(&x0, &x1).map_err(Error::Core),
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
/// use fm_core::loss::draw_source_and_time;
/// use fm_core::matcher::{Matcher, MatcherKind};
/// use fm_core::SeededRng;
/// use fm_models::optim::{Adam, AdamParams};
/// use fm_models::{DrawnBatch, MlpConfig, OtCfmPipeline, VelocityMlp};
/// # fn main() -> anyhow::Result<()> {
/// let dev = Device::Cpu;
/// let (model, varmap) = VelocityMlp::init(&MlpConfig::guide(2), &mut SeededRng::new(0), DType::F32, &dev)?;
/// let mut opt = Adam::new(&varmap, AdamParams::with_lr(1e-3))?;
/// let matcher = Matcher::new(MatcherKind::OtCfm, 0.0)?;
/// let (mut data, mut rng) = (SeededRng::new(1), SeededRng::new(2));
/// let mut draw = |data: &mut SeededRng, rng: &mut SeededRng| -> anyhow::Result<DrawnBatch> {
///     let x1 = data.normal((32, 2), DType::F32, &dev)?;
///     let (x0, t) = draw_source_and_time(&x1, rng)?;
///     Ok(DrawnBatch { x0, x1, t })
/// };
/// let mut ot = OtCfmPipeline::new(true);
/// ot.push(draw(&mut data, &mut rng)?)?;
/// for _ in 0..3 {
///     ot.push(draw(&mut data, &mut rng)?)?; // the next batch, coupled during this step
///     let loss = ot.step(&model, &matcher, &mut opt, &mut rng)?;
///     assert!(loss.is_finite());
/// }
/// # Ok(())
/// # }
/// ```
pub struct OtCfmPipeline {
    overlap: bool,
    queue: VecDeque<Pending>,
}

impl OtCfmPipeline {
    /// An empty pipeline; with `overlap` each pushed batch's coupling is
    /// solved on its own thread, started once the gradients of the step
    /// before it are computed, without it on the caller's thread at
    /// [`push`](Self::push).
    ///
    /// Overlapping pays only where a core would otherwise sit idle: the
    /// gradient pass uses every thread candle is given. On two cores (the
    /// 2-D benchmark, batch 256, a 2-core Zen 5 machine) the overlapped step
    /// measured no faster than the sequential one (1.50–1.60 ms against
    /// 1.44–1.75 ms), so `fm train` and the benchmark run sequentially.
    pub fn new(overlap: bool) -> Self {
        Self { overlap, queue: VecDeque::new() }
    }

    /// Batches queued and not yet stepped on.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Queues a drawn batch and starts its exact OT coupling.
    ///
    /// # Errors
    /// [`Error::Core`] for mismatched shapes or, without `overlap`, non-finite
    /// values (with `overlap` those surface at the batch's [`step`](Self::step)).
    pub fn push(&mut self, batch: DrawnBatch) -> Result<()> {
        let DrawnBatch { x0, x1, t } = batch;
        let coupling = if self.overlap { Solve::Queued(x0, x1) } else { Solve::Done(solve(&x0, &x1)?) };
        self.queue.push_back(Pending { t, coupling });
        Ok(())
    }

    /// One OT-CFM step on the oldest queued batch: the loss
    /// `mean((u_θ(x_t, t) − u_t)²)` of its coupled pairs under `matcher`'s
    /// path (drawing `ε` from `rng`), with the optimiser step taken. Push the
    /// next batch first to have its coupling solved during this step.
    ///
    /// # Errors
    /// [`Error::Config`] naming `coupling` if no batch is queued or `matcher`
    /// does not use the exact OT coupling; [`Error::Core`] naming `loss` if
    /// the loss is not finite (the weights are then untouched); the
    /// coupling's errors (non-finite data); tensor errors.
    pub fn step<O: GradientStep + ?Sized>(
        &mut self,
        model: &VelocityMlp,
        matcher: &Matcher,
        opt: &mut O,
        rng: &mut SeededRng,
    ) -> Result<f64> {
        if matcher.coupling() != Coupling::ExactOt {
            return Err(Error::Config {
                field: "coupling",
                reason: format!(
                    "the OT-CFM pipeline needs the exact OT coupling, not `{}`",
                    matcher.coupling()
                ),
            });
        }
        let current = self.queue.pop_front().ok_or_else(|| Error::Config {
            field: "coupling",
            reason: "no batch queued: push one before stepping".into(),
        })?;
        let t = current.t;
        let c = current.coupling.finish()?;
        let ps = matcher.sample(&c.x0, &c.x1, &t, rng)?;
        let g = crate::mlp::regression_gradients(model, &t, &ps)?;
        // The gradients kept every thread busy; what follows until the next
        // step's gradients (optimiser, the caller's next draw, path sampling)
        // runs on one, so the next batch's coupling is solved beside it.
        if let Some(next) = self.queue.pop_front() {
            self.queue.push_front(Pending { t: next.t, coupling: next.coupling.start() });
        }
        crate::mlp::apply_gradients(&g, opt)?;
        Ok(g.loss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{Adam, AdamParams};
    use crate::MlpConfig;
    use candle::{DType, Device};
    use fm_core::loss::draw_source_and_time;
    use fm_core::matcher::{matcher_loss, MatcherKind};

    /// Losses, sorted weights, and the data and noise streams' positions after a run.
    type Run = (Vec<f64>, Vec<Vec<f32>>, u128, u128);

    fn draw(data: &mut SeededRng, rng: &mut SeededRng, dev: &Device) -> anyhow::Result<DrawnBatch> {
        let x1 = data.normal((48, 2), DType::F32, dev)?.affine(0.5, 3.0)?;
        let (x0, t) = draw_source_and_time(&x1, rng)?;
        Ok(DrawnBatch { x0, x1, t })
    }

    /// Overlapped and sequential pipelines give bit-identical losses and
    /// weights, and the first step is the textbook OT-CFM step.
    #[test]
    fn overlap_is_bit_identical_to_the_sequential_order() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let config = MlpConfig { dim: 2, hidden: vec![32, 32], activation: crate::Activation::Silu };
        // σ > 0: the path's ε is drawn between the batches' draws.
        let matcher = Matcher::new(MatcherKind::OtCfm, 0.1)?;
        let run = |overlap: bool| -> anyhow::Result<Run> {
            let (model, varmap) = VelocityMlp::init(&config, &mut SeededRng::new(0), DType::F32, &dev)?;
            let mut opt = Adam::new(&varmap, AdamParams::with_lr(1e-2))?;
            let (mut data, mut rng) = (SeededRng::new(1), SeededRng::new(2));
            let mut ot = OtCfmPipeline::new(overlap);
            ot.push(draw(&mut data, &mut rng, &dev)?)?;
            let mut losses = Vec::new();
            for _ in 0..6 {
                ot.push(draw(&mut data, &mut rng, &dev)?)?;
                losses.push(ot.step(&model, &matcher, &mut opt, &mut rng)?);
            }
            assert_eq!(ot.queued(), 1);
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
        assert_eq!((da, ra), (db, rb));

        // The first step's loss is torchcfm's OT-CFM loss of the first batch,
        // with its ε drawn after the second batch.
        let (model, _varmap) = VelocityMlp::init(&config, &mut SeededRng::new(0), DType::F32, &dev)?;
        let (mut data, mut rng) = (SeededRng::new(1), SeededRng::new(2));
        let first = draw(&mut data, &mut rng, &dev)?;
        draw(&mut data, &mut rng, &dev)?;
        let c = Coupling::ExactOt.couple(&first.x0, &first.x1, None, false, &mut SeededRng::new(0))?;
        assert_ne!(c.index, (0..48).collect::<Vec<_>>(), "the coupling re-pairs the batch");
        let loss = matcher_loss(&model, &matcher, &c.x0, &c.x1, &first.t, &mut rng)?;
        let expected = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        assert!((expected - la[0]).abs() < 1e-5 * expected.abs(), "{expected} vs {}", la[0]);
        Ok(())
    }

    #[test]
    fn stepping_needs_a_queued_batch_and_the_exact_coupling() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let (model, varmap) =
            VelocityMlp::init(&MlpConfig::guide(2), &mut SeededRng::new(0), DType::F32, &dev)?;
        let mut opt = Adam::new(&varmap, AdamParams::with_lr(1e-2))?;
        let mut rng = SeededRng::new(3);
        let mut ot = OtCfmPipeline::new(false);
        let ot_cfm = Matcher::new(MatcherKind::OtCfm, 0.0)?;
        let e = ot.step(&model, &ot_cfm, &mut opt, &mut rng).expect_err("empty").to_string();
        assert!(e.contains("push"), "{e}");
        ot.push(draw(&mut SeededRng::new(1), &mut rng, &dev)?)?;
        let icfm = Matcher::new(MatcherKind::ICfm, 0.0)?;
        let e = ot.step(&model, &icfm, &mut opt, &mut rng).expect_err("independent").to_string();
        assert!(e.contains("exact OT"), "{e}");
        Ok(())
    }
}

//! The mathematics of flow matching.
//!
//! Time convention everywhere: **`t = 0` is noise, `t = 1` is data** (as in
//! `flow_matching` and `torchcfm`; candle's own Flux/SD3 samplers use the
//! reverse: `t_candle = 1 − t`, `v_candle = −v`).
//!
//! - [`scheduler`]: `(α_t, σ_t)` of affine paths — [`scheduler::CondOtScheduler`],
//!   polynomial, cosine, VP and linear-VP.
//! - [`path`]: [`path::AffinePath`] samples `x_t` and its target velocity, and
//!   converts between velocity, noise and data predictions.
//! - [`score`]: posterior means and the score `∇log p_t` from any
//!   prediction; [`stochastic`]: SDE samplers that keep the marginals
//!   (`dx = [u + ½g²∇log p] dt + g dW`), Langevin and predictor–corrector.
//! - [`loss`]: the CFM loss of any [`VelocityField`], for given draws or a batch.
//! - [`coupling`]: minibatch couplings — independent, exact OT (a true
//!   permutation) and log-domain Sinkhorn, optionally within classes.
//! - [`matcher`]: torchcfm's matchers (I-CFM, OT-CFM, SB-CFM, Lipman's
//!   target FM, the VP stochastic interpolant) with their losses.
//! - [`mean_flow`]: MeanFlow's average velocity `ū(x, s, t)`, its identity,
//!   loss and one- or few-step sampler.
//! - [`straightness`]: how far a field's ODE trajectories are from straight lines.
//! - [`closed_form`]: [`closed_form::EmpiricalVelocity`], the exact CFM
//!   minimiser `û*` for an empirical (training-set) distribution, streamed
//!   over chunks (GEMM + log-sum-exp), with its posterior-mean denoiser.
//! - [`efm`]: the empirical flow matching target `û*_M` and loss (unbiased,
//!   lower variance than CFM's).
//! - [`parametrization`]: velocity, noise and data predictions as velocity
//!   fields ([`parametrization::Parametrized`]); [`weighting`]: loss weightings
//!   over `t` that turn one regression into another (FM, DDPM's ε, denoising,
//!   v-prediction); [`jacobian`]: Hutchinson's `‖∂u/∂x‖²_F` from JVPs;
//!   [`objective`]: the training objective combining them with CFM or EFM.
//! - [`alignment`]: cosine alignment of a field with `x₁ − x₀`, aligned
//!   fractions on a time grid and their crossing time.
//! - [`gaussian`]: exact oracles for Gaussian data (velocity, flow map,
//!   divergence, log-density, the exact W2 of any solver's output);
//!   [`gaussian_pipeline`]: the exact W2 of a whole score-based pipeline
//!   (samples, training budget, SDE/Langevin sampler, noise floor).
//! - [`divergence`]: the divergence of a velocity field by autograd, exact
//!   or by Hutchinson's estimator (Rademacher or Gaussian probes).
//! - [`likelihood`]: exact log-likelihoods by the instantaneous change of
//!   variables (backward from data, or forward while sampling) with any
//!   `fm-solvers` method, and a differentiable CNF maximum-likelihood loss.
//! - [`dequantization`]: bits per dimension of 8-bit data, with
//!   dequantization and affine/logit pre-processing.
//! - [`metrics`]: sample-quality metrics between point clouds; [`assignment`]:
//!   an exact linear-assignment solver.
//! - [`energy`]: Rezende & Mohamed's 2-D test energies U1–U4 with their
//!   `log Z`, targets for reverse-KL training of normalizing flows.
//! - [`rng`]: [`SeededRng`], the only source of randomness (candle's CPU RNG
//!   cannot be seeded).
//!
//! ```
//! use candle::{DType, Device};
//! use fm_core::{gaussian::GaussianOracle, scheduler::SchedulerKind};
//! use fm_solvers::{Midpoint, TimeGrid};
//!
//! # fn main() -> fm_core::Result<()> {
//! // Data N(μ, Σ); how far from it does midpoint with 8 steps land?
//! let sigma = vec![3.694337, 0.988124, 0.988124, 0.805663];
//! let oracle = GaussianOracle::new(vec![1.0, -1.0], sigma, SchedulerKind::CondOt)?;
//! let (w2, nfe) = oracle.sampling_w2(&Midpoint, &TimeGrid::uniform(0.0, 1.0, 8)?)?;
//! assert!((w2 - 9.202e-4).abs() < 1e-5 && nfe == 16);
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod alignment;
pub mod assignment;
pub mod closed_form;
pub mod coupling;
pub mod dequantization;
pub mod discrete;
pub mod divergence;
pub mod efm;
pub mod energy;
mod error;
mod field;
pub mod gaussian;
pub mod gaussian_pipeline;
pub mod jacobian;
pub mod likelihood;
pub mod linalg;
pub mod loss;
pub mod manifold;
pub mod matcher;
pub mod mean_flow;
pub mod metrics;
pub mod objective;
pub mod parametrization;
pub mod path;
pub mod rng;
pub mod scheduler;
pub mod score;
pub mod simd;
pub mod sinkhorn;
pub mod stochastic;
pub mod straightness;
pub mod weighting;

pub use error::{Error, Result};
pub use field::{time_like, to_f64_vec, AsOde, DivergenceField, VelocityField};
pub use rng::SeededRng;

//! Networks for flow-based generative models, built on candle.
//!
//! - [`VelocityMlp`]: the MLP velocity field `u_θ(x, t)` on `concat(t, x)`,
//!   with seeded, reproducible initialisation.
//! - [`VelocityNet`]: the MLP or the U-Net a checkpoint describes.
//! - [`training::TrainingOptimizer`]: Adam with warm-up, gradient clipping and an
//!   [`ema`] of the weights.
//! - [`optim::Adam`]: Adam whose state can be saved, for bit-identical resumes;
//!   [`resume`]: the checkpoint file a run resumes from.
//! - [`flows`]: discrete normalizing flows (planar, RealNVP coupling,
//!   ActNorm) over a standard normal base, with forward- and reverse-KL losses.
//! - [`classifier`]: a small image classifier CNN whose 128-d penultimate
//!   layer is the feature space of the Fréchet distance on MNIST.
//! - [`unet`]: guided diffusion's U-Net (torchcfm's layout) for images, with
//!   class conditioning and classifier-free guidance.
//! - [`checkpoint`]: atomic save/load of weights (safetensors) with their
//!   configuration; [`checkpoint::check_keys`] lists missing, unexpected and
//!   mis-shaped parameters, [`checkpoint::load_into`] loads a (partial) fit.
//! - [`torchcfm`]: conversion to and from torchcfm's PyTorch state dicts.
//!
//! Every velocity model implements [`fm_core::VelocityField`], so all of fm-core's
//! losses, solvers and likelihoods accept it. Time convention: `t = 0` is
//! noise, `t = 1` is data.
//!
//! ```
//! use candle::{DType, Device};
//! use candle_nn::{AdamW, Optimizer, ParamsAdamW};
//! use fm_core::{loss::cfm_batch_loss, path::AffinePath, scheduler::CondOtScheduler, SeededRng};
//! use fm_models::{MlpConfig, VelocityMlp};
//!
//! # fn main() -> anyhow::Result<()> {
//! let mut rng = SeededRng::new(0);
//! let (model, varmap) = VelocityMlp::init(&MlpConfig::guide(2), &mut rng, DType::F32, &Device::Cpu)?;
//! let mut opt = AdamW::new(varmap.all_vars(), ParamsAdamW { lr: 1e-2, weight_decay: 0.0, ..Default::default() })?;
//! let path = AffinePath::new(CondOtScheduler);
//! let x1 = rng.normal((256, 2), DType::F32, &Device::Cpu)?; // stand-in data
//! let loss = cfm_batch_loss(&model, &path, &x1, &mut rng)?;
//! opt.backward_step(&loss)?;
//! assert!(loss.to_scalar::<f32>()?.is_finite());
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

mod activation;
pub mod checkpoint;
pub mod classifier;
pub mod ema;
mod error;
pub mod flows;
mod fused_adam;
pub mod limits;
mod mlp;
mod net;
mod ops;
pub mod optim;
mod ot_cfm_train;
pub mod resume;
#[cfg(test)]
mod test_util;
pub mod torchcfm;
pub mod training;
pub mod unet;

pub use activation::Activation;
pub use checkpoint::{CheckpointConfig, ModelConfig};
pub use error::{Error, Result};
pub use flows::NormalizingFlow;
pub use mlp::{
    discrete_mlp_train_step, mean_flow_train_step, mlp_cfm_train_step, mlp_coupled_cfm_train_step,
    mlp_one_step_distill_train_step, mlp_riemannian_train_step, token_posterior, DiscreteBatch, DiscreteMlp,
    DiscreteMlpConfig, MeanFlowConfig, MeanFlowMlp, MlpConfig, MlpGradients, RiemannianMlpConfig,
    VelocityMlp,
};
pub use net::VelocityNet;
pub use ot_cfm_train::{DrawnBatch, OtCfmPipeline};

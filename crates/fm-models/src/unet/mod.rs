//! guided diffusion's U-Net, as torchcfm's `UNetModelWrapper` builds it, for
//! flow matching on images.
//!
//! One concept per file: [`config`](UNetConfig) (presets and the layer plan),
//! the sinusoidal [`timestep_embedding`], the residual block ([`ResBlock`]:
//! GroupNorm, SiLU, conv, time embedding, dropout, zero-initialised conv),
//! self-attention ([`AttentionBlock`], with `candle_nn::ops::softmax`, which
//! passes gradients), down/upsampling, and the [`UNet`] itself with optional
//! class conditioning and [`ClassifierFreeGuidance`].
//!
//! Parameter names are torchcfm's state-dict names, so PyTorch checkpoints
//! convert by a name map (strip `module.`; a class-conditional model adds the
//! null-class row to `label_emb.weight`).

mod attention;
mod config;
mod discrete;
mod layers;
mod model;
mod resblock;
mod time_embedding;
mod updown;

pub use attention::AttentionBlock;
pub use config::{UNetConfig, PRESET_NAMES};
pub use discrete::{DiscreteUNet, DiscreteUNetConfig};
pub use layers::DropoutRng;
pub use model::{ClassifierFreeGuidance, Conditioned, UNet};
pub use resblock::ResBlock;
pub use time_embedding::timestep_embedding;
pub use updown::{Downsample, Upsample};

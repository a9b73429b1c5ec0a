//! fm's candle custom ops: one op per file, each a private kernel behind a
//! `pub(crate)` function that runs it on the CPU (f32, f64) and falls back
//! to candle's tensor ops elsewhere.
//!
//! - [`linear`]: `x · Wᵀ + b` (RealNVP's conditioners).
//! - [`channel_linear`]: `W · x + b` over the channel axis (every U-Net
//!   convolution's product and bias).
//! - [`im2col`]: the patches of a `k×k` convolution, with col2im as its
//!   backward pass.
//! - [`group_norm`]: GroupNorm, optionally followed by SiLU.
//! - [`softmax_last_dim`]: softmax over the last dimension (attention).
//! - [`silu()`], [`elu()`] and their one-pass gradients [`silu_grad`],
//!   [`elu_grad`]; [`silu_forward`], [`silu_in_place`], [`silu_backward`]:
//!   the vectorised f32 SiLU kernels on slices.
//! - [`scaled_tanh`]: `c · tanh(x)`, an affine coupling's bounded log-scale.
//! - [`affine_inverse`]: an affine coupling's inverse update.
//!
//! What they share is written once: [`cpu`] (the element types, the dtype
//! dispatch on contiguous operands, the fallback test and the candle op
//! around a kernel), [`dense`] (`gemm` on slices, row sums) and [`pool`]
//! (work spread over candle's or rayon's threads).

mod activation;
mod affine_inverse;
mod channel_linear;
pub(crate) mod cpu;
pub(crate) mod dense;
mod group_norm;
mod im2col;
mod linear;
pub(crate) mod pool;
mod scaled_tanh;
mod silu;
mod softmax;

pub(crate) use activation::{elu, elu_grad, silu, silu_grad};
pub(crate) use affine_inverse::affine_inverse;
pub(crate) use channel_linear::channel_linear;
pub(crate) use group_norm::group_norm;
pub(crate) use im2col::{im2col, Patches};
pub(crate) use linear::linear;
pub(crate) use scaled_tanh::scaled_tanh;
pub(crate) use silu::{silu_backward, silu_forward, silu_in_place};
pub(crate) use softmax::softmax_last_dim;

//! fm's candle custom ops.

mod activation;
mod affine_inverse;
mod channel_linear;
mod cpu;
mod cpu_kernel;
mod group_norm;
mod im2col;
mod linear;
mod scaled_tanh;
mod silu;
mod softmax;

pub(crate) use activation::Fused;
pub(crate) use affine_inverse::affine_inverse;
pub(crate) use channel_linear::channel_linear;
pub(crate) use cpu::{gemm_into, par_items};
#[cfg(test)]
pub(crate) use cpu_kernel::FORCE_COMPOSED;
pub(crate) use group_norm::GroupNorm;
pub(crate) use im2col::{im2col, Patches};
pub(crate) use linear::linear;
pub(crate) use scaled_tanh::scaled_tanh;
pub(crate) use silu::{silu_backward, silu_forward, silu_in_place};
pub(crate) use softmax::softmax_last_dim;

//! The MLP velocity field `u_θ(x, t) = MLP(concat(t, x))`, one concern per
//! file:
//!
//! - `model`: [`MlpConfig`] and [`VelocityMlp`] (initialisation, the
//!   forward pass, the velocity with its divergence and its JVPs by
//!   forward-mode tensor ops);
//! - `backward`: the CFM training step with an explicit backward pass
//!   ([`mlp_cfm_train_step`], [`MlpGradients`]);
//! - `backward_blocked`: that backward pass on f32 CPU tensors, in row
//!   blocks and fixed partitions on several threads;
//! - `inference`: graph-free f32 inference in row blocks (and the block
//!   helpers the other blocked passes share);
//! - `divergence`: graph-free f32 velocity with its exact divergence or
//!   JVPs, in row blocks;
//! - `mean_flow`: [`MeanFlowMlp`], the average velocity `ū(x, s, t)` of
//!   MeanFlow with its exact forward-mode tangent;
//! - `discrete`: [`DiscreteMlp`], the factorized posterior of discrete flow
//!   matching on short token sequences;
//! - `discrete_backward`: its training step with an explicit backward pass
//!   (the one-hot first layer as a gather and a scatter of columns);
//! - `riemannian`: [`RiemannianMlpConfig`], the MLP on a manifold's
//!   embedding coordinates, and its Riemannian flow-matching step.

mod backward;
mod backward_blocked;
mod discrete;
mod discrete_backward;
mod divergence;
mod inference;
mod mean_flow;
mod model;
mod riemannian;

pub(crate) use backward::{apply_gradients, regression_gradients};
pub use backward::{
    mlp_cfm_train_step, mlp_coupled_cfm_train_step, mlp_one_step_distill_train_step, MlpGradients,
};
pub use discrete::{token_posterior, DiscreteMlp, DiscreteMlpConfig};
pub use discrete_backward::{discrete_mlp_train_step, DiscreteBatch};
pub use mean_flow::{mean_flow_train_step, MeanFlowConfig, MeanFlowMlp};
pub use model::{MlpConfig, VelocityMlp};
pub use riemannian::{mlp_riemannian_train_step, RiemannianMlpConfig};

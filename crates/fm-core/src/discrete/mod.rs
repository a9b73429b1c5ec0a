//! Discrete flow matching (Gat et al., 2024; `flow_matching`'s discrete
//! module): tokens in a vocabulary `{0, …, V − 1}`, the **mixture path**
//!
//! ```text
//! p_t(x | x₁) = κ_t δ_{x₁}(x) + (1 − κ_t) p₀(x)      (per token, independently)
//! ```
//!
//! from a source `p₀` ([`DiscreteSource`]: an absorbing **mask** token, id
//! `V`, or the **uniform** distribution over the vocabulary) at `t = 0` to the
//! data at `t = 1`, with `κ_t` the data coefficient `α_t` of a scheduler
//! (`κ₀ = 0`, `κ₁ = 1`: cond-OT, polynomial, cosine). A model predicts the
//! factorized posterior `p_{1|t}(x₁ⁱ | x_t)`; the conversion
//!
//! ```text
//! u_t(y | x) = κ̇_t / (1 − κ_t) · [p_{1|t}(y | x) − δ_x(y)]
//! ```
//!
//! gives the rates of a continuous-time Markov chain whose marginals follow the
//! path, sampled by [`ctmc_euler`]; the generalized KL of the two chains
//! integrates to an evidence lower bound ([`elbo()`]). One concept per file:
//! [`source`], [`path`], [`rate`], [`ctmc`], [`elbo`](mod@elbo), [`loss`].
//!
//! Tokens are `u32`, a batch of `b` sequences of length `L` row-major
//! (`b · L` values); posteriors are `f32` rows of `V` probabilities per token.

pub mod ctmc;
pub mod elbo;
pub mod loss;
pub mod path;
pub mod rate;
pub mod source;

pub use ctmc::{ctmc_euler, ctmc_euler_step, DiscretePosterior};
pub use elbo::{elbo, generalized_kl, ElboSettings};
pub use loss::{cross_entropy, generalized_kl_loss};
pub use path::MixturePath;
pub use rate::posterior_to_rate;
pub use source::DiscreteSource;

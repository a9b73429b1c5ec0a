//! A configurable flow-matching training objective: what the network
//! predicts ([`Prediction`]), the loss weighting over `t` ([`Weighting`]), the
//! regression target (CFM's conditional velocity or EFM's `û*_M`), and an
//! optional Jacobian penalty `W · ‖∂u_θ/∂x‖²_F / d` ([`crate::jacobian`]).
//!
//! The loss of a batch is
//!
//! ```text
//! L = mean_i w(t_i) · mean_d (out_θ(x_t, t) − target_P)²  +  W · mean_i ‖J_u ε_i‖² / d
//! ```
//!
//! where `target_P` is the target expressed in the network's space
//! (`α̇x₁ + σ̇x₀`, `x₀` or `x₁` for CFM; EFM's velocity target converted by
//! [`velocity_to_output`]) and `J_u` the Jacobian of the velocity the
//! network defines. With the velocity parametrization, uniform weighting,
//! CFM and no penalty it is [`crate::loss::cfm_loss`].

use candle::Tensor;

use crate::divergence::Probe;
use crate::efm::efm_target;
use crate::jacobian::{draw_probes, JvpField};
use crate::parametrization::{jvp_to_velocity, regression_target, velocity_to_output};
use crate::path::{AffinePath, Prediction};
use crate::scheduler::Scheduler;
use crate::weighting::{weighted_mse, Weighting};
use crate::{Error, Result, SeededRng};

/// The regression target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegressionTarget {
    /// CFM: the conditional velocity `α̇x₁ + σ̇x₀` (or `x₀`, `x₁`).
    #[default]
    Cfm,
    /// EFM: `û*_M` from `m` references (the generating point plus `m − 1`
    /// uniform draws from the training set); `m = 1` is CFM.
    Efm {
        /// The reference-set size `M`.
        m: usize,
    },
}

/// The Jacobian penalty's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JacobianReg {
    /// The penalty's weight `W > 0`.
    pub weight: f64,
    /// The probes' distribution.
    pub probe: Probe,
    /// Probes per sample (one JVP each).
    pub probes: usize,
}

/// Everything that defines the objective.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ObjectiveSpec {
    /// What the network predicts.
    pub parametrization: Prediction,
    /// The loss weighting over `t`.
    pub weighting: Weighting,
    /// CFM or EFM.
    pub target: RegressionTarget,
    /// The optional Jacobian penalty.
    pub jacobian: Option<JacobianReg>,
}

impl ObjectiveSpec {
    /// True for plain CFM (velocity, uniform, no penalty): the historical objective.
    pub fn is_plain_cfm(&self) -> bool {
        self.parametrization == Prediction::Velocity
            && matches!(self.weighting, Weighting::Uniform | Weighting::Velocity)
            && self.target == RegressionTarget::Cfm
            && self.jacobian.is_none()
    }

    /// Checks the numbers.
    pub fn validate(&self) -> Result<()> {
        if let RegressionTarget::Efm { m } = self.target {
            if m == 0 {
                return Err(Error::invalid("efm_m", "the reference-set size M must be at least 1"));
            }
        }
        if let Some(j) = self.jacobian {
            if !(j.weight.is_finite() && j.weight > 0.0) {
                return Err(Error::invalid(
                    "jacobian_reg",
                    format!("the weight must be a positive number, got {}", j.weight),
                ));
            }
            if j.probes == 0 {
                return Err(Error::invalid("jacobian_probes", "need at least one probe"));
            }
        }
        Ok(())
    }
}

/// The parts of a batch loss.
#[derive(Debug, Clone)]
pub struct ObjectiveLoss {
    /// The loss to minimise: `fit + W · jacobian`.
    pub total: Tensor,
    /// The weighted regression loss.
    pub fit: Tensor,
    /// The Jacobian estimate `mean ‖J_u ε‖² / d` (unweighted), if penalised.
    pub jacobian: Option<Tensor>,
}

/// The loss of `spec` for given `(x₀, x₁, t)`; draws EFM references and
/// Jacobian probes (in that order) from `rng`.
///
/// # Shapes
/// - `x0`, `x1`: `(b, d)`; `t`: `(b,)`; `train_set`: `(n, d)` (needed by EFM with `M > 1`)
#[allow(clippy::too_many_arguments)]
pub fn objective_loss<F, S>(
    net: &F,
    path: &AffinePath<S>,
    spec: &ObjectiveSpec,
    x0: &Tensor,
    x1: &Tensor,
    t: &Tensor,
    train_set: Option<&Tensor>,
    rng: &mut SeededRng,
) -> Result<ObjectiveLoss>
where
    F: JvpField + ?Sized,
    S: Scheduler,
{
    spec.validate()?;
    let p = spec.parametrization;
    let ps = path.sample(x0, x1, t)?;
    let target = match spec.target {
        RegressionTarget::Cfm => regression_target(p, x0, x1, &ps.dx_t),
        RegressionTarget::Efm { m } => {
            let empty;
            let train = match train_set {
                Some(s) => s,
                None if m == 1 => {
                    empty = x1.narrow(0, 0, 0)?;
                    &empty
                }
                None => {
                    return Err(Error::invalid("train_set", "EFM with M > 1 needs the training set"));
                }
            };
            let u = efm_target(path, x0, x1, t, train, m, rng)?;
            velocity_to_output(path, p, &u, &ps.x_t, t)?
        }
    }
    .detach();
    let (out, jacobian) = match spec.jacobian {
        None => (net.velocity(&ps.x_t, t)?, None),
        Some(j) => {
            let d = ps.x_t.dim(1)? as f64;
            let v = draw_probes(j.probe, j.probes, &ps.x_t, rng)?;
            let (out, jv) = net.velocity_and_jvp(&ps.x_t, t, &v)?;
            let ju = jvp_to_velocity(path, p, &ps.x_t, t, &v, &jv)?;
            // The mean over (k, b) of ‖J_u ε‖², per coordinate.
            let est = (ju.sqr()?.sum(2)?.mean_all()? / d)?;
            (out, Some(est))
        }
    };
    let w = spec.weighting.weights(path, p, &out, t)?;
    let fit = weighted_mse(&out, &target, &w)?;
    let total = match (&jacobian, spec.jacobian) {
        (Some(est), Some(j)) => (&fit + (est * j.weight)?)?,
        _ => fit.clone(),
    };
    Ok(ObjectiveLoss { total, fit, jacobian })
}

/// The loss of `spec` on one training batch `x1`: draws `t` and `x₀` as
/// [`crate::loss::draw_source_and_time`] does, then the EFM references and
/// the probes ([`objective_loss`]).
pub fn objective_batch_loss<F, S>(
    net: &F,
    path: &AffinePath<S>,
    spec: &ObjectiveSpec,
    x1: &Tensor,
    train_set: Option<&Tensor>,
    rng: &mut SeededRng,
) -> Result<ObjectiveLoss>
where
    F: JvpField + ?Sized,
    S: Scheduler,
{
    let (x0, t) = crate::loss::draw_source_and_time(x1, rng)?;
    objective_loss(net, path, spec, &x0, x1, &t, train_set, rng)
}

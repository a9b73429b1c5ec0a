//! The flow-matching objective: `--objective cfm|efm|likelihood`, and its
//! options `--efm-m M`, `--parametrization`, `--weighting`, `--jacobian-reg W
//! [--jacobian-probes K]`, parsed into an [`ObjectiveSpec`] and read back from
//! a checkpoint's record.

use fm_core::divergence::Probe;
use fm_core::objective::{JacobianReg, ObjectiveSpec, RegressionTarget};
use fm_core::path::Prediction;
use fm_core::weighting::Weighting;

use crate::error::bail;
use crate::record::{ObjectiveRecord, RunRecord};
use crate::{Result, ResultExt};

/// What a flow-matching network is trained to minimise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// Conditional flow matching: regression of `u_θ(x_t, t)` on `x1 − x0`.
    Cfm,
    /// Maximum likelihood of a CNF: the NLL by an RK4 solve of `steps` steps
    /// with the exact divergence, backpropagated through the solver.
    Likelihood {
        /// RK4 steps of the likelihood solve.
        steps: usize,
    },
    /// Empirical flow matching: regression on `û*_M`, from `m` references.
    Efm {
        /// References per target.
        m: usize,
    },
    /// One-step distillation of coupled pairs (`--data pairs:FILE`, the
    /// output of `fm reflow`): regression of `u_θ(x₀, 0)` on `x₁ − x₀`, so
    /// that one Euler step maps each `x₀` to its `x₁` (Liu et al. 2023,
    /// "k-rectified flow + distillation").
    Distill,
}

impl Objective {
    /// The name stored in checkpoints.
    pub fn name(&self) -> &'static str {
        match self {
            Objective::Cfm => "cfm",
            Objective::Likelihood { .. } => "likelihood",
            Objective::Efm { .. } => "efm",
            Objective::Distill => "distill",
        }
    }

    /// Parses `--objective`, `--cnf-steps` and `--efm-m`.
    pub fn parse(name: Option<&str>, cnf_steps: Option<usize>, efm_m: Option<usize>) -> Result<Self> {
        let o = match name.unwrap_or("cfm").to_ascii_lowercase().as_str() {
            "cfm" | "fm" => Objective::Cfm,
            "likelihood" | "ml" | "cnf" => {
                let steps = cnf_steps.unwrap_or(10);
                if steps == 0 {
                    bail!("--cnf-steps must be at least 1, got 0");
                }
                Objective::Likelihood { steps }
            }
            "efm" => {
                let m = efm_m.unwrap_or(256);
                if m == 0 {
                    bail!("--efm-m must be at least 1, got 0");
                }
                Objective::Efm { m }
            }
            "distill" | "distillation" => Objective::Distill,
            other => bail!("--objective: unknown objective `{other}`; valid: cfm, efm, likelihood, distill"),
        };
        if cnf_steps.is_some() && !matches!(o, Objective::Likelihood { .. }) {
            bail!("--cnf-steps only applies to --objective likelihood");
        }
        if efm_m.is_some() && !matches!(o, Objective::Efm { .. }) {
            bail!("--efm-m only applies to --objective efm");
        }
        Ok(o)
    }
}

/// The objective options as given (flags, config file or a checkpoint's record).
#[derive(Debug, Clone, Default)]
pub(crate) struct ObjectiveFlags<'a> {
    pub parametrization: Option<&'a str>,
    pub weighting: Option<&'a str>,
    pub jacobian_reg: Option<f64>,
    pub jacobian_probes: Option<usize>,
}

impl ObjectiveFlags<'_> {
    fn any(&self) -> bool {
        self.parametrization.is_some()
            || self.weighting.is_some()
            || self.jacobian_reg.is_some()
            || self.jacobian_probes.is_some()
    }
}

/// The [`ObjectiveSpec`] of a run; `has_matcher` when `--matcher` etc. are given
/// (they define their own path and target, so the options are refused).
pub(crate) fn spec(objective: Objective, f: &ObjectiveFlags, has_matcher: bool) -> Result<ObjectiveSpec> {
    let target = match objective {
        Objective::Efm { m } => RegressionTarget::Efm { m },
        Objective::Cfm => RegressionTarget::Cfm,
        Objective::Likelihood { .. } | Objective::Distill => {
            if f.any() {
                bail!(
                    "--parametrization, --weighting and --jacobian-reg apply to --objective cfm|efm, \
                     not to {}",
                    objective.name()
                );
            }
            return Ok(ObjectiveSpec::default());
        }
    };
    if has_matcher && (f.any() || target != RegressionTarget::Cfm) {
        bail!(
            "--matcher/--coupling/--sigma define their own target; --objective efm, --parametrization, \
             --weighting and --jacobian-reg apply only without them"
        );
    }
    let parametrization: Prediction = match f.parametrization {
        Some(s) => s.parse().context("--parametrization")?,
        None => Prediction::Velocity,
    };
    let weighting: Weighting = match f.weighting {
        Some(s) => s.parse().context("--weighting")?,
        None => Weighting::Uniform,
    };
    let jacobian = match (f.jacobian_reg, f.jacobian_probes) {
        (None, Some(_)) => bail!("--jacobian-probes only applies with --jacobian-reg W"),
        (None, None) => None,
        (Some(w), k) => {
            if !(w.is_finite() && w > 0.0) {
                bail!("--jacobian-reg must be a positive number, got {w}");
            }
            let probes = k.unwrap_or(1);
            if probes == 0 {
                bail!("--jacobian-probes must be at least 1, got 0");
            }
            Some(JacobianReg { weight: w, probe: Probe::Rademacher, probes })
        }
    };
    let s = ObjectiveSpec { parametrization, weighting, target, jacobian };
    s.validate().context("the objective")?;
    Ok(s)
}

/// A short description for the training log, e.g. `EFM (M = 256), data prediction, velocity weighting`.
pub(crate) fn describe(objective: Objective, s: &ObjectiveSpec) -> String {
    let mut parts = vec![match objective {
        Objective::Efm { m } => format!("empirical flow matching (M = {m})"),
        Objective::Distill => "one-step distillation of the pairs (u(x₀, 0) on x₁ − x₀)".to_string(),
        _ => "flow matching".to_string(),
    }];
    if s.parametrization != Prediction::Velocity {
        parts.push(format!("{} prediction", s.parametrization));
    }
    if s.weighting != Weighting::Uniform {
        parts.push(format!("{} weighting", s.weighting));
    }
    if let Some(j) = s.jacobian {
        parts.push(format!("Jacobian penalty {} ({} probe(s))", j.weight, j.probes));
    }
    parts.join(", ")
}

/// The spec's options for the training record (nothing for the defaults,
/// so plain runs keep their historical `config.json`).
pub(crate) fn record(s: &ObjectiveSpec) -> ObjectiveRecord {
    ObjectiveRecord {
        parametrization: (s.parametrization != Prediction::Velocity)
            .then(|| s.parametrization.name().to_string()),
        weighting: (s.weighting != Weighting::Uniform).then(|| s.weighting.name().to_string()),
        efm_m: match s.target {
            RegressionTarget::Efm { m } => Some(m),
            RegressionTarget::Cfm => None,
        },
        jacobian_reg: s.jacobian.map(|j| j.weight),
        jacobian_probes: s.jacobian.map(|j| j.probes),
    }
}

/// What a checkpoint's network predicts (velocity for records without the field).
pub fn parametrization_of(r: &RunRecord) -> Result<Prediction> {
    match &r.options.parametrization {
        Some(s) => s.parse().context("the checkpoint's recorded parametrization"),
        None => Ok(Prediction::Velocity),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_bad_ones_name_the_flag() {
        let f = ObjectiveFlags {
            parametrization: Some("noise"),
            weighting: Some("velocity"),
            jacobian_reg: Some(0.1),
            ..Default::default()
        };
        let s = spec(Objective::Efm { m: 16 }, &f, false).ok();
        assert_eq!(
            s.map(|s| (s.parametrization, s.weighting, s.target)),
            Some((Prediction::Epsilon, Weighting::Velocity, RegressionTarget::Efm { m: 16 }))
        );
        let err =
            |f: ObjectiveFlags, o, m| spec(o, &f, m).err().map(|e| format!("{e:#}")).unwrap_or_default();
        let e = err(ObjectiveFlags { weighting: Some("nope"), ..Default::default() }, Objective::Cfm, false);
        assert!(e.contains("--weighting"), "{e}");
        let e = err(ObjectiveFlags { jacobian_reg: Some(-1.0), ..Default::default() }, Objective::Cfm, false);
        assert!(e.contains("--jacobian-reg"), "{e}");
        let e =
            err(ObjectiveFlags { parametrization: Some("data"), ..Default::default() }, Objective::Cfm, true);
        assert!(e.contains("--matcher"), "{e}");
        let e = err(ObjectiveFlags { jacobian_probes: Some(2), ..Default::default() }, Objective::Cfm, false);
        assert!(e.contains("--jacobian-reg"), "{e}");
    }
}

//! Schedulers `(α_t, σ_t)` of affine probability paths `x_t = α_t x_1 + σ_t x_0`.
//!
//! Time convention: `t = 0` is noise (`α_0 = 0, σ_0 = 1`), `t = 1` is data
//! (`α_1 = 1, σ_1 = 0`). Names follow `flow_matching`'s schedulers.

use std::f64::consts::FRAC_PI_2;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// `(α_t, σ_t, α̇_t, σ̇_t)` at one time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulerOutput {
    /// Data coefficient `α_t`.
    pub alpha: f64,
    /// Noise coefficient `σ_t`.
    pub sigma: f64,
    /// `dα/dt`.
    pub d_alpha: f64,
    /// `dσ/dt`.
    pub d_sigma: f64,
}

impl SchedulerOutput {
    /// `Δ_t = α̇σ − σ̇α`, positive for a valid scheduler (1 for CondOT).
    pub fn delta(&self) -> f64 {
        self.d_alpha * self.sigma - self.d_sigma * self.alpha
    }
}

/// A scheduler of an affine probability path.
pub trait Scheduler {
    /// The coefficients and their time derivatives at `t ∈ [0, 1]`.
    fn at(&self, t: f64) -> SchedulerOutput;
    /// The time at which the signal-to-noise ratio `α/σ` equals `snr`.
    fn snr_inverse(&self, snr: f64) -> f64;
}

/// Conditional optimal transport: `α = t`, `σ = 1 − t` (straight lines).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CondOtScheduler;

impl Scheduler for CondOtScheduler {
    fn at(&self, t: f64) -> SchedulerOutput {
        SchedulerOutput { alpha: t, sigma: 1.0 - t, d_alpha: 1.0, d_sigma: -1.0 }
    }
    fn snr_inverse(&self, snr: f64) -> f64 {
        snr / (1.0 + snr)
    }
}

/// Polynomial convex scheduler: `α = tⁿ`, `σ = 1 − tⁿ`, `n > 0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolynomialConvexScheduler {
    /// The exponent `n > 0`.
    pub n: f64,
}

impl PolynomialConvexScheduler {
    /// A polynomial scheduler; `n` must be positive and finite.
    pub fn new(n: f64) -> Result<Self> {
        if !(n.is_finite() && n > 0.0) {
            return Err(Error::invalid("n", format!("the polynomial exponent must be > 0, got {n}")));
        }
        Ok(Self { n })
    }
}

impl Scheduler for PolynomialConvexScheduler {
    fn at(&self, t: f64) -> SchedulerOutput {
        let a = t.powf(self.n);
        let da = if t == 0.0 && self.n < 1.0 { f64::INFINITY } else { self.n * t.powf(self.n - 1.0) };
        SchedulerOutput { alpha: a, sigma: 1.0 - a, d_alpha: da, d_sigma: -da }
    }
    fn snr_inverse(&self, snr: f64) -> f64 {
        (snr / (1.0 + snr)).powf(1.0 / self.n)
    }
}

/// Cosine scheduler: `α = sin(πt/2)`, `σ = cos(πt/2)`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CosineScheduler;

impl Scheduler for CosineScheduler {
    fn at(&self, t: f64) -> SchedulerOutput {
        let (s, c) = (FRAC_PI_2 * t).sin_cos();
        SchedulerOutput { alpha: s, sigma: c, d_alpha: FRAC_PI_2 * c, d_sigma: -FRAC_PI_2 * s }
    }
    fn snr_inverse(&self, snr: f64) -> f64 {
        snr.atan() / FRAC_PI_2
    }
}

/// Linear variance-preserving scheduler: `α = t`, `σ = √(1 − t²)`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinearVpScheduler;

impl Scheduler for LinearVpScheduler {
    fn at(&self, t: f64) -> SchedulerOutput {
        let s = (1.0 - t * t).max(0.0).sqrt();
        SchedulerOutput { alpha: t, sigma: s, d_alpha: 1.0, d_sigma: -t / s }
    }
    fn snr_inverse(&self, snr: f64) -> f64 {
        snr / (1.0 + snr * snr).sqrt()
    }
}

/// The variance-preserving (VP-SDE) scheduler in flow-matching time:
/// `α = exp(−T_t/2)`, `σ = √(1 − exp(−T_t))`, `T_t = ½(1−t)²(β_max−β_min) + (1−t)β_min`.
///
/// It starts only approximately at `N(0, I)` (`α_0 ≈ 6.6e-3` with the defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VpScheduler {
    /// `β_min` (default 0.1).
    pub beta_min: f64,
    /// `β_max` (default 20).
    pub beta_max: f64,
}

impl Default for VpScheduler {
    fn default() -> Self {
        Self { beta_min: 0.1, beta_max: 20.0 }
    }
}

impl VpScheduler {
    /// A VP scheduler; needs `0 ≤ β_min < β_max`.
    pub fn new(beta_min: f64, beta_max: f64) -> Result<Self> {
        if !(beta_min.is_finite() && beta_max.is_finite() && beta_min >= 0.0 && beta_max > beta_min) {
            return Err(Error::invalid(
                "beta",
                format!("need 0 <= beta_min < beta_max, got beta_min = {beta_min}, beta_max = {beta_max}"),
            ));
        }
        Ok(Self { beta_min, beta_max })
    }
}

impl Scheduler for VpScheduler {
    fn at(&self, t: f64) -> SchedulerOutput {
        let (b, bb) = (self.beta_min, self.beta_max);
        let s = 1.0 - t;
        let tt = 0.5 * s * s * (bb - b) + s * b;
        let dtt = -s * (bb - b) - b;
        let alpha = (-0.5 * tt).exp();
        let sigma = (1.0 - (-tt).exp()).max(0.0).sqrt();
        SchedulerOutput {
            alpha,
            sigma,
            d_alpha: -0.5 * dtt * alpha,
            d_sigma: 0.5 * dtt * (-tt).exp() / sigma,
        }
    }
    fn snr_inverse(&self, snr: f64) -> f64 {
        let (b, bb) = (self.beta_min, self.beta_max);
        let tt = (1.0 + 1.0 / (snr * snr)).ln();
        1.0 - (-b + (b * b + 2.0 * (bb - b) * tt).sqrt()) / (bb - b)
    }
}

/// Any of the schedulers, chosen at run time and stored in checkpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SchedulerKind {
    /// [`CondOtScheduler`].
    #[default]
    CondOt,
    /// [`PolynomialConvexScheduler`].
    Polynomial {
        /// Exponent.
        n: f64,
    },
    /// [`CosineScheduler`].
    Cosine,
    /// [`LinearVpScheduler`].
    LinearVp,
    /// [`VpScheduler`].
    Vp {
        /// `β_min`.
        beta_min: f64,
        /// `β_max`.
        beta_max: f64,
    },
}

impl SchedulerKind {
    /// The names [`FromStr`] accepts.
    pub const NAMES: &'static [&'static str] = &["cond-ot", "polynomial:N", "cosine", "linear-vp", "vp"];
}

impl Scheduler for SchedulerKind {
    fn at(&self, t: f64) -> SchedulerOutput {
        match *self {
            SchedulerKind::CondOt => CondOtScheduler.at(t),
            SchedulerKind::Polynomial { n } => PolynomialConvexScheduler { n }.at(t),
            SchedulerKind::Cosine => CosineScheduler.at(t),
            SchedulerKind::LinearVp => LinearVpScheduler.at(t),
            SchedulerKind::Vp { beta_min, beta_max } => VpScheduler { beta_min, beta_max }.at(t),
        }
    }
    fn snr_inverse(&self, snr: f64) -> f64 {
        match *self {
            SchedulerKind::CondOt => CondOtScheduler.snr_inverse(snr),
            SchedulerKind::Polynomial { n } => PolynomialConvexScheduler { n }.snr_inverse(snr),
            SchedulerKind::Cosine => CosineScheduler.snr_inverse(snr),
            SchedulerKind::LinearVp => LinearVpScheduler.snr_inverse(snr),
            SchedulerKind::Vp { beta_min, beta_max } => VpScheduler { beta_min, beta_max }.snr_inverse(snr),
        }
    }
}

impl FromStr for SchedulerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "cond-ot" | "condot" | "ot" => Ok(SchedulerKind::CondOt),
            "cosine" => Ok(SchedulerKind::Cosine),
            "linear-vp" | "linearvp" => Ok(SchedulerKind::LinearVp),
            "vp" => {
                let d = VpScheduler::default();
                Ok(SchedulerKind::Vp { beta_min: d.beta_min, beta_max: d.beta_max })
            }
            other => {
                if let Some(n) = other.strip_prefix("polynomial:").or_else(|| other.strip_prefix("poly:")) {
                    let n: f64 = n.parse().map_err(|_| {
                        Error::invalid(
                            "scheduler",
                            format!("`{s}`: the exponent after `polynomial:` must be a number"),
                        )
                    })?;
                    PolynomialConvexScheduler::new(n)?;
                    return Ok(SchedulerKind::Polynomial { n });
                }
                Err(Error::invalid(
                    "scheduler",
                    format!("unknown scheduler `{s}`; valid: {}", Self::NAMES.join(", ")),
                ))
            }
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchedulerKind::CondOt => write!(f, "cond-ot"),
            SchedulerKind::Polynomial { n } => write!(f, "polynomial:{n}"),
            SchedulerKind::Cosine => write!(f, "cosine"),
            SchedulerKind::LinearVp => write!(f, "linear-vp"),
            SchedulerKind::Vp { beta_min, beta_max } if *beta_min == 0.1 && *beta_max == 20.0 => {
                write!(f, "vp")
            }
            SchedulerKind::Vp { beta_min, beta_max } => {
                write!(f, "vp(beta_min={beta_min}, beta_max={beta_max})")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<SchedulerKind> {
        vec![
            SchedulerKind::CondOt,
            SchedulerKind::Polynomial { n: 2.0 },
            SchedulerKind::Polynomial { n: 3.5 },
            SchedulerKind::Cosine,
            SchedulerKind::LinearVp,
            SchedulerKind::Vp { beta_min: 0.1, beta_max: 20.0 },
        ]
    }

    #[test]
    fn derivatives_match_finite_differences() {
        let h = 1e-6;
        for s in all() {
            for &t in &[0.05, 0.2, 0.5, 0.8, 0.95] {
                let o = s.at(t);
                let (p, m) = (s.at(t + h), s.at(t - h));
                let fd_a = (p.alpha - m.alpha) / (2.0 * h);
                let fd_s = (p.sigma - m.sigma) / (2.0 * h);
                assert!(
                    (fd_a - o.d_alpha).abs() < 1e-5 * (1.0 + o.d_alpha.abs()),
                    "{s} α̇ at {t}: {fd_a} vs {}",
                    o.d_alpha
                );
                assert!(
                    (fd_s - o.d_sigma).abs() < 1e-5 * (1.0 + o.d_sigma.abs()),
                    "{s} σ̇ at {t}: {fd_s} vs {}",
                    o.d_sigma
                );
                assert!(o.delta() > 0.0, "{s}: Δ must be positive at {t}");
            }
        }
    }

    #[test]
    fn endpoints() {
        for s in all() {
            let one = s.at(1.0);
            assert!((one.alpha - 1.0).abs() < 1e-12 && one.sigma.abs() < 1e-12, "{s} at 1");
            let zero = s.at(0.0);
            if !matches!(s, SchedulerKind::Vp { .. }) {
                assert!(zero.alpha.abs() < 1e-12 && (zero.sigma - 1.0).abs() < 1e-12, "{s} at 0");
            }
        }
        let vp = VpScheduler::default().at(0.0);
        assert!((vp.alpha - 6.57e-3).abs() < 1e-5 && (vp.sigma - 0.999978).abs() < 1e-6);
    }

    #[test]
    fn snr_inverse_inverts() {
        for s in all() {
            for &t in &[0.1, 0.3, 0.5, 0.7, 0.9] {
                let o = s.at(t);
                let back = s.snr_inverse(o.alpha / o.sigma);
                assert!((back - t).abs() < 1e-9, "{s}: snr_inverse({t}) = {back}");
            }
        }
    }

    #[test]
    fn parse_and_display_round_trip() -> Result<()> {
        for s in all() {
            let parsed: SchedulerKind = s.to_string().parse()?;
            assert_eq!(parsed, s);
        }
        let err = "nope".parse::<SchedulerKind>().unwrap_err().to_string();
        assert!(err.contains("cond-ot") && err.contains("cosine"), "{err}");
        assert!("polynomial:-1".parse::<SchedulerKind>().is_err());
        Ok(())
    }
}

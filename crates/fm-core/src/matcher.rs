//! torchcfm's conditional flow matchers (`torchcfm/conditional_flow_matching.py`;
//! Tong et al., arXiv 2302.00482; Albergo & Vanden-Eijnden, arXiv 2209.15571).
//!
//! A [`Matcher`] samples `x_t = μ_t + σ_t ε` with `ε ~ N(0, I)` and the
//! regression target `u_t` (docs/reference/couplings.md), after re-pairing the minibatch
//! with its [`Coupling`]:
//!
//! | [`MatcherKind`] (name) | `μ_t` | `σ_t` | `u_t` | coupling |
//! |---|---|---|---|---|
//! | I-CFM (`icfm`) | `t x₁ + (1−t) x₀` | `σ` | `x₁ − x₀` | independent |
//! | OT-CFM (`otcfm`) | same | `σ` | `x₁ − x₀` | exact OT |
//! | SB-CFM (`sbcfm`) | same | `σ√(t(1−t))` | `(1−2t)/(2t(1−t)) (x_t − μ_t) + x₁ − x₀` | Sinkhorn, `ε = 2σ²` |
//! | Target FM (`fm`, Lipman) | `t x₁` | `1 − (1−σ)t` | `(x₁ − (1−σ)x_t)/(1 − (1−σ)t)` | none (`x₀` unused) |
//! | VP SI (`si`) | `cos(πt/2) x₀ + sin(πt/2) x₁` | `σ` | `π/2 (cos(πt/2) x₁ − sin(πt/2) x₀)` | independent |
//!
//! Numerics as torchcfm: SB-CFM's `1/(2t(1−t))` is computed as
//! `1/(2t(1−t) + 10⁻⁸)`. Target FM's `u_t` is evaluated in the equivalent
//! form `x₁ − (1−σ) ε` (no division, finite at `t = 1`). Time convention:
//! `t = 0` noise, `t = 1` data.
//!
//! ```
//! use candle::{Device, Tensor};
//! use fm_core::{matcher::{Matcher, MatcherKind}, SeededRng};
//!
//! # fn main() -> fm_core::Result<()> {
//! let m = Matcher::new(MatcherKind::ICfm, 0.0)?;
//! let x0 = Tensor::new(&[[0.0f64, 0.0]], &Device::Cpu)?;
//! let x1 = Tensor::new(&[[2.0f64, 4.0]], &Device::Cpu)?;
//! let t = Tensor::new(&[0.25f64], &Device::Cpu)?;
//! let s = m.sample(&x0, &x1, &t, &mut SeededRng::new(0))?;
//! assert_eq!(s.x_t.to_vec2::<f64>()?, vec![vec![0.5, 1.0]]);
//! assert_eq!(s.dx_t.to_vec2::<f64>()?, vec![vec![2.0, 4.0]]);
//! assert_eq!("otcfm".parse::<MatcherKind>()?, MatcherKind::OtCfm);
//! # Ok(())
//! # }
//! ```

use std::f64::consts::FRAC_PI_2;
use std::fmt;
use std::str::FromStr;

use candle::Tensor;

use crate::coupling::{Coupling, DEFAULT_SINKHORN_ITERS};
use crate::loss::draw_source_and_time;
use crate::path::PathSample;
use crate::{to_f64_vec, Error, Result, SeededRng, VelocityField};

/// SB-CFM's guard in `1/(2t(1−t) + 10⁻⁸)`, as torchcfm.
const SB_GUARD: f64 = 1e-8;

/// Which conditional path and target (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatcherKind {
    /// `ConditionalFlowMatcher` (I-CFM).
    ICfm,
    /// `ExactOptimalTransportConditionalFlowMatcher` (OT-CFM).
    OtCfm,
    /// `SchrodingerBridgeConditionalFlowMatcher` (SB-CFM).
    SbCfm,
    /// `TargetConditionalFlowMatcher` (Lipman et al.'s FM).
    Target,
    /// `VariancePreservingConditionalFlowMatcher` (stochastic interpolant).
    Vp,
}

impl MatcherKind {
    /// Every kind, in the order of the module table.
    pub const ALL: [MatcherKind; 5] =
        [MatcherKind::ICfm, MatcherKind::OtCfm, MatcherKind::SbCfm, MatcherKind::Target, MatcherKind::Vp];

    /// The name `FromStr` accepts: `icfm`, `otcfm`, `sbcfm`, `fm`, `si`.
    pub fn name(&self) -> &'static str {
        match self {
            MatcherKind::ICfm => "icfm",
            MatcherKind::OtCfm => "otcfm",
            MatcherKind::SbCfm => "sbcfm",
            MatcherKind::Target => "fm",
            MatcherKind::Vp => "si",
        }
    }

    /// torchcfm's default `σ`: 1 for SB-CFM (it needs `σ > 0`), 0 otherwise.
    pub fn default_sigma(&self) -> f64 {
        match self {
            MatcherKind::SbCfm => 1.0,
            _ => 0.0,
        }
    }
}

impl fmt::Display for MatcherKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for MatcherKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "icfm" | "cfm" => MatcherKind::ICfm,
            "otcfm" => MatcherKind::OtCfm,
            "sbcfm" | "sb" => MatcherKind::SbCfm,
            "fm" | "target" | "lipman" => MatcherKind::Target,
            "si" | "vp" | "vpcfm" => MatcherKind::Vp,
            _ => {
                return Err(Error::invalid(
                    "matcher",
                    format!(
                    "unknown matcher `{s}`; valid: icfm, otcfm, sbcfm, fm (target), si (variance preserving)"
                ),
                ))
            }
        })
    }
}

/// A conditional flow matcher: a path, its target and a minibatch coupling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Matcher {
    /// The path and target.
    pub kind: MatcherKind,
    /// The noise level `σ ≥ 0` (`σ > 0` for SB-CFM).
    pub sigma: f64,
    coupling: Coupling,
}

impl Matcher {
    /// A matcher with its torchcfm coupling: independent for I-CFM, Target
    /// and SI, exact OT for OT-CFM, and for SB-CFM Sinkhorn on the raw
    /// squared-Euclidean cost with `ε = 2σ²`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `σ` is negative or not finite, or `σ = 0` for SB-CFM.
    pub fn new(kind: MatcherKind, sigma: f64) -> Result<Self> {
        if !(sigma.is_finite() && sigma >= 0.0) {
            return Err(Error::invalid("sigma", format!("must be a non-negative number, got {sigma}")));
        }
        let coupling = match kind {
            MatcherKind::ICfm | MatcherKind::Target | MatcherKind::Vp => Coupling::Independent,
            MatcherKind::OtCfm => Coupling::ExactOt,
            MatcherKind::SbCfm => {
                if sigma <= 0.0 {
                    return Err(Error::invalid("sigma", "SB-CFM needs σ > 0 (its entropic reg is 2σ²)"));
                }
                Coupling::Sinkhorn {
                    reg: 2.0 * sigma * sigma,
                    iters: DEFAULT_SINKHORN_ITERS,
                    normalize_cost: false,
                }
            }
        };
        Ok(Self { kind, sigma, coupling })
    }

    /// Replaces the coupling (e.g. I-CFM with Sinkhorn).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad Sinkhorn parameters, or a
    /// non-independent coupling on the Target matcher (it ignores `x₀`).
    pub fn with_coupling(mut self, coupling: Coupling) -> Result<Self> {
        coupling.validate()?;
        if self.kind == MatcherKind::Target && coupling != Coupling::Independent {
            return Err(Error::invalid(
                "coupling",
                "the target (Lipman FM) matcher does not use x0, so it cannot be coupled; use independent",
            ));
        }
        self.coupling = coupling;
        Ok(self)
    }

    /// The minibatch coupling applied before sampling the path.
    pub fn coupling(&self) -> Coupling {
        self.coupling
    }

    /// Per-sample coefficients `(a, b, s, p, q, r)` with
    /// `x_t = a x₁ + b x₀ + s ε` and `u_t = p x₁ + q x₀ + r ε`.
    fn coefficients(&self, t: f64) -> [f64; 6] {
        let sig = self.sigma;
        match self.kind {
            MatcherKind::ICfm | MatcherKind::OtCfm => [t, 1.0 - t, sig, 1.0, -1.0, 0.0],
            MatcherKind::SbCfm => {
                let s = sig * (t * (1.0 - t)).max(0.0).sqrt();
                // (1−2t)/(2t(1−t)) (x_t − μ_t) with x_t − μ_t = s ε.
                let r = (1.0 - 2.0 * t) / (2.0 * t * (1.0 - t) + SB_GUARD) * s;
                [t, 1.0 - t, s, 1.0, -1.0, r]
            }
            MatcherKind::Target => [t, 0.0, 1.0 - (1.0 - sig) * t, 1.0, 0.0, -(1.0 - sig)],
            MatcherKind::Vp => {
                let (sin, cos) = (FRAC_PI_2 * t).sin_cos();
                [sin, cos, sig, FRAC_PI_2 * cos, -FRAC_PI_2 * sin, 0.0]
            }
        }
    }

    /// The standard deviation `σ_t` of the conditional path at `t`.
    pub fn sigma_t(&self, t: f64) -> f64 {
        self.coefficients(t)[2]
    }

    /// `x_t` and `u_t` for given noise `eps` (deterministic; no coupling).
    ///
    /// # Shapes
    /// - `x0`, `x1`, `eps`: `(b, ...)`
    /// - `t`: `(b,)`
    /// - returns `x_t`, `dx_t = u_t`: `(b, ...)`
    pub fn sample_with_noise(
        &self,
        x0: &Tensor,
        x1: &Tensor,
        t: &Tensor,
        eps: &Tensor,
    ) -> Result<PathSample> {
        if x0.dims() != x1.dims() || x0.dims() != eps.dims() || x0.rank() == 0 {
            return Err(Error::Shape(format!(
                "x0 {:?}, x1 {:?} and eps {:?} must have equal shapes (b, ...)",
                x0.dims(),
                x1.dims(),
                eps.dims()
            )));
        }
        let ts = to_f64_vec(t)?;
        if t.rank() != 1 || ts.len() != x0.dim(0)? {
            return Err(Error::Shape(format!(
                "t {:?} must be ({},), one time per sample",
                t.dims(),
                x0.dim(0)?
            )));
        }
        let co: Vec<[f64; 6]> = ts.iter().map(|&t| self.coefficients(t)).collect();
        let col = |k: usize| -> Result<Tensor> {
            let mut shape = vec![1usize; x0.rank()];
            shape[0] = co.len();
            let v: Vec<f64> = co.iter().map(|c| c[k]).collect();
            Ok(Tensor::from_vec(v, shape, x0.device())?.to_dtype(x0.dtype())?)
        };
        let lin = |k: usize| -> Result<Tensor> {
            let s = x1.broadcast_mul(&col(k)?)?;
            let s = (s + x0.broadcast_mul(&col(k + 1)?)?)?;
            Ok((s + eps.broadcast_mul(&col(k + 2)?)?)?)
        };
        Ok(PathSample { x_t: lin(0)?, dx_t: lin(3)? })
    }

    /// `x_t` and `u_t` for the pairs as given (no coupling), with fresh
    /// `ε ~ N(0, I)` from `rng`.
    ///
    /// # Shapes
    /// - `x0`, `x1`: `(b, ...)`
    /// - `t`: `(b,)`
    /// - returns `x_t`, `dx_t = u_t`: `(b, ...)`
    pub fn sample(&self, x0: &Tensor, x1: &Tensor, t: &Tensor, rng: &mut SeededRng) -> Result<PathSample> {
        let eps = rng.normal(x0.shape(), x0.dtype(), x0.device())?;
        self.sample_with_noise(x0, x1, t, &eps)
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (σ = {}, {} coupling)", self.kind, self.sigma, self.coupling)
    }
}

/// The matcher's regression loss for given pairs `(x₀, x₁)` and times (no
/// coupling here): the mean over batch and coordinates of
/// `(u_θ(x_t, t) − u_t)²`, a scalar tensor. Draws `ε` from `rng`.
///
/// # Shapes
/// - `x0`, `x1`: `(b, ...)`
/// - `t`: `(b,)`
pub fn matcher_loss<V>(
    field: &V,
    matcher: &Matcher,
    x0: &Tensor,
    x1: &Tensor,
    t: &Tensor,
    rng: &mut SeededRng,
) -> Result<Tensor>
where
    V: VelocityField + ?Sized,
{
    let s = matcher.sample(x0, x1, t, rng)?;
    let u = field.velocity(&s.x_t, t)?;
    Ok((u - s.dx_t)?.sqr()?.mean_all()?)
}

/// The loss of `matcher` on one training batch `x1`: draws `t` and
/// `x₀ ~ N(0, I)` as [`draw_source_and_time`], re-pairs them with the
/// matcher's coupling and draws `ε` ([`matcher_batch_loss_from`]).
///
/// # Shapes
/// - `x1`: `(b, ...)`; returns a scalar
pub fn matcher_batch_loss<V>(field: &V, matcher: &Matcher, x1: &Tensor, rng: &mut SeededRng) -> Result<Tensor>
where
    V: VelocityField + ?Sized,
{
    let (x0, t) = draw_source_and_time(x1, rng)?;
    matcher_batch_loss_from(field, matcher, &x0, x1, &t, rng)
}

/// As [`matcher_batch_loss`], for a given source batch `x0` (any source
/// distribution) and times `t`: re-pairs `(x0, x1)` with the matcher's
/// coupling and draws `ε` from `rng`.
///
/// # Shapes
/// - `x0`, `x1`: `(b, ...)`
/// - `t`: `(b,)`; returns a scalar
pub fn matcher_batch_loss_from<V>(
    field: &V,
    matcher: &Matcher,
    x0: &Tensor,
    x1: &Tensor,
    t: &Tensor,
    rng: &mut SeededRng,
) -> Result<Tensor>
where
    V: VelocityField + ?Sized,
{
    let c = matcher.coupling().couple(x0, x1, None, false, rng)?;
    matcher_loss(field, matcher, &c.x0, &c.x1, t, rng)
}

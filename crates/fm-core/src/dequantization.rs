//! Bits per dimension of 8-bit data under a continuous density (docs/reference/likelihood.md).
//!
//! **Dequantization.** A density cannot be fit to discrete pixels
//! `x ∈ {0, …, 255}^D`; uniform dequantization fits it to
//! `y = (x + v)/256 ∈ [0, 1)^D` with `v ~ U[0, 1)^D` ([`dequantize`]). Then
//! `log P(x) ≥ E_v log p_y(y) − D log 256`, and the bits per dimension are
//!
//! ```text
//! bpd = (−log p_y(y)/D + log 256) / log 2          (FFJORD compute_bits_per_dim)
//! ```
//!
//! ([`bits_per_dim`]). A model rarely sees `y` itself but a pre-processed
//! `z = f(y)`; by the change of variables `log p_y(y) = log p_z(z) + log|det ∂z/∂y|`
//! ([`Preprocessing::log_abs_det`]):
//!
//! - **affine** `z = a y + c` (elementwise): `log|det| = D log|a|`. For a
//!   model on `[−1, 1]` (`z = 2y − 1`): `bpd = −log p_z(z)/(D log 2) + 7`;
//! - **logit** (RealNVP) `z = logit(s)`, `s = γ + (1 − 2γ) y`:
//!   `log|det| = Σⱼ [log(1 − 2γ) − log sⱼ − log(1 − sⱼ)]`.
//!
//! ```
//! use fm_core::dequantization::{bits_per_dim, Preprocessing};
//! # fn main() -> fm_core::Result<()> {
//! // The uniform density on [−1, 1]^D after z = 2y − 1: log p_z = −D log 2.
//! let d = 3 * 32 * 32;
//! let log_p_z = -(d as f64) * 2f64.ln();
//! let log_p_y = log_p_z + Preprocessing::Affine { scale: 2.0, shift: -1.0 }.affine_log_abs_det(d)?;
//! assert!((bits_per_dim(log_p_y, d)? - 8.0).abs() < 1e-12);
//! # Ok(())
//! # }
//! ```

use candle::Tensor;

use crate::{to_f64_vec, Error, Result, SeededRng};

/// `log 256`, the log-volume of one quantization bin in `[0, 1)` per dimension.
pub const LOG_256: f64 = 5.545_177_444_479_562;

/// Bits per dimension `(−log p_y(y)/D + log 256)/log 2` of 8-bit data from
/// the log-density `log_p_y` (nats, per example) of its dequantized version
/// `y ∈ [0, 1)^D`. Linear in `log_p_y`, so the bpd of a mean log-density is
/// the mean bpd.
///
/// # Errors
///
/// [`Error::InvalidArgument`] naming `dim` if it is 0, naming `log_p_y` if
/// it is NaN.
pub fn bits_per_dim(log_p_y: f64, dim: usize) -> Result<f64> {
    if dim == 0 {
        return Err(Error::invalid("dim", "must be at least 1"));
    }
    if log_p_y.is_nan() {
        return Err(Error::invalid("log_p_y", "is NaN"));
    }
    Ok((-log_p_y / dim as f64 + LOG_256) / std::f64::consts::LN_2)
}

/// Uniform dequantization `y = (x + v)/256`, `v ~ U[0, 1)`, of 8-bit values.
///
/// # Shapes
/// - `x`: any shape, float dtype, integer values in `0..=255`
/// - returns: the shape and dtype of `x`, values in `[0, 1)`
///
/// # Errors
///
/// [`Error::InvalidArgument`] naming `x` if a value is not an integer in `0..=255`.
pub fn dequantize(x: &Tensor, rng: &mut SeededRng) -> Result<Tensor> {
    let values = to_f64_vec(x)?;
    if let Some((i, v)) =
        values.iter().enumerate().find(|(_, v)| !(0.0..=255.0).contains(*v) || v.fract() != 0.0)
    {
        return Err(Error::invalid(
            "x",
            format!("8-bit data must be integers in 0..=255, element {i} is {v}"),
        ));
    }
    let v = rng.uniform(x.shape(), 0.0, 1.0, x.dtype(), x.device())?;
    Ok((x + v)?.affine(1.0 / 256.0, 0.0)?)
}

/// The map from dequantized data `y ∈ [0, 1)^D` to the model's space `z`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Preprocessing {
    /// `z = y`.
    Identity,
    /// `z = scale · y + shift` elementwise (e.g. `scale = 2, shift = −1` for `[−1, 1]`).
    Affine {
        /// `a`, nonzero.
        scale: f64,
        /// `c`.
        shift: f64,
    },
    /// `z = logit(γ + (1 − 2γ) y)` (RealNVP), `0 ≤ γ < ½`.
    Logit {
        /// `γ`, keeps the logit finite at the ends of `[0, 1]`.
        gamma: f64,
    },
}

impl Preprocessing {
    fn validate(&self) -> Result<()> {
        match *self {
            Preprocessing::Affine { scale, shift }
                if scale == 0.0 || !scale.is_finite() || !shift.is_finite() =>
            {
                Err(Error::invalid(
                    "scale",
                    format!(
                        "an affine pre-processing needs a finite nonzero scale, got {scale} (shift {shift})"
                    ),
                ))
            }
            Preprocessing::Logit { gamma } if !(0.0..0.5).contains(&gamma) => {
                Err(Error::invalid("gamma", format!("must be in [0, 0.5), got {gamma}")))
            }
            _ => Ok(()),
        }
    }

    /// `z = f(y)`.
    ///
    /// # Shapes
    /// - `y`: `(b, ...)`; returns the same shape
    pub fn apply(&self, y: &Tensor) -> Result<Tensor> {
        self.validate()?;
        Ok(match *self {
            Preprocessing::Identity => y.clone(),
            Preprocessing::Affine { scale, shift } => y.affine(scale, shift)?,
            Preprocessing::Logit { gamma } => {
                let s = y.affine(1.0 - 2.0 * gamma, gamma)?;
                (s.log()? - s.affine(-1.0, 1.0)?.log()?)?
            }
        })
    }

    /// `log|det ∂z/∂y|` per example, so that `log p_y(y) = log p_z(z) + log|det|`.
    ///
    /// - identity: 0; affine: `D log|a|`;
    /// - logit: `Σⱼ [log(1 − 2γ) − log sⱼ − log(1 − sⱼ)]` with `s = γ + (1 − 2γ) y`.
    ///
    /// # Shapes
    /// - `y`: `(b, ...)` (`D` = the product of the non-batch dimensions)
    /// - returns: `(b,)`
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a zero scale or `γ ∉ [0, ½)`;
    /// [`Error::Shape`] if `y` has no batch dimension.
    pub fn log_abs_det(&self, y: &Tensor) -> Result<Tensor> {
        self.validate()?;
        if y.rank() == 0 {
            return Err(Error::Shape("`y` must have a batch dimension".into()));
        }
        let flat = y.flatten_from(1)?;
        let (b, d) = flat.dims2()?;
        Ok(match *self {
            Preprocessing::Identity | Preprocessing::Affine { .. } => {
                Tensor::full(self.affine_log_abs_det(d)?, b, y.device())?.to_dtype(y.dtype())?
            }
            Preprocessing::Logit { gamma } => {
                let s = flat.affine(1.0 - 2.0 * gamma, gamma)?;
                let per = (s.log()? + s.affine(-1.0, 1.0)?.log()?)?.neg()?;
                per.sum(1)?.affine(1.0, d as f64 * (1.0 - 2.0 * gamma).ln())?
            }
        })
    }

    /// `log|det ∂z/∂y|` of the identity (0) or an affine map (`D log|a|`) in
    /// dimension `dim`, which does not depend on `y`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming `gamma` for [`Preprocessing::Logit`],
    /// whose log-determinant depends on `y` (use [`log_abs_det`](Self::log_abs_det)).
    pub fn affine_log_abs_det(&self, dim: usize) -> Result<f64> {
        self.validate()?;
        match *self {
            Preprocessing::Identity => Ok(0.0),
            Preprocessing::Affine { scale, .. } => Ok(dim as f64 * scale.abs().ln()),
            Preprocessing::Logit { .. } => Err(Error::invalid(
                "gamma",
                "the logit pre-processing's log-determinant depends on y; use log_abs_det(y)",
            )),
        }
    }
}

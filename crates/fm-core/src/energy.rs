//! Rezende & Mohamed's 2-D test energies U1–U4 (arXiv 1505.05770, Fig. 3).
//!
//! Each energy defines an unnormalised density `p(z) ∝ e^{−U(z)}` on `ℝ²`.
//! They are the standard targets for reverse-KL training of normalizing
//! flows: `KL(q‖p) = E_q[log q(z) + U(z)] + log Z`.
//!
//! With `w₁ = sin(2π z₁ / 4)`, `w₂ = 3 exp(−½((z₁ − 1)/0.6)²)` and
//! `w₃ = 3 sigmoid((z₁ − 1)/0.3)`:
//!
//! - `U₁ = ½((‖z‖ − 2)/0.4)² − log(e^{−½((z₁−2)/0.6)²} + e^{−½((z₁+2)/0.6)²})`
//! - `U₂ = ½((z₂ − w₁)/0.4)²`
//! - `U₃ = −log(e^{−½((z₂−w₁)/0.35)²} + e^{−½((z₂−w₁+w₂)/0.35)²})`
//! - `U₄ = −log(e^{−½((z₂−w₁)/0.4)²} + e^{−½((z₂−w₁+w₃)/0.35)²})`
//!
//! `U₁` is normalisable on `ℝ²`; `U₂`–`U₄` do not confine `z₁`, so their
//! normaliser depends on the box `[−L, L]²` ([`EnergyBox`]).
//!
//! ```
//! use candle::{Device, Tensor};
//! use fm_core::energy::{EnergyBox, TestEnergy};
//!
//! # fn main() -> fm_core::Result<()> {
//! let u1: TestEnergy = "u1".parse()?;
//! let z = Tensor::new(&[[2.0f64, 0.0], [0.0, 0.0]], &Device::Cpu)?;
//! let e = u1.energy(&z)?.to_vec1::<f64>()?;
//! assert!(e[0] < e[1]); // the ring (radius 2) is more likely than the origin
//! assert_eq!(u1.log_z(EnergyBox::Four), 1.8775);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::str::FromStr;

use candle::{DType, Device, Tensor};

use crate::{Error, Result};

/// One of the four 2-D test energies of Rezende & Mohamed (2015).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TestEnergy {
    /// A ring of radius 2 with two modes on the `z₁` axis.
    U1,
    /// A sine wave `z₂ ≈ sin(π z₁ / 2)`.
    U2,
    /// The sine wave plus a bump branch near `z₁ = 1`.
    U3,
    /// The sine wave plus a sigmoid branch for `z₁ > 1`.
    U4,
}

/// The integration box `[−L, L]²` of a tabulated `log Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnergyBox {
    /// `[−4, 4]²` (U4's lower branch is truncated there).
    Four,
    /// `[−6, 6]²`.
    Six,
}

impl EnergyBox {
    /// The half-width `L` of the box `[−L, L]²`.
    pub fn half_width(&self) -> f64 {
        match self {
            EnergyBox::Four => 4.0,
            EnergyBox::Six => 6.0,
        }
    }
}

/// `−log(e^a + e^b)` for tensors `a`, `b`, stable and differentiable:
/// `log(e^a + e^b) = max(a, b) + log(1 + e^{−|a − b|})`, with `max` written
/// through `abs` so that every op has a gradient.
fn neg_log_add_exp(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let diff = (a - b)?.abs()?;
    let max = ((a + b)? + &diff)?.affine(0.5, 0.0)?;
    let lse = (max + diff.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?;
    Ok(lse.neg()?)
}

/// `−½((x − c)/s)²` elementwise, i.e. the exponent of an unnormalised Gaussian.
fn gauss_exponent(x: &Tensor, c: f64, s: f64) -> Result<Tensor> {
    Ok(x.affine(1.0 / s, -c / s)?.sqr()?.affine(-0.5, 0.0)?)
}

impl TestEnergy {
    /// All four energies in order.
    pub const ALL: [TestEnergy; 4] = [TestEnergy::U1, TestEnergy::U2, TestEnergy::U3, TestEnergy::U4];

    /// The names [`FromStr`] accepts.
    pub const NAMES: &'static [&'static str] = &["u1", "u2", "u3", "u4"];

    /// The energy `U(z)`, built from differentiable candle ops (gradients flow
    /// back to `z`).
    ///
    /// # Shapes
    /// - `z`: `(b, 2)` → `(b,)`, in `z`'s dtype.
    ///
    /// `U₁` uses `‖z‖`, whose gradient is undefined at `z = 0` exactly.
    pub fn energy(&self, z: &Tensor) -> Result<Tensor> {
        let (b, d) = z.dims2()?;
        if d != 2 {
            return Err(Error::Shape(format!(
                "the test energies take points of shape (b, 2), got ({b}, {d})"
            )));
        }
        let z1 = z.narrow(1, 0, 1)?.squeeze(1)?;
        let z2 = z.narrow(1, 1, 1)?.squeeze(1)?;
        let w1 = || -> Result<Tensor> { Ok(z1.affine(std::f64::consts::PI / 2.0, 0.0)?.sin()?) };
        Ok(match self {
            TestEnergy::U1 => {
                let r = z.sqr()?.sum(1)?.sqrt()?;
                let ring = gauss_exponent(&r, 2.0, 0.4)?.neg()?;
                let modes =
                    neg_log_add_exp(&gauss_exponent(&z1, 2.0, 0.6)?, &gauss_exponent(&z1, -2.0, 0.6)?)?;
                (ring + modes)?
            }
            TestEnergy::U2 => gauss_exponent(&(z2 - w1()?)?, 0.0, 0.4)?.neg()?,
            TestEnergy::U3 => {
                let r = (z2 - w1()?)?;
                let w2 = gauss_exponent(&z1, 1.0, 0.6)?.exp()?.affine(3.0, 0.0)?;
                neg_log_add_exp(&gauss_exponent(&r, 0.0, 0.35)?, &gauss_exponent(&(&r + w2)?, 0.0, 0.35)?)?
            }
            TestEnergy::U4 => {
                let r = (z2 - w1()?)?;
                // 3 sigmoid(x) = 1.5 (1 + tanh(x / 2)): tanh has a gradient in candle.
                let w3 = z1.affine(0.5 / 0.3, -0.5 / 0.3)?.tanh()?.affine(1.5, 1.5)?;
                neg_log_add_exp(&gauss_exponent(&r, 0.0, 0.4)?, &gauss_exponent(&(&r + w3)?, 0.0, 0.35)?)?
            }
        })
    }

    /// `log Z = log ∫ e^{−U}` over the box, from docs/reference/flows.md (midpoint
    /// quadrature with 4000² cells). `U₁`'s value is the same for both boxes
    /// (its mass outside `[−4, 4]²` is negligible).
    pub fn log_z(&self, bx: EnergyBox) -> f64 {
        match (self, bx) {
            (TestEnergy::U1, _) => 1.8775,
            (TestEnergy::U2, EnergyBox::Four) => 2.0821,
            (TestEnergy::U3, EnergyBox::Four) => 2.6417,
            (TestEnergy::U4, EnergyBox::Four) => 2.6846,
            (TestEnergy::U2, EnergyBox::Six) => 2.4876,
            (TestEnergy::U3, EnergyBox::Six) => 3.0472,
            (TestEnergy::U4, EnergyBox::Six) => 3.1162,
        }
    }

    /// `log ∫ e^{−U}` over `[−L, L]²` by the midpoint rule with `n × n` cells,
    /// evaluated in f64 in row chunks (memory `O(n)` per chunk of rows).
    ///
    /// The error is `O((2L/n)²)`: `n = 1000` on `[−4, 4]²` is within `10⁻³`
    /// of [`TestEnergy::log_z`].
    pub fn log_z_quadrature(&self, half_width: f64, n: usize) -> Result<f64> {
        if !(half_width.is_finite() && half_width > 0.0) {
            return Err(Error::invalid(
                "half_width",
                format!("must be finite and positive, got {half_width}"),
            ));
        }
        if n == 0 {
            return Err(Error::invalid("n", "needs at least one cell per side"));
        }
        let h = 2.0 * half_width / n as f64;
        let centres: Vec<f64> = (0..n).map(|i| -half_width + (i as f64 + 0.5) * h).collect();
        let rows_per_chunk = (1 << 18) / n + 1;
        // Sum e^{−U} with a running log-sum-exp so no term overflows.
        let mut log_total = f64::NEG_INFINITY;
        for rows in centres.chunks(rows_per_chunk) {
            let mut pts = Vec::with_capacity(rows.len() * n * 2);
            for &y in rows {
                for &x in &centres {
                    pts.push(x);
                    pts.push(y);
                }
            }
            let z = Tensor::from_vec(pts, (rows.len() * n, 2), &Device::Cpu)?;
            let neg_u = self.energy(&z)?.neg()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            let m = neg_u.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if m == f64::NEG_INFINITY {
                continue;
            }
            let s: f64 = neg_u.iter().map(|v| (v - m).exp()).sum();
            let chunk = m + s.ln();
            let hi = log_total.max(chunk);
            log_total = hi + ((log_total - hi).exp() + (chunk - hi).exp()).ln();
        }
        Ok(log_total + 2.0 * h.ln())
    }
}

impl FromStr for TestEnergy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "u1" => Ok(TestEnergy::U1),
            "u2" => Ok(TestEnergy::U2),
            "u3" => Ok(TestEnergy::U3),
            "u4" => Ok(TestEnergy::U4),
            _ => Err(Error::invalid(
                "energy",
                format!("unknown energy `{s}`; valid: {}", Self::NAMES.join(", ")),
            )),
        }
    }
}

impl fmt::Display for TestEnergy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TestEnergy::U1 => "u1",
            TestEnergy::U2 => "u2",
            TestEnergy::U3 => "u3",
            TestEnergy::U4 => "u4",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scalar f64 reference implementations straight from docs/reference/flows.md.
    fn reference(e: TestEnergy, z1: f64, z2: f64) -> f64 {
        let pi = std::f64::consts::PI;
        let w1 = (2.0 * pi * z1 / 4.0).sin();
        let w2 = 3.0 * (-0.5 * ((z1 - 1.0) / 0.6).powi(2)).exp();
        let w3 = 3.0 / (1.0 + (-(z1 - 1.0) / 0.3).exp());
        let g = |x: f64, s: f64| (-0.5 * (x / s).powi(2)).exp();
        match e {
            TestEnergy::U1 => {
                let r = (z1 * z1 + z2 * z2).sqrt();
                0.5 * ((r - 2.0) / 0.4).powi(2) - (g(z1 - 2.0, 0.6) + g(z1 + 2.0, 0.6)).ln()
            }
            TestEnergy::U2 => 0.5 * ((z2 - w1) / 0.4).powi(2),
            TestEnergy::U3 => -(g(z2 - w1, 0.35) + g(z2 - w1 + w2, 0.35)).ln(),
            TestEnergy::U4 => -(g(z2 - w1, 0.4) + g(z2 - w1 + w3, 0.35)).ln(),
        }
    }

    #[test]
    fn matches_scalar_reference() -> Result<()> {
        let pts = [[0.3f64, -0.7], [1.9, 0.2], [-2.5, 1.1], [1.0, -2.0], [0.0, 0.5]];
        let z = Tensor::new(&pts, &Device::Cpu)?;
        for e in TestEnergy::ALL {
            let got = e.energy(&z)?.to_vec1::<f64>()?;
            for (p, g) in pts.iter().zip(got) {
                let want = reference(e, p[0], p[1]);
                assert!((g - want).abs() < 1e-12, "{e} at {p:?}: {g} vs {want}");
            }
            assert_eq!(e.to_string().parse::<TestEnergy>()?, e);
        }
        assert!("u5".parse::<TestEnergy>().is_err());
        Ok(())
    }

    #[test]
    fn gradient_flows_to_z() -> Result<()> {
        let z = candle::Var::new(&[[0.3f64, -0.7], [1.9, 0.2]], &Device::Cpu)?;
        for e in TestEnergy::ALL {
            let g = e.energy(z.as_tensor())?.sum_all()?.backward()?;
            let gz = g.get(z.as_tensor()).ok_or_else(|| Error::invalid("z", "no gradient"))?;
            // Compare with central finite differences of the scalar reference.
            let gz = gz.to_vec2::<f64>()?;
            let h = 1e-6;
            for (i, p) in [[0.3f64, -0.7], [1.9, 0.2]].iter().enumerate() {
                let d1 = (reference(e, p[0] + h, p[1]) - reference(e, p[0] - h, p[1])) / (2.0 * h);
                let d2 = (reference(e, p[0], p[1] + h) - reference(e, p[0], p[1] - h)) / (2.0 * h);
                assert!((gz[i][0] - d1).abs() < 1e-6 && (gz[i][1] - d2).abs() < 1e-6, "{e}");
            }
        }
        Ok(())
    }

    #[test]
    fn rejects_wrong_shape() {
        let z = Tensor::zeros((3, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(matches!(TestEnergy::U1.energy(&z), Err(Error::Shape(_))));
    }
}

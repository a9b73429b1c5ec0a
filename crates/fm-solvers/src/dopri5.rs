//! The adaptive Dormand–Prince 5(4) method.

use candle::{DType, Tensor};

use crate::tableau::{axpy, stage_time, weighted_sum};
use crate::{Error, OdeFunction, OdeSolver, Result, Solution, SolveStats, TimeGrid};

const C: [f64; 7] = [0.0, 1.0 / 5.0, 3.0 / 10.0, 4.0 / 5.0, 8.0 / 9.0, 1.0, 1.0];

/// Stage matrix rows 1–6; row 7 is [`B`] (FSAL).
const A: [&[f64]; 6] = [
    &[],
    &[1.0 / 5.0],
    &[3.0 / 40.0, 9.0 / 40.0],
    &[44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0],
    &[19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0],
    &[9017.0 / 3168.0, -355.0 / 33.0, 46732.0 / 5247.0, 49.0 / 176.0, -5103.0 / 18656.0],
];

/// Fifth-order weights (also the last stage row: FSAL).
const B: [f64; 7] = [35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0, 0.0];

/// Fourth-order (embedded) weights.
const B_STAR: [f64; 7] =
    [5179.0 / 57600.0, 0.0, 7571.0 / 16695.0, 393.0 / 640.0, -92097.0 / 339200.0, 187.0 / 2100.0, 1.0 / 40.0];

/// `b - b*`, the weights of the error estimate.
const E: [f64; 7] = [
    B[0] - B_STAR[0],
    B[1] - B_STAR[1],
    B[2] - B_STAR[2],
    B[3] - B_STAR[3],
    B[4] - B_STAR[4],
    B[5] - B_STAR[5],
    B[6] - B_STAR[6],
];

/// The order used by the step-size controller (error ~ h^5 of the embedded
/// fourth-order solution).
const ORDER: f64 = 5.0;

/// Adaptive Dormand–Prince 5(4) with error control (torchdiffeq's `dopri5`).
///
/// Integrates from the grid's first to its last time, shortening steps so
/// that every grid time is hit exactly (the state is recorded there when a
/// trajectory is requested). Backward grids integrate with negative steps.
///
/// Error control: with `e = h Σ (b_i - b*_i) k_i` and
/// `tol = atol + rtol · max(|y|, |y_new|)` (elementwise), a step is accepted
/// when `RMS(e / tol) ≤ 1`, and the step size is multiplied by
/// `min(ifactor, max(dfactor, safety · err^(-1/5)))`.
///
/// Cost: 1 initial evaluation, 1 more for the initial step-size selection
/// (unless [`with_first_step`](Self::with_first_step) is set), and 6 per
/// attempted step (FSAL).
///
/// # Shapes
///
/// Any state shape, `f32` or `f64`; see [`OdeSolver`]. The error norm is the
/// RMS over all elements of the batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dopri5 {
    rtol: f64,
    atol: f64,
    max_steps: usize,
    first_step: Option<f64>,
    safety: f64,
    ifactor: f64,
    dfactor: f64,
}

impl Default for Dopri5 {
    /// `rtol = atol = 1e-5`, `max_steps = 10_000`, automatic first step,
    /// `safety = 0.9`, `ifactor = 10`, `dfactor = 0.2`.
    fn default() -> Self {
        Self {
            rtol: 1e-5,
            atol: 1e-5,
            max_steps: 10_000,
            first_step: None,
            safety: 0.9,
            ifactor: 10.0,
            dfactor: 0.2,
        }
    }
}

impl Dopri5 {
    /// Dopri5 with the given tolerances and default other options.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] naming `rtol` unless `rtol > 0` and finite, or
    /// naming `atol` unless `atol >= 0` and finite.
    pub fn new(rtol: f64, atol: f64) -> Result<Self> {
        let s = Self { rtol, atol, ..Self::default() };
        s.validate()?;
        Ok(s)
    }

    /// Sets the budget of attempted (accepted + rejected) steps.
    pub fn with_max_steps(mut self, max_steps: usize) -> Self {
        self.max_steps = max_steps;
        self
    }

    /// Sets the magnitude of the first step (`None`: Hairer's automatic
    /// selection). The sign follows the grid's direction.
    pub fn with_first_step(mut self, first_step: Option<f64>) -> Self {
        self.first_step = first_step;
        self
    }

    /// Sets the safety factor of the step-size controller (in `(0, 1]`).
    pub fn with_safety(mut self, safety: f64) -> Self {
        self.safety = safety;
        self
    }

    /// Sets the largest growth factor of the step size per step (`>= 1`).
    pub fn with_ifactor(mut self, ifactor: f64) -> Self {
        self.ifactor = ifactor;
        self
    }

    /// Sets the smallest shrink factor of the step size per step (in `(0, 1]`).
    pub fn with_dfactor(mut self, dfactor: f64) -> Self {
        self.dfactor = dfactor;
        self
    }

    /// The relative tolerance.
    pub fn rtol(&self) -> f64 {
        self.rtol
    }

    /// The absolute tolerance.
    pub fn atol(&self) -> f64 {
        self.atol
    }

    /// The budget of attempted steps.
    pub fn max_steps(&self) -> usize {
        self.max_steps
    }

    /// The magnitude of the first step, if fixed.
    pub fn first_step(&self) -> Option<f64> {
        self.first_step
    }

    /// The safety factor.
    pub fn safety(&self) -> f64 {
        self.safety
    }

    /// The largest growth factor per step.
    pub fn ifactor(&self) -> f64 {
        self.ifactor
    }

    /// The smallest shrink factor per step.
    pub fn dfactor(&self) -> f64 {
        self.dfactor
    }

    /// Checks every option (also done at the start of every solve).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] naming the first option out of range.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &'static str, reason: String| Err(Error::InvalidOption { name, reason });
        if !(self.rtol > 0.0 && self.rtol.is_finite()) {
            return bad("rtol", format!("must be positive and finite, got {}", self.rtol));
        }
        if !(self.atol >= 0.0 && self.atol.is_finite()) {
            return bad("atol", format!("must be non-negative and finite, got {}", self.atol));
        }
        if self.max_steps == 0 {
            return bad("max_steps", "must be at least 1, got 0".into());
        }
        if let Some(h) = self.first_step {
            if !(h > 0.0 && h.is_finite()) {
                return bad("first_step", format!("must be positive and finite, got {h}"));
            }
        }
        if !(self.safety > 0.0 && self.safety <= 1.0) {
            return bad("safety", format!("must be in (0, 1], got {}", self.safety));
        }
        if !(self.ifactor >= 1.0 && self.ifactor.is_finite()) {
            return bad("ifactor", format!("must be at least 1 and finite, got {}", self.ifactor));
        }
        if !(self.dfactor > 0.0 && self.dfactor <= 1.0) {
            return bad("dfactor", format!("must be in (0, 1], got {}", self.dfactor));
        }
        Ok(())
    }

    /// The step-size multiplier for a (finite) error norm.
    fn factor(&self, err: f64) -> f64 {
        if err == 0.0 {
            self.ifactor
        } else {
            (self.safety * err.powf(-1.0 / ORDER)).clamp(self.dfactor, self.ifactor)
        }
    }

    /// `atol + rtol · |y|` or `atol + rtol · max(|y|, |y_new|)`, kept strictly
    /// positive when `atol == 0` so that `e / tol` is never `0 / 0`.
    fn tolerance(&self, y: &Tensor, y_new: Option<&Tensor>) -> Result<Tensor> {
        let mag = match y_new {
            Some(yn) => y.abs()?.maximum(&yn.abs()?)?,
            None => y.abs()?,
        };
        let tol = mag.affine(self.rtol, self.atol)?;
        if self.atol > 0.0 {
            Ok(tol)
        } else {
            Ok(tol.maximum(smallest_positive(y.dtype()))?)
        }
    }

    /// Hairer's initial step (torchdiffeq `_select_initial_step`), as a
    /// magnitude; costs one evaluation. Never exceeds `span`.
    fn initial_step(
        &self,
        f: &dyn OdeFunction,
        t0: f64,
        dir: f64,
        span: f64,
        y0: &Tensor,
        f0: &Tensor,
    ) -> Result<f64> {
        let scale = self.tolerance(y0, None)?;
        let d0 = rms(&(y0 / &scale)?)?;
        let d1 = rms(&(f0 / &scale)?)?;
        if !d0.is_finite() || !d1.is_finite() {
            return Err(Error::NonFinite { t: t0 });
        }
        let h0 = if d0 < 1e-5 || d1 < 1e-5 { 1e-6 } else { 0.01 * d0 / d1 };
        let h0 = h0.min(span);
        let t1 = t0 + dir * h0;
        let y1 = (y0 + f0.affine(dir * h0, 0.0)?)?;
        let f1 = f.eval(t1, &y1)?;
        let d2 = rms(&((f1 - f0)? / &scale)?)? / h0;
        if !d2.is_finite() {
            return Err(Error::NonFinite { t: t1 });
        }
        let h1 = if d1 <= 1e-15 && d2 <= 1e-15 {
            (h0 * 1e-3).max(1e-6)
        } else {
            (0.01 / d1.max(d2)).powf(1.0 / (ORDER + 1.0))
        };
        Ok((100.0 * h0).min(h1).min(span))
    }
}

/// The RMS of all elements, computed in `f64`; 0 for an empty tensor.
fn rms(x: &Tensor) -> Result<f64> {
    if x.elem_count() == 0 {
        return Ok(0.0);
    }
    let ms = x.to_dtype(DType::F64)?.sqr()?.mean_all()?.to_scalar::<f64>()?;
    Ok(ms.sqrt())
}

/// The smallest positive normal number of a float dtype.
fn smallest_positive(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => f64::MIN_POSITIVE,
        DType::F16 => 6.103_515_625e-5,
        _ => f64::from(f32::MIN_POSITIVE),
    }
}

/// The spacing of `f64` values at `t`.
fn ulp(t: f64) -> f64 {
    let a = t.abs();
    a.next_up() - a
}

impl OdeSolver for Dopri5 {
    fn integrate(
        &self,
        f: &dyn OdeFunction,
        y0: &Tensor,
        grid: &TimeGrid,
        record_trajectory: bool,
    ) -> Result<Solution> {
        self.validate()?;
        let times = grid.points();
        let t_end = grid.end();
        let dir = if grid.is_forward() { 1.0 } else { -1.0 };
        let mut trajectory = Vec::new();
        if record_trajectory {
            trajectory.reserve_exact(times.len());
            trajectory.push(y0.clone());
        }

        let mut stats = SolveStats::default();
        let mut t = grid.start();
        let mut y = y0.clone();
        let mut k1 = f.eval(t, &y)?;
        stats.nfe += 1;
        // Step magnitude; the sign is `dir`.
        let mut h = match self.first_step {
            Some(h) => h,
            None => {
                stats.nfe += 1;
                self.initial_step(f, t, dir, (t_end - t).abs(), &y, &k1)?
            }
        };

        let mut ks: Vec<Tensor> = Vec::with_capacity(7);
        for &target in &times[1..] {
            loop {
                if stats.accepted_steps + stats.rejected_steps >= self.max_steps {
                    return Err(Error::MaxStepsExceeded { max_steps: self.max_steps, t_reached: t, t_end });
                }
                // Land exactly on the target when the step would reach (or
                // nearly reach) it.
                let remaining = (target - t).abs();
                let lands = 1.01 * h >= remaining;
                if !lands && h < 4.0 * ulp(t) {
                    return Err(Error::StepSizeUnderflow { t, h: dir * h });
                }
                let h_try = if lands { remaining } else { h };
                let t_new = if lands { target } else { t + dir * h_try };
                let hs = t_new - t;

                ks.clear();
                ks.push(k1.clone());
                for (&c, a) in C.iter().zip(A.iter()).skip(1) {
                    let yi = axpy(&y, hs, a, &ks)?;
                    ks.push(f.eval(stage_time(t, t_new, hs, c), &yi)?);
                }
                // FSAL: the last stage is evaluated at the fifth-order solution.
                let y_new = axpy(&y, hs, &B, &ks)?;
                let k7 = f.eval(t_new, &y_new)?;
                ks.push(k7.clone());
                stats.nfe += 6;
                let e = weighted_sum(&y, hs, &E, &ks)?;
                let tol = self.tolerance(&y, Some(&y_new))?;
                let err = rms(&(e / tol)?)?;
                if !err.is_finite() {
                    return Err(Error::NonFinite { t });
                }
                let factor = self.factor(err);
                if err <= 1.0 {
                    stats.accepted_steps += 1;
                    t = t_new;
                    // The FSAL stage k7 stays the one at the unretracted end
                    // (exact for unconstrained states, where retract is the identity).
                    y = f.retract(&y, y_new)?;
                    k1 = k7;
                    // A step shortened to land on a grid time says little
                    // about the step size: keep the earlier proposal if larger.
                    h = if lands && h_try < h { (h_try * factor).max(h) } else { h_try * factor };
                    if lands {
                        break;
                    }
                } else {
                    stats.rejected_steps += 1;
                    h = h_try * factor;
                }
            }
            if record_trajectory {
                trajectory.push(y.clone());
            }
        }

        Ok(Solution { state: y, trajectory, times: times.to_vec(), stats })
    }

    fn name(&self) -> &'static str {
        "dopri5"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tableau_is_consistent() {
        for (i, (row, c)) in A.iter().zip(C).enumerate() {
            assert_eq!(row.len(), i);
            assert!((row.iter().sum::<f64>() - c).abs() < 1e-14, "row {i}");
        }
        assert_eq!(C[6], 1.0);
        assert!((B.iter().sum::<f64>() - 1.0).abs() < 1e-14);
        assert!((B_STAR.iter().sum::<f64>() - 1.0).abs() < 1e-14);
    }

    #[test]
    fn validates_options() {
        assert!(Dopri5::new(1e-5, 0.0).is_ok());
        for (d, name) in [
            (Dopri5::default().with_max_steps(0), "max_steps"),
            (Dopri5::default().with_first_step(Some(-1.0)), "first_step"),
            (Dopri5::default().with_safety(0.0), "safety"),
            (Dopri5::default().with_ifactor(0.5), "ifactor"),
            (Dopri5::default().with_dfactor(2.0), "dfactor"),
        ] {
            match d.validate() {
                Err(Error::InvalidOption { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn factor_is_clamped() {
        let d = Dopri5::default();
        assert_eq!(d.factor(0.0), 10.0);
        assert_eq!(d.factor(1e-30), 10.0);
        assert_eq!(d.factor(1e30), 0.2);
        assert!((d.factor(1.0) - 0.9).abs() < 1e-15);
    }
}

//! Explicit Runge–Kutta tableaus and the tensor arithmetic they share
//! (crate-private).

use candle::Tensor;

use crate::{OdeFunction, Result};

/// An explicit Runge–Kutta method: `k_i = f(t + c_i h, y + h Σ_j a_ij k_j)`,
/// `y_new = y + h Σ_i b_i k_i`.
#[derive(Debug)]
pub(crate) struct ButcherTableau {
    /// Nodes, one per stage (`c[0] == 0`).
    pub c: &'static [f64],
    /// Strictly lower-triangular stage matrix: row `i` has `i` entries.
    pub a: &'static [&'static [f64]],
    /// Weights, one per stage.
    pub b: &'static [f64],
}

impl ButcherTableau {
    /// Number of stages, i.e. field evaluations per step.
    pub const fn stages(&self) -> usize {
        self.b.len()
    }

    /// One step from `(t, y)` to `t_next` (`h = t_next - t`, negative
    /// backwards). Stages with `c == 1` are evaluated at `t_next` exactly.
    ///
    /// `ks` is scratch space reused between steps.
    pub fn step(
        &self,
        f: &dyn OdeFunction,
        t: f64,
        t_next: f64,
        y: &Tensor,
        ks: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        let h = t_next - t;
        ks.clear();
        for (i, (&c, a)) in self.c.iter().zip(self.a).enumerate() {
            let k = if i == 0 {
                f.eval(t, y)?
            } else {
                let yi = axpy(y, h, a, ks)?;
                f.eval(stage_time(t, t_next, h, c), &yi)?
            };
            ks.push(k);
        }
        axpy(y, h, self.b, ks)
    }
}

/// The time of a stage with node `c`: `t + c h`, but exactly `t_next` for `c == 1`.
pub(crate) fn stage_time(t: f64, t_next: f64, h: f64, c: f64) -> f64 {
    if c == 1.0 {
        t_next
    } else {
        t + c * h
    }
}

/// `y + h Σ coeffs[j] ks[j]`, skipping zero coefficients; in `y`'s dtype and
/// differentiable (no detaching).
pub(crate) fn axpy(y: &Tensor, h: f64, coeffs: &[f64], ks: &[Tensor]) -> Result<Tensor> {
    let mut acc: Option<Tensor> = None;
    for (&c, k) in coeffs.iter().zip(ks) {
        if c == 0.0 {
            continue;
        }
        let term = k.affine(h * c, 0.0)?;
        acc = Some(match acc {
            None => (y + term)?,
            Some(a) => (a + term)?,
        });
    }
    Ok(match acc {
        Some(a) => a,
        None => y.clone(),
    })
}

/// `Σ coeffs[j] ks[j]` scaled by `h`, skipping zero coefficients (zero
/// tensor shaped like `like` if every coefficient is zero).
pub(crate) fn weighted_sum(like: &Tensor, h: f64, coeffs: &[f64], ks: &[Tensor]) -> Result<Tensor> {
    let mut acc: Option<Tensor> = None;
    for (&c, k) in coeffs.iter().zip(ks) {
        if c == 0.0 {
            continue;
        }
        let term = k.affine(h * c, 0.0)?;
        acc = Some(match acc {
            None => term,
            Some(a) => (a + term)?,
        });
    }
    match acc {
        Some(a) => Ok(a),
        None => Ok(like.zeros_like()?),
    }
}

//! From the posterior `p_{1|t}` to the rates of the CTMC.

use crate::{Error, Result};

/// `κ̇/(1 − κ)`, the scale of every rate of the chain (`1 − κ` floored at `1e-12`).
pub fn jump_coefficient(kappa: f64, d_kappa: f64) -> f64 {
    d_kappa / (1.0 - kappa).max(1e-12)
}

/// The rates `u_t(y | x) = κ̇/(1 − κ) · [p_{1|t}(y | x) − δ_x(y)]` of one token
/// at state `x` over `states` ids (`posterior` over the first `posterior.len()`
/// of them, the rest — the mask — with posterior 0): off-diagonal rates are
/// non-negative and each row sums to 0. `1 − κ` is floored at `1e-12`.
pub fn posterior_to_rate(
    posterior: &[f32],
    x: u32,
    kappa: f64,
    d_kappa: f64,
    states: usize,
) -> Result<Vec<f64>> {
    if posterior.len() > states || x as usize >= states {
        return Err(Error::Shape(format!(
            "a posterior of {} values and state {x} over {states} states",
            posterior.len()
        )));
    }
    let scale = jump_coefficient(kappa, d_kappa);
    Ok((0..states)
        .map(|y| {
            let p = posterior.get(y).copied().unwrap_or(0.0) as f64;
            scale * (p - f64::from(y == x as usize))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SeededRng;

    /// Rows of the rate matrix sum to zero with non-negative off-diagonals, for
    /// random posteriors, from every state (the mask included), and the scale
    /// is κ̇/(1 − κ).
    #[test]
    fn rate_rows_sum_to_zero_with_nonnegative_off_diagonals() -> Result<()> {
        let mut rng = SeededRng::new(3);
        let v = 7;
        for _ in 0..50 {
            let w = rng.uniform_vec(v, 0.0, 1.0);
            let z: f64 = w.iter().sum();
            let p: Vec<f32> = w.iter().map(|x| (x / z) as f32).collect();
            let (kappa, d_kappa) = (rng.uniform_vec(1, 0.0, 0.99)[0], 1.0);
            for x in 0..=v as u32 {
                let r = posterior_to_rate(&p, x, kappa, d_kappa, v + 1)?;
                let sum: f64 = r.iter().sum();
                let scale = 1.0 / (1.0 - kappa);
                assert!(sum.abs() < 1e-5 * scale, "row {x} sums to {sum}");
                for (y, &ry) in r.iter().enumerate() {
                    if y != x as usize {
                        assert!(ry >= 0.0, "u({y} | {x}) = {ry}");
                    }
                }
                if (x as usize) < v {
                    assert!((r[x as usize] - scale * (p[x as usize] as f64 - 1.0)).abs() < 1e-9);
                }
            }
        }
        assert!(posterior_to_rate(&[0.5, 0.5], 3, 0.5, 1.0, 3).is_err());
        Ok(())
    }
}

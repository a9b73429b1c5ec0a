//! Fixed-step explicit Runge–Kutta methods: one step per grid interval.

use candle::Tensor;

use crate::tableau::ButcherTableau;
use crate::{OdeFunction, OdeSolver, Result, Solution, SolveStats, TimeGrid};

const EULER: ButcherTableau = ButcherTableau { c: &[0.0], a: &[&[]], b: &[1.0] };

const MIDPOINT: ButcherTableau = ButcherTableau { c: &[0.0, 0.5], a: &[&[], &[0.5]], b: &[0.0, 1.0] };

const HEUN2: ButcherTableau = ButcherTableau { c: &[0.0, 1.0], a: &[&[], &[1.0]], b: &[0.5, 0.5] };

const HEUN3: ButcherTableau = ButcherTableau {
    c: &[0.0, 1.0 / 3.0, 2.0 / 3.0],
    a: &[&[], &[1.0 / 3.0], &[0.0, 2.0 / 3.0]],
    b: &[0.25, 0.0, 0.75],
};

const RK4: ButcherTableau = ButcherTableau {
    c: &[0.0, 0.5, 0.5, 1.0],
    a: &[&[], &[0.5], &[0.0, 0.5], &[0.0, 0.0, 1.0]],
    b: &[1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0],
};

const RK4_THREE_EIGHTHS: ButcherTableau = ButcherTableau {
    c: &[0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0],
    a: &[&[], &[1.0 / 3.0], &[-1.0 / 3.0, 1.0], &[1.0, -1.0, 1.0]],
    b: &[0.125, 0.375, 0.375, 0.125],
};

/// The shared fixed-step driver: one step of `tableau` per grid interval.
fn integrate_fixed(
    tableau: &ButcherTableau,
    f: &dyn OdeFunction,
    y0: &Tensor,
    grid: &TimeGrid,
    record_trajectory: bool,
) -> Result<Solution> {
    let times = grid.points();
    let mut trajectory = Vec::new();
    if record_trajectory {
        trajectory.reserve_exact(times.len());
        trajectory.push(y0.clone());
    }
    let mut y = y0.clone();
    let mut ks = Vec::with_capacity(tableau.stages());
    for w in times.windows(2) {
        let next = tableau.step(f, w[0], w[1], &y, &mut ks)?;
        y = f.retract(&y, next)?;
        if record_trajectory {
            trajectory.push(y.clone());
        }
    }
    let steps = grid.steps();
    Ok(Solution {
        state: y,
        trajectory,
        times: times.to_vec(),
        stats: SolveStats { nfe: steps * tableau.stages(), accepted_steps: steps, rejected_steps: 0 },
    })
}

macro_rules! fixed_method {
    ($(#[$doc:meta])* $ty:ident, $tableau:ident, $name:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
        pub struct $ty;

        impl $ty {
            /// Field evaluations per step (the NFE of a solve is this times
            /// the number of grid intervals).
            pub const EVALS_PER_STEP: usize = $tableau.stages();
        }

        impl OdeSolver for $ty {
            fn integrate(
                &self,
                f: &dyn OdeFunction,
                y0: &Tensor,
                grid: &TimeGrid,
                record_trajectory: bool,
            ) -> Result<Solution> {
                integrate_fixed(&$tableau, f, y0, grid, record_trajectory)
            }

            fn name(&self) -> &'static str {
                $name
            }
        }
    };
}

fixed_method!(
    /// Explicit Euler, first order, 1 evaluation per step:
    /// `y + h f(t, y)`.
    ///
    /// # Shapes
    ///
    /// Any state shape; see [`OdeSolver`].
    Euler,
    EULER,
    "euler"
);

fixed_method!(
    /// Explicit midpoint, second order, 2 evaluations per step:
    /// `y + h f(t + h/2, y + h/2 f(t, y))`.
    ///
    /// # Shapes
    ///
    /// Any state shape; see [`OdeSolver`].
    Midpoint,
    MIDPOINT,
    "midpoint"
);

fixed_method!(
    /// Heun's method (heun2, explicit trapezoid), second order, 2 evaluations
    /// per step: `k1 = f(t, y)`, `k2 = f(t + h, y + h k1)`,
    /// `y + h/2 (k1 + k2)`.
    ///
    /// # Shapes
    ///
    /// Any state shape; see [`OdeSolver`].
    Heun,
    HEUN2,
    "heun"
);

fixed_method!(
    /// Heun's third-order method, 3 evaluations per step: `k1 = f(t, y)`,
    /// `k2 = f(t + h/3, y + h/3 k1)`, `k3 = f(t + 2h/3, y + 2h/3 k2)`,
    /// `y + h (k1/4 + 3 k3/4)`.
    ///
    /// # Shapes
    ///
    /// Any state shape; see [`OdeSolver`].
    Heun3,
    HEUN3,
    "heun3"
);

fixed_method!(
    /// The classic fourth-order Runge–Kutta method, 4 evaluations per step,
    /// weights `(1/6, 1/3, 1/3, 1/6)`.
    ///
    /// # Shapes
    ///
    /// Any state shape; see [`OdeSolver`].
    Rk4,
    RK4,
    "rk4"
);

fixed_method!(
    /// Kutta's fourth-order 3/8 rule (torchdiffeq's `rk4`), 4 evaluations
    /// per step: `k2 = f(t + h/3, y + h/3 k1)`,
    /// `k3 = f(t + 2h/3, y + h(-k1/3 + k2))`, `k4 = f(t + h, y + h(k1 - k2 + k3))`,
    /// `y + h/8 (k1 + 3 k2 + 3 k3 + k4)`.
    ///
    /// # Shapes
    ///
    /// Any state shape; see [`OdeSolver`].
    Rk4ThreeEighths,
    RK4_THREE_EIGHTHS,
    "rk4-3/8"
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tableau is consistent (row sums equal the nodes, weights sum to 1).
    #[test]
    fn tableaus_are_consistent() {
        for t in [&EULER, &MIDPOINT, &HEUN2, &HEUN3, &RK4, &RK4_THREE_EIGHTHS] {
            assert_eq!(t.c.len(), t.b.len());
            assert_eq!(t.a.len(), t.b.len());
            for (i, (row, c)) in t.a.iter().zip(t.c).enumerate() {
                assert_eq!(row.len(), i);
                assert!((row.iter().sum::<f64>() - c).abs() < 1e-15);
            }
            assert!((t.b.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        }
    }
}

//! Choosing a solver by name at run time.

use std::fmt;
use std::str::FromStr;

use candle::Tensor;

use crate::{
    Dopri5, Error, Euler, Heun, Heun3, Midpoint, OdeFunction, OdeSolver, Result, Rk4, Rk4ThreeEighths,
    Solution, TimeGrid,
};

/// Any of the crate's solvers, selectable by name.
///
/// Parses from (case-insensitive) `euler`, `midpoint`, `heun` (alias
/// `heun2`), `heun3`, `rk4`, `rk4-3/8` (alias `rk38`) and `dopri5` (with
/// default tolerances); displays as the canonical name.
///
/// ```
/// use fm_solvers::{Method, OdeSolver};
///
/// let m: Method = "rk38".parse()?;
/// assert_eq!(m, Method::Rk4ThreeEighths);
/// assert_eq!(m.to_string(), "rk4-3/8");
/// assert_eq!(m.evals_per_step(), Some(4));
/// assert!("dopri5".parse::<Method>()?.is_adaptive());
/// # Ok::<(), fm_solvers::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// [`Euler`].
    Euler,
    /// [`Midpoint`].
    Midpoint,
    /// [`Heun`] (heun2).
    Heun,
    /// [`Heun3`].
    Heun3,
    /// [`Rk4`] (classic).
    Rk4,
    /// [`Rk4ThreeEighths`] (torchdiffeq's `rk4`).
    Rk4ThreeEighths,
    /// [`Dopri5`] with its options.
    Dopri5(Dopri5),
}

impl Method {
    /// The canonical names, in the order of the variants.
    pub const NAMES: [&'static str; 7] = ["euler", "midpoint", "heun", "heun3", "rk4", "rk4-3/8", "dopri5"];

    /// Whether the method chooses its own steps (only [`Method::Dopri5`]).
    pub fn is_adaptive(&self) -> bool {
        matches!(self, Self::Dopri5(_))
    }

    /// Field evaluations per grid interval for fixed-step methods; `None`
    /// for the adaptive [`Method::Dopri5`].
    pub fn evals_per_step(&self) -> Option<usize> {
        match self {
            Self::Euler => Some(Euler::EVALS_PER_STEP),
            Self::Midpoint => Some(Midpoint::EVALS_PER_STEP),
            Self::Heun => Some(Heun::EVALS_PER_STEP),
            Self::Heun3 => Some(Heun3::EVALS_PER_STEP),
            Self::Rk4 => Some(Rk4::EVALS_PER_STEP),
            Self::Rk4ThreeEighths => Some(Rk4ThreeEighths::EVALS_PER_STEP),
            Self::Dopri5(_) => None,
        }
    }

    /// The solver behind this method.
    pub fn as_solver(&self) -> &dyn OdeSolver {
        match self {
            Self::Euler => &Euler,
            Self::Midpoint => &Midpoint,
            Self::Heun => &Heun,
            Self::Heun3 => &Heun3,
            Self::Rk4 => &Rk4,
            Self::Rk4ThreeEighths => &Rk4ThreeEighths,
            Self::Dopri5(d) => d,
        }
    }
}

impl OdeSolver for Method {
    fn integrate(
        &self,
        f: &dyn OdeFunction,
        y0: &Tensor,
        grid: &TimeGrid,
        record_trajectory: bool,
    ) -> Result<Solution> {
        self.as_solver().integrate(f, y0, grid, record_trajectory)
    }

    fn name(&self) -> &'static str {
        self.as_solver().name()
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = Error;

    /// # Errors
    ///
    /// [`Error::InvalidOption`] (named `method`) listing the valid names.
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "euler" => Self::Euler,
            "midpoint" => Self::Midpoint,
            "heun" | "heun2" => Self::Heun,
            "heun3" => Self::Heun3,
            "rk4" => Self::Rk4,
            "rk4-3/8" | "rk38" => Self::Rk4ThreeEighths,
            "dopri5" => Self::Dopri5(Dopri5::default()),
            _ => {
                return Err(Error::InvalidOption {
                    name: "method",
                    reason: format!(
                        "unknown ODE method `{s}`; valid names: {} (aliases: heun2, rk38)",
                        Self::NAMES.join(", ")
                    ),
                })
            }
        })
    }
}

impl From<Dopri5> for Method {
    fn from(d: Dopri5) -> Self {
        Self::Dopri5(d)
    }
}

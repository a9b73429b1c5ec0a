//! A solver choice (`--solver NAME --steps N`, `--rtol/--atol` for dopri5,
//! or `NAME:STEPS` specs) as an `fm_solvers` method and its time grid.

use fm_solvers::{Dopri5, Method, TimeGrid};

use crate::error::bail;
use crate::{Error, Result, ResultExt};

/// A solver choice with its grid: fixed-step methods step on a uniform grid,
/// dopri5 only uses the grid's end points.
///
/// ```
/// use fm_pipeline::SolverChoice;
///
/// let c = SolverChoice::parse_spec("midpoint:8").unwrap();
/// assert_eq!((c.label.as_str(), c.steps), ("midpoint-8", 8));
/// assert!(SolverChoice::parse_spec("euler").is_err()); // a step count is needed
/// ```
#[derive(Debug, Clone)]
pub struct SolverChoice {
    /// The integration method.
    pub method: Method,
    /// Steps of the uniform grid (1 for dopri5, which adapts its own).
    pub steps: usize,
    /// `euler-8`, `dopri5(rtol=1e-5, atol=1e-5)`: how outputs name it.
    pub label: String,
}

impl SolverChoice {
    /// `name` (euler, midpoint, heun, heun3, rk4, rk4-3/8, dopri5) with `steps`
    /// (fixed-step methods) or `rtol`/`atol` (dopri5).
    pub fn new(name: &str, steps: usize, rtol: f64, atol: f64) -> Result<Self> {
        let method: Method = name.parse().context("--solver")?;
        if let Method::Dopri5(_) = method {
            let d = Dopri5::new(rtol, atol).context("--rtol/--atol")?;
            return Ok(Self {
                method: Method::Dopri5(d),
                steps: 1,
                label: format!("dopri5(rtol={rtol:e}, atol={atol:e})"),
            });
        }
        if steps == 0 {
            bail!("--steps must be at least 1, got 0");
        }
        Ok(Self { label: format!("{method}-{steps}"), method, steps })
    }

    /// Parses `NAME:STEPS`, `dopri5` or `dopri5:TOL` (rtol = atol = TOL).
    pub fn parse_spec(spec: &str) -> Result<Self> {
        let (name, arg) = match spec.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (spec.trim(), None),
        };
        if name.eq_ignore_ascii_case("dopri5") {
            let tol = match arg {
                Some(a) => a.parse::<f64>().map_err(|e| {
                    Error::Setting(format!("--solvers: `{spec}`: tolerance `{a}` is not a number: {e}"))
                })?,
                None => 1e-5,
            };
            return Self::new(name, 1, tol, tol).with_context(|| format!("--solvers: `{spec}`"));
        }
        let steps = match arg {
            Some(a) => a.parse::<usize>().map_err(|e| {
                Error::Setting(format!("--solvers: `{spec}`: steps `{a}` is not a whole number: {e}"))
            })?,
            None => bail!("--solvers: `{spec}` needs a step count, e.g. {name}:8"),
        };
        Self::new(name, steps, 1e-5, 1e-5).with_context(|| format!("--solvers: `{spec}`"))
    }

    /// The sampling grid, `0 → 1`.
    pub fn grid(&self) -> Result<TimeGrid> {
        Ok(TimeGrid::uniform(0.0, 1.0, self.steps)?)
    }

    /// The likelihood grid, `1 → 0` (from data back to noise).
    pub fn backward_grid(&self) -> Result<TimeGrid> {
        Ok(TimeGrid::uniform(1.0, 0.0, self.steps)?)
    }
}

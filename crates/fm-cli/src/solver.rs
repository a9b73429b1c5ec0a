//! Turning solver flags into an `fm_solvers::OdeSolver` and a time grid.

use anyhow::{bail, Context, Result};
use fm_solvers::{Dopri5, Method, TimeGrid};

use crate::cli::SolverArgs;

/// A solver choice with its grid: fixed-step methods step on a uniform grid,
/// dopri5 only uses the grid's end points.
#[derive(Debug, Clone)]
pub struct SolverChoice {
    pub method: Method,
    pub steps: usize,
    pub label: String,
}

impl SolverChoice {
    pub fn from_args(a: &SolverArgs) -> Result<Self> {
        Self::new(&a.solver, a.steps, a.rtol, a.atol)
    }

    pub fn new(name: &str, steps: usize, rtol: f64, atol: f64) -> Result<Self> {
        let method: Method = name.parse().with_context(|| "--solver")?;
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
                Some(a) => a
                    .parse::<f64>()
                    .with_context(|| format!("--solvers: `{spec}`: tolerance `{a}` is not a number"))?,
                None => 1e-5,
            };
            return Self::new(name, 1, tol, tol).with_context(|| format!("--solvers: `{spec}`"));
        }
        let steps = match arg {
            Some(a) => a
                .parse::<usize>()
                .with_context(|| format!("--solvers: `{spec}`: steps `{a}` is not a whole number"))?,
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

//! Sampling: source draws, the (possibly two-part) ODE solve, and the
//! samples in data units.

use candle::{Device, Tensor};
use fm_core::{AsOde, SeededRng, VelocityField};
use fm_solvers::{OdeSolver, TimeGrid};

use crate::error::bail;
use crate::source::Source;
use crate::{Result, ResultExt, SolverChoice};

/// Samples in data units, the trajectory of the first rows, and the NFE.
#[derive(Debug, Clone)]
pub struct Samples {
    /// `n · dim` values, row-major, in the data's units.
    pub values: Vec<f32>,
    /// Rows.
    pub n: usize,
    /// Values per row.
    pub dim: usize,
    /// The kept rows at every grid time (ODE) or after every layer (flows), data units.
    pub trajectory: Vec<Vec<f32>>,
    /// Function evaluations of the solve (0 for a normalizing flow).
    pub nfe: usize,
}

/// `n` draws of `source` (model units, `f32`) from the seed's `sample-noise`
/// stream: the source draws of every sampler for the same seed.
pub fn source_draws(source: Source, n: usize, dim: usize, seed: u64, device: &Device) -> Result<Tensor> {
    if n == 0 {
        bail!("--n must be at least 1");
    }
    source.sample(n, dim, &mut SeededRng::for_stream(seed, "sample-noise"), device)
}

/// The end state of a (possibly two-part) solve, the trajectory at every grid
/// time if requested, and the NFE of both parts.
pub struct Solved {
    /// `x(1)`.
    pub state: Tensor,
    /// The state at every grid time (when kept).
    pub trajectory: Vec<Tensor>,
    /// Function evaluations of both parts.
    pub nfe: usize,
}

/// Solves from `x0` at `t = 0` to `t = 1`, following `first` on `[0, τ]` and
/// `second` on `[τ, 1]`: two solves on the choice's grid split at `τ` (with
/// `τ` inserted as a grid point when it is not one). `τ = 0` is `second`
/// alone and `τ = 1` is `first` alone.
pub fn solve_hybrid(
    first: &dyn VelocityField,
    second: &dyn VelocityField,
    x0: &Tensor,
    choice: &SolverChoice,
    tau: f64,
    keep_trajectory: bool,
) -> Result<Solved> {
    if !(0.0..=1.0).contains(&tau) {
        bail!("--hybrid must lie in [0, 1], got {tau}");
    }
    let points = choice.grid()?.points().to_vec();
    let before: Vec<f64> =
        points.iter().copied().filter(|&t| t < tau).chain((tau > 0.0).then_some(tau)).collect();
    let after: Vec<f64> =
        (tau < 1.0).then_some(tau).into_iter().chain(points.iter().copied().filter(|&t| t > tau)).collect();
    let mut state = x0.clone();
    let mut trajectory = Vec::new();
    let mut nfe = 0;
    for (field, part) in [(first, before), (second, after)] {
        if part.len() < 2 {
            continue;
        }
        let grid = TimeGrid::from_points(part)?;
        let sol = choice
            .method
            .integrate(&AsOde(field), &state, &grid, keep_trajectory)
            .with_context(|| format!("sampling with {}", choice.label))?;
        let skip = usize::from(!trajectory.is_empty());
        trajectory.extend(sol.trajectory.into_iter().skip(skip));
        nfe += sol.stats.nfe;
        state = sol.state;
    }
    Ok(Solved { state, trajectory, nfe })
}

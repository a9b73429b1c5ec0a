//! Sampling: integrate the benchmark MLP's field from noise (t = 0) to data (t = 1).

use candle::{Device, Tensor};
use fm_core::AsOde;
use fm_models::VelocityMlp;
use fm_solvers::{Dopri5, Euler, OdeSolver, TimeGrid};

use crate::fixtures::{bench_mlp_config, deterministic_mlp, points};
use crate::workload::{RunInfo, Workload};
use crate::Result;

/// `n` points through Euler with a fixed number of steps, or through Dopri5.
pub struct Sampling {
    model: VelocityMlp,
    x0: Tensor,
    solver: Box<dyn OdeSolver>,
    grid: TimeGrid,
}

impl Sampling {
    /// Euler with `steps` steps.
    pub fn euler(n: usize, steps: usize) -> Result<Self> {
        Self::with(n, Box::new(Euler), TimeGrid::uniform(0.0, 1.0, steps)?)
    }

    /// Dopri5 with `rtol = atol = tol`.
    pub fn dopri5(n: usize, tol: f64) -> Result<Self> {
        Self::with(n, Box::new(Dopri5::new(tol, tol)?), TimeGrid::uniform(0.0, 1.0, 1)?)
    }

    fn with(n: usize, solver: Box<dyn OdeSolver>, grid: TimeGrid) -> Result<Self> {
        let device = Device::Cpu;
        // Plain tensors, not variables: inference builds no autograd graph.
        let (model, _varmap) = deterministic_mlp(&bench_mlp_config(), &device)?;
        let model = model.detached()?;
        Ok(Self { model, x0: points(n, 2, &device)?, solver, grid })
    }
}

impl Workload for Sampling {
    fn run(&mut self) -> Result<RunInfo> {
        let sol = self.solver.solve(&AsOde(&self.model), &self.x0, &self.grid)?;
        Ok(RunInfo { nfe: Some(sol.stats.nfe), flops: None })
    }
}

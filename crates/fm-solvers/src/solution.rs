//! What a solve returns.

use candle::Tensor;

/// Work done by one solve.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SolveStats {
    /// Number of evaluations of the vector field (NFE).
    pub nfe: usize,
    /// Steps taken (for fixed-step methods, one per grid interval).
    pub accepted_steps: usize,
    /// Steps rejected by error control (always 0 for fixed-step methods).
    pub rejected_steps: usize,
}

/// The result of integrating an ODE over a [`TimeGrid`](crate::TimeGrid).
///
/// # Shapes
///
/// `state` and every entry of `trajectory` have the shape and dtype of the
/// initial state `y0`.
#[derive(Debug, Clone)]
pub struct Solution {
    /// The state at the grid's last time.
    pub state: Tensor,
    /// The state at every grid time, the start included (`trajectory[i]` is
    /// the state at `times[i]`), when it was requested
    /// ([`OdeSolver::solve_with_trajectory`](crate::OdeSolver::solve_with_trajectory));
    /// empty otherwise.
    pub trajectory: Vec<Tensor>,
    /// The grid times, in integration order (always filled, whether or not
    /// the trajectory was recorded).
    pub times: Vec<f64>,
    /// NFE and step counts.
    pub stats: SolveStats,
}

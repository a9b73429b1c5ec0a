//! Convergence orders of the fixed-step solvers and the cost of adaptive Dopri5.
//!
//! Solves the rotation `dy/dt = (−y₂, y₁)` from `y(0) = (1, 0)` to `t = 1`
//! (exact: `(cos 1, sin 1)`) on uniform grids of 4 … 64 steps, prints each
//! method's error, NFE and observed order `log₂(e_N / e_2N)`, then Dopri5's
//! error and NFE at three tolerances, and a backward solve back to `y(0)`.
//!
//! ```text
//! cargo run --release -p fm-solvers --example convergence [-- --quick]
//! ```
use candle::{Device, Tensor};
use fm_solvers::{Dopri5, Euler, Heun, Midpoint, OdeSolver, Rk4, TimeGrid};

/// What the example measures (its test checks these).
pub struct Report {
    /// `(method, observed order on the two finest grids)`.
    pub orders: Vec<(&'static str, f64)>,
    /// `(tolerance, error, NFE)` of Dopri5.
    pub dopri5: Vec<(f64, f64, usize)>,
    /// Error of RK4 forwards to `t = 1` and backwards to `t = 0`.
    pub round_trip_error: f64,
}

/// `dy/dt = y A` with `A = [[0, 1], [−1, 0]]`: `(y₁, y₂) ↦ (−y₂, y₁)`.
fn rotation(_t: f64, y: &Tensor) -> fm_solvers::Result<Tensor> {
    let a = Tensor::new(&[[0.0f64, 1.0], [-1.0, 0.0]], y.device())?;
    Ok(y.matmul(&a)?)
}

/// Euclidean distance of the state `(1, 2)` from `(cos t, sin t)`.
fn error(y: &Tensor, t: f64) -> anyhow::Result<f64> {
    let y = y.flatten_all()?.to_vec1::<f64>()?;
    Ok(((y[0] - t.cos()).powi(2) + (y[1] - t.sin()).powi(2)).sqrt())
}

/// Errors of one method on the grids, printed with NFE and observed orders; returns the last order.
fn study<S: OdeSolver>(name: &'static str, solver: &S, y0: &Tensor, steps: &[usize]) -> anyhow::Result<f64> {
    let mut prev: Option<f64> = None;
    let mut order = f64::NAN;
    for &n in steps {
        let sol = solver.solve(&rotation, y0, &TimeGrid::uniform(0.0, 1.0, n)?)?;
        let e = error(&sol.state, 1.0)?;
        if let Some(p) = prev {
            order = (p / e).log2();
        }
        println!("{name:<9} {n:>4} steps  NFE {:>4}  error {e:.3e}  order {order:5.2}", sol.stats.nfe);
        prev = Some(e);
    }
    Ok(order)
}

/// Runs the study; `quick` uses fewer grids.
pub fn run(quick: bool) -> anyhow::Result<Report> {
    let y0 = Tensor::new(&[[1.0f64, 0.0]], &Device::Cpu)?;
    let steps: &[usize] = if quick { &[8, 16] } else { &[4, 8, 16, 32, 64] };
    let orders = vec![
        ("euler", study("euler", &Euler, &y0, steps)?),
        ("midpoint", study("midpoint", &Midpoint, &y0, steps)?),
        ("heun", study("heun", &Heun, &y0, steps)?),
        ("rk4", study("rk4", &Rk4, &y0, steps)?),
    ];
    let mut dopri5 = Vec::new();
    for tol in [1e-3, 1e-6, 1e-9] {
        let sol = Dopri5::new(tol, tol)?.solve(&rotation, &y0, &TimeGrid::uniform(0.0, 1.0, 1)?)?;
        let e = error(&sol.state, 1.0)?;
        println!("dopri5 rtol = atol = {tol:.0e}: NFE {:>4}  error {e:.3e}", sol.stats.nfe);
        dopri5.push((tol, e, sol.stats.nfe));
    }
    // A grid from 1 to 0 integrates backwards: undo the forward solve.
    let fwd = Rk4.solve(&rotation, &y0, &TimeGrid::uniform(0.0, 1.0, 32)?)?;
    let back = Rk4.solve(&rotation, &fwd.state, &TimeGrid::uniform(1.0, 0.0, 32)?)?;
    let round_trip_error = error(&back.state, 0.0)?;
    println!("rk4 forwards then backwards, 32 steps each: |y(0) − y0| = {round_trip_error:.3e}");
    Ok(Report { orders, dopri5, round_trip_error })
}

fn main() -> anyhow::Result<()> {
    run(std::env::args().any(|a| a == "--quick"))?;
    Ok(())
}

//! Flow matching on two moons without training: the closed-form velocity.
//!
//! For a finite training set the CFM loss has an exact minimiser, the
//! empirical velocity `û*` (Bertrand et al. 2025, Prop. 1). This example
//! draws `n` moons, integrates `û*` from Gaussian noise with 200 Euler steps
//! (`fm-solvers`), and compares the generated points with the training set
//! and with fresh moons: `û*` memorises, its samples land on training points.
//!
//! ```text
//! cargo run --release -p fm-core --example two_moons [-- --quick]
//! ```
use candle::{DType, Device, Tensor};
use fm_core::closed_form::EmpiricalVelocity;
use fm_core::metrics::{energy_distance, nearest_neighbor_distances};
use fm_core::scheduler::CondOtScheduler;
use fm_core::{AsOde, SeededRng};
use fm_solvers::{Euler, OdeSolver, TimeGrid};

/// What the example measures (its test checks these).
pub struct Report {
    /// Median distance of the samples to their nearest training point.
    pub median_nn_samples: f64,
    /// The same for fresh moons (what a generalising model would score).
    pub median_nn_fresh: f64,
    /// Energy distance from the samples to the training set, and to fresh moons.
    pub energy_train: f64,
    /// See `energy_train`.
    pub energy_fresh: f64,
    /// Function evaluations of the solve.
    pub nfe: usize,
}

/// `n` points of scikit-learn's two moons with Gaussian noise 0.05, as an `(n, 2)` f64 tensor.
fn moons(n: usize, rng: &mut SeededRng) -> anyhow::Result<Tensor> {
    let theta = rng.uniform_vec(n, 0.0, std::f64::consts::PI);
    let noise = rng.normal_vec(2 * n);
    let mut xy = Vec::with_capacity(2 * n);
    for (i, th) in theta.iter().enumerate() {
        let (x, y) = if i % 2 == 0 { (th.cos(), th.sin()) } else { (1.0 - th.cos(), 0.5 - th.sin()) };
        xy.extend([x + 0.05 * noise[2 * i], y + 0.05 * noise[2 * i + 1]]);
    }
    Ok(Tensor::from_vec(xy, (n, 2), &Device::Cpu)?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the example; `quick` uses 300 training points and 200 samples instead of 1000 and 1000.
pub fn run(quick: bool) -> anyhow::Result<Report> {
    let (n_train, n_samples) = if quick { (300, 200) } else { (1000, 1000) };
    let mut rng = SeededRng::new(0);
    let train = moons(n_train, &mut rng)?;
    let field = EmpiricalVelocity::new(&train, CondOtScheduler)?;

    let x0 = rng.normal((n_samples, 2), DType::F64, &Device::Cpu)?;
    let sol = Euler.solve(&AsOde(&field), &x0, &TimeGrid::uniform(0.0, 1.0, 200)?)?;
    let fresh = moons(n_samples, &mut rng)?;

    let report = Report {
        median_nn_samples: median(nearest_neighbor_distances(&sol.state, &train)?),
        median_nn_fresh: median(nearest_neighbor_distances(&fresh, &train)?),
        energy_train: energy_distance(&sol.state, &train)?,
        energy_fresh: energy_distance(&sol.state, &fresh)?,
        nfe: sol.stats.nfe,
    };
    println!("û* of {n_train} moons, {n_samples} samples, Euler 200 steps (NFE {})", report.nfe);
    println!(
        "median distance to the nearest training point: samples {:.2e}, fresh moons {:.2e}",
        report.median_nn_samples, report.median_nn_fresh
    );
    println!(
        "energy distance of the samples: to the training set {:.5}, to fresh moons {:.5}",
        report.energy_train, report.energy_fresh
    );
    Ok(report)
}

fn main() -> anyhow::Result<()> {
    run(std::env::args().any(|a| a == "--quick"))?;
    Ok(())
}

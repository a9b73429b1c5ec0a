//! `fm analyze gaussian`: the error of Gaussian-context flow matching.
//! The data is `N(μ, Σ)`; the velocity is the exact Gaussian `u*` of the
//! EMPIRICAL mean and covariance of `n` samples. Since `u*` is affine in `x`,
//! each solver maps `N(0, I)` to a Gaussian computed exactly
//! ([`GaussianOracle::sampled_gaussian`]), and its W2 to the TRUE `N(μ, Σ)` is
//! exact: it mixes the estimation error (`n`) and the solver error (steps).

use anyhow::{bail, Context, Result};
use fm_core::gaussian::GaussianOracle;
use fm_core::linalg::gaussian_w2;
use fm_core::scheduler::SchedulerKind;
use fm_core::SeededRng;
use fm_solvers::{Method, TimeGrid};
use serde_json::json;

use super::{logger, out_dir, write_csv, GaussianArgs};
use crate::figures::{line_figure, Panel, Series};
use crate::io::print_json;

/// One row of the results.
struct Row {
    n: usize,
    solver: String,
    steps: usize,
    nfe: usize,
    w2: f64,
}

pub fn run(a: GaussianArgs) -> Result<()> {
    if a.sampler != "ode" {
        return super::pipeline::run(a);
    }
    let d = a.dim;
    if d == 0 {
        bail!("--dim must be at least 1");
    }
    if !a.alpha.is_finite() {
        bail!("--alpha must be a finite number, got {}", a.alpha);
    }
    if !a.mean.is_finite() {
        bail!("--mean must be a finite number, got {}", a.mean);
    }
    if a.n.is_empty() || a.solvers.is_empty() || a.steps.is_empty() {
        bail!("--n, --solvers and --steps each need at least one value");
    }
    if let Some(&n) = a.n.iter().find(|&&n| n <= d) {
        bail!("--n {n}: the empirical covariance of n ≤ --dim ({d}) samples is singular; use n > {d}");
    }
    if a.steps.contains(&0) {
        bail!("--steps: every step count must be at least 1");
    }
    if !(a.t_start.is_finite()
        && a.t_stop.is_finite()
        && 0.0 <= a.t_start
        && a.t_start < a.t_stop
        && a.t_stop <= 1.0)
    {
        bail!("--t-start/--t-stop must satisfy 0 ≤ t-start < t-stop ≤ 1, got {} and {}", a.t_start, a.t_stop);
    }
    let methods = a
        .solvers
        .iter()
        .map(|s| {
            let m: Method = s.parse().with_context(|| format!("--solvers: `{s}`"))?;
            if m.is_adaptive() {
                bail!("--solvers: `{s}` is adaptive; give fixed-step solvers (euler, midpoint, heun, heun3, rk4, rk4-3/8)");
            }
            Ok(m)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut ns = a.n.clone();
    ns.sort_unstable();
    ns.dedup();
    let mut steps = a.steps.clone();
    steps.sort_unstable();
    steps.dedup();
    let dir = out_dir(a.out.as_deref(), "runs/analyze-gaussian".into())?;
    let log = logger(a.json);

    // The truth: N(μ 1, diag(k^−α)).
    let mu = vec![a.mean; d];
    let lambda: Vec<f64> = (1..=d).map(|k| (k as f64).powf(-a.alpha)).collect();
    let mut sigma = vec![0.0; d * d];
    (0..d).for_each(|k| sigma[k * d + k] = lambda[k]);
    let truth = GaussianOracle::new(mu.clone(), sigma.clone(), SchedulerKind::CondOt)?;
    let n_max = ns[ns.len() - 1];
    let z = SeededRng::for_stream(a.seed, "gaussian-train").normal_vec(n_max * d);
    let x: Vec<f64> =
        z.chunks_exact(d).flat_map(|r| (0..d).map(|k| mu[k] + r[k] * lambda[k].sqrt())).collect();
    log(format!(
        "data N({}·1, diag(k^−{})) in d = {d}; velocity from the empirical moments of n samples; grid [{}, {}]",
        a.mean, a.alpha, a.t_start, a.t_stop
    ));
    log(format!(
        "{:>7} {:<10} {:>6} {:>6} {:>12} {:>12}",
        "n", "solver", "steps", "NFE", "W2", "W2 (exact u*)"
    ));
    let mut rows: Vec<Row> = Vec::new();
    let mut floors = Vec::new();
    let pb = crate::progress::bar(
        ns.len() * methods.len() * steps.len(),
        a.quiet,
        "{bar:30} {pos}/{len} solves ETA {eta}",
    );
    for &n in &ns {
        let (m, c) = fm_core::linalg::sample_moments(&x[..n * d], d, 1)?;
        let oracle = GaussianOracle::new(m.clone(), c.clone(), SchedulerKind::CondOt)
            .with_context(|| format!("--n {n}: the empirical covariance is not positive definite"))?;
        // The estimation floor: the W2 from the empirical Gaussian itself to the truth.
        let floor = gaussian_w2(&m, &c, &mu, &sigma)?;
        floors.push((n, floor));
        for method in &methods {
            for &k in &steps {
                let grid = TimeGrid::uniform(a.t_start, a.t_stop, k)?;
                let (pm, pc, nfe) = oracle.sampled_gaussian(method.as_solver(), &grid)?;
                let w2 = gaussian_w2(&pm, &pc, &mu, &sigma)?;
                let (w2_exact, _) = truth.sampling_w2(method.as_solver(), &grid)?;
                pb.inc(1);
                pb.suspend(|| {
                    log(format!(
                        "{n:>7} {:<10} {k:>6} {nfe:>6} {w2:>12.4e} {w2_exact:>12.4e}",
                        method.to_string()
                    ))
                });
                rows.push(Row { n, solver: method.to_string(), steps: k, nfe, w2 });
            }
        }
        pb.suspend(|| log(format!("{n:>7} {:<10} {:>6} {:>6} {floor:>12.4e}", "(exact)", "-", "-")));
    }
    pb.finish_and_clear();
    let csv = dir.join("gaussian.csv");
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![r.n.to_string(), r.solver.clone(), r.steps.to_string(), r.nfe.to_string(), r.w2.to_string()]
        })
        .chain(
            floors.iter().map(|(n, f)| {
                vec![n.to_string(), "exact".into(), String::new(), String::new(), f.to_string()]
            }),
        )
        .collect();
    write_csv(&csv, &["n", "solver", "steps", "nfe", "w2"], &lines)?;
    let k_max = steps[steps.len() - 1];
    let by_solver = |pick: &dyn Fn(&Row) -> Option<f64>| -> Vec<Series> {
        methods
            .iter()
            .map(|m| Series {
                name: m.to_string(),
                points: rows
                    .iter()
                    .filter(|r| r.solver == m.to_string())
                    .filter_map(|r| pick(r).map(|x| (x, r.w2)))
                    .collect(),
            })
            .collect()
    };
    let mut vs_n = by_solver(&|r| (r.steps == k_max).then_some(r.n as f64));
    vs_n.push(Series {
        name: "exact flow".into(),
        points: floors.iter().map(|&(n, f)| (n as f64, f)).collect(),
    });
    let png = dir.join("gaussian.png");
    line_figure(
        &png,
        &format!("W2 to the true N(μ, Σ), d = {d}, λ_k = k^−{}", a.alpha),
        &[
            Panel {
                caption: format!("against steps (n = {n_max})"),
                x_label: "steps".into(),
                y_label: "W2".into(),
                log_x: true,
                log_y: true,
                series: by_solver(&|r| (r.n == n_max).then_some(r.steps as f64)),
                marker_x: None,
            },
            Panel {
                caption: format!("against n ({k_max} steps)"),
                x_label: "training samples n".into(),
                y_label: "W2".into(),
                log_x: true,
                log_y: true,
                series: vs_n,
                marker_x: None,
            },
        ],
    )?;
    log(format!("csv: {}\nplot: {}", csv.display(), png.display()));
    if a.json {
        let results: Vec<_> = rows
            .iter()
            .map(|r| json!({"n": r.n, "solver": r.solver, "steps": r.steps, "nfe": r.nfe, "w2": r.w2}))
            .collect();
        let floor: Vec<_> = floors.iter().map(|(n, f)| json!({"n": n, "w2": f})).collect();
        print_json(&json!({
            "dim": d,
            "alpha": a.alpha,
            "t_start": a.t_start,
            "t_stop": a.t_stop,
            "results": results,
            "exact_flow": floor,
            "csv": csv,
            "plot": png,
        }))?;
    }
    Ok(())
}

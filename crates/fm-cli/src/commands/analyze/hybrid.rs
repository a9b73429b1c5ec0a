//! `fm analyze hybrid`: follow `û*` on `[0, τ]` and the model on `[τ, 1]`
//! from one fixed noise batch, and measure how close the samples come to the
//! training set as τ grows (docs/reference/closed-form.md).

use anyhow::Result;
use fm_core::metrics::nearest_neighbor_distances;
use serde_json::json;

use super::{check_unit, logger, median, out_dir, write_csv, HybridArgs};
use crate::figures::{line_figure, Panel, Series};
use crate::io::print_json;
use fm_pipeline::solve_hybrid;

/// The smallest τ whose median is below 10 % of the median at τ = 0
/// (`baseline`); `None` if there is none.
pub fn knee(taus: &[f64], medians: &[f64], baseline: f64) -> Option<f64> {
    taus.iter()
        .zip(medians)
        .filter(|(_, &m)| m < 0.1 * baseline)
        .map(|(&t, _)| t)
        .fold(None, |acc: Option<f64>, t| Some(acc.map_or(t, |a| a.min(t))))
}

pub fn run(a: HybridArgs) -> Result<()> {
    check_unit(&a.taus, "--taus", false)?;
    if a.n_train == Some(0) {
        anyhow::bail!("--n-train must be at least 1");
    }
    let mut taus = a.taus.clone();
    taus.sort_by(f64::total_cmp);
    taus.dedup();
    let choice = a.solver.choice()?;
    let device = crate::device::selected();
    let m = crate::commands::common::load(&a.checkpoint, false, &device)?;
    let model = super::velocity_field(&m)?;
    let train = m.training_points(a.n_train)?;
    let n_train = train.dim(0)?;
    let field = m.closed_form(&train)?;
    let dir = out_dir(a.out.as_deref(), m.dir().join("analyze-hybrid"))?;
    let log = logger(a.json);
    let x0 = m.source_draws(a.n, a.seed)?;
    log(format!(
        "{} samples ({}), û* on [0, τ] then the model; NN distance to the {n_train} training points of {}",
        a.n,
        choice.label,
        m.record().data
    ));
    log(format!("{:>6} {:>14} {:>14} {:>6}", "τ", "median NN", "mean NN", "NFE"));
    let nn_at = |tau: f64| -> Result<(f64, f64, usize)> {
        let sol = solve_hybrid(&field, model, &x0, &choice, tau, false)?;
        let d = nearest_neighbor_distances(&sol.state, &train)?;
        Ok((median(&d), d.iter().sum::<f64>() / d.len() as f64, sol.nfe))
    };
    let mut medians = Vec::with_capacity(taus.len());
    let mut means = Vec::with_capacity(taus.len());
    let mut rows = Vec::with_capacity(taus.len());
    let pb = crate::progress::bar(taus.len(), a.quiet, "{bar:30} {pos}/{len} τ values ETA {eta}");
    for &tau in &taus {
        let (med, mean, nfe) = nn_at(tau)?;
        pb.inc(1);
        pb.suspend(|| log(format!("{tau:>6} {med:>14.4e} {mean:>14.4e} {nfe:>6}")));
        medians.push(med);
        means.push(mean);
        rows.push(vec![tau.to_string(), med.to_string(), mean.to_string(), nfe.to_string()]);
    }
    let baseline = if taus[0] == 0.0 { medians[0] } else { nn_at(0.0)?.0 };
    let knee = knee(&taus, &medians, baseline);
    log(format!(
        "knee (first τ with median < 10 % of τ = 0's {baseline:.3e}): {}",
        knee.map_or("none".into(), |k| k.to_string())
    ));
    let csv = dir.join("hybrid.csv");
    write_csv(&csv, &["tau", "median_nn_distance", "mean_nn_distance", "nfe"], &rows)?;
    let png = dir.join("hybrid.png");
    line_figure(
        &png,
        &format!("{}: hybrid û* → model, {n_train} training points ({})", m.record().data, choice.label),
        &[Panel {
            caption: "distance of samples to the nearest training point".into(),
            x_label: "τ (û* on [0, τ], the model on [τ, 1])".into(),
            y_label: "NN distance (model units)".into(),
            log_x: false,
            log_y: true,
            series: vec![
                Series {
                    name: "median".into(),
                    points: taus.iter().copied().zip(medians.iter().copied()).collect(),
                },
                Series {
                    name: "mean".into(),
                    points: taus.iter().copied().zip(means.iter().copied()).collect(),
                },
            ],
            marker_x: knee,
        }],
    )?;
    log(format!("csv: {}\nplot: {}", csv.display(), png.display()));
    if a.json {
        print_json(&json!({
            "checkpoint": m.dir(),
            "n": a.n,
            "n_train": n_train,
            "solver": choice.label,
            "taus": taus,
            "median_nn_distance": medians,
            "mean_nn_distance": means,
            "knee": knee,
            "csv": csv,
            "plot": png,
        }))?;
    }
    Ok(())
}

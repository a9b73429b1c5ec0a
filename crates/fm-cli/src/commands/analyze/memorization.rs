//! `fm analyze memorization`: how close do generated samples come to the
//! training set? For the trained model and, with `--closed-form`, for the
//! closed-form velocity `û*` of that training set (which can only reproduce
//! training points; docs/reference/closed-form.md).

use anyhow::{bail, Result};
use candle::Tensor;
use fm_core::metrics::nearest_neighbor_distances;
use serde_json::{json, Value};

use super::{logger, median, out_dir, write_csv, MemorizationArgs};
use crate::figures::{line_figure, Panel, Series};
use crate::io::print_json;
use fm_pipeline::solve_hybrid;

/// Summary of nearest-training-point distances.
struct NnSummary {
    distances: Vec<f64>,
    median: f64,
    mean: f64,
    max: f64,
    fraction_below: f64,
}

impl NnSummary {
    fn new(distances: Vec<f64>, threshold: f64) -> Self {
        let n = distances.len().max(1) as f64;
        Self {
            median: median(&distances),
            mean: distances.iter().sum::<f64>() / n,
            max: distances.iter().copied().fold(0.0, f64::max),
            fraction_below: distances.iter().filter(|&&d| d < threshold).count() as f64 / n,
            distances,
        }
    }

    fn json(&self) -> Value {
        json!({
            "median_nn_distance": self.median,
            "mean_nn_distance": self.mean,
            "max_nn_distance": self.max,
            "fraction_below_threshold": self.fraction_below,
        })
    }
}

/// The empirical CDF of `d` as `(distance, fraction ≤ distance)` points.
fn cdf(d: &[f64]) -> Vec<(f64, f64)> {
    let mut s = d.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len() as f64;
    s.iter().enumerate().map(|(i, &v)| (v.max(1e-12), (i + 1) as f64 / n)).collect()
}

pub fn run(a: MemorizationArgs) -> Result<()> {
    if !(a.threshold.is_finite() && a.threshold > 0.0) {
        bail!("--threshold must be a positive number, got {}", a.threshold);
    }
    if a.n_train == Some(0) {
        bail!("--n-train must be at least 1");
    }
    let choice = a.solver.choice()?;
    let device = crate::device::selected();
    let m = crate::commands::common::load(&a.checkpoint, false, &device)?;
    let model = super::velocity_field(&m)?;
    let train = m.training_points(a.n_train)?;
    let n_train = train.dim(0)?;
    let dir = out_dir(a.out.as_deref(), m.dir().join("analyze-memorization"))?;
    let log = logger(a.json);
    // The checkpoint's own source (N(0, I) unless trained with --source).
    let x0 = m.source_draws(a.n, a.seed)?;
    let nn = |x: &Tensor| -> Result<Vec<f64>> { Ok(nearest_neighbor_distances(x, &train)?) };
    let solves = if a.closed_form { 2 } else { 1 };
    let pb = crate::progress::bar(solves, a.quiet, "{bar:30} {pos}/{len} solves ETA {eta}");
    let model = solve_hybrid(model, model, &x0, &choice, 0.0, false)?;
    pb.inc(1);
    let model_nn = NnSummary::new(nn(&model.state)?, a.threshold);
    pb.suspend(|| {
        log(format!(
            "{} samples ({}) against the {n_train} training points of {} (model units); threshold {}",
            a.n,
            choice.label,
            m.record().data,
            a.threshold
        ))
    });
    let line = |name: &str, s: &NnSummary| {
        format!(
            "{name:<12} median NN distance {:.3e}  mean {:.3e}  max {:.3e}  fraction below threshold {:.3}",
            s.median, s.mean, s.max, s.fraction_below
        )
    };
    pb.suspend(|| log(line("model", &model_nn)));
    let closed_nn = if a.closed_form {
        let field = m.closed_form(&train)?;
        let sol = solve_hybrid(&field, &field, &x0, &choice, 0.0, false)?;
        pb.inc(1);
        let s = NnSummary::new(nn(&sol.state)?, a.threshold);
        pb.suspend(|| log(line("closed form", &s)));
        Some(s)
    } else {
        None
    };

    pb.finish_and_clear();
    let csv = dir.join("memorization.csv");
    let rows: Vec<Vec<String>> = (0..a.n)
        .map(|i| {
            let mut r = vec![i.to_string(), model_nn.distances[i].to_string()];
            if let Some(c) = &closed_nn {
                r.push(c.distances[i].to_string());
            }
            r
        })
        .collect();
    let mut header = vec!["sample", "model_nn_distance"];
    if closed_nn.is_some() {
        header.push("closed_form_nn_distance");
    }
    write_csv(&csv, &header, &rows)?;
    let png = dir.join("memorization.png");
    let mut series = vec![Series { name: "model".into(), points: cdf(&model_nn.distances) }];
    if let Some(c) = &closed_nn {
        series.push(Series { name: "closed form û*".into(), points: cdf(&c.distances) });
    }
    line_figure(
        &png,
        &format!(
            "{}: distance to the nearest of {n_train} training points ({})",
            m.record().data,
            choice.label
        ),
        &[Panel {
            caption: format!("empirical CDF (dashed: threshold {})", a.threshold),
            x_label: "nearest-neighbour distance (model units)".into(),
            y_label: "fraction of samples".into(),
            log_x: true,
            log_y: false,
            series,
            marker_x: Some(a.threshold),
        }],
    )?;
    log(format!("csv: {}\nplot: {}", csv.display(), png.display()));
    if a.json {
        let mut j = model_nn.json();
        j["checkpoint"] = json!(m.dir());
        j["n"] = json!(a.n);
        j["n_train"] = json!(n_train);
        j["solver"] = json!(choice.label);
        j["threshold"] = json!(a.threshold);
        j["closed_form"] = closed_nn.as_ref().map_or(Value::Null, NnSummary::json);
        j["csv"] = json!(csv);
        j["plot"] = json!(png);
        print_json(&j)?;
    }
    Ok(())
}

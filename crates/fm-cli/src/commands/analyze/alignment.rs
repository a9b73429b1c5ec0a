//! `fm analyze alignment`: how often does the closed-form velocity `û*`
//! point along the conditional velocity `x₁ − x₀`? The aligned fraction
//! jumps to 1 earlier as the dimension grows (docs/reference/closed-form.md).

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use candle::{DType, Device, Tensor};
use fm_core::alignment::{alignment_curve, crossing_time};
use fm_core::closed_form::EmpiricalVelocity;
use fm_core::path::AffinePath;
use fm_core::scheduler::CondOtScheduler;
use fm_core::SeededRng;
use fm_data::images::{load_mnist_dir, Split};
use serde_json::json;

use super::{check_unit, logger, out_dir, write_csv, AlignmentArgs};
use crate::figures::{heatmap_figure, Heatmap};
use crate::io::print_json;

/// One dataset of the analysis: a name (`d8`, `mnist14`) and its training set `(n, D)` in `f64`.
struct Dataset {
    name: String,
    train: Tensor,
}

fn gaussian_sets(a: &AlignmentArgs, device: &Device) -> Result<Vec<Dataset>> {
    a.dims
        .iter()
        .map(|&d| {
            if d == 0 {
                bail!("--dims: every dimension must be at least 1");
            }
            let mut rng = SeededRng::for_stream(a.seed, &format!("alignment-gaussian-{d}"));
            Ok(Dataset { name: format!("d{d}"), train: rng.normal((a.n, d), DType::F64, device)? })
        })
        .collect()
}

fn mnist_sets(dir: &std::path::Path, n: usize, center: bool, device: &Device) -> Result<Vec<Dataset>> {
    let set =
        load_mnist_dir(dir, Split::Train).with_context(|| format!("--mnist {}", dir.display()))?.take(n);
    let idx: Vec<usize> = (0..set.n).collect();
    [(4, 7), (2, 14), (1, 28)]
        .into_iter()
        .map(|(factor, side)| {
            let small =
                set.downsample(factor).with_context(|| format!("--mnist: downsampling by {factor}"))?;
            let mut t = small.tensor(&idx, device)?.flatten_from(1)?.to_dtype(DType::F64)?;
            if center {
                t = t.broadcast_sub(&t.mean_keepdim(0)?)?;
            }
            Ok(Dataset { name: format!("mnist{side}"), train: t })
        })
        .collect()
}

pub fn run(a: AlignmentArgs) -> Result<()> {
    check_unit(&a.times, "--times", true)?;
    if a.times.windows(2).any(|w| w[1] <= w[0]) {
        bail!("--times must be strictly increasing");
    }
    if a.dims.is_empty() && a.mnist.is_none() {
        bail!("--dims is empty and no --mnist was given: nothing to analyze");
    }
    if a.n == 0 || a.pairs == 0 {
        bail!("--n and --pairs must be at least 1");
    }
    if !(a.threshold.is_finite() && (-1.0..1.0).contains(&a.threshold)) {
        bail!("--threshold must lie in [-1, 1), got {}", a.threshold);
    }
    if !(a.level.is_finite() && a.level > 0.0 && a.level <= 1.0) {
        bail!("--level must lie in (0, 1], got {}", a.level);
    }
    let device = crate::device::selected();
    let dir = out_dir(a.out.as_deref(), "runs/analyze-alignment".into())?;
    let log = logger(a.json);
    let mut sets = gaussian_sets(&a, &device)?;
    if let Some(m) = &a.mnist {
        sets.extend(mnist_sets(m, a.n, a.center, &device)?);
    }
    let path = AffinePath::new(CondOtScheduler);
    log(format!(
        "fraction of {} pairs with cos(û*(x_t, t), x1 − x0) > {} (n = {} training points, x1 among them)",
        a.pairs, a.threshold, a.n
    ));
    log(format!(
        "{:<9} {:>6} {:>6}  {}",
        "dataset",
        "t_cross",
        "t_coll",
        a.times.iter().map(|t| format!("{t:>5}")).collect::<Vec<_>>().join(" ")
    ));
    let mut crossing = BTreeMap::new();
    let mut collapses = BTreeMap::new();
    let mut ordered = Vec::new();
    let mut rows = Vec::new();
    let mut heat = Heatmap { rows: vec![], columns: a.times.clone(), values: vec![], x_label: "t".into() };
    let pb = crate::progress::bar(sets.len(), a.quiet, "{bar:30} {pos}/{len} datasets ETA {eta}");
    for set in &sets {
        pb.inc(1);
        let n = set.train.dim(0)?;
        let d = set.train.dim(1)?;
        let pairs = a.pairs.min(n);
        let field = EmpiricalVelocity::new(&set.train, CondOtScheduler)?;
        let x1 = set.train.narrow(0, 0, pairs)?;
        let mut rng = SeededRng::for_stream(a.seed, &format!("alignment-pairs-{}", set.name));
        let x0 = rng.normal((pairs, d), DType::F64, &device)?;
        let curve = alignment_curve(&field, &path, &x0, &x1, &a.times, a.threshold)?;
        let tc = curve.crossing_time(a.level)?;
        // Collapse time: the first crossing at or after the curve's minimum. It equals the
        // crossing time for curves that start below the level (centred Gaussians), and still
        // orders datasets whose fraction starts high (MNIST in [−1, 1]) by when they re-collapse.
        let k_min =
            (0..curve.fractions.len())
                .fold(0, |k, j| if curve.fractions[j] < curve.fractions[k] { j } else { k });
        let collapse = crossing_time(&curve.times[k_min..], &curve.fractions[k_min..], a.level)?;
        pb.suspend(|| {
            log(format!(
                "{:<9} {:>6} {:>6}  {}",
                set.name,
                tc.map_or("-".into(), |t| format!("{t:.3}")),
                collapse.map_or("-".into(), |t| format!("{t:.3}")),
                curve.fractions.iter().map(|f| format!("{f:>5.2}")).collect::<Vec<_>>().join(" ")
            ))
        });
        for ((t, f), c) in curve.times.iter().zip(&curve.fractions).zip(&curve.mean_cosines) {
            rows.push(vec![
                set.name.clone(),
                d.to_string(),
                n.to_string(),
                t.to_string(),
                f.to_string(),
                c.to_string(),
            ]);
        }
        crossing.insert(set.name.clone(), tc);
        collapses.insert(set.name.clone(), collapse);
        ordered.push((set.name.clone(), d, tc));
        heat.rows.push(set.name.clone());
        heat.values.push(curve.fractions);
    }
    let csv = dir.join("alignment.csv");
    write_csv(&csv, &["dataset", "dim", "n", "t", "fraction_aligned", "mean_cosine"], &rows)?;
    let png = dir.join("alignment.png");
    heatmap_figure(
        &png,
        &format!("fraction of pairs with cos(û*(x_t, t), x1 − x0) > {} (n = {})", a.threshold, a.n),
        &heat,
    )?;
    log(format!("csv: {}\nplot: {}", csv.display(), png.display()));
    if a.json {
        print_json(&json!({
            "n": a.n,
            "pairs": a.pairs,
            "threshold": a.threshold,
            "level": a.level,
            "center": a.center,
            "times": a.times,
            "datasets": ordered.iter().map(|(name, d, _)| json!({"name": name, "dim": d})).collect::<Vec<_>>(),
            "fractions": heat.values,
            "crossing_t": crossing,
            "collapse_t": collapses,
            "csv": csv,
            "plot": png,
        }))?;
    }
    Ok(())
}

//! `fm analyze gaussian --sampler sde|langevin`: the exact error of a whole
//! score-based pipeline on Gaussian data (Hurault et al. 2025), one axis at a
//! time — generalization (`--n` samples), optimisation (`--train-steps` K at
//! step size η), discretization (`--steps`) and the noise floor
//! (`--noise-floor` δ) — with each W2² split over the spectrum `λ_k = k^−α`
//! where the model's basis is the data's ([`GaussianOracle::pipeline_error`]).

use anyhow::{bail, Context, Result};
use fm_core::gaussian::GaussianOracle;
use fm_core::gaussian_pipeline::{LinearScoreModel, PipelineError, PipelineSampler};
use fm_core::scheduler::SchedulerKind;
use fm_core::stochastic::StochasticSampler;
use fm_core::SeededRng;
use serde_json::json;

use super::{logger, out_dir, write_csv, GaussianArgs};
use crate::figures::{line_figure, Panel, Series};
use crate::io::print_json;

/// One result: the axis, its value, the W2 and (where exact) the split.
struct Row {
    axis: &'static str,
    value: f64,
    w2: f64,
    nfe: usize,
    contributions: Option<Vec<f64>>,
}

pub fn run(a: GaussianArgs) -> Result<()> {
    let d = a.dim;
    if d == 0 {
        bail!("--dim must be at least 1");
    }
    if !(a.alpha.is_finite() && a.mean.is_finite()) {
        bail!("--alpha and --mean must be finite numbers, got {} and {}", a.alpha, a.mean);
    }
    if a.steps.is_empty() || a.steps.contains(&0) {
        bail!("--steps needs at least one value, each at least 1");
    }
    if a.noise_floor.is_empty() || a.train_steps.is_empty() || a.n.is_empty() {
        bail!("--noise-floor, --train-steps and --n each need at least one value");
    }
    if a.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    if !(a.lr.is_finite() && a.lr > 0.0) {
        bail!("--lr must be a positive number, got {}", a.lr);
    }
    if let Some(&n) = a.n.iter().find(|&&n| n < 2) {
        bail!("--n {n}: the pipeline needs at least 2 samples");
    }
    let scheduler: SchedulerKind = a.scheduler.parse().context("--scheduler")?;
    let steps_max = *a.steps.iter().max().unwrap_or(&1);
    let delta0 = a.noise_floor[0];
    let sampler = |steps: usize, delta: f64| -> Result<PipelineSampler> {
        Ok(match a.sampler.as_str() {
            "langevin" => PipelineSampler::Langevin { steps, step: a.langevin_step, noise_floor: delta },
            _ => PipelineSampler::Sde(super::super::common::sde_sampler(
                &a.diffusion,
                &a.sde_solver,
                steps,
                delta,
                0,
                0.0,
            )?),
        })
    };
    let label = match sampler(steps_max, delta0)? {
        PipelineSampler::Sde(s) => describe_sde(&s),
        PipelineSampler::Langevin { step, .. } => format!("Langevin, ε = {step}"),
    };
    let dir = out_dir(a.out.as_deref(), "runs/analyze-gaussian".into())?;
    let log = logger(a.json);
    let (lambda, spectrum_name) = match &a.spectrum_from {
        None => (
            (1..=d).map(|k| (k as f64).powf(-a.alpha)).collect::<Vec<f64>>(),
            format!("λ_k = k^−{}", a.alpha),
        ),
        Some(spec) => image_spectrum(spec, a.spectrum_n)?,
    };
    let d = lambda.len();
    let mut sigma = vec![0.0; d * d];
    (0..d).for_each(|k| sigma[k * d + k] = lambda[k]);
    let oracle = GaussianOracle::new(vec![a.mean; d], sigma, scheduler)?;
    log(format!(
        "data N({}·1, Σ) in d = {d} with {spectrum_name}, {} path; sampler: {label}; baseline: exact moments, \
         fully trained, {steps_max} steps, δ = {delta0}",
        a.mean, a.scheduler
    ));
    let exact = LinearScoreModel::default();
    let mut rows = Vec::new();
    let total = a.n.len() * a.repeats as usize + a.train_steps.len() + a.steps.len() + a.noise_floor.len();
    let pb = crate::progress::bar(total, a.quiet, "{bar:30} {pos}/{len} pipelines ETA {eta}");
    let run = |axis: &'static str, value: f64, model: &LinearScoreModel, s: PipelineSampler, seed: u64| {
        let e: PipelineError =
            oracle.pipeline_error(model, &s, &mut SeededRng::for_stream(seed, "gaussian-train"))?;
        pb.inc(1);
        Ok::<_, anyhow::Error>(Row { axis, value, w2: e.w2, nfe: e.nfe, contributions: e.contributions })
    };
    for &n in &a.n {
        let mut sum = 0.0;
        let mut nfe = 0;
        for r in 0..a.repeats {
            let model = LinearScoreModel { samples: Some(n), training: None };
            let row = run("samples", n as f64, &model, sampler(steps_max, delta0)?, a.seed.wrapping_add(r))?;
            sum += row.w2;
            nfe = row.nfe;
        }
        rows.push(Row {
            axis: "samples",
            value: n as f64,
            w2: sum / a.repeats as f64,
            nfe,
            contributions: None,
        });
    }
    for &k in &a.train_steps {
        let model = LinearScoreModel { samples: None, training: Some((k, a.lr)) };
        rows.push(run("train-steps", k as f64, &model, sampler(steps_max, delta0)?, a.seed)?);
    }
    for &steps in &a.steps {
        rows.push(run("steps", steps as f64, &exact, sampler(steps, delta0)?, a.seed)?);
    }
    for &delta in &a.noise_floor {
        rows.push(run("noise-floor", delta, &exact, sampler(steps_max, delta)?, a.seed)?);
    }
    pb.finish_and_clear();
    let baseline = run("baseline", 0.0, &exact, sampler(steps_max, delta0)?, a.seed)?;
    log(format!(
        "{:<12} {:>18} {:>6} {:>12}  {}",
        "axis", "value", "NFE", "W2", "share of W2² on the smaller half of the λ"
    ));
    for r in rows.iter().chain([&baseline]) {
        // Eigenvalues ascend: the first half are the small-λ (fine-detail) directions.
        let top = r.contributions.as_ref().map(|c| {
            let small: f64 = c[..c.len() / 2].iter().sum();
            format!("{:.0} %", 100.0 * small / c.iter().sum::<f64>().max(f64::MIN_POSITIVE))
        });
        let value = if r.axis == "samples" {
            format!("{} (mean of {})", r.value, a.repeats)
        } else {
            format!("{}", r.value)
        };
        log(format!(
            "{:<12} {:>18} {:>6} {:>12.4e}  {}",
            r.axis,
            value,
            r.nfe,
            r.w2,
            top.unwrap_or_default()
        ));
    }
    let csv = dir.join("pipeline.csv");
    write_csv(
        &csv,
        &["axis", "value", "nfe", "w2"],
        &rows
            .iter()
            .chain([&baseline])
            .map(|r| vec![r.axis.into(), r.value.to_string(), r.nfe.to_string(), r.w2.to_string()])
            .collect::<Vec<_>>(),
    )?;
    // The spectrum view: W2²'s term per eigenvalue, one line per (axis, value).
    let spectrum_csv = dir.join("pipeline-spectrum.csv");
    let mut lines = Vec::new();
    for r in rows.iter().chain([&baseline]) {
        if let Some(c) = &r.contributions {
            for (k, v) in c.iter().enumerate() {
                lines.push(vec![
                    r.axis.into(),
                    r.value.to_string(),
                    oracle.eigenvalues()[k].to_string(),
                    v.to_string(),
                ]);
            }
        }
    }
    write_csv(&spectrum_csv, &["axis", "value", "lambda", "w2_squared_term"], &lines)?;
    let series_of = |axis: &str| -> Vec<Series> {
        vec![Series {
            name: axis.into(),
            points: rows.iter().filter(|r| r.axis == axis).map(|r| (r.value, r.w2)).collect(),
        }]
    };
    let pick = |axis: &str, first: bool| {
        let mut v: Vec<&Row> = rows.iter().filter(|r| r.axis == axis).collect();
        v.sort_by(|x, y| x.value.total_cmp(&y.value));
        if first {
            v.first().copied()
        } else {
            v.last().copied()
        }
    };
    let spectrum: Vec<Series> = [
        ("K = ".to_string(), pick("train-steps", true)),
        ("steps = ".to_string(), pick("steps", true)),
        ("δ = ".to_string(), pick("noise-floor", false)),
        ("baseline".to_string(), Some(&baseline)),
    ]
    .into_iter()
    .filter_map(|(name, r)| {
        let r = r?;
        let c = r.contributions.as_ref()?;
        let name = if r.axis == "baseline" { name } else { format!("{name}{}", r.value) };
        Some(Series { name, points: oracle.eigenvalues().iter().zip(c).map(|(&l, &v)| (l, v)).collect() })
    })
    .collect();
    let panel = |caption: &str, x: &str, axis: &str| Panel {
        caption: caption.into(),
        x_label: x.into(),
        y_label: "W2".into(),
        log_x: true,
        log_y: true,
        series: series_of(axis),
        marker_x: None,
    };
    let png = dir.join("pipeline.png");
    line_figure(
        &png,
        &format!("Exact W2 of the pipeline, d = {d}, {spectrum_name}, {label}"),
        &[
            panel(&format!("generalization (mean of {} draws)", a.repeats), "samples N", "samples"),
            panel(&format!("optimisation (η = {})", a.lr), "gradient steps K", "train-steps"),
            panel("discretization", "steps", "steps"),
            panel("noise floor", "δ", "noise-floor"),
            Panel {
                caption: "W2² per eigenvalue".into(),
                x_label: "λ".into(),
                y_label: "term of W2²".into(),
                log_x: true,
                log_y: true,
                series: spectrum,
                marker_x: None,
            },
        ],
    )?;
    log(format!("csv: {}, {}\nplot: {}", csv.display(), spectrum_csv.display(), png.display()));
    if a.json {
        let results: Vec<_> = rows
            .iter()
            .chain([&baseline])
            .map(|r| json!({"axis": r.axis, "value": r.value, "nfe": r.nfe, "w2": r.w2, "w2_squared_terms": r.contributions}))
            .collect();
        print_json(&json!({
            "dim": d,
            "alpha": a.alpha,
            "spectrum": spectrum_name,
            "sampler": label,
            "eigenvalues": oracle.eigenvalues(),
            "results": results,
            "csv": csv,
            "spectrum_csv": spectrum_csv,
            "plot": png,
        }))?;
    }
    Ok(())
}

fn describe_sde(s: &StochasticSampler) -> String {
    format!("SDE g = {}, {}", s.diffusion, s.method.as_solver().name())
}

/// The covariance spectrum of the first `n` training images of `FORMAT:PATH`
/// (pixels in the models' [−1, 1] scale), descending, floored at `1e-6·λ_max`
/// (constant border pixels have none) so the Gaussian is non-degenerate.
fn image_spectrum(spec: &str, n: usize) -> Result<(Vec<f64>, String)> {
    use fm_data::images::{ImageFormat, Split};
    let (format, path) = spec
        .split_once(':')
        .with_context(|| format!("--spectrum-from `{spec}`: write FORMAT:PATH, e.g. mnist:data/mnist"))?;
    let format: ImageFormat = format.parse().with_context(|| format!("--spectrum-from `{spec}`"))?;
    let set = format
        .load(std::path::Path::new(path), Split::Train)
        .with_context(|| format!("--spectrum-from `{spec}`"))?
        .take(n.max(2));
    let (rows, d) = (set.n, set.dim());
    if rows < 2 {
        bail!("--spectrum-from `{spec}`: needs at least 2 images, found {rows}");
    }
    let levels = f64::from(set.levels);
    let x: Vec<f64> = set.pixels.iter().map(|&p| 2.0 * (f64::from(p) + 0.5) / levels - 1.0).collect();
    let (_, cov) = fm_core::linalg::sample_moments(&x, d, 0)?;
    let eigen = fm_core::linalg::symmetric_eigen(&cov, d)
        .with_context(|| format!("--spectrum-from `{spec}`: the covariance's eigenvalues"))?;
    let top = eigen.values.iter().copied().fold(0.0, f64::max);
    let mut lambda: Vec<f64> = eigen.values.iter().map(|&l| l.max(1e-6 * top)).collect();
    lambda.sort_by(|a, b| b.total_cmp(a));
    Ok((lambda, format!("the spectrum of {rows} {format} images")))
}

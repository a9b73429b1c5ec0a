//! Sampling image models (U-Nets): batched solves, class labels and
//! classifier-free guidance, grids and trajectory strips.

use anyhow::{bail, Context, Result};
use candle::Tensor;
use fm_core::{AsOde, VelocityField};
use fm_models::unet::{ClassifierFreeGuidance, UNet};
use fm_solvers::OdeSolver;

use super::common::{Generated, LoadedModel};
use crate::solver::SolverChoice;

/// Images per solve unless `--batch-size` says otherwise.
pub const DEFAULT_BATCH: usize = 250;

/// The labels of `n` samples: `class` for all, or classes `0, 1, …, K−1` in
/// turn; `None` for an unconditional model (where `class` is an error).
pub fn default_labels(net: &UNet, n: usize, class: Option<u32>) -> Result<Option<Vec<u32>>> {
    match (net.config().num_classes, class) {
        (None, None) => Ok(None),
        (None, Some(_)) => bail!("--class: the model is not class-conditional (train with --class-cond)"),
        (Some(k), Some(c)) if c as usize >= k => bail!("--class {c}: the model knows classes 0..{}", k - 1),
        (Some(_), Some(c)) => Ok(Some(vec![c; n])),
        (Some(k), None) => Ok(Some((0..n).map(|i| (i % k) as u32).collect())),
    }
}

/// How to sample images.
pub struct ImageSampling<'a> {
    pub choice: &'a SolverChoice,
    /// One label per sample (class-conditional models).
    pub labels: Option<Vec<u32>>,
    /// Classifier-free guidance weight `w` (0: the conditional model).
    pub cfg_scale: f64,
    /// Images per solve.
    pub batch: usize,
    /// Keep the trajectory of the first this many samples.
    pub trajectory_rows: usize,
}

/// Solves from the source noise `x0` `(n, d)` in batches; the trajectory (if
/// kept) holds the first `trajectory_rows` samples at every grid time.
pub fn generate_images(m: &LoadedModel, net: &UNet, x0: &Tensor, s: &ImageSampling) -> Result<Generated> {
    if s.batch == 0 {
        bail!("--batch-size must be at least 1, got 0");
    }
    if s.cfg_scale != 0.0 && net.config().num_classes.is_none() {
        bail!("--cfg-scale: the model is not class-conditional (train with --class-cond)");
    }
    let (n, d) = x0.dims2()?;
    let grid = s.choice.grid()?;
    let mut samples = Vec::with_capacity(n * d);
    let mut trajectory: Vec<Vec<f32>> = Vec::new();
    let mut nfe = 0;
    let mut start = 0;
    while start < n {
        let b = s.batch.min(n - start);
        let chunk = x0.narrow(0, start, b)?;
        let labels = match &s.labels {
            Some(l) => Some(Tensor::from_vec(l[start..start + b].to_vec(), b, chunk.device())?),
            None => None,
        };
        let keep = start < s.trajectory_rows;
        let field: Box<dyn VelocityField + '_> = match &labels {
            Some(l) => Box::new(ClassifierFreeGuidance { net, labels: l, scale: s.cfg_scale }),
            None => Box::new(net),
        };
        let sol = s
            .choice
            .method
            .integrate(&AsOde(field), &chunk, &grid, keep)
            .with_context(|| format!("sampling with {}", s.choice.label))?;
        nfe = nfe.max(sol.stats.nfe);
        samples.extend(crate::data::to_data_units(&sol.state, m.record.transform.as_ref())?);
        if keep {
            let rows = (s.trajectory_rows - start).min(b);
            for (k, x) in sol.trajectory.iter().enumerate() {
                let v = x.narrow(0, 0, rows)?.flatten_all()?.to_vec1::<f32>()?;
                match trajectory.get_mut(k) {
                    Some(t) => t.extend(v),
                    None => trajectory.push(v),
                }
            }
        }
        start += b;
    }
    Ok(Generated { samples, trajectory, nfe })
}

/// `fm sample` on an image checkpoint: `.npy` (or `.csv`) of all samples,
/// `.png` a grid of the first 100 plus the `.npy` beside it, and optionally a
/// trajectory strip.
pub fn run_sample(a: &crate::cli::SampleArgs, m: &LoadedModel, net: &UNet) -> Result<()> {
    use std::time::Instant;

    use crate::io::{check_output, print_json, write_samples};
    use serde_json::json;

    if a.hybrid.is_some() || a.plot.is_some() {
        bail!("--hybrid and --plot apply to point data; for images use --out FILE.png and --trajectory FILE.png");
    }
    let data = crate::data::TrainingData::from_record(&m.record)?;
    let info = data.image_info().context("the checkpoint's data is not images")?;
    let choice = SolverChoice::from_args(&a.solver)?;
    let out = a.out.clone().unwrap_or_else(|| m.dir.join("samples.npy"));
    let is_png = |p: &std::path::Path| {
        p.extension().and_then(|e| e.to_str()).map(|e| e.eq_ignore_ascii_case("png")).unwrap_or(false)
    };
    let (grid_png, values) =
        if is_png(&out) { (Some(out.clone()), out.with_extension("npy")) } else { (None, out.clone()) };
    check_output(&values, "--out")?;
    if let Some(t) = &a.images.trajectory {
        if !is_png(t) {
            bail!("--trajectory {}: the strip is a PNG; give a path ending in .png", t.display());
        }
    }
    let cfg_scale = a.images.cfg_scale.unwrap_or(0.0);
    if !cfg_scale.is_finite() {
        bail!("--cfg-scale must be a finite number, got {cfg_scale}");
    }
    let labels = default_labels(net, a.n, a.images.class)?;
    let x0 = super::common::source_noise(a.n, m.dim(), a.seed, &crate::device::selected())?;
    let rows = if a.images.trajectory.is_some() { a.n.min(10) } else { 0 };
    let start = Instant::now();
    let gen = generate_images(
        m,
        net,
        &x0,
        &ImageSampling {
            choice: &choice,
            labels: labels.clone(),
            cfg_scale,
            batch: a.images.batch_size.unwrap_or(DEFAULT_BATCH),
            trajectory_rows: rows,
        },
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let d = m.dim();
    write_samples(&values, &gen.samples, a.n, d, &[])?;
    let log = |s: String| if a.json { eprintln!("{s}") } else { println!("{s}") };
    let guidance = match (&labels, a.images.class) {
        (None, _) => String::new(),
        (Some(_), Some(c)) => format!(", class {c}, guidance w = {cfg_scale}"),
        (Some(_), None) => format!(", classes in turn, guidance w = {cfg_scale}"),
    };
    log(format!(
        "{} images with {}{guidance} in {seconds:.1} s, NFE {}: {} (values in [−1, 1] scale, one flattened {}×{}×{} image per row)",
        a.n, choice.label, gen.nfe, values.display(), info.channels, info.height, info.width
    ));
    if let Some(p) = &grid_png {
        let k = a.n.min(100);
        crate::plot_images::image_grid(p, &gen.samples[..k * d], info, 10, 3)?;
        log(format!("grid: {}", p.display()));
    }
    if let Some(p) = &a.images.trajectory {
        crate::plot_images::trajectory_strip(p, &gen.trajectory, rows, info, 10, 3)?;
        log(format!("trajectory: {}", p.display()));
    }
    if a.json {
        print_json(&json!({
            "samples": values,
            "grid": grid_png,
            "trajectory": a.images.trajectory,
            "n": a.n,
            "solver": choice.label,
            "nfe": gen.nfe,
            "seconds": seconds,
            "class": a.images.class,
            "cfg_scale": cfg_scale,
        }))?;
    }
    Ok(())
}

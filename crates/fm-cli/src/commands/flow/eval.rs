//! `fm sample`, `fm likelihood` and `fm plot density` on a flow checkpoint:
//! sampling is one pass through the layers and the density is exact (change
//! of variables), so no ODE solver is involved.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::{flow_log_likelihoods, generate_flow, load_flow, LoadedFlow};
use crate::cli::{DensityArgs, LikelihoodArgs, SampleArgs};
use crate::commands::likelihood::mean_stderr;
use crate::data::TrainingData;
use crate::io::{check_output, print_json, write_samples};
use crate::plot::samples_figure;
use crate::plot_density::density_figure;

/// `fm sample --checkpoint FLOWDIR`.
pub fn sample(a: SampleArgs) -> Result<()> {
    let device = crate::device::selected();
    let m = load_flow(&a.checkpoint, &device)?;
    let out = a.out.clone().unwrap_or_else(|| m.dir.join("samples.npy"));
    check_output(&out, "--out")?;
    if let Some(p) = &a.plot {
        if p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() != Some("png") {
            bail!("--plot {}: the plot is a PNG; give a path ending in .png", p.display());
        }
    }
    let log = |s: String| if a.json { eprintln!("{s}") } else { println!("{s}") };
    log(format!(
        "{} is a {}: sampling is one pass through its layers (no ODE; --solver/--steps/--rtol/--atol are ignored)",
        m.dir.display(),
        m.describe()
    ));
    let data = m.record.training_data()?;
    let start = Instant::now();
    let keep = a.plot.is_some() && m.dim() == 2;
    let gen = generate_flow(&m.flow, data.transform(), a.n, a.seed, keep, &device)?;
    let seconds = start.elapsed().as_secs_f64();
    write_samples(&out, &gen.samples, a.n, m.dim(), &m.record.columns)?;
    log(format!("{} samples in {seconds:.2} s: {}", a.n, out.display()));
    if let Some(p) = &a.plot {
        let reference = data.reference(a.n, a.seed)?;
        samples_figure(
            p,
            &format!("{} — {} (trajectories: layer by layer)", m.record.data, m.describe()),
            &reference,
            &gen.samples,
            &gen.trajectory,
        )?;
        log(format!("plot: {}", p.display()));
    }
    if a.json {
        print_json(&json!({
            "samples": out,
            "n": a.n,
            "solver": "none (discrete flow)",
            "nfe": 0,
            "seconds": seconds,
            "plot": a.plot,
        }))?;
    }
    Ok(())
}

/// The evaluation points (data units) of `fm likelihood`: the checkpoint's data by default.
fn evaluation_points(m: &LoadedFlow, a: &LikelihoodArgs) -> Result<(Vec<f32>, String)> {
    if a.n == 0 {
        bail!("--n must be at least 1, got 0");
    }
    let r = &m.record;
    let (data, label) = match &a.data {
        None => (r.training_data()?, format!("{} (the checkpoint's data)", r.data)),
        Some(d) => {
            let columns = a.columns.clone().unwrap_or_else(|| r.columns.clone());
            let noise = if *d == r.data { r.noise } else { None };
            (TrainingData::prepare(d, &columns, noise, None, a.seed).context("--data")?, d.clone())
        }
    };
    if data.dim() != m.dim() {
        bail!(
            "--data {label}: the points have {} dimensions, but the checkpoint {} models {}",
            data.dim(),
            m.dir.display(),
            m.dim()
        );
    }
    // Toys: fresh test points; images: the dequantized test split (as bits/dim assume).
    Ok((data.likelihood_points(a.n, a.seed)?, label))
}

/// `fm likelihood --checkpoint FLOWDIR`: the exact NLL by the change of variables.
pub fn likelihood(a: LikelihoodArgs) -> Result<()> {
    let device = crate::device::selected();
    let m = load_flow(&a.checkpoint, &device)?;
    let (points, label) = evaluation_points(&m, &a)?;
    let n = points.len() / m.dim();
    // The checkpoint's own transform maps the points to model units.
    let ckpt_data = m.record.training_data()?;
    let start = Instant::now();
    let (log_p, log_det_jacobian) =
        flow_log_likelihoods(&m.flow, &ckpt_data, &points, a.batch_size, &device)?;
    let seconds = start.elapsed().as_secs_f64();
    let nll: Vec<f64> = log_p.iter().map(|v| -v).collect();
    let (mean, se) = mean_stderr(&nll);
    if !mean.is_finite() {
        bail!("the likelihood is not finite (mean NLL {mean})");
    }
    let log = |t: String| if a.json { eprintln!("{t}") } else { println!("{t}") };
    log(format!(
        "{n} points of {label}; {}: exact change of variables (no ODE; the solver and divergence flags are \
         ignored) in {seconds:.2} s",
        m.describe()
    ));
    log(format!(
        "NLL {mean:.4} ± {se:.4} nats per point (mean ± standard error){}",
        if log_det_jacobian != 0.0 {
            format!(", in data units (standardization log-Jacobian {log_det_jacobian:+.4} included)")
        } else {
            String::new()
        }
    ));
    let bits_per_dim = ckpt_data.image_info().map(|info| info.bits_per_dim(mean));
    if let Some(bpd) = bits_per_dim {
        log(format!("{bpd:.4} bits/dim (dequantized test images; [−1, 1] scaling accounted for)"));
    }
    if a.json {
        print_json(&json!({
            "bits_per_dim": bits_per_dim,
            "nll": mean,
            "nll_stderr": se,
            "n": n,
            "nfe": 0,
            "seconds": seconds,
            "solver": "none (discrete flow)",
            "divergence": "exact (change of variables)",
            "data": label,
            "log_det_jacobian": log_det_jacobian,
            "units": "nats",
        }))?;
    }
    Ok(())
}

/// The data's bounding box plus 15 % on each side.
fn default_window(points: &[f32]) -> (f64, f64, f64, f64) {
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for p in points.chunks_exact(2) {
        x0 = x0.min(p[0] as f64);
        x1 = x1.max(p[0] as f64);
        y0 = y0.min(p[1] as f64);
        y1 = y1.max(p[1] as f64);
    }
    let (mx, my) = (0.15 * (x1 - x0).max(1e-6), 0.15 * (y1 - y0).max(1e-6));
    (x0 - mx, x1 + mx, y0 - my, y1 + my)
}

/// `fm plot density --checkpoint FLOWDIR`: the exact density on a grid.
pub fn density(a: DensityArgs) -> Result<()> {
    let device = crate::device::selected();
    if a.grid < 2 {
        bail!("--grid must be at least 2, got {}", a.grid);
    }
    let m = load_flow(&a.checkpoint, &device)?;
    if m.dim() != 2 {
        bail!("fm plot density draws 2-D models; {} models {} dimensions", m.dir.display(), m.dim());
    }
    let ckpt_data = m.record.training_data()?;
    let data = ckpt_data.reference(5000, 4321)?;
    let (x0, x1, y0, y1) = match &a.range {
        None => default_window(&data),
        Some(r) => match r[..] {
            [x0, x1, y0, y1] if x0 < x1 && y0 < y1 && r.iter().all(|v| v.is_finite()) => (x0, x1, y0, y1),
            _ => bail!("--range needs xmin,xmax,ymin,ymax with xmin < xmax and ymin < ymax, got {r:?}"),
        },
    };
    let g = a.grid;
    let (dx, dy) = ((x1 - x0) / g as f64, (y1 - y0) / g as f64);
    let mut centres = Vec::with_capacity(2 * g * g);
    for i in 0..g {
        for j in 0..g {
            centres.push((x0 + (j as f64 + 0.5) * dx) as f32);
            centres.push((y0 + (i as f64 + 0.5) * dy) as f32);
        }
    }
    let (log_p, _) = flow_log_likelihoods(&m.flow, &ckpt_data, &centres, 2500, &device)?;
    let density: Vec<f64> = log_p.iter().map(|v| v.exp()).collect();
    let mass = density.iter().sum::<f64>() * dx * dy;
    let max = density.iter().copied().fold(0.0, f64::max);
    let out = a.out.clone().unwrap_or_else(|| m.dir.join("density.png"));
    let title = format!("{}: {} density (mass {mass:.3} in the window), exact", m.record.data, m.describe());
    density_figure(&out, &title, x0..x1, y0..y1, g, &density, &data)?;
    let log = |t: String| if a.json { eprintln!("{t}") } else { println!("{t}") };
    log(format!(
        "density of the {} (exact, no ODE; --steps is ignored) on a {g}×{g} grid over [{x0:.3}, {x1:.3}] × \
         [{y0:.3}, {y1:.3}]: mass {mass:.4}, max {max:.4}; {}",
        m.describe(),
        out.display()
    ));
    if a.json {
        print_json(&json!({
            "plot": out,
            "mass": mass,
            "grid": g,
            "window": [x0, x1, y0, y1],
            "max_density": max,
            "nfe": 0,
        }))?;
    }
    Ok(())
}

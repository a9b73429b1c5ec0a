//! `fm plot density`: the model's density on a grid, beside a histogram of the
//! data (2-D) — by RK4 backward solves for velocity models, exactly for flows.

use anyhow::{bail, Result};
use fm_core::divergence::Divergence;
use fm_pipeline::{LikelihoodRequest, SolverChoice};
use serde_json::json;

use crate::cli::DensityArgs;
use crate::io::print_json;
use crate::plot_density::density_figure;

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

pub fn run(a: DensityArgs) -> Result<()> {
    let device = crate::device::selected();
    if a.grid < 2 {
        bail!("--grid must be at least 2, got {}", a.grid);
    }
    let choice = SolverChoice::new("rk4", a.steps, 1e-5, 1e-5)?;
    let m = super::common::load(&a.checkpoint, false, &device)?;
    m.source().require_normal("fm plot density")?;
    if m.dim() != 2 {
        bail!("fm plot density draws 2-D models; {} models {} dimensions", m.dir().display(), m.dim());
    }
    let data = m.data()?.reference(5000, 4321)?;
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
    let pb = crate::progress::bar(g * g, a.quiet, "{bar:30} {pos}/{len} points {per_sec} ETA {eta}");
    let request = LikelihoodRequest {
        solver: choice.clone(),
        divergence: Divergence::Exact,
        batch_size: 2500,
        seed: 0,
    };
    let lp = m.log_likelihood(&centres, &request, &mut |k| pb.inc(k as u64))?;
    pb.finish_and_clear();
    let density: Vec<f64> = lp.log_p.iter().map(|v| v.exp()).collect();
    let mass = density.iter().sum::<f64>() * dx * dy;
    let max = density.iter().copied().fold(0.0, f64::max);
    let out = a.out.clone().unwrap_or_else(|| m.dir().join("density.png"));
    let ode = m.family().solves_ode();
    let title = match ode {
        true => {
            format!("{}: model density (mass {mass:.3} in the window), {}", m.record().data, choice.label)
        }
        false => {
            format!("{}: {} density (mass {mass:.3} in the window), exact", m.record().data, m.describe())
        }
    };
    density_figure(&out, &title, x0..x1, y0..y1, g, &density, &data)?;
    let log = |t: String| if a.json { eprintln!("{t}") } else { println!("{t}") };
    log(format!(
        "density{} on a {g}×{g} grid over [{x0:.3}, {x1:.3}] × [{y0:.3}, {y1:.3}]: mass {mass:.4}, max {max:.4}; {}",
        if ode { String::new() } else { format!(" of the {} (exact, no ODE; --steps is ignored)", m.describe()) },
        out.display()
    ));
    if a.json {
        print_json(&json!({
            "plot": out,
            "mass": mass,
            "grid": g,
            "window": [x0, x1, y0, y1],
            "max_density": max,
            "nfe": lp.nfe,
        }))?;
    }
    Ok(())
}

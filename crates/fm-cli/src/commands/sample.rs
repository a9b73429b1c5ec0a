//! `fm sample`: draw samples from a checkpoint of any family — an ODE solve
//! (batched, with class labels and guidance, for image models) or one pass
//! through a normalizing flow — and write them, with a grid or plot.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use fm_pipeline::{SampleRequest, SolverChoice};
use serde_json::json;

use crate::cli::SampleArgs;
use crate::io::{check_output, print_json, write_samples};
use crate::plot::samples_figure;
use crate::plot_manifold::{data_label, planar_view};

fn is_png(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("png"))
}

pub fn run(a: SampleArgs) -> Result<()> {
    if let Some(tau) = a.hybrid.filter(|t| !(0.0..=1.0).contains(t)) {
        bail!("--hybrid must lie in [0, 1], got {tau}");
    }
    let device = crate::device::selected();
    let choice = SolverChoice::new(&a.solver.solver, a.solver.steps, a.solver.rtol, a.solver.atol)?;
    let m = super::common::load(&a.checkpoint, a.hub.offline, &device)?;
    // Outputs of an hf:// checkpoint go to the working directory, never into the Hub cache.
    let default_out = if fm_pipeline::location::is_hub(&a.checkpoint) {
        "samples.npy".into()
    } else {
        m.dir().join("samples.npy")
    };
    let out = a.out.clone().unwrap_or(default_out);
    let image = m.model().image_shape();
    let i = &a.images;
    match image {
        Some(_) if a.hybrid.is_some() || a.plot.is_some() => {
            bail!("--hybrid and --plot apply to point data; for images use --out FILE.png and --trajectory FILE.png")
        }
        None if i.class.is_some()
            || i.cfg_scale.is_some()
            || i.trajectory.is_some()
            || i.batch_size.is_some() =>
        {
            bail!("--class, --cfg-scale, --trajectory and --batch-size apply to image models (U-Nets)")
        }
        _ => {}
    }
    let (grid_png, values) = if image.is_some() && is_png(&out) {
        (Some(out.clone()), out.with_extension("npy"))
    } else {
        (None, out)
    };
    check_output(&values, "--out")?;
    for (flag, p) in [("--plot", &a.plot), ("--trajectory", &i.trajectory)] {
        if let Some(p) = p.as_ref().filter(|p| !is_png(p)) {
            bail!("{flag} {}: the figure is a PNG; give a path ending in .png", p.display());
        }
    }
    let log = |s: String| if a.json { eprintln!("{s}") } else { println!("{s}") };
    if !m.family().solves_ode() {
        log(format!(
            "{} is a {}: sampling is one pass through its layers (no ODE; --solver/--steps/--rtol/--atol are ignored)",
            a.checkpoint.display(),
            m.describe()
        ));
    }
    let stochastic = super::common::stochastic_choice(&a.stochastic, a.solver.steps)?;
    if stochastic.is_some() && !m.family().solves_ode() {
        bail!("--sampler {}: a {} samples in one pass through its layers; --sampler sde|langevin applies to velocity models", a.stochastic.sampler, m.describe());
    }
    let mut request = SampleRequest::new(a.n, a.seed, choice.clone());
    request.stochastic = stochastic;
    request.class = i.class;
    request.cfg_scale = i.cfg_scale.unwrap_or(0.0);
    request.hybrid = a.hybrid;
    request.batch_size = i.batch_size;
    request.trajectory_rows = match (image, &i.trajectory) {
        (Some(_), Some(_)) => a.n.min(10),
        (None, _) if a.plot.is_some() && m.data_dim() == 2 => a.n,
        _ => 0,
    };
    let pb = crate::progress::bar(a.n, a.quiet, "{bar:30} {pos}/{len} samples {per_sec} ETA {eta}");
    let start = Instant::now();
    let gen = m.sample_with(&request, &mut |k| pb.inc(k as u64))?;
    pb.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let columns = if image.is_some() { vec![] } else { m.record().columns.clone() };
    write_samples(&values, &gen.values, a.n, m.data_dim(), &columns)?;
    let label = match (m.family().solves_ode(), a.hybrid, &request.stochastic) {
        (false, _, _) => "one pass through the flow".to_string(),
        (true, _, Some(st)) => st.label(),
        (true, Some(tau), None) => format!("{} (û* on [0, {tau}], the model after)", choice.label),
        (true, None, None) => m.family().sampler_label(&choice),
    };
    match image {
        Some(shape) => {
            let w = request.cfg_scale;
            let guidance = match (m.model().num_classes(), i.class) {
                (None, _) => String::new(),
                (Some(_), Some(c)) => format!(", class {c}, guidance w = {w}"),
                (Some(_), None) => format!(", classes in turn, guidance w = {w}"),
            };
            log(format!(
                "{} images with {label}{guidance} in {seconds:.1} s, NFE {}: {} (values in [−1, 1] scale, one \
                 flattened {}×{}×{} image per row)",
                a.n,
                gen.nfe,
                values.display(),
                shape.channels,
                shape.height,
                shape.width
            ))
        }
        None => log(format!(
            "{} samples with {label} in {seconds:.2} s, NFE {}: {}",
            a.n,
            gen.nfe,
            values.display()
        )),
    }
    if let (Some(p), Some(shape)) = (&grid_png, image) {
        let k = a.n.min(100);
        crate::plot_images::image_grid(p, &gen.values[..k * m.dim()], shape, 10, 3)?;
        log(format!("grid: {}", p.display()));
    }
    if let (Some(p), Some(info)) = (&i.trajectory, image) {
        crate::plot_images::trajectory_strip(p, &gen.trajectory, request.trajectory_rows, info, 10, 3)?;
        log(format!("trajectory: {}", p.display()));
    }
    if let (Some(p), Some(spec)) = (&a.plot, &m.record().manifold) {
        let reference = m.data()?.reference(a.n, a.seed)?;
        let (Some((d, caption)), Some((g, _))) =
            (planar_view(spec, &reference), planar_view(spec, &gen.values))
        else {
            bail!("--plot: points on {spec} have no flat view (the sphere S², the torus T² or a product starting with one)");
        };
        let title = format!("{} on {spec}: {label} ({caption})", data_label(&m.record().data));
        samples_figure(p, &title, &d, &g, &[])?;
        log(format!("plot: {}", p.display()));
    } else if let Some(p) = &a.plot {
        let reference = m.data()?.reference(a.n, a.seed)?;
        let title = match m.family().solves_ode() {
            true => format!("{} — {label} (NFE {})", m.record().data, gen.nfe),
            false => format!("{} — {} (trajectories: layer by layer)", m.record().data, m.describe()),
        };
        samples_figure(p, &title, &reference, &gen.values, &gen.trajectory)?;
        log(format!("plot: {}", p.display()));
    }
    if a.json {
        print_json(&json!({
            "samples": values,
            "grid": grid_png,
            "trajectory": i.trajectory,
            "n": a.n,
            "solver": if m.family().solves_ode() { label.clone() } else { "none (discrete flow)".into() },
            "sampler": a.stochastic.sampler,
            "nfe": gen.nfe,
            "seconds": seconds,
            "plot": a.plot,
            "hybrid": a.hybrid,
            "class": i.class,
            "cfg_scale": request.cfg_scale,
        }))?;
    }
    Ok(())
}

//! `fm sample`: draw samples from a checkpoint.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use fm_core::VelocityField;
use serde_json::json;

use super::common::{closed_form_field, generate_hybrid, load_model, require_normal_source, training_points};
use crate::cli::SampleArgs;
use crate::data::TrainingData;
use crate::io::{check_output, print_json, write_samples};
use crate::plot::samples_figure;
use crate::solver::SolverChoice;

pub fn run(mut a: SampleArgs) -> Result<()> {
    if super::hub::is_hub(&a.checkpoint) {
        // Outputs go to the working directory, never into the Hub cache.
        a.out = a.out.or_else(|| Some("samples.npy".into()));
        a.checkpoint = super::hub::resolve_checkpoint(&a.checkpoint, &a.hub, "--checkpoint")?;
    }
    if let Some(tau) = a.hybrid.filter(|t| !(0.0..=1.0).contains(t)) {
        bail!("--hybrid must lie in [0, 1], got {tau}");
    }
    if super::flow::is_flow_checkpoint(&a.checkpoint) {
        return super::flow::eval::sample(a);
    }
    let device = crate::device::selected();
    let choice = SolverChoice::from_args(&a.solver)?;
    let m = load_model(&a.checkpoint, &device)?;
    if let fm_models::VelocityNet::UNet(net) = m.model.net() {
        return super::images::run_sample(&a, &m, net);
    }
    let i = &a.images;
    if i.class.is_some() || i.cfg_scale.is_some() || i.trajectory.is_some() || i.batch_size.is_some() {
        bail!("--class, --cfg-scale, --trajectory and --batch-size apply to image models (U-Nets)");
    }
    let out = a.out.clone().unwrap_or_else(|| m.dir.join("samples.npy"));
    check_output(&out, "--out")?;
    if let Some(p) = &a.plot {
        if p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() != Some("png") {
            anyhow::bail!("--plot {}: the plot is a PNG; give a path ending in .png", p.display());
        }
    }
    let closed = match a.hybrid {
        Some(_) => {
            require_normal_source(&m)?;
            let points = training_points(&m, None, &device).context("--hybrid needs the training set")?;
            Some(closed_form_field(&m, &points)?)
        }
        None => None,
    };
    let start = Instant::now();
    let keep = a.plot.is_some() && m.dim() == 2;
    let hybrid = a.hybrid.zip(closed.as_ref().map(|c| c as &dyn VelocityField));
    let gen = generate_hybrid(&m, a.n, a.seed, &choice, keep, &device, hybrid)?;
    let seconds = start.elapsed().as_secs_f64();
    write_samples(&out, &gen.samples, a.n, m.dim(), &m.record.columns)?;
    let log = |s: String| if a.json { eprintln!("{s}") } else { println!("{s}") };
    let label = match a.hybrid {
        Some(tau) => format!("{} (û* on [0, {tau}], the model after)", choice.label),
        None => choice.label.clone(),
    };
    log(format!("{} samples with {} in {seconds:.2} s, NFE {}: {}", a.n, label, gen.nfe, out.display()));
    if let Some(p) = &a.plot {
        let data = TrainingData::from_record(&m.record)?;
        let reference = data.reference(a.n, a.seed)?;
        samples_figure(
            p,
            &format!("{} — {} (NFE {})", m.record.data, choice.label, gen.nfe),
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
            "solver": choice.label,
            "nfe": gen.nfe,
            "seconds": seconds,
            "plot": a.plot,
            "hybrid": a.hybrid,
        }))?;
    }
    Ok(())
}

//! After training: samples, a plot and metrics from the checkpoint just written.

use std::path::Path;

use anyhow::Result;
use candle::{Device, Tensor};
use fm_core::metrics::SampleMetrics;
use serde_json::{json, Value};

use super::settings::RunOptions;
use crate::commands::common::{generate, load_model};
use crate::io::write_samples;
use crate::plot::samples_figure;
use crate::solver::SolverChoice;

/// Points used for the exact W2 after training (an `O(n³)` assignment).
const EXACT_W2_POINTS: usize = 1000;

/// Samples from the checkpoint in `dir` (the same path a user takes), writes
/// `samples.npy` and `plot.png` (2-D), and returns the JSON fields of the report
/// with a human summary.
pub fn samples_plot_metrics(
    dir: &Path,
    o: &RunOptions,
    choice: &SolverChoice,
    seed: u64,
    title: &str,
    device: &Device,
) -> Result<(Value, Vec<String>)> {
    let loaded = load_model(dir, device)?;
    let data = crate::data::TrainingData::from_record(&loaded.record)?;
    let dim = data.dim();
    let gen = generate(&loaded, o.sample_n, seed, choice, dim == 2, device)?;
    let samples_path = dir.join("samples.npy");
    write_samples(&samples_path, &gen.samples, o.sample_n, dim, data.columns())?;
    let reference = data.reference(o.sample_n, seed)?;
    let n_ref = reference.len() / dim;
    // Metrics on the model's scale (standardized units for CSV data), as `fm eval` reports them.
    let s = Tensor::from_vec(data.to_model_units(&gen.samples)?, (o.sample_n, dim), device)?;
    let rf = Tensor::from_vec(data.to_model_units(&reference)?, (n_ref, dim), device)?;
    let bandwidth = data.metric_bandwidth();
    let exact_n = EXACT_W2_POINTS.min(o.sample_n).min(n_ref);
    let metrics = SampleMetrics::compute(&s, &rf, seed, exact_n, bandwidth)?;
    let mut plot_path = None;
    if let Some(info) = data.image_info() {
        let p = dir.join("samples.png");
        let k = o.sample_n.min(100);
        crate::plot_images::image_grid(&p, &gen.samples[..k * dim], info, 10, 4)?;
        plot_path = Some(p);
    } else if dim == 2 {
        let p = dir.join("plot.png");
        samples_figure(
            &p,
            &format!("{title}, {} (NFE {})", choice.label, gen.nfe),
            &reference,
            &gen.samples,
            &gen.trajectory,
        )?;
        plot_path = Some(p);
    }
    let mut lines = vec![format!(
        "samples: {} ({}, NFE {}); energy distance {:.5}, MMD² (h={}) {:.3e}, sliced W2 {:.4}, exact W2 {}",
        samples_path.display(),
        choice.label,
        gen.nfe,
        metrics.energy_distance,
        bandwidth,
        metrics.mmd_rbf,
        metrics.sliced_w2,
        metrics.exact_w2.map(|w| format!("{w:.4} (first {exact_n} points)")).unwrap_or_else(|| "n/a".into()),
    )];
    if let Some(p) = &plot_path {
        lines.push(format!("plot: {}", p.display()));
    }
    let fields = json!({
        "samples": samples_path,
        "plot": plot_path,
        "solver": choice.label,
        "nfe": gen.nfe,
        "n_samples": o.sample_n,
        "metrics": metrics,
    });
    Ok((fields, lines))
}

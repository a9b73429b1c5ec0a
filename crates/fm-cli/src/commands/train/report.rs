//! After training: samples, a plot and metrics from the checkpoint just
//! written, read back the way a user reads it ([`Trained::load`]); for models
//! with an exact likelihood (normalizing flows) the test NLL too, and for
//! discrete models of points its bound (the ELBO).

use anyhow::{bail, Context, Result};
use candle::{Device, Tensor};
use fm_core::metrics::SampleMetrics;
use fm_pipeline::{LikelihoodRequest, RunConfig, RunSettings, SampleRequest, SolverChoice, Trained};
use serde_json::{json, Value};

use crate::io::write_samples;
use crate::plot::samples_figure;
use crate::plot_manifold::{data_label, planar_view};

/// Points used for the exact W2 after training (an `O(n³)` assignment).
const EXACT_W2_POINTS: usize = 1000;
/// Test points of the NLL in the report: `fm likelihood`'s defaults (`--n 2000 --seed 777`),
/// so that `fm likelihood --checkpoint DIR` reproduces the report's `nll`.
const TEST_N: usize = 2000;
const TEST_SEED: u64 = 777;
/// τ nodes of the ELBO in the report: `fm likelihood`'s default `--steps`.
const ELBO_NODES: usize = 50;

/// What the run does after training.
pub struct Options {
    pub sample_n: usize,
    pub choice: SolverChoice,
    pub json: bool,
    pub quiet: bool,
}

impl Options {
    /// The post-training options of `c`, with their defaults (fewer samples and
    /// steps when each sample is `costly`, e.g. a U-Net solve; `default_steps`
    /// when the family samples in its own few steps).
    pub fn of(c: &RunConfig, costly: bool, default_steps: Option<usize>) -> Result<Self> {
        let sample_n = c.sample_n.unwrap_or(if costly { 100 } else { 2000 });
        if sample_n == 0 {
            bail!("--sample-n must be at least 1, got 0");
        }
        let solver = c.sample_solver.as_deref().unwrap_or("midpoint");
        let steps = c.sample_steps.or(default_steps).unwrap_or(if costly { 20 } else { 50 });
        let choice =
            SolverChoice::new(solver, steps, 1e-5, 1e-5).context("--sample-solver/--sample-steps")?;
        Ok(Self { sample_n, choice, json: c.json.unwrap_or(false), quiet: c.quiet.unwrap_or(false) })
    }
}

/// Samples from the checkpoint of the run `s` (the same path a user takes),
/// writes `samples.npy` and `plot.png` (2-D) or `samples.png` (images), and
/// returns the JSON fields of the report with a human summary.
pub fn samples_plot_metrics(s: &RunSettings, o: &Options, device: &Device) -> Result<(Value, Vec<String>)> {
    let m = Trained::load(&s.out, false, device)?;
    let data = m.data()?;
    // Values per point in data units (a manifold's chart) and in model units.
    let (dim, model_dim) = (data.data_dim(), data.dim());
    let n = o.sample_n;
    let ode = m.family().solves_ode();
    let mut request = SampleRequest::new(n, s.seed, o.choice.clone());
    request.trajectory_rows = if dim == 2 { n } else { 0 };
    let gen = m.sample(&request)?;
    let samples_path = s.out.join("samples.npy");
    write_samples(&samples_path, &gen.values, n, dim, data.columns())?;
    let reference = data.reference(n, s.seed)?;
    let n_ref = reference.len() / dim;
    // Metrics on the model's scale (standardized units for CSV data), as `fm eval` reports them.
    let st = Tensor::from_vec(data.to_model_units(&gen.values)?, (n, model_dim), device)?;
    let rf = Tensor::from_vec(data.to_model_units(&reference)?, (n_ref, model_dim), device)?;
    let bandwidth = data.metric_bandwidth();
    let exact_n = EXACT_W2_POINTS.min(n).min(n_ref);
    let metrics = SampleMetrics::compute(&st, &rf, s.seed, exact_n, bandwidth)?;
    let mut plot_path = None;
    if let Some(info) = data.image_info() {
        let p = s.out.join("samples.png");
        let k = n.min(100);
        crate::plot_images::image_grid(&p, &gen.values[..k * dim], info.shape(), 10, 4)?;
        plot_path = Some(p);
    } else if let Some(spec) = &m.record().manifold {
        // Points on a manifold: data and samples in a flat view (no trajectories: they wrap).
        if let (Some((d, caption)), Some((g, _))) =
            (planar_view(spec, &reference), planar_view(spec, &gen.values))
        {
            let p = s.out.join("plot.png");
            let title = format!(
                "{} on {spec}: {} ({caption})",
                data_label(&s.data),
                m.family().sampler_label(&o.choice)
            );
            samples_figure(&p, &title, &d, &g, &[])?;
            plot_path = Some(p);
        }
    } else if dim == 2 {
        let p = s.out.join("plot.png");
        let title = if ode {
            format!(
                "{} — {}, {} steps, {} (NFE {})",
                s.data,
                m.record().objective.to_uppercase(),
                s.steps,
                m.family().sampler_label(&o.choice),
                gen.nfe
            )
        } else {
            format!("{} — {}, {} steps (trajectories: layer by layer)", s.data, m.describe(), s.steps)
        };
        samples_figure(&p, &title, &reference, &gen.values, &gen.trajectory)?;
        plot_path = Some(p);
    }
    let mut lines = Vec::new();
    let mut fields = json!({
        "samples": samples_path,
        "plot": plot_path,
        "solver": if ode { m.family().sampler_label(&o.choice) } else { "none (discrete flow)".into() },
        "nfe": gen.nfe,
        "n_samples": n,
        "metrics": metrics,
    });
    if m.family().exact_likelihood() {
        let test = data.likelihood_points(TEST_N, TEST_SEED)?;
        let request = LikelihoodRequest { batch_size: 1000, ..LikelihoodRequest::exact_rk4(1)? };
        let lp = m.log_likelihood(&test, &request, &mut |_| ())?;
        let (nll, se) = lp.nll();
        if !nll.is_finite() {
            bail!("the test NLL of the trained model is not finite ({nll})");
        }
        let bits_per_dim = data.image_info().map(|info| info.bits_per_dim(nll));
        lines.push(format!(
            "test NLL {nll:.4} ± {se:.4} nats per point on {} points{} (exact, no ODE)",
            lp.log_p.len(),
            if lp.log_det_jacobian != 0.0 {
                format!(", in data units (standardization log-Jacobian {:+.4} included)", lp.log_det_jacobian)
            } else {
                String::new()
            }
        ));
        if let Some(bpd) = bits_per_dim {
            lines.push(format!(
                "{bpd:.4} bits/dim on the dequantized test images ([−1, 1] scaling accounted for)"
            ));
        }
        if let Some(obj) = fields.as_object_mut() {
            obj.extend([
                ("bits_per_dim".into(), json!(bits_per_dim)),
                ("nll".into(), json!(nll)),
                ("nll_stderr".into(), json!(se)),
                ("nll_n".into(), json!(lp.log_p.len())),
                (
                    "nll_data".into(),
                    json!(format!(
                        "{} ({}, seed {TEST_SEED})",
                        s.data,
                        if data.transform().is_some() { "the file" } else { "fresh test points" }
                    )),
                ),
                ("log_det_jacobian".into(), json!(lp.log_det_jacobian)),
            ]);
        }
    }
    if m.family().likelihood_bound() && data.image_info().is_none() {
        // Discrete models of points: the ELBO, as `fm likelihood` computes it by default.
        let test = data.likelihood_points(TEST_N, TEST_SEED)?;
        let request = LikelihoodRequest { batch_size: 1000, ..LikelihoodRequest::exact_rk4(ELBO_NODES)? };
        let lp = m.log_likelihood(&test, &request, &mut |_| ())?;
        let (nll, se) = lp.nll();
        let bits = data.bits_per_dim(nll);
        lines.push(format!(
            "test NLL ≤ {nll:.4} ± {se:.4} nats per point on {} points (the negative ELBO, {ELBO_NODES} nodes){}",
            lp.log_p.len(),
            bits.map(|b| format!("; ≤ {b:.4} bits per token")).unwrap_or_default()
        ));
        if let Some(obj) = fields.as_object_mut() {
            obj.extend([
                ("nll_bound".into(), json!(nll)),
                ("nll_stderr".into(), json!(se)),
                ("bits_per_token".into(), json!(bits)),
                ("nll_n".into(), json!(lp.log_p.len())),
            ]);
        }
    }
    lines.push(format!(
        "samples: {}{}; energy distance {:.5}, MMD² (h={}) {:.3e}, sliced W2 {:.4}, exact W2 {}",
        samples_path.display(),
        if ode {
            format!(" ({}, NFE {})", m.family().sampler_label(&o.choice), gen.nfe)
        } else {
            String::new()
        },
        metrics.energy_distance,
        bandwidth,
        metrics.mmd_rbf,
        metrics.sliced_w2,
        metrics.exact_w2.map(|w| format!("{w:.4} (first {exact_n} points)")).unwrap_or_else(|| "n/a".into()),
    ));
    if let Some(p) = &plot_path {
        lines.push(format!("plot: {}", p.display()));
    }
    Ok((fields, lines))
}

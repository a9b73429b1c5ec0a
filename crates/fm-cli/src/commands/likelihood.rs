//! `fm likelihood`: mean negative log-likelihood of data under a checkpoint.
//!
//! The backward solve of the instantaneous change of variables (t = 1 → 0,
//! `fm_core::likelihood`), in batches; for standardized data the transform's
//! log-Jacobian is added, so the figure is in the data's own units.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle::{Device, Tensor};
use fm_core::divergence::{Divergence, Probe};
use fm_core::likelihood::{log_likelihood, log_likelihood_exact};
use fm_core::SeededRng;
use serde_json::json;

use super::common::{load_model, LoadedModel};
use crate::cli::{LikelihoodArgs, LikelihoodSolverArgs};
use crate::data::TrainingData;
use crate::io::print_json;
use crate::solver::SolverChoice;

/// The divergence chosen by `--exact` / `--hutchinson K --probe P`.
pub fn divergence_from_args(a: &LikelihoodSolverArgs) -> Result<Divergence> {
    match a.hutchinson {
        None => Ok(Divergence::Exact),
        Some(0) => bail!("--hutchinson needs at least 1 probe, got 0"),
        Some(k) => {
            let probe = match a.probe.to_ascii_lowercase().as_str() {
                "rademacher" => Probe::Rademacher,
                "gaussian" | "normal" => Probe::Gaussian,
                other => bail!("--probe: unknown probe `{other}`; valid: rademacher, gaussian"),
            };
            Ok(Divergence::hutchinson(probe, k))
        }
    }
}

/// Per-point log-likelihoods in data units, and the total NFE.
pub struct PointLikelihoods {
    pub log_p: Vec<f64>,
    pub nfe: usize,
    /// `log |det ∂z/∂x|` added to every model-space log-density (0 without a transform).
    pub log_det_jacobian: f64,
}

/// How the points are processed: batch size, seed of the Hutchinson probes, and
/// whether to hide the progress bar.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub batch_size: usize,
    pub seed: u64,
    pub quiet: bool,
}

/// Log-likelihoods of `points` (row-major, data units) under the loaded model.
pub fn point_log_likelihoods(
    m: &LoadedModel,
    points: &[f32],
    choice: &SolverChoice,
    divergence: Divergence,
    batching: Batching,
    device: &Device,
) -> Result<PointLikelihoods> {
    let Batching { batch_size, seed, quiet } = batching;
    let dim = m.dim();
    if batch_size == 0 {
        bail!("--batch-size must be at least 1, got 0");
    }
    let ckpt_data = TrainingData::from_record(&m.record)?;
    let model_units = ckpt_data.to_model_units(points)?;
    let grid = choice.backward_grid()?;
    let mut rng = SeededRng::for_stream(seed, "likelihood-probes");
    let mut log_p = Vec::with_capacity(points.len() / dim);
    let mut nfe = 0;
    let n = model_units.len() / dim;
    let pb = crate::progress::bar(n, quiet, "{bar:30} {pos}/{len} points {per_sec} ETA {eta}");
    for chunk in model_units.chunks(batch_size * dim) {
        let x1 = Tensor::from_vec(chunk.to_vec(), (chunk.len() / dim, dim), device)?;
        let res = match divergence {
            // The MLP's own forward-mode divergence: exact, and cheaper than autograd.
            Divergence::Exact => log_likelihood_exact(&m.model, &x1, &choice.method, &grid),
            _ => log_likelihood(&m.model, &x1, divergence, &choice.method, &grid, &mut rng),
        }
        .with_context(|| format!("likelihood solve with {}", choice.label))?;
        nfe += res.nfe;
        log_p.extend(res.log_p_vec()?);
        pb.inc((chunk.len() / dim) as u64);
    }
    pb.finish_and_clear();
    let log_det_jacobian = m.record.transform.as_ref().map_or(0.0, |t| t.log_abs_det_jacobian());
    for v in &mut log_p {
        *v += log_det_jacobian;
    }
    Ok(PointLikelihoods { log_p, nfe, log_det_jacobian })
}

/// Mean and standard error.
pub fn mean_stderr(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, (var / n).sqrt())
}

/// The evaluation points, in data units: the checkpoint's data by default.
fn evaluation_points(m: &LoadedModel, a: &LikelihoodArgs) -> Result<(Vec<f32>, String)> {
    if a.n == 0 {
        bail!("--n must be at least 1, got 0");
    }
    let r = &m.record;
    let (data, label) = match &a.data {
        None => (TrainingData::from_record(r)?, format!("{} (the checkpoint's data)", r.data)),
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
    // Toys: fresh test points from a stream the training never used; images: the
    // dequantized test split.
    Ok((data.likelihood_points(a.n, a.seed)?, label))
}

pub fn run(a: LikelihoodArgs) -> Result<()> {
    if super::flow::is_flow_checkpoint(&a.checkpoint) {
        return super::flow::eval::likelihood(a);
    }
    let device = crate::device::selected();
    let s = &a.solver;
    let choice = SolverChoice::new(&s.solver, s.steps, s.rtol, s.atol)?;
    let divergence = divergence_from_args(s)?;
    let m = load_model(&a.checkpoint, &device)?;
    crate::source::Source::parse(m.record.source.as_deref())?.require_normal("fm likelihood")?;
    let (points, label) = evaluation_points(&m, &a)?;
    let n = points.len() / m.dim();
    let start = Instant::now();
    let lp = point_log_likelihoods(
        &m,
        &points,
        &choice,
        divergence,
        Batching { batch_size: a.batch_size, seed: a.seed, quiet: a.quiet },
        &device,
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let nll: Vec<f64> = lp.log_p.iter().map(|v| -v).collect();
    let (mean, se) = mean_stderr(&nll);
    if !mean.is_finite() {
        bail!("the likelihood is not finite (mean NLL {mean}); try more solver steps or dopri5");
    }
    let div_label = match divergence {
        Divergence::Exact => "exact divergence".to_string(),
        Divergence::Hutchinson { probe, num_probes } => {
            format!("Hutchinson, {num_probes} {} probe(s)", probe.name())
        }
    };
    // Bits per dimension for images: the model's density is over z = 2y − 1 with
    // y = (pixel + u)/L, so log P(pixels) ≥ E_u[log p_z(z)] + D log(2/L).
    let bits_per_dim = TrainingData::from_record(&m.record)?.image_info().map(|info| info.bits_per_dim(mean));
    let log = |t: String| if a.json { eprintln!("{t}") } else { println!("{t}") };
    log(format!("{n} points of {label}; {}, {div_label}; {} NFE in {seconds:.1} s", choice.label, lp.nfe));
    log(format!(
        "NLL {mean:.4} ± {se:.4} nats per point (mean ± standard error){}",
        if lp.log_det_jacobian != 0.0 {
            format!(", in data units (standardization log-Jacobian {:+.4} included)", lp.log_det_jacobian)
        } else {
            String::new()
        }
    ));
    if let Some(bpd) = bits_per_dim {
        log(format!("{bpd:.4} bits/dim (dequantized test images; [−1, 1] scaling accounted for)"));
    }
    if a.json {
        print_json(&json!({
            "bits_per_dim": bits_per_dim,
            "nll": mean,
            "nll_stderr": se,
            "n": n,
            "nfe": lp.nfe,
            "seconds": seconds,
            "solver": choice.label,
            "divergence": div_label,
            "data": label,
            "log_det_jacobian": lp.log_det_jacobian,
            "units": "nats",
        }))?;
    }
    Ok(())
}

//! `fm likelihood`: mean negative log-likelihood of data under a checkpoint —
//! the backward solve of the instantaneous change of variables (t = 1 → 0) for
//! velocity models, the exact change of variables for normalizing flows. For
//! standardized data the transform's log-Jacobian is added, so the figure is in
//! the data's own units.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use fm_core::divergence::{Divergence, Probe};
use fm_pipeline::{LikelihoodRequest, SolverChoice, Trained, TrainingData};
use serde_json::json;

use crate::cli::{LikelihoodArgs, LikelihoodSolverArgs};
use crate::io::print_json;

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

/// The evaluation points, in data units: the checkpoint's data by default
/// (fresh test points for toys, the file for CSV, the dequantized test split
/// for images), or `--data`.
fn evaluation_points(m: &Trained, a: &LikelihoodArgs) -> Result<(Vec<f32>, String)> {
    if a.n == 0 {
        bail!("--n must be at least 1, got 0");
    }
    let r = m.record();
    let (data, label) = match &a.data {
        None => (m.data()?, format!("{} (the checkpoint's data)", r.data)),
        Some(d) => {
            let columns = a.columns.clone().unwrap_or_else(|| r.columns.clone());
            let noise = if *d == r.data { r.noise } else { None };
            (TrainingData::prepare(d, &columns, noise, None, a.seed).context("--data")?, d.clone())
        }
    };
    if data.data_dim() != m.data_dim() {
        bail!(
            "--data {label}: the points have {} dimensions, but the checkpoint {} models {}",
            data.data_dim(),
            m.dir().display(),
            m.data_dim()
        );
    }
    Ok((data.likelihood_points(a.n, a.seed)?, label))
}

pub fn run(a: LikelihoodArgs) -> Result<()> {
    let device = crate::device::selected();
    let s = &a.solver;
    let choice = SolverChoice::new(&s.solver, s.steps, s.rtol, s.atol)?;
    let divergence = divergence_from_args(s)?;
    let m = super::common::load(&a.checkpoint, false, &device)?;
    let (points, label) = evaluation_points(&m, &a)?;
    let n = points.len() / m.data_dim();
    let pb = crate::progress::bar(n, a.quiet, "{bar:30} {pos}/{len} points {per_sec} ETA {eta}");
    let start = Instant::now();
    let request =
        LikelihoodRequest { solver: choice.clone(), divergence, batch_size: a.batch_size, seed: a.seed };
    let lp = m.log_likelihood(&points, &request, &mut |k| pb.inc(k as u64))?;
    pb.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let (mean, se) = lp.nll();
    if !mean.is_finite() {
        bail!("the likelihood is not finite (mean NLL {mean}); try more solver steps or dopri5");
    }
    let bound = m.family().likelihood_bound();
    let ode = m.family().solves_ode() && !bound;
    let div_label = match (ode, divergence) {
        (false, _) => "exact (change of variables)".to_string(),
        (true, Divergence::Exact) => "exact divergence".to_string(),
        (true, Divergence::Hutchinson { probe, num_probes }) => {
            format!("Hutchinson, {num_probes} {} probe(s)", probe.name())
        }
    };
    // Bits per dimension for images: the model's density is over z = 2y − 1 with
    // y = (pixel + u)/L, so log P(pixels) ≥ E_u[log p_z(z)] + D log(2/L).
    // Discrete models: bits per token, NLL / (D ln 2).
    let bits_per_dim = m.data()?.bits_per_dim(mean);
    let log = |t: String| if a.json { eprintln!("{t}") } else { println!("{t}") };
    if bound {
        log(format!(
            "{n} points of {label}; {}: the ELBO by stratified Monte Carlo over {} cells of τ = −log(1 − κ) \
             (one draw of τ and x_t in each; --steps sets them) in {seconds:.1} s",
            m.describe(),
            choice.steps
        ));
    } else if ode {
        log(format!(
            "{n} points of {label}; {}, {div_label}; {} NFE in {seconds:.1} s",
            choice.label, lp.nfe
        ));
    } else {
        log(format!(
            "{n} points of {label}; {}: exact change of variables (no ODE; the solver and divergence flags are \
             ignored) in {seconds:.2} s",
            m.describe()
        ));
    }
    log(format!(
        "NLL {}{mean:.4} ± {se:.4} nats per point (mean ± standard error){}",
        if bound { "≤ " } else { "" },
        if lp.log_det_jacobian != 0.0 {
            format!(", in data units (standardization log-Jacobian {:+.4} included)", lp.log_det_jacobian)
        } else {
            String::new()
        }
    ));
    match (bits_per_dim, bound) {
        (Some(bpd), true) => {
            log(format!("≤ {bpd:.4} bits per token (the negative ELBO over {} tokens)", m.dim()))
        }
        (Some(bpd), false) => {
            log(format!("{bpd:.4} bits/dim (dequantized test images; [−1, 1] scaling accounted for)"))
        }
        (None, _) => {}
    }
    if a.json {
        print_json(&json!({
            "bits_per_dim": bits_per_dim,
            "nll": mean,
            "nll_stderr": se,
            "n": n,
            "nfe": lp.nfe,
            "seconds": seconds,
            "solver": match (bound, ode) {
                (true, _) => format!("elbo-{}", choice.steps),
                (false, true) => choice.label,
                (false, false) => "none (discrete flow)".into(),
            },
            "bound": bound,
            "divergence": div_label,
            "data": label,
            "log_det_jacobian": lp.log_det_jacobian,
            "units": "nats",
        }))?;
    }
    Ok(())
}

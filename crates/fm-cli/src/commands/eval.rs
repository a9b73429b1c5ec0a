//! `fm eval`: sample quality against fresh data for several solvers.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle::Tensor;
use fm_core::metrics::SampleMetrics;
use serde_json::json;

use fm_pipeline::{SampleRequest, SolverChoice, StochasticChoice};

use crate::cli::EvalArgs;
use crate::io::print_json;

pub fn run(a: EvalArgs) -> Result<()> {
    if a.n < 2 {
        bail!("--n must be at least 2, got {}", a.n);
    }
    if !(a.bandwidth.is_finite() && a.bandwidth > 0.0) {
        bail!("--bandwidth must be a positive number, got {}", a.bandwidth);
    }
    // Each entry: an ODE solver (NAME:STEPS, dopri5[:TOL]) or an SDE (sde:STEPS[:DIFFUSION]).
    let mut choices = a
        .solvers
        .iter()
        .map(|spec| -> Result<(SolverChoice, Option<StochasticChoice>)> {
            match spec.trim().strip_prefix("sde:") {
                Some(rest) => {
                    let (steps, diffusion) = rest.split_once(':').unwrap_or((rest, "sigma:1"));
                    let steps: usize = steps.parse().map_err(|_| {
                        anyhow::anyhow!(
                            "--solvers: `{spec}`: write sde:STEPS[:DIFFUSION], e.g. sde:100:sigma:1"
                        )
                    })?;
                    let sde =
                        super::common::sde_sampler(diffusion, &a.sde_solver, steps, a.noise_floor, 0, 0.0)
                            .with_context(|| format!("--solvers: `{spec}`"))?;
                    Ok((
                        SolverChoice::new("euler", steps.max(1), 1e-5, 1e-5)?,
                        Some(StochasticChoice::Sde(sde)),
                    ))
                }
                None => Ok((SolverChoice::parse_spec(spec)?, None)),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let device = crate::device::selected();
    let m = super::common::load(&a.checkpoint, false, &device)?;
    if !m.family().solves_ode() {
        bail!(
            "--checkpoint {}: a {} has no ODE solvers to compare; its sample metrics are in metrics.json \
             after `fm train`, and `fm sample`/`fm likelihood` work on it",
            a.checkpoint.display(),
            m.describe()
        );
    }
    // A family that samples by its own steps (MeanFlow, the discrete CTMC) names
    // `euler:8` and `midpoint:8` alike: each sampler is evaluated once.
    let mut seen = Vec::new();
    choices.retain(|(c, stochastic)| {
        let label = stochastic.as_ref().map_or_else(|| m.family().sampler_label(c), |s| s.label());
        let new = !seen.contains(&label);
        seen.push(label);
        new
    });
    let data = m.data()?;
    let dim = m.dim();
    // Metrics are computed on the model's scale (standardized units for CSV data).
    let reference = data.to_model_units(&data.reference(a.n, a.seed.wrapping_add(1))?)?;
    let n_ref = reference.len() / dim;
    let rf = Tensor::from_vec(reference, (n_ref, dim), &device)?;
    let log = |s: String| if a.json { eprintln!("{s}") } else { println!("{s}") };
    log(format!(
        "{} samples per solver against {} fresh reference points ({}); MMD bandwidth {}; exact W2 on {} points",
        a.n,
        n_ref,
        m.record().data,
        a.bandwidth,
        a.exact_n.min(a.n)
    ));
    log(format!(
        "{:<48} {:>6} {:>10} {:>11} {:>10} {:>10} {:>8}",
        "solver", "NFE", "energy", "MMD²", "sliced W2", "exact W2", "time s"
    ));
    let mut rows = Vec::new();
    let pb = crate::progress::bar(
        choices.len() * a.n,
        a.quiet,
        "{bar:30} {pos}/{len} samples {per_sec} ETA {eta}",
    );
    for (c, stochastic) in &choices {
        let start = Instant::now();
        let mut request = SampleRequest::new(a.n, a.seed, c.clone());
        request.stochastic = *stochastic;
        let label = stochastic.map_or_else(|| m.family().sampler_label(c), |s| s.label());
        let gen = m.sample_with(&request, &mut |k| pb.inc(k as u64))?;
        let seconds = start.elapsed().as_secs_f64();
        let s = Tensor::from_vec(data.to_model_units(&gen.values)?, (a.n, dim), &device)?;
        let met = SampleMetrics::compute(&s, &rf, a.seed, a.exact_n, a.bandwidth)?;
        pb.suspend(|| {
            log(format!(
                "{:<48} {:>6} {:>10.5} {:>11.3e} {:>10.4} {:>10} {:>8.2}",
                label,
                gen.nfe,
                met.energy_distance,
                met.mmd_rbf,
                met.sliced_w2,
                met.exact_w2.map(|w| format!("{w:.4}")).unwrap_or_else(|| "-".into()),
                seconds
            ))
        });
        rows.push(json!({"solver": label, "nfe": gen.nfe, "seconds": seconds, "metrics": met}));
    }
    pb.finish_and_clear();
    if a.json {
        print_json(&json!({"checkpoint": m.dir(), "n": a.n, "bandwidth": a.bandwidth, "results": rows}))?;
    }
    Ok(())
}

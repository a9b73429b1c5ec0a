//! fm's side of the 2-D discrete flow-matching comparison with Meta's
//! `flow_matching` (`cargo xtask discrete`): the notebook's setting — the
//! checkerboard on 128 cells per coordinate, `κ = t²`, batch 4096, Adam
//! 10⁻³ — trained, sampled and scored by the library calls `fm train`, `fm
//! sample` and `fm likelihood` make ([`Run::train`], [`Trained::sample`],
//! [`Trained::log_likelihood`]), and the peer's samples scored by the same
//! energy distance.
//!
//! The energy distance is taken to the exact target — every cell of the
//! data's squares, equally likely — rather than to a held-out set: against
//! 20,000 held-out points the estimate of one model's 20,000 samples moved
//! between 0.0015 and 0.0027 from one sampling seed to the next, more than
//! the difference it was meant to show. The held-out points themselves,
//! scored the same way, give the floor of a perfect sampler at this size
//! (the V-statistic's `E|X − X'|/n`, about 1.5·10⁻⁴, included).

use std::path::PathBuf;
use std::time::Instant;

use candle::{Device, Tensor};
use fm_core::metrics::energy_distance;
use fm_pipeline::{
    LikelihoodRequest, Run, RunConfig, RunSettings, SampleRequest, Silent, SolverChoice, Trained,
};
use serde_json::{json, Value};

use crate::flags::Flags;
use crate::{Error, Result};

/// Sampling seeds whose energy distances are averaged (the first also times sampling).
pub const SAMPLING_SEEDS: u64 = 5;

/// What `fm-bench discrete` is asked.
#[derive(Debug, Clone)]
pub struct DiscreteCompare {
    /// The run's folder.
    pub out: PathBuf,
    /// Training steps.
    pub steps: usize,
    /// Batch size.
    pub batch_size: usize,
    /// `mask` or `uniform`.
    pub source: String,
    /// `cross-entropy` or `generalized-kl`.
    pub objective: String,
    /// Hidden widths.
    pub hidden: Vec<usize>,
    /// Held-out points (CSV `x,y` at cell centres).
    pub test: PathBuf,
    /// The peer's samples (`.npy`, `(n, 2)` token ids), if any.
    pub peer_samples: Option<PathBuf>,
    /// Samples to draw.
    pub n_samples: usize,
    /// CTMC steps.
    pub sample_steps: usize,
    /// ELBO strata.
    pub elbo_nodes: usize,
    /// Samples scored by the energy distances.
    pub energy_n: usize,
    /// Score the checkpoint already in `out` instead of training (`--no-train`).
    pub no_train: bool,
}

impl DiscreteCompare {
    /// Parses `--out DIR --steps N --batch-size B --source S --objective O
    /// --hidden W,W --test FILE [--peer-samples FILE] --n-samples M
    /// --sample-steps K --elbo-nodes Q --energy-n E [--no-train]`.
    pub fn parse(args: &[String]) -> Result<Self> {
        let f = Flags(args);
        Ok(Self {
            out: PathBuf::from(f.need("--out")?),
            steps: f.count("--steps", 2000)?,
            batch_size: f.count("--batch-size", 4096)?,
            source: f.get("--source").unwrap_or("uniform").to_string(),
            objective: f.get("--objective").unwrap_or("generalized-kl").to_string(),
            hidden: f.widths("--hidden", "128,128,128,128")?,
            test: PathBuf::from(f.need("--test")?),
            peer_samples: f.get("--peer-samples").map(PathBuf::from),
            n_samples: f.count("--n-samples", 20_000)?,
            sample_steps: f.count("--sample-steps", 64)?,
            elbo_nodes: f.count("--elbo-nodes", 64)?,
            energy_n: f.count("--energy-n", 20_000)?,
            no_train: f.has("--no-train"),
        })
    }

    /// Trains, samples and scores fm's model, and scores the peer's samples;
    /// one JSON object.
    pub fn run(&self) -> Result<Value> {
        let dev = Device::Cpu;
        let config = RunConfig {
            model: Some("discrete".into()),
            data: Some("checkerboard".into()),
            bins: Some(128),
            scheduler: Some("polynomial:2".into()),
            source: Some(self.source.clone()),
            objective: Some(self.objective.clone()),
            hidden: Some(self.hidden.clone()),
            activation: Some("silu".into()),
            steps: Some(self.steps),
            batch_size: Some(self.batch_size),
            lr: Some(1e-3),
            seed: Some(0),
            checkpoint_every: Some(0),
            out: Some(self.out.clone()),
            ..RunConfig::default()
        };
        let summary = match self.no_train {
            false => Some(Run::new(RunSettings::resolve(&config)?, &dev)?.train(&mut Silent)?),
            true => None,
        };
        let model = Trained::load(&self.out, false, &dev)?;
        let grid = model.record().tokens.ok_or_else(|| Error::Request("no token grid".into()))?;
        let solver = SolverChoice::parse_spec(&format!("euler:{}", self.sample_steps))?;
        let start = Instant::now();
        let samples = model.sample(&SampleRequest::new(self.n_samples, 1, solver.clone()))?;
        let sample_seconds = start.elapsed().as_secs_f64();
        // More sampling seeds for the energy distance, whose spread between
        // seeds is of the order of the differences it shows.
        let mut more = Vec::new();
        for seed in 2..=SAMPLING_SEEDS {
            more.push(model.sample(&SampleRequest::new(self.n_samples, seed, solver.clone()))?.values);
        }
        let test = read_test(&self.test)?;
        let request = LikelihoodRequest {
            solver: SolverChoice::new("euler", self.elbo_nodes, 1e-5, 1e-5)?,
            batch_size: 4096,
            ..LikelihoodRequest::exact_rk4(1)?
        };
        let lp = model.log_likelihood(&test, &request, &mut |_| ())?;
        let (nll, se) = lp.nll();
        // The exact target: every cell of the data's squares, equally likely
        // (the squares of the colour of the first held-out point).
        let bad = |e: fm_data::Error| Error::Request(e.to_string());
        let first = grid.tokens(&test[..2]).map_err(bad)?;
        let colour = (first[0] / 32 + first[1] / 32) % 2;
        let cells: Vec<u32> = (0..128u32)
            .flat_map(|a| (0..128u32).map(move |b| (a, b)))
            .filter(|(a, b)| (a / 32 + b / 32) % 2 == colour)
            .flat_map(|(a, b)| [a, b])
            .collect();
        let target = grid.centres(&cells).map_err(bad)?;
        let target = Tensor::from_vec(target, (cells.len() / 2, 2), &dev)?;
        let k = self.energy_n;
        let score = |values: &[f32]| -> Result<f64> {
            let m = k.min(values.len() / 2);
            Ok(energy_distance(&Tensor::from_vec(values[..2 * m].to_vec(), (m, 2), &dev)?, &target)?)
        };
        let peer = match &self.peer_samples {
            Some(p) => {
                let a = fm_data::npy::read(p).map_err(|e| Error::Request(e.to_string()))?;
                let ids: Vec<u32> = a.data.iter().map(|&v| v.round().clamp(0.0, 65_535.0) as u32).collect();
                // A token left masked by the peer's sampler (id 128) has no cell: dropped.
                let kept: Vec<u32> = ids
                    .chunks(2)
                    .filter(|p| p.iter().all(|&t| (t as usize) < grid.bins))
                    .flatten()
                    .copied()
                    .collect();
                Some(score(&grid.centres(&kept).map_err(bad)?)?)
            }
            None => None,
        };
        let fm_energies =
            std::iter::once(&samples.values).chain(&more).map(|v| score(v)).collect::<Result<Vec<f64>>>()?;
        Ok(json!({
            "steps": self.steps,
            "train_seconds": summary.as_ref().map(|s| s.seconds),
            "steps_per_s": summary.as_ref().map(|s| s.steps_per_s),
            "loss": summary.as_ref().map(|s| s.loss),
            "sample_seconds": sample_seconds,
            "nfe": samples.nfe,
            "elbo_nats": -nll,
            "elbo_stderr_nats": se,
            "elbo_bits_per_token": -nll / (2.0 * std::f64::consts::LN_2),
            "n_test": test.len() / 2,
            "energy_n": k,
            "energy_fm_seeds": fm_energies,
            "energy_fm": fm_energies.iter().sum::<f64>() / fm_energies.len() as f64,
            "energy_peer": peer,
            "energy_held_out": score(&test)?,
        }))
    }
}

/// The `x,y` rows of a CSV file with a header.
fn read_test(path: &std::path::Path) -> Result<Vec<f32>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Request(format!("--test {}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        for v in line.split(',') {
            out.push(v.trim().parse::<f32>().map_err(|_| {
                Error::Request(format!("--test {}: line {}: `{v}` is not a number", path.display(), i + 1))
            })?);
        }
    }
    if out.is_empty() || !out.len().is_multiple_of(2) {
        return Err(Error::Request(format!("--test {}: expected rows x,y", path.display())));
    }
    Ok(out)
}

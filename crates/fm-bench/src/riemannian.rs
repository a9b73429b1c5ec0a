//! fm's side of the Riemannian comparison with Meta's `flow_matching`
//! (`cargo xtask riemannian`): the US airports on `S²`, split by row (every
//! fifth row held out), trained, sampled and scored by the library calls
//! `fm train --manifold sphere`, `fm sample` and `fm likelihood` make
//! ([`Run::train`], [`Trained::sample`], [`Trained::log_likelihood`]), beside
//! two baselines fitted on the same training rows: the uniform density
//! (`log 4π` nats) and mixtures of von Mises–Fisher components (EM).
//!
//! `--split-only` writes the split (`train.csv`/`test.csv` with longitude,
//! latitude; `train-xyz.csv`/`test-xyz.csv` with unit vectors, for the peer)
//! and stops; the full run also scores the peer's samples (`--peer-samples`,
//! unit vectors) by the energy distance to the held-out points.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle::{Device, Tensor};
use fm_core::manifold::{ManifoldSpec, VonMisesFisherMixture};
use fm_core::metrics::energy_distance;
use fm_core::SeededRng;
use fm_pipeline::{
    LikelihoodRequest, Run, RunConfig, RunSettings, SampleRequest, Silent, SolverChoice, Trained,
};
use serde_json::{json, Value};

use crate::flags::Flags;
use crate::{Error, Result};

/// Mixture sizes of the von Mises–Fisher baseline.
pub const VMF_COMPONENTS: [usize; 5] = [5, 10, 25, 50, 100];

/// What `fm-bench riemannian` is asked.
#[derive(Debug, Clone)]
pub struct RiemannianCompare {
    /// The airports file (columns `longitude`, `latitude` among others).
    pub data: PathBuf,
    /// The folder of the split files and of fm's run (`DIR/fm`).
    pub out: PathBuf,
    /// Training steps.
    pub steps: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Hidden widths.
    pub hidden: Vec<usize>,
    /// RK4 steps of the likelihood solve.
    pub likelihood_steps: usize,
    /// Samples to draw.
    pub n_samples: usize,
    /// Midpoint steps of sampling.
    pub sample_steps: usize,
    /// The peer's samples (CSV `x,y,z`), if any.
    pub peer_samples: Option<PathBuf>,
    /// Write the split and stop.
    pub split_only: bool,
}

impl RiemannianCompare {
    /// Parses `--data FILE --out DIR [--steps N] [--batch-size B] [--hidden W,W,W]
    /// [--likelihood-steps K] [--n-samples M] [--sample-steps S] [--peer-samples FILE] [--split-only]`.
    pub fn parse(args: &[String]) -> Result<Self> {
        let f = Flags(args);
        Ok(Self {
            data: PathBuf::from(f.need("--data")?),
            out: PathBuf::from(f.need("--out")?),
            steps: f.count("--steps", 3000)?,
            batch_size: f.count("--batch-size", 512)?,
            hidden: f.widths("--hidden", "256,256,256")?,
            likelihood_steps: f.count("--likelihood-steps", 100)?,
            n_samples: f.count("--n-samples", 5000)?,
            sample_steps: f.count("--sample-steps", 100)?,
            peer_samples: f.get("--peer-samples").map(PathBuf::from),
            split_only: f.has("--split-only"),
        })
    }

    /// Writes the split; unless `--split-only`, trains, samples and scores
    /// fm's model, fits and scores the baselines, and scores the peer's
    /// samples; one JSON object.
    pub fn run(&self) -> Result<Value> {
        let bad = |e: fm_data::Error| Error::Request(e.to_string());
        let cols = ["longitude".to_string(), "latitude".to_string()];
        let cloud = fm_data::load_csv_columns(&self.data, &cols).map_err(bad)?;
        let sphere = ManifoldSpec::Sphere(2).build();
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for (i, p) in cloud.data.chunks(2).enumerate() {
            if i % 5 == 4 { &mut test } else { &mut train }.extend_from_slice(p);
        }
        std::fs::create_dir_all(&self.out)
            .map_err(|e| Error::Request(format!("{}: {e}", self.out.display())))?;
        let (train_xyz, test_xyz) = (sphere.embed(&train)?, sphere.embed(&test)?);
        write_csv(&self.out.join("train.csv"), "longitude,latitude", &train, 2)?;
        write_csv(&self.out.join("test.csv"), "longitude,latitude", &test, 2)?;
        write_csv(&self.out.join("train-xyz.csv"), "x,y,z", &train_xyz, 3)?;
        write_csv(&self.out.join("test-xyz.csv"), "x,y,z", &test_xyz, 3)?;
        let (n_train, n_test) = (train.len() / 2, test.len() / 2);
        if self.split_only {
            return Ok(json!({ "n_train": n_train, "n_test": n_test, "out": self.out }));
        }
        let dev = Device::Cpu;
        let run = self.out.join("fm");
        let config = RunConfig {
            manifold: Some("sphere".into()),
            data: Some(format!("csv:{}", self.out.join("train.csv").display())),
            columns: Some(cols.to_vec()),
            hidden: Some(self.hidden.clone()),
            activation: Some("silu".into()),
            steps: Some(self.steps),
            batch_size: Some(self.batch_size),
            lr: Some(1e-3),
            seed: Some(0),
            checkpoint_every: Some(0),
            out: Some(run.clone()),
            ..RunConfig::default()
        };
        let summary = Run::new(RunSettings::resolve(&config)?, &dev)?.train(&mut Silent)?;
        let model = Trained::load(&run, false, &dev)?;
        let start = Instant::now();
        let test32: Vec<f32> = test.iter().map(|&v| v as f32).collect();
        let lp = model.log_likelihood(
            &test32,
            &LikelihoodRequest::exact_rk4(self.likelihood_steps)?,
            &mut |_| (),
        )?;
        let likelihood_seconds = start.elapsed().as_secs_f64();
        let (nll, se) = lp.nll();
        let solver = SolverChoice::parse_spec(&format!("midpoint:{}", self.sample_steps))?;
        let start = Instant::now();
        let samples = model.sample(&SampleRequest::new(self.n_samples, 1, solver))?;
        let sample_seconds = start.elapsed().as_secs_f64();
        // Energy distances in R³ to the held-out points.
        let test_t =
            Tensor::from_vec(test_xyz.iter().map(|&v| v as f32).collect::<Vec<_>>(), (n_test, 3), &dev)?;
        let score = |xyz: &[f64]| -> Result<f64> {
            let v: Vec<f32> = xyz.iter().map(|&v| v as f32).collect();
            Ok(energy_distance(&Tensor::from_vec(v, (xyz.len() / 3, 3), &dev)?, &test_t)?)
        };
        let fm_xyz = sphere.embed(&samples.values.iter().map(|&v| v as f64).collect::<Vec<_>>())?;
        let peer_energy = match &self.peer_samples {
            Some(p) => Some(score(&read_csv(p, 3)?)?),
            None => None,
        };
        // The training airports themselves scored the same way: what a sampler of
        // the data's own distribution scores at about this size (its floor).
        let floor = score(&train_xyz)?;
        let uniform = (4.0 * std::f64::consts::PI).ln();
        let mut out = json!({
            "n_train": n_train,
            "n_test": n_test,
            "steps": self.steps,
            "train_seconds": summary.seconds,
            "steps_per_s": summary.steps_per_s,
            "loss": summary.loss,
            "nll_nats": nll,
            "nll_se": se,
            "likelihood_seconds": likelihood_seconds,
            "likelihood_nfe": lp.nfe,
            "sample_seconds": sample_seconds,
            "sample_nfe": samples.nfe,
            "energy_fm": score(&fm_xyz)?,
            "energy_peer": peer_energy,
            "energy_train_floor": floor,
            "uniform_nll": uniform,
        });
        // `vmf_K_nll`, `vmf_K_se`: each mixture's test NLL.
        for k in VMF_COMPONENTS {
            let mix =
                VonMisesFisherMixture::fit(&train_xyz, k, 200, &mut SeededRng::for_stream(0, "vmf-init"))?;
            let lps: Vec<f64> = test_xyz.chunks(3).map(|x| -mix.log_density(x)).collect();
            let (m, s) = mean_se(&lps);
            out[format!("vmf_{k}_nll")] = json!(m);
            out[format!("vmf_{k}_se")] = json!(s);
        }
        Ok(out)
    }
}

fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, (var / n).sqrt())
}

fn write_csv(path: &Path, header: &str, values: &[f64], d: usize) -> Result<()> {
    let mut s = format!("{header}\n");
    for row in values.chunks(d) {
        let line: Vec<String> = row.iter().map(|v| format!("{v}")).collect();
        let _ = writeln!(s, "{}", line.join(","));
    }
    std::fs::write(path, s).map_err(|e| Error::Request(format!("{}: {e}", path.display())))
}

fn read_csv(path: &Path, d: usize) -> Result<Vec<f64>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::Request(format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let row: Vec<f64> =
            line.split(',').map(|v| v.trim().parse::<f64>()).collect::<std::result::Result<_, _>>().map_err(
                |_| Error::Request(format!("{}: line {}: not {d} numbers", path.display(), i + 1)),
            )?;
        if row.len() != d {
            return Err(Error::Request(format!(
                "{}: line {}: {} values, expected {d}",
                path.display(),
                i + 1,
                row.len()
            )));
        }
        out.extend(row);
    }
    Ok(out)
}

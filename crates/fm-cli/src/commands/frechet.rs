//! `fm frechet`: the Fréchet distance between generated images and a test
//! split, in the 128-d feature space of the classifier trained by
//! `fm classifier train` (the closed-form flow-matching paper's MNIST metric).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle::{Device, Tensor};
use clap::Args;
use fm_core::metrics::{frechet_distance_stats, FeatureStats};
use fm_core::SeededRng;
use fm_data::images::{ImageSet, Split};
use fm_data::tokens::TokenGrid;
use fm_models::classifier::{ImageClassifier, LoadedClassifier};
use serde_json::json;

use super::classifier::load_labelled;
use crate::checksum::sha256_hex;
use crate::cli::SolverArgs;
use crate::io::print_json;
use fm_pipeline::{SampleRequest, SolverChoice};

#[derive(Debug, Args, Clone)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["samples", "checkpoint", "baseline"]))]
pub struct FrechetArgs {
    /// Generated images as .npy (float32/64, shape (n, c·h·w) or (n, c, h, w)), as `fm sample`
    /// writes them: in [−1, 1] unless --zero-one.
    #[arg(long, value_name = "FILE.npy")]
    pub samples: Option<PathBuf>,
    /// Draw --n samples from this checkpoint (written by `fm train` on images) with --solver/--steps
    /// (or --sampler sde|langevin).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: Option<PathBuf>,
    /// A reference figure instead of samples: `train` (n training images: the floor a perfect
    /// model reaches), `test` (the test images themselves: 0), `noise:S` (test images plus
    /// Gaussian noise of standard deviation S in [−1, 1] units, clipped) or `blur:S` (test images
    /// blurred by a Gaussian of S pixels).
    #[arg(long, value_name = "SPEC")]
    pub baseline: Option<String>,
    /// Classifier directory written by `fm classifier train` [default: fm's pinned MNIST classifier,
    /// the same weights on every machine, so that distances compare across machines].
    #[arg(long, value_name = "DIR")]
    pub classifier: Option<PathBuf>,
    /// Reference images: the test split of this dataset (mnist:DIR, fashion-mnist:DIR).
    #[arg(long)]
    pub data: String,
    /// Number of samples scored (the first n of --samples; drawn from --checkpoint; training images
    /// for --baseline train).
    #[arg(long, default_value_t = 10_000)]
    pub n: usize,
    #[command(flatten)]
    pub solver: SolverArgs,
    #[command(flatten)]
    pub stochastic: crate::cli::StochasticArgs,
    /// Seed of the source noise (--checkpoint) and of the baselines' draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The samples are in [0, 1] rather than [−1, 1].
    #[arg(long)]
    pub zero_one: bool,
    /// Quantize the reference (and the train/test baselines) to N grey levels, as `fm train
    /// --model discrete --bins N` (2: binarized) [default: a discrete checkpoint's own levels].
    #[arg(long, value_name = "N")]
    pub bins: Option<usize>,
    /// Print one JSON object (`frechet_distance`, `classifier_sha256`, `n`, ...) as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (also hidden when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(a: FrechetArgs) -> Result<()> {
    if a.n < 2 {
        bail!("--n must be at least 2 (a covariance needs two samples), got {}", a.n);
    }
    let device = crate::device::selected();
    let start = Instant::now();
    let classifier = match &a.classifier {
        Some(dir) => ImageClassifier::load(dir, &device).context("--classifier")?,
        None => ImageClassifier::pinned_mnist(&device).context("the pinned classifier")?,
    };
    let sha = sha256_hex(&classifier.bytes);
    let test = load_labelled(&a.data, Split::Test, "--data")?;
    let input_dim = classifier.model.config().input_dim();
    if test.dim() != input_dim {
        bail!(
            "--data {}: images of {}×{}×{} do not fit the classifier ({} values per image)",
            a.data,
            test.channels,
            test.height,
            test.width,
            input_dim
        );
    }
    let grid = match (a.bins, &a.checkpoint) {
        (Some(bins), _) => Some(TokenGrid::grey_levels(bins).context("--bins")?),
        (None, Some(dir)) => super::common::load(dir, false, &device)?.record().tokens,
        (None, None) => None,
    };
    let snap = |v: Vec<f32>| -> Result<Vec<f32>> {
        Ok(match &grid {
            Some(g) => g.snap(&v)?,
            None => v,
        })
    };
    let (samples, source) = samples_of(&a, &test, input_dim, &device)?;
    let samples = if a.baseline.is_some() { snap(samples)? } else { samples };
    let n = samples.len() / input_dim;
    let reference = test.tensor(&(0..test.n).collect::<Vec<_>>(), &device)?.flatten_from(1)?;
    let reference = snap(reference.flatten_all()?.to_vec1::<f32>()?)?;
    let pb = crate::progress::bar(n + test.n, a.quiet, "{bar:30} {pos}/{len} images (features) ETA {eta}");
    let fs = features(&classifier, &samples, input_dim, &device, &mut |k| pb.inc(k as u64))?;
    let fr = features(&classifier, &reference, input_dim, &device, &mut |k| pb.inc(k as u64))?;
    pb.finish_and_clear();
    let fd = frechet_distance_stats(&fs, &fr)?;
    let seconds = start.elapsed().as_secs_f64();
    let accuracy = classifier.training.get("test_accuracy").and_then(|v| v.as_f64());
    let log = |s: String| if a.json { eprintln!("{s}") } else { println!("{s}") };
    let levels = grid.map(|g| format!(" at {} grey levels", g.bins)).unwrap_or_default();
    log(format!(
        "Fréchet distance {fd:.4}: {n} {source} vs {} test images of {}{levels} ({:.1} s)",
        test.n, a.data, seconds
    ));
    log(format!(
        "classifier {} (SHA-256 {sha}{})",
        classifier.weights.display(),
        accuracy.map(|x| format!(", test accuracy {:.2} %", 100.0 * x)).unwrap_or_default()
    ));
    if a.json {
        print_json(&json!({
            "frechet_distance": fd,
            "classifier_sha256": sha,
            "n": n,
            "n_reference": test.n,
            "levels": grid.map(|g| g.bins),
            "source": source,
            "classifier_test_accuracy": accuracy,
            "seconds": seconds,
        }))?;
    }
    Ok(())
}

/// The images to score, flattened row-major in `[−1, 1]`, and a description.
fn samples_of(
    a: &FrechetArgs,
    test: &ImageSet,
    input_dim: usize,
    device: &Device,
) -> Result<(Vec<f32>, String)> {
    if let Some(path) = &a.samples {
        let arr = fm_data::npy::read(path).context("--samples")?;
        let per_row: usize = arr.shape.iter().skip(1).product();
        if arr.shape.len() < 2 || per_row != input_dim {
            bail!(
                "--samples {}: shape {:?} does not hold images of {input_dim} values (want (n, {input_dim}) or (n, c, h, w))",
                path.display(),
                arr.shape
            );
        }
        let rows = arr.shape[0];
        if rows < a.n {
            bail!("--samples {}: has {rows} images, fewer than --n {}", path.display(), a.n);
        }
        let mut data = arr.data;
        data.truncate(a.n * input_dim);
        if let Some(k) = data.iter().position(|v| !v.is_finite()) {
            bail!("--samples {}: image {} holds a non-finite value", path.display(), k / input_dim);
        }
        if a.zero_one {
            data.iter_mut().for_each(|v| *v = 2.0 * *v - 1.0);
        } else if data.iter().all(|&v| v >= -1e-3) {
            eprintln!(
                "warning: --samples {} has no negative values; if its images are in [0, 1], pass --zero-one",
                path.display()
            );
        }
        return Ok((data, format!("samples from {}", path.display())));
    }
    if let Some(dir) = &a.checkpoint {
        let m = super::common::load(dir, false, device)?;
        if m.dim() != input_dim {
            bail!(
                "--checkpoint {}: the model makes {}-value samples, the classifier takes {input_dim}",
                dir.display(),
                m.dim()
            );
        }
        let choice = SolverChoice::new(&a.solver.solver, a.solver.steps, a.solver.rtol, a.solver.atol)?;
        let pb = crate::progress::bar(a.n, a.quiet, "{bar:30} {pos}/{len} samples {per_sec} ETA {eta}");
        let mut request = SampleRequest::new(a.n, a.seed, choice.clone());
        request.stochastic = super::common::stochastic_choice(&a.stochastic, a.solver.steps)?;
        let label = request.stochastic.map_or_else(|| m.family().sampler_label(&choice), |s| s.label());
        let gen = m.sample_with(&request, &mut |k| pb.inc(k as u64))?;
        pb.finish_and_clear();
        return Ok((gen.values, format!("samples of {} ({label}, NFE {})", dir.display(), gen.nfe)));
    }
    let spec = a.baseline.as_deref().unwrap_or("train");
    let test_images = || -> Result<Vec<f32>> {
        let idx: Vec<usize> = (0..test.n).collect();
        Ok(test.tensor(&idx, device)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let (kind, arg) = spec.split_once(':').map_or((spec, None), |(k, v)| (k, Some(v)));
    let level = |what: &str| -> Result<f64> {
        let s = arg.with_context(|| format!("--baseline {spec}: give the {what}, e.g. {kind}:1.0"))?;
        let v: f64 = s.parse().with_context(|| format!("--baseline {spec}: `{s}` is not a number"))?;
        if !(v.is_finite() && v >= 0.0) {
            bail!("--baseline {spec}: the {what} must be a non-negative number");
        }
        Ok(v)
    };
    match (kind, arg) {
        ("train", None) => {
            let train = load_labelled(&a.data, Split::Train, "--data")?;
            if train.n < a.n {
                bail!("--baseline train: --n {} is more than the {} training images", a.n, train.n);
            }
            let mut rng = SeededRng::for_stream(a.seed, "frechet-baseline");
            let mut idx = rng.permutation(train.n);
            idx.truncate(a.n);
            let data = train.tensor(&idx, device)?.flatten_all()?.to_vec1::<f32>()?;
            Ok((data, "training images (random subset)".into()))
        }
        ("test", None) => Ok((test_images()?, "test images (the reference itself)".into())),
        ("noise", Some(_)) => {
            let s = level("noise standard deviation")?;
            let mut data = test_images()?;
            let mut rng = SeededRng::for_stream(a.seed, "frechet-baseline");
            let z = rng.normal_vec(data.len());
            for (v, e) in data.iter_mut().zip(z) {
                *v = (*v + (s * e) as f32).clamp(-1.0, 1.0);
            }
            Ok((data, format!("test images + N(0, {s}²) noise")))
        }
        ("blur", Some(_)) => {
            let s = level("blur radius in pixels")?;
            let data = gaussian_blur(&test_images()?, test.height, test.width, s);
            Ok((data, format!("test images blurred (σ = {s} px)")))
        }
        _ => bail!("--baseline {spec}: expected train, test, noise:S or blur:S"),
    }
}

/// Classifier features of flattened images, as Gaussian-fit statistics.
fn features(
    c: &LoadedClassifier,
    images: &[f32],
    input_dim: usize,
    device: &Device,
    progress: &mut dyn FnMut(usize),
) -> Result<FeatureStats> {
    let n = images.len() / input_dim;
    let mut parts = Vec::with_capacity(n.div_ceil(500));
    for chunk in images.chunks(500 * input_dim) {
        let x = Tensor::from_slice(chunk, (chunk.len() / input_dim, input_dim), device)?;
        parts.push(c.model.features(&x)?);
        progress(chunk.len() / input_dim);
    }
    let f = Tensor::cat(&parts, 0)?;
    Ok(FeatureStats::from_features(&f)?)
}

/// Separable Gaussian blur of standard deviation `sigma` pixels (kernel radius
/// `⌈3σ⌉`, edges replicated) of each `h × w` plane of row-major images.
pub fn gaussian_blur(images: &[f32], h: usize, w: usize, sigma: f64) -> Vec<f32> {
    if sigma <= 0.0 {
        return images.to_vec();
    }
    let r = (3.0 * sigma).ceil() as i64;
    let mut kernel: Vec<f64> = (-r..=r).map(|k| (-(k * k) as f64 / (2.0 * sigma * sigma)).exp()).collect();
    let total: f64 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= total);
    let mut out = images.to_vec();
    let mut tmp = vec![0.0f32; h * w];
    for plane in out.chunks_exact_mut(h * w) {
        for i in 0..h {
            for j in 0..w {
                let s: f64 = kernel
                    .iter()
                    .enumerate()
                    .map(|(k, kv)| {
                        let jj = (j as i64 + k as i64 - r).clamp(0, w as i64 - 1) as usize;
                        kv * plane[i * w + jj] as f64
                    })
                    .sum();
                tmp[i * w + j] = s as f32;
            }
        }
        for i in 0..h {
            for j in 0..w {
                let s: f64 = kernel
                    .iter()
                    .enumerate()
                    .map(|(k, kv)| {
                        let ii = (i as i64 + k as i64 - r).clamp(0, h as i64 - 1) as usize;
                        kv * tmp[ii * w + j] as f64
                    })
                    .sum();
                plane[i * w + j] = s as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::gaussian_blur;

    #[test]
    fn blur_keeps_constants_and_spreads_a_point() {
        let flat = vec![0.25f32; 2 * 5 * 5];
        assert!(gaussian_blur(&flat, 5, 5, 1.0).iter().all(|v| (v - 0.25).abs() < 1e-6));
        let mut point = vec![0.0f32; 7 * 7];
        point[3 * 7 + 3] = 1.0;
        let b = gaussian_blur(&point, 7, 7, 0.8);
        let sum: f32 = b.iter().sum();
        assert!((sum - 1.0).abs() < 1e-3, "{sum}");
        assert!(b[3 * 7 + 3] < 0.5 && b[3 * 7 + 4] > 0.0 && (b[3 * 7 + 4] - b[4 * 7 + 3]).abs() < 1e-7);
        assert_eq!(gaussian_blur(&point, 7, 7, 0.0), point);
    }
}

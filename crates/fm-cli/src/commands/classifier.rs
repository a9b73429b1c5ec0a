//! `fm classifier train`: the image classifier whose 128-d feature layer is
//! the space of the Fréchet distance (`fm frechet`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle::{DType, Device, Tensor};
use clap::{Args, Subcommand};
use fm_core::SeededRng;
use fm_data::images::{ImageSet, Split};
use fm_data::DataSpec;
use fm_models::classifier::{ClassifierConfig, ImageClassifier, CLASSIFIER_WEIGHTS_FILE};
use fm_models::optim::{Adam, AdamParams};
use serde_json::json;

use crate::checksum::sha256_hex;
use crate::io::print_json;

/// The classifier's subcommands.
#[derive(Debug, Subcommand)]
pub enum ClassifierCommand {
    /// Train the CNN (conv 32 → conv 64 → 128-d features → 10 classes) with Adam on the training
    /// split; report the test accuracy and the SHA-256 of the weights.
    #[command(
        after_help = "Examples:\n  fm classifier train --data mnist:data/mnist --out runs/mnist-classifier\n  fm classifier train --data mnist:data/mnist --epochs 5 --seed 1 --json"
    )]
    Train(ClassifierTrainArgs),
}

#[derive(Debug, Args, Clone)]
pub struct ClassifierTrainArgs {
    /// Image dataset with labels and a test split: mnist:DIR or fashion-mnist:DIR.
    #[arg(long)]
    pub data: String,
    /// Passes over the training split.
    #[arg(long, default_value_t = 6)]
    pub epochs: usize,
    /// Images per step.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Peak learning rate of Adam (cosine decay to 0 over the run).
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    /// Shift each training image by up to this many pixels (random, per image); 0 disables it.
    #[arg(long, default_value_t = 2)]
    pub shift: usize,
    /// Seed of the initialisation, the shuffling and the shifts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory for classifier.safetensors and classifier.json.
    #[arg(long, default_value = "runs/mnist-classifier")]
    pub out: PathBuf,
    /// Print one JSON object (`test_accuracy`, `sha256`, `seconds`, ...) as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress bar (also hidden when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(c: ClassifierCommand) -> Result<()> {
    match c {
        ClassifierCommand::Train(a) => train(a),
    }
}

/// Loads a labelled image split for `--data` (`flag` names the option in errors).
pub fn load_labelled(data: &str, split: Split, flag: &str) -> Result<ImageSet> {
    let spec: DataSpec = data.parse().with_context(|| format!("{flag} {data}"))?;
    let DataSpec::Images { format, path } = spec else {
        bail!("{flag} {data}: needs an image dataset, e.g. mnist:DIR");
    };
    let set = format.load(&path, split).with_context(|| format!("{flag} {data}"))?;
    if set.labels.is_none() {
        bail!("{flag} {data}: the images have no labels");
    }
    Ok(set)
}

fn train(a: ClassifierTrainArgs) -> Result<()> {
    if a.epochs == 0 || a.batch_size == 0 {
        bail!("--epochs and --batch-size must be at least 1");
    }
    if !(a.lr.is_finite() && a.lr > 0.0) {
        bail!("--lr must be a positive number, got {}", a.lr);
    }
    let device = crate::device::selected();
    let train_set = load_labelled(&a.data, Split::Train, "--data")?;
    let test_set = load_labelled(&a.data, Split::Test, "--data")?;
    let (channels, height, width) = train_set.image_shape();
    let classes = train_set.labels.iter().flatten().max().map_or(0, |&m| m as usize + 1);
    let config = ClassifierConfig { channels, height, width, classes, ..ClassifierConfig::mnist() };
    config.validate().with_context(|| format!("--data {}", a.data))?;
    let log = |s: String| if a.json { eprintln!("{s}") } else { println!("{s}") };
    log(format!(
        "training classifier conv {:?} → {} features → {} classes ({} parameters) on {} images of {}, \
         {} epochs, batch {}, Adam lr {} (cosine), shifts ±{} px, seed {}",
        config.conv,
        config.features,
        config.classes,
        config.num_parameters(),
        train_set.n,
        a.data,
        a.epochs,
        a.batch_size,
        a.lr,
        a.shift,
        a.seed
    ));
    let mut init_rng = SeededRng::for_stream(a.seed, "classifier-init");
    let (net, varmap) = ImageClassifier::init(&config, &mut init_rng, DType::F32, &device)?;
    let mut opt = Adam::new(&varmap, AdamParams::with_lr(a.lr))?;
    let mut rng = SeededRng::for_stream(a.seed, "classifier-batches");
    let labels = train_set.labels.as_deref().unwrap_or_default();
    let steps_per_epoch = train_set.n.div_ceil(a.batch_size);
    let total = (steps_per_epoch * a.epochs) as f64;
    let start = Instant::now();
    let mut step = 0usize;
    let mut accuracy = 0.0;
    let pb = crate::progress::bar(
        steps_per_epoch * a.epochs,
        a.quiet,
        "{bar:30} {pos}/{len} steps loss {msg} {per_sec} ETA {eta}",
    );
    for epoch in 1..=a.epochs {
        let order = rng.permutation(train_set.n);
        let mut loss_sum = 0.0;
        for chunk in order.chunks(a.batch_size) {
            let lr = 0.5 * a.lr * (1.0 + (std::f64::consts::PI * step as f64 / total).cos());
            opt.set_lr(lr.max(1e-3 * a.lr));
            let x = shifted_batch(&train_set, chunk, a.shift, &mut rng, &device)?;
            let y: Vec<u32> = chunk.iter().map(|&i| labels[i] as u32).collect();
            let y = Tensor::new(y.as_slice(), &device)?;
            let loss = net.loss(&x, &y)?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
            opt.backward_step(&loss)?;
            step += 1;
            pb.inc(1);
            if step.is_multiple_of(50) {
                pb.set_message(format!("{:.4}", loss.to_scalar::<f32>()?));
            }
        }
        accuracy = test_accuracy(&net, &test_set, &device)?;
        pb.suspend(|| {
            log(format!(
                "epoch {epoch}/{}: mean training loss {:.4}, test accuracy {:.2} % ({:.0} s)",
                a.epochs,
                loss_sum / steps_per_epoch as f64,
                100.0 * accuracy,
                start.elapsed().as_secs_f64()
            ))
        });
    }
    pb.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let record = json!({
        "data": a.data,
        "epochs": a.epochs,
        "batch_size": a.batch_size,
        "lr": a.lr,
        "shift": a.shift,
        "seed": a.seed,
        "test_accuracy": accuracy,
        "train_seconds": seconds,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
    });
    net.save(&a.out, &varmap, &record).with_context(|| format!("--out {}", a.out.display()))?;
    let sha = file_sha256(&a.out.join(CLASSIFIER_WEIGHTS_FILE))?;
    log(format!(
        "test accuracy {:.2} % on {} images; trained in {seconds:.0} s; weights {} (SHA-256 {sha})",
        100.0 * accuracy,
        test_set.n,
        a.out.join(CLASSIFIER_WEIGHTS_FILE).display()
    ));
    if a.json {
        print_json(&json!({
            "test_accuracy": accuracy,
            "n_test": test_set.n,
            "seconds": seconds,
            "sha256": sha,
            "out": a.out,
            "parameters": config.num_parameters(),
        }))?;
    }
    Ok(())
}

/// The SHA-256 of a file's bytes, in hex.
pub fn file_sha256(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(sha256_hex(&bytes))
}

/// Images `indices` in `[−1, 1]`, each shifted by a random offset in
/// `[−shift, shift]²` pixels (vacated pixels are background, −1).
fn shifted_batch(
    set: &ImageSet,
    indices: &[usize],
    shift: usize,
    rng: &mut SeededRng,
    device: &Device,
) -> Result<Tensor> {
    let x = set.tensor(indices, device)?;
    if shift == 0 {
        return Ok(x);
    }
    let (b, c, h, w) = x.dims4()?;
    let src = x.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![-1.0f32; src.len()];
    let s = shift as i64;
    let offsets = rng.uniform_vec(2 * b, -(s as f64) - 0.5, s as f64 + 0.5);
    for k in 0..b {
        let dy = (offsets[2 * k].round() as i64).clamp(-s, s);
        let dx = (offsets[2 * k + 1].round() as i64).clamp(-s, s);
        for ch in 0..c {
            let base = (k * c + ch) * h * w;
            for i in 0..h as i64 {
                let si = i - dy;
                if si < 0 || si >= h as i64 {
                    continue;
                }
                for j in 0..w as i64 {
                    let sj = j - dx;
                    if sj >= 0 && sj < w as i64 {
                        out[base + (i * w as i64 + j) as usize] = src[base + (si * w as i64 + sj) as usize];
                    }
                }
            }
        }
    }
    Ok(Tensor::from_vec(out, (b, c, h, w), device)?)
}

/// The fraction of `set` that `net` classifies correctly.
pub fn test_accuracy(net: &ImageClassifier, set: &ImageSet, device: &Device) -> Result<f64> {
    let labels = set.labels.as_deref().context("the test images have no labels")?;
    let mut correct = 0usize;
    let all: Vec<usize> = (0..set.n).collect();
    for chunk in all.chunks(1000) {
        let pred = net.predict(&set.tensor(chunk, device)?)?;
        correct += chunk.iter().zip(pred).filter(|(&i, p)| labels[i] as u32 == *p).count();
    }
    Ok(correct as f64 / set.n.max(1) as f64)
}

//! A small image classifier CNN whose penultimate layer is the feature space
//! of the Fréchet distance (`fm frechet`), as in the closed-form flow-matching
//! paper's MNIST metric (a 128-d embedding of a ≥ 99 % classifier).
//!
//! Architecture (for `conv = [c₁, …, c_k]`): `k` blocks of
//! `conv 3×3 (padding 1) → ReLU → max-pool 2×2`, then flatten,
//! `linear → ReLU` to `features` values (the embedding), and a linear head to
//! `classes` logits. No normalisation layers (candle's `LayerNorm` would pass
//! no gradient back; this network does not need one).
//!
//! Images come in `[−1, 1]` (the scaling of `fm_data::images::ImageSet::tensor`
//! and of the image training pipeline), either as `(b, c, h, w)` or flattened
//! `(b, c·h·w)`.
//!
//! The weights live in their own directory format ([`CLASSIFIER_WEIGHTS_FILE`]
//! with the configuration in its header, and a readable [`CLASSIFIER_CONFIG_FILE`]),
//! so a classifier is never mistaken for a velocity checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle::{DType, Device, Module, Tensor, Var, D};
use candle_nn::{Linear, VarBuilder, VarMap};
use fm_core::SeededRng;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{atomic_write, check_parameters, varmap_tensors};
use crate::{limits, Error, Result};

/// The weights file of a classifier directory.
pub const CLASSIFIER_WEIGHTS_FILE: &str = "classifier.safetensors";
/// The readable configuration of a classifier directory.
pub const CLASSIFIER_CONFIG_FILE: &str = "classifier.json";
/// The safetensors metadata key holding the configuration.
pub const CLASSIFIER_METADATA_KEY: &str = "fm-classifier";

/// The shape of an [`ImageClassifier`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    /// Image channels.
    pub channels: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Output channels of each `conv 3×3 → ReLU → max-pool 2×2` block.
    pub conv: Vec<usize>,
    /// Width of the penultimate (feature) layer.
    pub features: usize,
    /// Number of classes.
    pub classes: usize,
}

impl ClassifierConfig {
    /// The MNIST network: 1×28×28 input, conv blocks of 32 and 64 channels
    /// (28 → 14 → 7), a 128-d feature layer and 10 classes (422 k parameters).
    /// Six epochs of `fm classifier train` reach 99.22 % test accuracy.
    pub fn mnist() -> Self {
        Self { channels: 1, height: 28, width: 28, conv: vec![32, 64], features: 128, classes: 10 }
    }

    /// Checks that every size is positive and that the pools leave at least one pixel.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: String| Err(Error::Config { field, reason });
        for (field, v) in [
            ("channels", self.channels),
            ("height", self.height),
            ("width", self.width),
            ("features", self.features),
            ("classes", self.classes),
        ] {
            if v == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        if self.conv.contains(&0) {
            return bad("conv", format!("every block needs at least one channel, got {:?}", self.conv));
        }
        let (h, w) = self.pooled_size();
        if h == 0 || w == 0 {
            return bad(
                "conv",
                format!(
                    "{} max-pool blocks shrink {}×{} images to nothing",
                    self.conv.len(),
                    self.height,
                    self.width
                ),
            );
        }
        if self.classes < 2 {
            return bad("classes", format!("a classifier needs at least 2 classes, got {}", self.classes));
        }
        // Sizes ([`crate::limits`]), with checked arithmetic: an image, one
        // image's widest activation, every parameter tensor and their sum.
        let pixels = limits::mul(self.height, self.width);
        limits::check_elements(
            "channels",
            &format!("an image of {}×{}×{}", self.channels, self.height, self.width),
            pixels.and_then(|p| p.checked_mul(self.channels as u64)),
        )?;
        let widest = self.conv.iter().copied().max().unwrap_or(0);
        limits::check_elements(
            "conv",
            &format!(
                "one image's activations of {widest} channels over {}×{} pixels",
                self.height, self.width
            ),
            pixels.and_then(|p| p.checked_mul(widest as u64)),
        )?;
        limits::check_layers("conv", "convolution blocks", Some(self.conv.len() as u64))?;
        limits::check_parameter_sizes(
            self.parameter_shapes().iter().map(|(n, s)| (n.as_str(), s.as_slice())),
            |name| match name {
                "fc.weight" | "fc.bias" => "features",
                "head.weight" | "head.bias" => "classes",
                _ => "conv",
            },
            "conv",
        )
    }

    /// Height and width after the max-pools (each halves, rounding down).
    pub fn pooled_size(&self) -> (usize, usize) {
        let k = self.conv.len() as u32;
        (self.height >> k.min(63), self.width >> k.min(63))
    }

    /// Values per image, `channels · height · width`.
    pub fn input_dim(&self) -> usize {
        self.channels.saturating_mul(self.height).saturating_mul(self.width)
    }

    /// Names and shapes of the parameters, in creation order.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        let mut c_in = self.channels;
        for (i, &c) in self.conv.iter().enumerate() {
            out.push((format!("conv.{i}.weight"), vec![c, c_in, 3, 3]));
            out.push((format!("conv.{i}.bias"), vec![c]));
            c_in = c;
        }
        let (h, w) = self.pooled_size();
        let flat = c_in * h * w;
        out.push(("fc.weight".into(), vec![self.features, flat]));
        out.push(("fc.bias".into(), vec![self.features]));
        out.push(("head.weight".into(), vec![self.classes, self.features]));
        out.push(("head.bias".into(), vec![self.classes]));
        out
    }

    /// The number of scalar parameters.
    pub fn num_parameters(&self) -> usize {
        self.parameter_shapes().iter().map(|(_, s)| s.iter().product::<usize>()).sum()
    }
}

/// A CNN classifier with a feature layer (see the [module docs](self)).
///
/// ```
/// use candle::{DType, Device, Tensor};
/// use fm_core::SeededRng;
/// use fm_models::classifier::{ClassifierConfig, ImageClassifier};
///
/// # fn main() -> anyhow::Result<()> {
/// let cfg = ClassifierConfig { channels: 1, height: 8, width: 8, conv: vec![4], features: 16, classes: 3 };
/// let (net, _varmap) = ImageClassifier::init(&cfg, &mut SeededRng::new(0), DType::F32, &Device::Cpu)?;
/// let x = Tensor::zeros((5, 64), DType::F32, &Device::Cpu)?; // flattened images in [−1, 1]
/// assert_eq!(net.features(&x)?.dims(), &[5, 16]);
/// assert_eq!(net.logits(&x)?.dims(), &[5, 3]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ImageClassifier {
    config: ClassifierConfig,
    /// `(weight (c_out, c_in, 3, 3), bias (c_out,))` of each block.
    convs: Vec<(Tensor, Tensor)>,
    fc: Linear,
    head: Linear,
}

impl ImageClassifier {
    /// Builds the network from a [`VarBuilder`] (weights from a file, a map, or a [`VarMap`]).
    pub fn new(config: &ClassifierConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let mut convs = Vec::with_capacity(config.conv.len());
        let mut c_in = config.channels;
        for (i, &c) in config.conv.iter().enumerate() {
            let vb = vb.pp(format!("conv.{i}"));
            convs.push((vb.get((c, c_in, 3, 3), "weight")?, vb.get(c, "bias")?));
            c_in = c;
        }
        let (h, w) = config.pooled_size();
        let fc = candle_nn::linear(c_in * h * w, config.features, vb.pp("fc"))?;
        let head = candle_nn::linear(config.features, config.classes, vb.pp("head"))?;
        Ok(Self { config: config.clone(), convs, fc, head })
    }

    /// A freshly initialised, trainable network and the [`VarMap`] holding its
    /// weights: PyTorch's default for `Conv2d` and `Linear` (weights and biases
    /// uniform in `±1/√fan_in`), drawn from `rng`, so the same seed gives the same weights.
    pub fn init(
        config: &ClassifierConfig,
        rng: &mut SeededRng,
        dtype: DType,
        device: &Device,
    ) -> Result<(Self, VarMap)> {
        config.validate()?;
        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().map_err(|_| Error::Config {
                field: "varmap",
                reason: "the variable map's lock is poisoned".into(),
            })?;
            for pair in config.parameter_shapes().chunks_exact(2) {
                let fan_in: usize = pair[0].1[1..].iter().product();
                let bound = 1.0 / (fan_in as f64).sqrt();
                for (name, shape) in pair {
                    let t = rng.uniform(shape.as_slice(), -bound, bound, dtype, device)?;
                    data.insert(name.clone(), Var::from_tensor(&t)?);
                }
            }
        }
        let vb = VarBuilder::from_varmap(&varmap, dtype, device);
        Ok((Self::new(config, vb)?, varmap))
    }

    /// The configuration.
    pub fn config(&self) -> &ClassifierConfig {
        &self.config
    }

    /// Brings `x` to `(b, c, h, w)`: accepts that shape or flattened `(b, c·h·w)`.
    fn as_images(&self, x: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let ok = match x.dims() {
            [_, d] => *d == c.input_dim(),
            [_, ch, h, w] => (*ch, *h, *w) == (c.channels, c.height, c.width),
            _ => false,
        };
        if !ok {
            return Err(Error::Shape(format!(
                "the classifier takes images (b, {}, {}, {}) or (b, {}), got {:?}",
                c.channels,
                c.height,
                c.width,
                c.input_dim(),
                x.dims()
            )));
        }
        Ok(x.reshape((x.dim(0)?, c.channels, c.height, c.width))?)
    }

    /// The penultimate-layer embedding (after its ReLU).
    ///
    /// # Shapes
    /// - `x`: `(b, c, h, w)` or `(b, c·h·w)`, values in `[−1, 1]`
    /// - returns `(b, features)`
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.as_images(x)?;
        for (weight, bias) in &self.convs {
            h = conv3x3(&h, weight, bias)?.relu()?.max_pool2d(2)?;
        }
        Ok(self.fc.forward(&h.flatten_from(1)?)?.relu()?)
    }

    /// Class logits.
    ///
    /// # Shapes
    /// - `x`: `(b, c, h, w)` or `(b, c·h·w)`
    /// - returns `(b, classes)`
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.head.forward(&self.features(x)?)?)
    }

    /// The mean cross-entropy of the logits against `labels`.
    ///
    /// # Shapes
    /// - `x`: `(b, c, h, w)` or `(b, c·h·w)`
    /// - `labels`: `(b,)`, an integer dtype, values in `0..classes`
    /// - returns a scalar
    pub fn loss(&self, x: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let logits = self.logits(x)?;
        let log_p = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        Ok(candle_nn::loss::nll(&log_p, labels)?)
    }

    /// The predicted class of each image.
    ///
    /// # Shapes
    /// - `x`: `(b, c, h, w)` or `(b, c·h·w)`
    /// - returns `b` class indices
    pub fn predict(&self, x: &Tensor) -> Result<Vec<u32>> {
        Ok(self.logits(x)?.argmax(D::Minus1)?.to_vec1::<u32>()?)
    }

    /// Saves the weights in `varmap` (those of this network) and the
    /// configuration into directory `dir` (created if needed), each file atomically; `record` is free-form training
    /// information (accuracy, data, seed) stored beside the configuration.
    pub fn save(&self, dir: &Path, varmap: &VarMap, record: &serde_json::Value) -> Result<()> {
        let tensors = varmap_tensors(varmap)?;
        let file = ClassifierFile {
            format_version: 1,
            fm_version: env!("CARGO_PKG_VERSION").to_string(),
            config: self.config.clone(),
            training: record.clone(),
        };
        check_parameters(
            &dir.join(CLASSIFIER_WEIGHTS_FILE),
            &self.config.parameter_shapes(),
            &tensors.iter().cloned().collect(),
        )?;
        std::fs::create_dir_all(dir).map_err(|io| Error::Io { path: dir.to_path_buf(), io })?;
        let json = serde_json::to_string_pretty(&file).map_err(|e| Error::Checkpoint {
            path: dir.to_path_buf(),
            reason: format!("cannot serialize the configuration: {e}"),
        })?;
        let meta = HashMap::from([(CLASSIFIER_METADATA_KEY.to_string(), json.clone())]);
        let bytes = safetensors::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(meta))
            .map_err(|e| Error::Checkpoint {
                path: dir.join(CLASSIFIER_WEIGHTS_FILE),
                reason: format!("cannot serialize the weights: {e}"),
            })?;
        atomic_write(&dir.join(CLASSIFIER_WEIGHTS_FILE), &bytes)?;
        atomic_write(&dir.join(CLASSIFIER_CONFIG_FILE), format!("{json}\n").as_bytes())?;
        Ok(())
    }

    /// Loads a classifier saved by [`ImageClassifier::save`] from directory `dir`
    /// (weights as plain tensors, for evaluation).
    pub fn load(dir: &Path, device: &Device) -> Result<LoadedClassifier> {
        let weights = dir.join(CLASSIFIER_WEIGHTS_FILE);
        let checkpoint = |reason: String| Error::Checkpoint { path: dir.to_path_buf(), reason };
        if !dir.is_dir() {
            return Err(checkpoint("no such directory".into()));
        }
        if !weights.is_file() {
            return Err(checkpoint(format!(
                "no {CLASSIFIER_WEIGHTS_FILE} in it; is this a directory written by `fm classifier train`?"
            )));
        }
        let bytes = std::fs::read(&weights).map_err(|io| Error::Io { path: weights.clone(), io })?;
        Self::from_bytes(bytes, weights, device)
    }

    /// The MNIST classifier that ships with fm ([`PINNED_MNIST`]): the same
    /// weights, hence the same Fréchet distances, on every machine (a
    /// classifier trained by `fm classifier train` on an AVX2 machine and on
    /// an AVX-512 one differ in their last bits, and so do the distances).
    pub fn pinned_mnist(device: &Device) -> Result<LoadedClassifier> {
        Self::from_bytes(PINNED_MNIST.to_vec(), PathBuf::from(PINNED_MNIST_NAME), device)
    }

    /// A classifier from the bytes of a weights file saved by
    /// [`ImageClassifier::save`]; `weights` names it in messages.
    pub fn from_bytes(bytes: Vec<u8>, weights: PathBuf, device: &Device) -> Result<LoadedClassifier> {
        let corrupt = |e: &dyn std::fmt::Display| Error::Checkpoint {
            path: weights.clone(),
            reason: format!("not a valid safetensors file ({e})"),
        };
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(&e))?;
        let json =
            meta.metadata().as_ref().and_then(|m| m.get(CLASSIFIER_METADATA_KEY)).ok_or_else(|| {
                Error::Checkpoint {
                    path: weights.clone(),
                    reason: format!(
                        "no `{CLASSIFIER_METADATA_KEY}` configuration in the header; not a classifier"
                    ),
                }
            })?;
        let file: ClassifierFile = serde_json::from_str(json).map_err(|e| Error::Checkpoint {
            path: weights.clone(),
            reason: format!("invalid configuration: {e}"),
        })?;
        if file.format_version > 1 {
            return Err(Error::Checkpoint {
                path: weights.clone(),
                reason: format!(
                    "written in format {} by fm {}; this fm reads format 1",
                    file.format_version, file.fm_version
                ),
            });
        }
        // Before the configuration sizes anything: a file can say anything.
        file.config.validate().map_err(|e| match e {
            Error::Config { field, reason } => {
                Error::Config { field, reason: format!("{reason} (in {})", weights.display()) }
            }
            other => other,
        })?;
        let tensors = candle::safetensors::load_buffer(&bytes, device).map_err(|e| corrupt(&e))?;
        check_parameters(&weights, &file.config.parameter_shapes(), &tensors)?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let model = ImageClassifier::new(&file.config, vb)?;
        Ok(LoadedClassifier { model, training: file.training, weights, bytes })
    }
}

/// The weights of the pinned MNIST classifier ([`ImageClassifier::pinned_mnist`]):
/// `fm classifier train --data mnist:DIR` with its defaults (6 epochs, seed 0),
/// trained once on a 2-core AMD EPYC Zen 5 (AVX-512) and shipped with fm.
pub const PINNED_MNIST: &[u8] = include_bytes!("../data/mnist-classifier.safetensors");

/// How messages name the pinned classifier.
pub const PINNED_MNIST_NAME: &str =
    "fm's pinned MNIST classifier (fm-models/data/mnist-classifier.safetensors)";

/// The SHA-256 of [`PINNED_MNIST`], as `fm frechet` prints it.
pub const PINNED_MNIST_SHA256: &str = "c57fc7352348a807844279e47df009667a92cd7c91c27e4457dfca55a693f2ca";

/// A 3×3 convolution with zero padding 1 (PyTorch's `Conv2d(c_in, c_out, 3,
/// padding=1)`), as the U-Net's im2col custom op and one matrix product:
/// candle's own `conv2d` back-propagates to its input through a naive
/// `conv_transpose2d` on the CPU, many times slower than this GEMM.
///
/// # Shapes
/// - `x`: `(b, c_in, h, w)`; `weight`: `(c_out, c_in, 3, 3)`; `bias`: `(c_out,)`
/// - returns `(b, c_out, h, w)`
fn conv3x3(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let c_out = weight.dim(0)?;
    // (b, c·9, h·w), rows in the order of the weight's (c_in, ky, kx) flattening.
    let cols = crate::ops::im2col(x, 3, 1)?;
    let out = weight.reshape((c_out, c * 9))?.broadcast_matmul(&cols)?;
    Ok(out.broadcast_add(&bias.reshape((1, c_out, 1))?)?.reshape((b, c_out, h, w))?)
}

/// The header of a classifier's weights file (and its `classifier.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ClassifierFile {
    format_version: u32,
    fm_version: String,
    config: ClassifierConfig,
    #[serde(default)]
    training: serde_json::Value,
}

/// A classifier read from disk by [`ImageClassifier::load`].
#[derive(Debug, Clone)]
pub struct LoadedClassifier {
    /// The network, with plain (non-trainable) weights.
    pub model: ImageClassifier,
    /// The training record saved with it.
    pub training: serde_json::Value,
    /// The weights file it came from.
    pub weights: PathBuf,
    /// The weights file's bytes (for a checksum).
    pub bytes: Vec<u8>,
}

//! Image datasets: MNIST / Fashion-MNIST (IDX), CIFAR-10 (binary), sklearn
//! digits (CSV), PNG folders, and their batching.
//!
//! Every loader returns an [`ImageSet`] of 8-bit-style integer pixels with
//! their number of levels (256, or 17 for sklearn's digits), so that scaling
//! to `[−1, 1]` and uniform dequantization are exact and the bits-per-dimension
//! bookkeeping knows the quantization.

mod batch;
mod cifar;
mod digits;
#[cfg(feature = "hub")]
pub mod fetch;
mod folder;
#[cfg(feature = "hub-datasets")]
mod hub;
mod idx;

pub use batch::{ImageBatch, ImageBatcher};
pub use cifar::{load_cifar10_dir, parse_cifar10_batch};
pub use digits::{load_digits_csv, parse_digits};
pub use folder::load_png_folder;
#[cfg(feature = "hub-datasets")]
pub use hub::{hub_repo, load_hub};

pub use idx::{load_mnist_dir, parse_idx, read_idx, IdxArray};

use candle::{Device, Tensor};

use crate::{Error, Result};

/// The on-disk format of an image dataset (the prefix of `--data FORMAT:PATH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageFormat {
    /// MNIST IDX files in a directory.
    Mnist,
    /// Fashion-MNIST IDX files in a directory.
    FashionMnist,
    /// CIFAR-10 binary batches in a directory.
    Cifar10,
    /// scikit-learn's digits CSV (optionally gzip).
    Digits,
    /// A folder of PNGs (sub-folders are classes).
    Png,
}

impl ImageFormat {
    /// The prefixes accepted by [`std::str::FromStr`].
    pub const NAMES: &'static [&'static str] = &["mnist", "fashion-mnist", "cifar10", "digits", "png"];

    /// Loads a split. Datasets without a test split (digits, PNG folders) use the
    /// first 90 % of a seeded shuffle for training and the rest for testing.
    ///
    /// The path `hub` (`--data mnist:hub`) loads MNIST, Fashion-MNIST or
    /// CIFAR-10 from its parquet copy on the Hugging Face Hub through
    /// candle-datasets, with the cargo feature `hub-datasets` (an error
    /// saying so without it); write `./hub` for a directory of that name.
    pub fn load(&self, path: &std::path::Path, split: Split) -> Result<ImageSet> {
        if path.as_os_str() == "hub" {
            #[cfg(feature = "hub-datasets")]
            return hub::load_hub(*self, split);
            #[cfg(not(feature = "hub-datasets"))]
            return Err(Error::InvalidParameter(format!(
                "{self}:hub loads the Hub copy through candle-datasets, which this build leaves out: \
                 build with the cargo feature `hub-datasets` (or write ./hub for a directory named hub)"
            )));
        }
        match self {
            ImageFormat::Mnist | ImageFormat::FashionMnist => load_mnist_dir(path, split),
            ImageFormat::Cifar10 => load_cifar10_dir(path, split),
            ImageFormat::Digits | ImageFormat::Png => {
                let all = if *self == ImageFormat::Digits {
                    load_digits_csv(path)?
                } else {
                    load_png_folder(path)?
                };
                Ok(all.split_holdout(split, 0.1, 0x5eed))
            }
        }
    }
}

impl std::str::FromStr for ImageFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "mnist" => ImageFormat::Mnist,
            "fashion-mnist" | "fashion_mnist" | "fashionmnist" => ImageFormat::FashionMnist,
            "cifar10" | "cifar-10" => ImageFormat::Cifar10,
            "digits" => ImageFormat::Digits,
            "png" => ImageFormat::Png,
            _ => return Err(Error::UnknownDataSpec { spec: s.to_string() }),
        })
    }
}

impl std::fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = *self as usize;
        f.write_str(Self::NAMES[i])
    }
}

/// Which part of a dataset to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training split.
    Train,
    /// The test split.
    Test,
}

/// A set of images with integer pixels, row-major `(n, channels, height, width)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    /// Pixels, `n · channels · height · width` values in `0..levels`.
    pub pixels: Vec<u8>,
    /// Class labels, one per image, if the dataset has them.
    pub labels: Option<Vec<u8>>,
    /// Number of images.
    pub n: usize,
    /// Channels (1 or 3).
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// Number of pixel levels: 256 for 8-bit images, 17 for sklearn's digits (0..=16).
    pub levels: u16,
    /// Where the images came from (for messages and checkpoints).
    pub source: String,
}

impl ImageSet {
    /// Values per image, `channels · height · width`.
    pub fn dim(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The shape of one image, `(channels, height, width)`.
    pub fn image_shape(&self) -> (usize, usize, usize) {
        (self.channels, self.height, self.width)
    }

    /// Checks the invariants; loaders call it, and so may users who build one by hand.
    pub fn validate(&self) -> Result<()> {
        if self.pixels.len() != self.n * self.dim() {
            return Err(Error::Shape(format!(
                "{}: {} pixels cannot be {} images of {}×{}×{}",
                self.source,
                self.pixels.len(),
                self.n,
                self.channels,
                self.height,
                self.width
            )));
        }
        if let Some(l) = &self.labels {
            if l.len() != self.n {
                return Err(Error::Shape(format!(
                    "{}: {} labels for {} images",
                    self.source,
                    l.len(),
                    self.n
                )));
            }
        }
        if self.levels < 2 || self.levels > 256 {
            return Err(Error::InvalidParameter(format!("{}: {} pixel levels", self.source, self.levels)));
        }
        if let Some(p) = self.pixels.iter().find(|&&p| p as u16 >= self.levels) {
            return Err(Error::Shape(format!(
                "{}: pixel value {p} is not below {}",
                self.source, self.levels
            )));
        }
        Ok(())
    }

    /// A seeded train/test split of a set without one: a permutation from `seed`,
    /// the last `fraction` of it is the test split.
    pub fn split_holdout(&self, split: Split, fraction: f64, seed: u64) -> Self {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut order: Vec<usize> = (0..self.n).collect();
        for i in (1..self.n).rev() {
            let j = rng.random_range(0..=i);
            order.swap(i, j);
        }
        let n_test = ((self.n as f64 * fraction).round() as usize).min(self.n.saturating_sub(1));
        let chosen = match split {
            Split::Train => &order[..self.n - n_test],
            Split::Test => &order[self.n - n_test..],
        };
        let d = self.dim();
        Self {
            pixels: chosen.iter().flat_map(|&i| self.pixels[i * d..(i + 1) * d].iter().copied()).collect(),
            labels: self.labels.as_ref().map(|l| chosen.iter().map(|&i| l[i]).collect()),
            n: chosen.len(),
            source: format!("{} ({:?} split)", self.source, split),
            ..self.clone()
        }
    }

    /// The first `n` images (all if fewer).
    pub fn take(mut self, n: usize) -> Self {
        let n = n.min(self.n);
        self.pixels.truncate(n * self.dim());
        if let Some(l) = &mut self.labels {
            l.truncate(n);
        }
        self.n = n;
        self
    }

    /// Average-pools by an integer `factor` (e.g. 28×28 → 14×14 with 2), rounding to the nearest level.
    pub fn downsample(&self, factor: usize) -> Result<Self> {
        if factor == 0 || !self.height.is_multiple_of(factor) || !self.width.is_multiple_of(factor) {
            return Err(Error::InvalidParameter(format!(
                "cannot downsample {}×{} images by {factor}",
                self.height, self.width
            )));
        }
        let (h, w) = (self.height / factor, self.width / factor);
        let mut pixels = Vec::with_capacity(self.n * self.channels * h * w);
        let area = (factor * factor) as u32;
        for img in self.pixels.chunks_exact(self.dim()) {
            for c in 0..self.channels {
                let plane = &img[c * self.height * self.width..(c + 1) * self.height * self.width];
                for i in 0..h {
                    for j in 0..w {
                        let mut sum = 0u32;
                        for di in 0..factor {
                            for dj in 0..factor {
                                sum += plane[(i * factor + di) * self.width + j * factor + dj] as u32;
                            }
                        }
                        pixels.push(((sum + area / 2) / area) as u8);
                    }
                }
            }
        }
        Ok(Self {
            pixels,
            height: h,
            width: w,
            source: format!("{} (÷{factor})", self.source),
            ..self.clone()
        })
    }

    /// Images `indices` scaled to `[−1, 1]` as an `f32` tensor `(b, c, h, w)`:
    /// `x = 2 (p + ½) / levels − 1` (the centre of each pixel's bin).
    pub fn tensor(&self, indices: &[usize], device: &Device) -> Result<Tensor> {
        let d = self.dim();
        let scale = 2.0 / self.levels as f32;
        let mut v = Vec::with_capacity(indices.len() * d);
        for &i in indices {
            let img = self.pixels.get(i * d..(i + 1) * d).ok_or_else(|| {
                Error::InvalidParameter(format!("image index {i} out of range for {} images", self.n))
            })?;
            v.extend(img.iter().map(|&p| (p as f32 + 0.5) * scale - 1.0));
        }
        Ok(Tensor::from_vec(v, (indices.len(), self.channels, self.height, self.width), device)?)
    }
}

/// Reads a whole file, decompressing it if it is gzip (by its magic bytes, whatever its name).
pub(crate) fn read_maybe_gz(path: &std::path::Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|io| Error::Io { path: path.to_path_buf(), io })?;
    maybe_gunzip(raw, path)
}

/// Decompresses `raw` if it starts with the gzip magic bytes (`path` only names it in errors).
pub fn maybe_gunzip(raw: Vec<u8>, path: &std::path::Path) -> Result<Vec<u8>> {
    use std::io::Read;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut out).map_err(|e| Error::Format {
            path: path.to_path_buf(),
            reason: format!("corrupt or truncated gzip data ({e})"),
        })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

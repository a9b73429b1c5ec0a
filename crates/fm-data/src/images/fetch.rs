//! Datasets a user can get: `fm data fetch mnist|fashion-mnist|cifar10|digits`.
//!
//! MNIST, Fashion-MNIST and CIFAR-10 come from their dataset repositories on
//! the Hugging Face Hub, through the Hub cache ([`HubClient`]: `HF_ENDPOINT`,
//! `HF_HUB_CACHE`, offline mode): one parquet file per split whose rows hold a
//! PNG-encoded image and its label. Every image is decoded and checked (size,
//! channels, label range, the number of images and of each class), then the
//! sets are written in the formats fm-data reads — MNIST's IDX files, CIFAR-10's
//! binary batches — so `--data mnist:DIR` works offline from then on. For
//! MNIST and Fashion-MNIST the files written are also compared, by SHA-256,
//! with the original IDX files (same images, same order).
//!
//! sklearn's digits (57 kB) ship with fm (`data/digits.csv.gz`, see its
//! NOTICE), so `digits` needs no network.
//!
//! Parquet is read with the `parquet` crate's row API (no Arrow), snappy
//! decompression only: the Hub's parquet files use it.

use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use sha2::{Digest, Sha256};

use super::{ImageFormat, ImageSet, Split};
use crate::hub::{HubClient, HubOptions};
use crate::{Error, Result};

/// sklearn's digits, as shipped with fm.
const DIGITS_CSV_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

/// A dataset `fetch` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchName {
    /// MNIST (Hub: `ylecun/mnist`).
    Mnist,
    /// Fashion-MNIST (Hub: `zalando-datasets/fashion_mnist`).
    FashionMnist,
    /// CIFAR-10 (Hub: `uoft-cs/cifar10`).
    Cifar10,
    /// sklearn's 8×8 digits (shipped with fm).
    Digits,
}

impl FetchName {
    /// The names `fm data fetch` takes.
    pub const NAMES: &'static [&'static str] = &["mnist", "fashion-mnist", "cifar10", "digits"];

    /// Parses a name (case-insensitive).
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name.trim().to_ascii_lowercase().as_str() {
            "mnist" => Self::Mnist,
            "fashion-mnist" | "fashion_mnist" | "fashionmnist" => Self::FashionMnist,
            "cifar10" | "cifar-10" => Self::Cifar10,
            "digits" | "sklearn-digits" => Self::Digits,
            other => {
                return Err(Error::InvalidParameter(format!(
                    "unknown dataset `{other}`; valid: {}",
                    Self::NAMES.join(", ")
                )))
            }
        })
    }

    /// The canonical name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Mnist => "mnist",
            Self::FashionMnist => "fashion-mnist",
            Self::Cifar10 => "cifar10",
            Self::Digits => "digits",
        }
    }

    /// Where the dataset is on the Hub (`None` for the digits, which ship with fm).
    pub fn source(&self) -> Option<HubDataset> {
        let mnist_like = |repo: &'static str, folder: &'static str, counts, sha256| HubDataset {
            repo,
            revision: "main",
            files: [
                format!("{folder}/train-00000-of-00001.parquet"),
                format!("{folder}/test-00000-of-00001.parquet"),
            ],
            shape: (1, 28, 28),
            counts,
            sha256,
        };
        match self {
            Self::Mnist => Some(mnist_like("ylecun/mnist", "mnist", MNIST_COUNTS, Some(MNIST_SHA256))),
            Self::FashionMnist => Some(mnist_like(
                "zalando-datasets/fashion_mnist",
                "fashion_mnist",
                FASHION_COUNTS,
                Some(FASHION_SHA256),
            )),
            Self::Cifar10 => Some(HubDataset {
                repo: "uoft-cs/cifar10",
                revision: "main",
                files: [
                    "plain_text/train-00000-of-00001.parquet".into(),
                    "plain_text/test-00000-of-00001.parquet".into(),
                ],
                shape: (3, 32, 32),
                counts: CIFAR_COUNTS,
                sha256: None,
            }),
            Self::Digits => None,
        }
    }
}

/// Images per class of the training and the test split.
pub type ClassCounts = ([usize; 10], [usize; 10]);

const MNIST_COUNTS: ClassCounts = (
    [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
);
const FASHION_COUNTS: ClassCounts = ([6000; 10], [1000; 10]);
const CIFAR_COUNTS: ClassCounts = ([5000; 10], [1000; 10]);
const DIGITS_COUNTS: [usize; 10] = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180];

/// SHA-256 of the original IDX files (uncompressed), by file name.
pub type FileHashes = &'static [(&'static str, &'static str)];

const MNIST_SHA256: FileHashes = &[
    ("train-images-idx3-ubyte", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    ("train-labels-idx1-ubyte", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    ("t10k-images-idx3-ubyte", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    ("t10k-labels-idx1-ubyte", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
];
const FASHION_SHA256: FileHashes = &[
    ("train-images-idx3-ubyte", "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    ("train-labels-idx1-ubyte", "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    ("t10k-images-idx3-ubyte", "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    ("t10k-labels-idx1-ubyte", "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
];

/// A dataset repository on the Hub: one parquet file per split.
#[derive(Debug, Clone, PartialEq)]
pub struct HubDataset {
    /// `OWNER/NAME` of the dataset repository.
    pub repo: &'static str,
    /// The revision (branch, tag or commit).
    pub revision: &'static str,
    /// The training and the test split's file.
    pub files: [String; 2],
    /// `(channels, height, width)` of every image.
    pub shape: (usize, usize, usize),
    /// Images per class, training and test split.
    pub counts: ClassCounts,
    /// SHA-256 of the original files, when the written ones should match them.
    pub sha256: Option<FileHashes>,
}

/// What [`fetch`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    /// The `--data` spec that reads it, e.g. `mnist:data/mnist`.
    pub spec: String,
    /// The files written.
    pub files: Vec<PathBuf>,
    /// Training and test images.
    pub counts: (usize, usize),
    /// `Some(true)` when every written file matched the original's SHA-256,
    /// `Some(false)` when one did not (the images still passed every check),
    /// `None` when there is no original to compare with.
    pub matches_original: Option<bool>,
}

/// Fetches `name` into the folder `dir` (created), through the Hub cache that
/// `hub` describes (the digits need no Hub); `progress` hears what is being done.
///
/// # Errors
/// [`Error::Hub`] when a download fails; [`Error::Format`] naming the file when
/// a parquet file, an image or a count is not what the dataset should hold;
/// [`Error::Io`] when `dir` cannot be written.
pub fn fetch(
    name: FetchName,
    dir: &Path,
    hub: &HubOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Fetched> {
    std::fs::create_dir_all(dir).map_err(|io| Error::Io { path: dir.to_path_buf(), io })?;
    let Some(source) = name.source() else { return write_digits(dir) };
    let format = match name {
        FetchName::Cifar10 => ImageFormat::Cifar10,
        FetchName::FashionMnist => ImageFormat::FashionMnist,
        _ => ImageFormat::Mnist,
    };
    fetch_from(&source, format, dir, hub, progress)
}

/// [`fetch`] of any dataset repository laid out as the Hub's image datasets
/// are (`source`), written in `format` (MNIST's IDX files or CIFAR-10's batches).
pub fn fetch_from(
    source: &HubDataset,
    format: ImageFormat,
    dir: &Path,
    hub: &HubOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Fetched> {
    std::fs::create_dir_all(dir).map_err(|io| Error::Io { path: dir.to_path_buf(), io })?;
    let client = HubClient::new(hub)?;
    let mut sets = Vec::with_capacity(2);
    for (file, split, counts) in [
        (&source.files[0], Split::Train, &source.counts.0),
        (&source.files[1], Split::Test, &source.counts.1),
    ] {
        progress(&format!("downloading {}/{file} (or reading it from the Hub cache)", source.repo));
        let path = client.fetch_dataset_file(source.repo, source.revision, file)?;
        progress(&format!("decoding {}", path.display()));
        let set = read_parquet_images(&path, source.shape)?;
        check_counts(&set, counts, &path)?;
        sets.push((split, set));
    }
    let mut files = Vec::new();
    for (split, set) in &sets {
        files.extend(match format {
            ImageFormat::Cifar10 => write_cifar10(dir, *split, set)?,
            _ => write_idx(dir, *split, set)?,
        });
    }
    let matches_original = source.sha256.map(|hashes| {
        hashes.iter().all(|(file, want)| {
            std::fs::read(dir.join(file)).map(|b| hex(&Sha256::digest(&b)) == *want).unwrap_or(false)
        })
    });
    Ok(Fetched {
        spec: format!("{format}:{}", dir.display()),
        files,
        counts: (sets[0].1.n, sets[1].1.n),
        matches_original,
    })
}

/// Writes the digits shipped with fm, after parsing them back.
fn write_digits(dir: &Path) -> Result<Fetched> {
    std::fs::create_dir_all(dir).map_err(|io| Error::Io { path: dir.to_path_buf(), io })?;
    let path = dir.join("digits.csv.gz");
    write_file(&path, DIGITS_CSV_GZ)?;
    let set = super::load_digits_csv(&path)?;
    let mut counts = [0usize; 10];
    set.labels.iter().flatten().for_each(|&l| counts[usize::from(l).min(9)] += 1);
    if set.n != 1797 || counts != DIGITS_COUNTS {
        return Err(Error::Format { path, reason: format!("{} images, classes {counts:?}", set.n) });
    }
    let matches = hex(&Sha256::digest(DIGITS_CSV_GZ)) == DIGITS_SHA256;
    Ok(Fetched {
        spec: format!("digits:{}", path.display()),
        files: vec![path],
        counts: (set.n, 0),
        matches_original: Some(matches),
    })
}

const DIGITS_SHA256: &str = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a parquet file whose rows hold a PNG-encoded image (a column that is
/// a group with a `bytes` field, or a binary column) and an integer `label`,
/// into an [`ImageSet`] of `shape` images.
pub fn read_parquet_images(path: &Path, shape: (usize, usize, usize)) -> Result<ImageSet> {
    let bad = |reason: String| Error::Format { path: path.to_path_buf(), reason };
    let file = File::open(path).map_err(|io| Error::Io { path: path.to_path_buf(), io })?;
    let reader =
        SerializedFileReader::new(file).map_err(|e| bad(format!("not a readable parquet file ({e})")))?;
    let rows = reader.get_row_iter(None).map_err(|e| bad(format!("cannot read its rows ({e})")))?;
    let (c, h, w) = shape;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (i, row) in rows.enumerate() {
        let row = row.map_err(|e| bad(format!("row {i}: {e}")))?;
        let (mut png, mut label) = (None, None);
        for (name, field) in row.get_column_iter() {
            match field {
                Field::Group(g) => {
                    png = png.or_else(|| {
                        g.get_column_iter().find_map(|(n, f)| match (n.as_str(), f) {
                            ("bytes", Field::Bytes(b)) => Some(b.data().to_vec()),
                            _ => None,
                        })
                    })
                }
                Field::Bytes(b) if name != "label" => png = png.or_else(|| Some(b.data().to_vec())),
                Field::Long(v) if name == "label" => label = Some(*v),
                Field::Int(v) if name == "label" => label = Some(i64::from(*v)),
                _ => {}
            }
        }
        let png = png.ok_or_else(|| bad(format!("row {i}: no image bytes")))?;
        let label = label.ok_or_else(|| bad(format!("row {i}: no integer `label` column")))?;
        if !(0..10).contains(&label) {
            return Err(bad(format!("row {i}: label {label} is not in 0..=9")));
        }
        let image = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
            .map_err(|e| bad(format!("row {i}: the image is not a readable PNG ({e})")))?;
        if (image.width() as usize, image.height() as usize) != (w, h) {
            return Err(bad(format!(
                "row {i}: a {}×{} image, expected {w}×{h}",
                image.width(),
                image.height()
            )));
        }
        match c {
            1 => pixels.extend_from_slice(image.to_luma8().as_raw()),
            _ => {
                // Channel-major, as CIFAR-10's binary batches and fm's tensors hold it.
                let rgb = image.to_rgb8();
                let raw = rgb.as_raw();
                for ch in 0..3 {
                    pixels.extend(raw.iter().skip(ch).step_by(3));
                }
            }
        }
        labels.push(label as u8);
    }
    let set = ImageSet {
        n: labels.len(),
        pixels,
        labels: Some(labels),
        channels: c,
        height: h,
        width: w,
        levels: 256,
        source: path.display().to_string(),
    };
    set.validate()?;
    Ok(set)
}

/// Fails unless `set` has `counts[k]` images of every class `k`.
fn check_counts(set: &ImageSet, counts: &[usize; 10], path: &Path) -> Result<()> {
    let mut found = [0usize; 10];
    set.labels.iter().flatten().for_each(|&l| found[usize::from(l).min(9)] += 1);
    if found != *counts {
        return Err(Error::Format {
            path: path.to_path_buf(),
            reason: format!(
                "{} images with classes {found:?}; the dataset has {} with {counts:?} (an incomplete or different file)",
                set.n,
                counts.iter().sum::<usize>()
            ),
        });
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp-fetch");
    let io = |io| Error::Io { path: path.to_path_buf(), io };
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// MNIST's two IDX files of one split (uncompressed, the original layout).
fn write_idx(dir: &Path, split: Split, set: &ImageSet) -> Result<Vec<PathBuf>> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let mut images = vec![0u8, 0, 8, 3];
    for d in [set.n, set.height, set.width] {
        images.extend_from_slice(&(d as u32).to_be_bytes());
    }
    images.extend_from_slice(&set.pixels);
    let mut labels = vec![0u8, 0, 8, 1];
    labels.extend_from_slice(&(set.n as u32).to_be_bytes());
    labels.extend_from_slice(set.labels.as_deref().unwrap_or_default());
    let (pi, pl) =
        (dir.join(format!("{prefix}-images-idx3-ubyte")), dir.join(format!("{prefix}-labels-idx1-ubyte")));
    write_file(&pi, &images)?;
    write_file(&pl, &labels)?;
    Ok(vec![pi, pl])
}

/// CIFAR-10's binary batches of one split: `data_batch_1.bin` … `data_batch_5.bin`
/// (10,000 images each) or `test_batch.bin`; each record is the label then
/// the 3,072 channel-major pixels.
fn write_cifar10(dir: &Path, split: Split, set: &ImageSet) -> Result<Vec<PathBuf>> {
    let d = set.dim();
    let labels = set.labels.as_deref().unwrap_or_default();
    let record = |i: usize| std::iter::once(labels[i]).chain(set.pixels[i * d..(i + 1) * d].iter().copied());
    let batches: Vec<(String, std::ops::Range<usize>)> = match split {
        Split::Test => vec![("test_batch.bin".into(), 0..set.n)],
        Split::Train => {
            let per = set.n.div_ceil(5);
            (0..5)
                .map(|b| (format!("data_batch_{}.bin", b + 1), b * per..((b + 1) * per).min(set.n)))
                .collect()
        }
    };
    let mut out = Vec::new();
    for (name, range) in batches {
        let bytes: Vec<u8> = range.flat_map(record).collect();
        let path = dir.join(name);
        write_file(&path, &bytes)?;
        out.push(path);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_digits_are_shipped() -> Result<()> {
        assert_eq!(FetchName::parse("Fashion-MNIST")?, FetchName::FashionMnist);
        let e = FetchName::parse("imagenet").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("mnist, fashion-mnist, cifar10, digits"), "{e}");
        assert_eq!(hex(&Sha256::digest(DIGITS_CSV_GZ)), DIGITS_SHA256);
        let dir = std::env::temp_dir().join(format!("fm-fetch-digits-{}", std::process::id()));
        let f = write_digits(&dir)?;
        assert_eq!((f.counts, f.matches_original), ((1797, 0), Some(true)));
        assert!(f.spec.starts_with("digits:") && f.spec.ends_with("digits.csv.gz"));
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}

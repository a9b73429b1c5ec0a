//! MNIST, Fashion-MNIST and CIFAR-10 from their parquet copies on the Hugging
//! Face Hub, through candle-datasets (cargo feature `hub-datasets`):
//! `--data mnist:hub`, `fashion-mnist:hub`, `cifar10:hub`.
//!
//! The repositories are candle-datasets' (`ylecun/mnist`,
//! `zalando-datasets/fashion_mnist`, `cifar10`, revision
//! `refs/convert/parquet`). Files come from the standard Hub cache when they
//! are there (no request at all) and are downloaded into it otherwise; the
//! endpoint and cache follow `HF_ENDPOINT`, `HF_HOME` and `HF_HUB_CACHE`.

use std::panic::{catch_unwind, AssertUnwindSafe};

use candle::DType;

use super::{ImageFormat, ImageSet, Split};
use crate::{Error, Result};

/// The path that selects the Hub copy of a dataset (`mnist:hub`).
pub const HUB_PATH: &str = "hub";

/// The Hub repository candle-datasets reads `format` from.
pub fn hub_repo(format: ImageFormat) -> Option<&'static str> {
    match format {
        ImageFormat::Mnist => Some("ylecun/mnist"),
        ImageFormat::FashionMnist => Some("zalando-datasets/fashion_mnist"),
        ImageFormat::Cifar10 => Some("cifar10"),
        ImageFormat::Digits | ImageFormat::Png => None,
    }
}

/// Loads one split of `format` from the Hub (or the Hub cache) through
/// candle-datasets, as 8-bit pixels with labels.
///
/// # Errors
/// [`Error::Hub`] naming the repository when the download, the parquet
/// files or an image in them fail (candle-datasets panics on an undecodable
/// image; that is caught and reported here); [`Error::InvalidParameter`] for
/// a format with no Hub copy.
pub fn load_hub(format: ImageFormat, split: Split) -> Result<ImageSet> {
    let repo = hub_repo(format).ok_or_else(|| {
        Error::InvalidParameter(format!("{format}:{HUB_PATH}: {format} has no Hub copy; give a path"))
    })?;
    let fail = |reason: String| Error::Hub {
        repo: format!("datasets/{repo}"),
        revision: "refs/convert/parquet".into(),
        file: "*.parquet".into(),
        reason,
    };
    let loaded = catch_unwind(AssertUnwindSafe(|| match format {
        ImageFormat::FashionMnist => candle_datasets::vision::fashion_mnist::load(),
        ImageFormat::Cifar10 => candle_datasets::vision::cifar::load(),
        _ => candle_datasets::vision::mnist::load(),
    }))
    .map_err(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown cause".into());
        fail(format!("a parquet row could not be decoded ({what})"))
    })?
    .map_err(|e| fail(e.to_string()))?;
    let (images, labels) = match split {
        Split::Train => (loaded.train_images, loaded.train_labels),
        Split::Test => (loaded.test_images, loaded.test_labels),
    };
    let n = images.dim(0)?;
    let (channels, height, width) = match (format, images.dims()) {
        (ImageFormat::Cifar10, _) => (3, 32, 32),
        _ => (1, 28, 28),
    };
    if images.elem_count() != n * channels * height * width || labels.dims() != [n] {
        return Err(fail(format!(
            "images {:?} and labels {:?} do not hold {n} images of {channels}×{height}×{width}",
            images.dims(),
            labels.dims()
        )));
    }
    // candle-datasets scales the bytes to [0, 1]; undo it exactly.
    let scaled = images.flatten_all()?.to_dtype(DType::F32)?.affine(255.0, 0.0)?.round()?;
    let pixels: Vec<u8> = scaled.to_vec1::<f32>()?.into_iter().map(|v| v.clamp(0.0, 255.0) as u8).collect();
    let labels: Vec<u8> =
        labels.to_dtype(DType::U32)?.to_vec1::<u32>()?.into_iter().map(|l| l as u8).collect();
    Ok(ImageSet {
        pixels,
        labels: Some(labels),
        n,
        channels,
        height,
        width,
        levels: 256,
        source: format!("hf://datasets/{repo} ({})", if split == Split::Train { "train" } else { "test" }),
    })
}

//! `mnist:hub` and `fashion-mnist:hub` through candle-datasets, against a Hub
//! cache this test fills itself with parquet files it writes (the layout
//! hf-hub reads: `refs/<revision>` holding a commit, files under
//! `snapshots/<commit>/`). The endpoint points at a closed port, so any
//! attempt to download would fail the test.
//!
//! One test function: it sets the process environment (`HF_HUB_CACHE`,
//! `HF_ENDPOINT`) that candle-datasets' client reads.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fm_data::images::{ImageFormat, Split};
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A deterministic 28×28 image, different for each `k`.
fn image(k: usize) -> Vec<u8> {
    (0..784).map(|p| ((p * 7 + k * 31) % 256) as u8).collect()
}

fn png(pixels: &[u8]) -> anyhow::Result<Vec<u8>> {
    let img = image::GrayImage::from_raw(28, 28, pixels.to_vec()).ok_or_else(|| anyhow::anyhow!("size"))?;
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageOutputFormat::Png)?;
    Ok(out.into_inner())
}

/// A parquet file with the Hub's image-dataset schema: `image {bytes}`, `label`.
fn write_parquet(path: &Path, images: &[Vec<u8>], labels: &[i64]) -> anyhow::Result<()> {
    std::fs::create_dir_all(path.parent().ok_or_else(|| anyhow::anyhow!("no parent"))?)?;
    let schema = Arc::new(parse_message_type(
        "message schema { required group image { required binary bytes; } required int64 label; }",
    )?);
    let mut writer = SerializedFileWriter::new(
        std::fs::File::create(path)?,
        schema,
        Arc::new(WriterProperties::builder().build()),
    )?;
    let mut group = writer.next_row_group()?;
    let bytes: Vec<ByteArray> = images.iter().map(|b| ByteArray::from(b.clone())).collect();
    let mut column = group.next_column()?.ok_or_else(|| anyhow::anyhow!("no bytes column"))?;
    column.typed::<ByteArrayType>().write_batch(&bytes, None, None)?;
    column.close()?;
    let mut column = group.next_column()?.ok_or_else(|| anyhow::anyhow!("no label column"))?;
    column.typed::<Int64Type>().write_batch(labels, None, None)?;
    column.close()?;
    group.close()?;
    writer.close()?;
    Ok(())
}

/// One parquet file of a fixture: its path in the repository, PNG images, labels.
type ParquetFile<'a> = (&'a str, Vec<Vec<u8>>, Vec<i64>);

/// Fills `cache` with dataset `repo` (`OWNER/NAME`) at `refs/convert/parquet`.
fn fill(cache: &Path, repo: &str, files: &[ParquetFile]) -> anyhow::Result<PathBuf> {
    let folder = cache.join(format!("datasets--{}", repo.replace('/', "--")));
    let refs = folder.join("refs/refs/convert");
    std::fs::create_dir_all(&refs)?;
    std::fs::write(refs.join("parquet"), COMMIT)?;
    for (file, images, labels) in files {
        write_parquet(&folder.join("snapshots").join(COMMIT).join(file), images, labels)?;
    }
    Ok(folder)
}

#[test]
fn hub_copies_load_from_the_cache_through_candle_datasets() -> anyhow::Result<()> {
    let root = std::env::temp_dir().join(format!("fm-hub-datasets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let cache = root.join("hub");
    // SAFETY of the environment change: this binary's only test sets it first.
    std::env::set_var("HF_HUB_CACHE", &cache);
    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");

    let train: Vec<Vec<u8>> = (0..5).map(image).collect();
    let test: Vec<Vec<u8>> = (5..8).map(image).collect();
    let encode = |set: &[Vec<u8>]| -> anyhow::Result<Vec<Vec<u8>>> { set.iter().map(|p| png(p)).collect() };
    fill(
        &cache,
        "ylecun/mnist",
        &[
            ("mnist/train/0000.parquet", encode(&train)?, vec![3, 1, 4, 1, 5]),
            ("mnist/test/0000.parquet", encode(&test)?, vec![9, 2, 6]),
        ],
    )?;
    let hub = Path::new("hub");
    let set = ImageFormat::Mnist.load(hub, Split::Train)?;
    assert_eq!((set.n, set.channels, set.height, set.width, set.levels), (5, 1, 28, 28, 256));
    assert_eq!(set.pixels, train.concat(), "pixels survive PNG → parquet → candle-datasets exactly");
    assert_eq!(set.labels.as_deref(), Some(&[3u8, 1, 4, 1, 5][..]));
    assert!(set.source.contains("ylecun/mnist"), "{}", set.source);
    let set = ImageFormat::Mnist.load(hub, Split::Test)?;
    assert_eq!(set.pixels, test.concat());
    assert_eq!(set.labels.as_deref(), Some(&[9u8, 2, 6][..]));

    // A row whose image is not a PNG: an error naming the repository, not a panic.
    let mut broken = encode(&test)?;
    broken[1] = b"not a png".to_vec();
    fill(
        &cache,
        "zalando-datasets/fashion_mnist",
        &[
            ("fashion_mnist/train/0000.parquet", encode(&train)?, vec![0, 1, 2, 3, 4]),
            ("fashion_mnist/test/0000.parquet", broken, vec![0, 1, 2]),
        ],
    )?;
    let e = ImageFormat::FashionMnist.load(hub, Split::Train).expect_err("corrupt row").to_string();
    assert!(e.contains("zalando-datasets/fashion_mnist") && e.contains("decoded"), "{e}");

    // A format without a Hub copy says so.
    let e = ImageFormat::Digits.load(hub, Split::Train).expect_err("no hub copy").to_string();
    assert!(e.contains("no Hub copy"), "{e}");
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

//! `images::fetch` against a loopback Hub serving parquet files the test
//! writes (PNG-encoded images and labels, as the Hub's image datasets hold
//! them): what is written reads back as the same images; bad files and
//! incomplete sets are named errors; offline with an empty cache makes no request.

#[path = "support/hub_server.rs"]
mod hub_server;
#[path = "support/parquet_images.rs"]
mod parquet_images;

use std::path::{Path, PathBuf};

use fm_data::hub::HubOptions;
use fm_data::images::fetch::{fetch_from, read_parquet_images, HubDataset};
use fm_data::images::{load_cifar10_dir, load_mnist_dir, ImageFormat, Split};
use fm_data::Error;
use hub_server::HubServer;
use parquet_images::{parquet_file, png};

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fm-fetch-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Image `i` of a set: `c` channels of `side × side`, values from `i`, channel and position.
fn pixels(i: usize, c: usize, side: usize) -> Vec<u8> {
    (0..c * side * side).map(|k| ((i * 37 + k * 11 + (k / (side * side)) * 50) % 256) as u8).collect()
}

/// `per_class` images of each class 0..9 (class `i % 10`) and their parquet file.
fn split_file(per_class: usize, c: usize, side: usize, offset: usize) -> (Vec<Vec<u8>>, Vec<u8>) {
    let n = 10 * per_class;
    let px: Vec<Vec<u8>> = (0..n).map(|i| pixels(i + offset, c, side)).collect();
    let pngs: Vec<Vec<u8>> = px.iter().map(|p| png(p, c, side)).collect();
    let labels: Vec<i64> = (0..n).map(|i| (i % 10) as i64).collect();
    (px, parquet_file(&pngs, &labels))
}

fn source(shape: (usize, usize, usize), train: usize, test: usize) -> HubDataset {
    HubDataset {
        repo: "me/digits-like",
        revision: "main",
        files: ["data/train.parquet".into(), "data/test.parquet".into()],
        shape,
        counts: ([train; 10], [test; 10]),
        sha256: None,
    }
}

fn hub(server: &HubServer, cache: &Path, offline: bool) -> HubOptions {
    HubOptions {
        endpoint: Some(server.endpoint.clone()),
        cache_dir: Some(cache.to_path_buf()),
        token: None,
        offline,
        max_attempts: Some(1),
    }
}

#[test]
fn mnist_like_sets_are_written_as_idx_and_read_back_unchanged() -> anyhow::Result<()> {
    let dir = temp("mnist");
    let server = HubServer::start()?;
    let (train_px, train) = split_file(4, 1, 12, 0);
    let (test_px, test) = split_file(2, 1, 12, 1000);
    server.put("datasets/me/digits-like", "main", "data/train.parquet", train, None);
    server.put("datasets/me/digits-like", "main", "data/test.parquet", test, None);
    let opts = hub(&server, &dir.join("cache"), false);
    let out = dir.join("mnist");
    let mut said = Vec::new();
    let f = fetch_from(&source((1, 12, 12), 4, 2), ImageFormat::Mnist, &out, &opts, &mut |s| {
        said.push(s.to_string())
    })?;
    assert_eq!((f.counts, f.files.len(), f.matches_original), ((40, 20), 4, None));
    assert_eq!(f.spec, format!("mnist:{}", out.display()));
    assert!(said.iter().any(|s| s.contains("data/train.parquet")), "{said:?}");
    let back = load_mnist_dir(&out, Split::Train)?;
    assert_eq!(back.pixels, train_px.concat());
    assert_eq!(back.labels.as_deref(), Some(&(0..40).map(|i| (i % 10) as u8).collect::<Vec<_>>()[..]));
    assert_eq!(load_mnist_dir(&out, Split::Test)?.pixels, test_px.concat());
    // Offline: from the cache, with no request at all.
    let before = server.requests().len();
    let again = dir.join("again");
    fetch_from(
        &source((1, 12, 12), 4, 2),
        ImageFormat::Mnist,
        &again,
        &hub(&server, &dir.join("cache"), true),
        &mut |_| (),
    )?;
    assert_eq!(server.requests().len(), before, "offline fetch made requests");
    assert_eq!(
        std::fs::read(again.join("train-images-idx3-ubyte"))?,
        std::fs::read(out.join("train-images-idx3-ubyte"))?
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn rgb_sets_are_written_as_cifar10_batches() -> anyhow::Result<()> {
    let dir = temp("cifar");
    let server = HubServer::start()?;
    let (train_px, train) = split_file(5, 3, 8, 0);
    let (test_px, test) = split_file(1, 3, 8, 500);
    server.put("datasets/me/digits-like", "main", "data/train.parquet", train, None);
    server.put("datasets/me/digits-like", "main", "data/test.parquet", test, None);
    let out = dir.join("cifar");
    let f = fetch_from(
        &source((3, 8, 8), 5, 1),
        ImageFormat::Cifar10,
        &out,
        &hub(&server, &dir.join("c"), false),
        &mut |_| (),
    )?;
    assert_eq!(f.files.len(), 6, "5 training batches and the test batch");
    // The loader expects 32×32 CIFAR images; read the records directly.
    let bytes: Vec<u8> = (1..=5)
        .flat_map(|b| std::fs::read(out.join(format!("data_batch_{b}.bin"))).unwrap_or_default())
        .collect();
    let records: Vec<&[u8]> = bytes.chunks(1 + 3 * 64).collect();
    assert_eq!(records.len(), 50);
    for (i, r) in records.iter().enumerate() {
        assert_eq!((r[0], &r[1..]), ((i % 10) as u8, &train_px[i][..]), "record {i}");
    }
    let test_bytes = std::fs::read(out.join("test_batch.bin"))?;
    assert_eq!(&test_bytes[1..1 + 192], &test_px[0][..]);
    assert!(load_cifar10_dir(&out, Split::Test).is_err(), "8×8 images are not CIFAR-10's 32×32");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn incomplete_or_broken_files_are_named_errors() -> anyhow::Result<()> {
    let dir = temp("bad");
    let server = HubServer::start()?;
    let (_, train) = split_file(4, 1, 12, 0);
    let (_, test) = split_file(2, 1, 12, 0);
    server.put("datasets/me/digits-like", "main", "data/train.parquet", train.clone(), None);
    server.put("datasets/me/digits-like", "main", "data/test.parquet", test, None);
    let opts = hub(&server, &dir.join("cache"), false);
    // The class counts say 5 per class: the served file has 4.
    let e =
        fetch_from(&source((1, 12, 12), 5, 2), ImageFormat::Mnist, &dir.join("a"), &opts, &mut |_| ()).err();
    let msg = e.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("train.parquet") && msg.contains("40 images"), "{msg}");
    // Images of another size.
    let e =
        fetch_from(&source((1, 28, 28), 4, 2), ImageFormat::Mnist, &dir.join("b"), &opts, &mut |_| ()).err();
    let msg = e.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("12×12") && msg.contains("28×28"), "{msg}");
    // Not parquet at all.
    let junk = dir.join("junk.parquet");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(&junk, b"PAR1 this is not parquet")?;
    let e = read_parquet_images(&junk, (1, 12, 12)).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("junk.parquet") && e.contains("parquet"), "{e}");
    // A label outside 0..=9, and a row whose image is not a PNG.
    let px = pixels(0, 1, 12);
    let bad_label = dir.join("label.parquet");
    std::fs::write(&bad_label, parquet_file(&[png(&px, 1, 12)], &[12]))?;
    let e = read_parquet_images(&bad_label, (1, 12, 12)).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("label 12"), "{e}");
    let not_png = dir.join("notpng.parquet");
    std::fs::write(&not_png, parquet_file(&[b"GIF89a".to_vec()], &[1]))?;
    let e = read_parquet_images(&not_png, (1, 12, 12)).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("row 0") && e.contains("PNG"), "{e}");
    // Offline with an empty cache: a Hub error, no request.
    let before = server.requests().len();
    let e = fetch_from(
        &source((1, 12, 12), 4, 2),
        ImageFormat::Mnist,
        &dir.join("c"),
        &hub(&server, &dir.join("empty"), true),
        &mut |_| (),
    )
    .err();
    assert!(matches!(e, Some(Error::Hub { .. })), "{e:?}");
    assert_eq!(server.requests().len(), before);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

//! Image loaders on fixtures the tests write (the real datasets: fm-cli's `datasets_tests`).

use std::io::Write;
use std::path::{Path, PathBuf};

use candle::Device;
use fm_data::images::{
    load_cifar10_dir, load_digits_csv, load_mnist_dir, load_png_folder, read_idx, ImageBatcher, ImageSet,
    Split,
};
use fm_data::Error;
use rand::SeedableRng;

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fm-images-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

fn write_mnist(dir: &Path, prefix: &str, n: usize, compress: bool) {
    let pixels: Vec<u8> = (0..n * 4 * 4).map(|i| (i * 7 % 256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let (img, lbl) = (idx_bytes(&[n as u32, 4, 4], &pixels), idx_bytes(&[n as u32], &labels));
    let (img, lbl, ext) = if compress { (gz(&img), gz(&lbl), ".gz") } else { (img, lbl, "") };
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), img).expect("write");
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), lbl).expect("write");
}

#[test]
fn mnist_idx_plain_and_gzip() -> anyhow::Result<()> {
    for compress in [false, true] {
        let dir = temp(if compress { "idx-gz" } else { "idx" });
        write_mnist(&dir, "train", 5, compress);
        write_mnist(&dir, "t10k", 3, compress);
        let train = load_mnist_dir(&dir, Split::Train)?;
        assert_eq!((train.n, train.channels, train.height, train.width, train.levels), (5, 1, 4, 4, 256));
        assert_eq!(train.pixels[..3], [0, 7, 14]);
        assert_eq!(train.labels.as_deref(), Some(&[0u8, 1, 2, 3, 4][..]));
        assert_eq!(load_mnist_dir(&dir, Split::Test)?.n, 3);
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}

#[test]
fn corrupt_idx_files_name_the_file_and_the_problem() {
    let dir = temp("idx-bad");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("short", vec![0, 0], "too short"),
        ("magic", vec![1, 2, 8, 1, 0, 0, 0, 1, 5], "magic"),
        ("type", vec![0, 0, 0x0d, 1, 0, 0, 0, 1, 5], "0x0d"),
        ("header", vec![0, 0, 8, 3, 0, 0, 0, 1], "truncated"),
        ("body", idx_bytes(&[10, 4, 4], &[0; 100]), "truncated"),
        ("long", idx_bytes(&[1, 2], &[0; 3]), "need 2"),
        ("gzip", vec![0x1f, 0x8b, 8, 0, 1, 2, 3], "gzip"),
    ];
    for (name, bytes, needle) in cases {
        let p = dir.join(name);
        std::fs::write(&p, bytes).expect("write");
        let e = read_idx(&p).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(name) && e.contains(needle), "{name}: {e}");
    }
    let e = load_mnist_dir(&dir, Split::Train).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("train-images-idx3-ubyte"), "{e}");
    // Labels that do not match the images.
    write_mnist(&dir, "train", 5, false);
    std::fs::write(dir.join("train-labels-idx1-ubyte"), idx_bytes(&[4], &[0; 4])).expect("write");
    let e = load_mnist_dir(&dir, Split::Train).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("labels") && e.contains("[5]"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn cifar10_binary_records() -> anyhow::Result<()> {
    let dir = temp("cifar");
    let record = |label: u8, fill: u8| {
        let mut r = vec![label];
        r.extend(std::iter::repeat_n(fill, 3072));
        r
    };
    for i in 1..=5 {
        let bytes: Vec<u8> = [record(i, 10 * i), record(9, 0)].concat();
        std::fs::write(dir.join(format!("data_batch_{i}.bin")), bytes)?;
    }
    std::fs::write(dir.join("test_batch.bin"), record(3, 200))?;
    let train = load_cifar10_dir(&dir, Split::Train)?;
    assert_eq!((train.n, train.channels, train.height, train.width), (10, 3, 32, 32));
    assert_eq!(train.labels.as_deref().map(|l| l[..4].to_vec()), Some(vec![1, 9, 2, 9]));
    assert_eq!(train.pixels[3072 * 2], 20);
    assert_eq!(load_cifar10_dir(&dir, Split::Test)?.n, 1);
    // Truncated file and a bad label.
    std::fs::write(dir.join("test_batch.bin"), &record(3, 1)[..3000])?;
    let e = load_cifar10_dir(&dir, Split::Test).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("test_batch.bin") && e.contains("3073"), "{e}");
    std::fs::write(dir.join("test_batch.bin"), record(12, 1))?;
    let e = load_cifar10_dir(&dir, Split::Test).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("label 12"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[test]
fn digits_csv_and_its_errors() -> anyhow::Result<()> {
    let dir = temp("digits");
    let row = |v: u8, label: u8| {
        let mut cells: Vec<String> = (0..64).map(|_| v.to_string()).collect();
        cells.push(label.to_string());
        cells.join(",")
    };
    let text = format!("{}\n{}\n", row(16, 3), row(0, 7));
    std::fs::write(dir.join("digits.csv.gz"), gz(text.as_bytes()))?;
    let set = load_digits_csv(&dir.join("digits.csv.gz"))?;
    assert_eq!((set.n, set.height, set.width, set.levels), (2, 8, 8, 17));
    assert_eq!(set.labels.as_deref(), Some(&[3u8, 7][..]));
    for (name, text, needle) in [
        ("few.csv", "1,2,3\n".to_string(), "3 cells"),
        ("big.csv", format!("{}\n", row(17, 1)), "above 16"),
        ("word.csv", format!("{}\n", row(1, 1).replacen('1', "x", 1)), "not an integer"),
        ("empty.csv", String::new(), "no data rows"),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, text)?;
        let e = load_digits_csv(&p).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(name) && e.contains(needle), "{name}: {e}");
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[test]
fn png_folders_with_and_without_classes() -> anyhow::Result<()> {
    let dir = temp("png");
    for (class, shade) in [("cat", 10u8), ("dog", 200u8)] {
        std::fs::create_dir_all(dir.join(class))?;
        for k in 0..2 {
            let img = image::GrayImage::from_pixel(5, 3, image::Luma([shade + k]));
            img.save(dir.join(class).join(format!("{k}.png")))?;
        }
    }
    let set = load_png_folder(&dir)?;
    assert_eq!((set.n, set.channels, set.height, set.width), (4, 1, 3, 5));
    assert_eq!(set.labels.as_deref(), Some(&[0u8, 0, 1, 1][..]));
    assert_eq!(set.pixels[15], 11);
    // RGB, planar after loading; a size mismatch names the file.
    let rgb = temp("png-rgb");
    image::RgbImage::from_pixel(2, 2, image::Rgb([1, 2, 3])).save(rgb.join("a.png"))?;
    let s = load_png_folder(&rgb)?;
    assert_eq!((s.channels, s.pixels.clone()), (3, vec![1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]));
    image::RgbImage::from_pixel(3, 2, image::Rgb([1, 2, 3])).save(rgb.join("b.png"))?;
    let e = load_png_folder(&rgb).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("b.png") && e.contains("3×2"), "{e}");
    std::fs::write(rgb.join("b.png"), b"not a png")?;
    let e = load_png_folder(&rgb).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("b.png") && e.contains("decode"), "{e}");
    assert!(matches!(load_png_folder(&rgb.join("nope")), Err(Error::Io { .. })));
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(rgb);
    Ok(())
}

fn ramp() -> ImageSet {
    ImageSet {
        pixels: (0..6 * 4).map(|i| (i * 10) as u8).collect(),
        labels: Some(vec![0, 1, 2, 3, 4, 5]),
        n: 6,
        channels: 1,
        height: 2,
        width: 2,
        levels: 256,
        source: "ramp".into(),
    }
}

#[test]
fn batches_cover_each_epoch_and_resume() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut b = ImageBatcher::new(ramp(), 3)?;
    let mut seen: Vec<u32> = Vec::new();
    for _ in 0..3 {
        seen.extend(
            b.next_batch(2, &mut rng, &dev)?
                .labels
                .map(|l| l.to_vec1::<u32>())
                .transpose()?
                .unwrap_or_default(),
        );
    }
    seen.sort_unstable();
    assert_eq!(seen, vec![0, 1, 2, 3, 4, 5], "one epoch is a permutation");
    // Resume from a saved state: the same next batches.
    b.next_batch(4, &mut rng, &dev)?;
    let state = b.state();
    let next = b.next_batch(5, &mut rng, &dev)?.labels.map(|l| l.to_vec1::<u32>()).transpose()?;
    let mut c = ImageBatcher::new(ramp(), 3)?;
    c.set_state(state.0, state.1)?;
    let again = c.next_batch(5, &mut rng, &dev)?.labels.map(|l| l.to_vec1::<u32>()).transpose()?;
    assert_eq!(next, again);
    Ok(())
}

#[test]
fn scaling_flips_and_dequantization() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let plain = ImageBatcher::new(ramp(), 0)?;
    let x = plain.batch_of(&[1], &mut rng, &dev)?.images.flatten_all()?.to_vec1::<f32>()?;
    // Pixels 40, 50, 60, 70 at their bin centres: 2 (p + 0.5) / 256 − 1.
    let expect: Vec<f32> =
        [40.0f32, 50.0, 60.0, 70.0].iter().map(|p| 2.0 * (p + 0.5) / 256.0 - 1.0).collect();
    assert_eq!(x, expect);
    let flips = ImageBatcher::new(ramp(), 0)?.with_hflip(true);
    let mut flipped = 0;
    for _ in 0..40 {
        let v = flips.batch_of(&[1], &mut rng, &dev)?.images.flatten_all()?.to_vec1::<f32>()?;
        if v[0] > v[1] {
            flipped += 1;
            assert_eq!(v, vec![expect[1], expect[0], expect[3], expect[2]]);
        }
    }
    assert!((8..=32).contains(&flipped), "about half are flipped: {flipped}/40");
    let deq = ImageBatcher::new(ramp(), 0)?.with_dequantization(true);
    let v = deq.batch_of(&[1], &mut rng, &dev)?.images.flatten_all()?.to_vec1::<f32>()?;
    for (got, p) in v.iter().zip([40.0f32, 50.0, 60.0, 70.0]) {
        let (lo, hi) = (2.0 * p / 256.0 - 1.0, 2.0 * (p + 1.0) / 256.0 - 1.0);
        assert!(*got >= lo && *got < hi, "{got} in its bin [{lo}, {hi})");
    }
    let small = ramp().downsample(2)?;
    assert_eq!((small.height, small.width, small.pixels[0]), (1, 1, 15));
    Ok(())
}

#[cfg(not(feature = "hub-datasets"))]
#[test]
fn hub_copies_need_the_hub_datasets_feature() {
    // `mnist:hub` in a build without candle-datasets names the feature to enable.
    let e = fm_data::images::ImageFormat::Mnist
        .load(Path::new("hub"), Split::Train)
        .expect_err("no feature")
        .to_string();
    assert!(e.contains("hub-datasets") && e.contains("mnist:hub"), "{e}");
}

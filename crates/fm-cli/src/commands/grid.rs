//! `fm plot grid`: image samples side by side, one row per `.npy` file.

use anyhow::{bail, Context, Result};
use fm_pipeline::ImageShape;

use crate::cli::GridArgs;

/// The shape of one image of an array of `shape`: its own `(n, c, h, w)`, the
/// given `C,H,W`, or one square channel.
pub fn image_shape(file_shape: &[usize], given: Option<&[usize]>, what: &str) -> Result<ImageShape> {
    let per_row: usize = file_shape.iter().skip(1).product();
    let shape = match (given, file_shape) {
        (Some(&[c, h, w]), _) => ImageShape { channels: c, height: h, width: w },
        (Some(other), _) => bail!("--shape: expected C,H,W (e.g. 1,28,28), got {other:?}"),
        (None, &[_, c, h, w]) => ImageShape { channels: c, height: h, width: w },
        (None, &[_, d]) => {
            let side = (d as f64).sqrt().round() as usize;
            if side * side != d {
                bail!("{what}: rows of {d} values are not square images; pass --shape C,H,W");
            }
            ImageShape { channels: 1, height: side, width: side }
        }
        (None, other) => bail!("{what}: shape {other:?} holds no images (want (n, c·h·w) or (n, c, h, w))"),
    };
    if shape.channels * shape.height * shape.width != per_row || per_row == 0 {
        bail!(
            "{what}: rows of {per_row} values are not {}×{}×{} images",
            shape.channels,
            shape.height,
            shape.width
        );
    }
    Ok(shape)
}

pub fn run(a: GridArgs) -> Result<()> {
    if a.cols == 0 {
        bail!("--cols must be at least 1");
    }
    let mut shape: Option<ImageShape> = None;
    let mut values = Vec::new();
    for path in &a.samples {
        let what = format!("--samples {}", path.display());
        let arr = fm_data::npy::read(path).with_context(|| what.clone())?;
        let s = image_shape(&arr.shape, a.shape.as_deref(), &what)?;
        if shape.is_some_and(|first| first != s) {
            bail!("{what}: its images are {}×{}×{}, the first file's differ", s.channels, s.height, s.width);
        }
        shape = Some(s);
        let d = s.channels * s.height * s.width;
        if arr.shape[0] < a.cols {
            bail!("{what}: has {} images, fewer than --cols {}", arr.shape[0], a.cols);
        }
        values.extend_from_slice(&arr.data[..a.cols * d]);
    }
    let shape = shape.context("--samples: no files")?;
    crate::plot_images::image_grid(&a.out, &values, shape, a.cols, a.zoom)?;
    println!("grid: {} ({} rows of {})", a.out.display(), a.samples.len(), a.cols);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_come_from_the_file_the_flag_or_a_square() -> Result<()> {
        let s = |c, h, w| ImageShape { channels: c, height: h, width: w };
        assert_eq!(image_shape(&[5, 1, 28, 28], None, "f")?, s(1, 28, 28));
        assert_eq!(image_shape(&[5, 784], None, "f")?, s(1, 28, 28));
        assert_eq!(image_shape(&[5, 3072], Some(&[3, 32, 32]), "f")?, s(3, 32, 32));
        let err = |shape: &[usize], given: Option<&[usize]>| {
            image_shape(shape, given, "f.npy").unwrap_err().to_string()
        };
        assert!(err(&[5, 3072], None).contains("--shape"));
        assert!(err(&[5, 784], Some(&[3, 28, 28])).contains("f.npy"));
        assert!(err(&[5, 784], Some(&[28, 28])).contains("C,H,W"));
        assert!(err(&[784], None).contains("f.npy"));
        Ok(())
    }
}

//! The datasets of fm-data: 2-D toys, a CSV point cloud with its standardization,
//! and (given a path) scikit-learn's 8×8 digits as image batches.
//!
//! ```text
//! cargo run --release -p fm-data --example datasets [-- --quick] [--csv FILE.csv] [--digits digits.csv.gz]
//! ```
//! Without `--csv` it reads a small embedded table (Old Faithful's first rows).
use std::path::{Path, PathBuf};

use candle::Device;
use fm_data::images::{ImageBatcher, ImageFormat, Split};
use fm_data::{load_csv_columns, parse_csv_columns, PointCloud, Standardizer, Toy2d};
use rand::SeedableRng;

const FAITHFUL_HEAD: &str = "\"\",\"eruptions\",\"waiting\"\n\"1\",3.6,79\n\"2\",1.8,54\n\"3\",3.333,74\n\"4\",2.283,62\n\"5\",4.533,85\n\"6\",2.883,55\n";

/// What the example measures (its test checks these).
pub struct Report {
    /// `(toy, per-coordinate mean, per-coordinate std)` of the sampled toys.
    pub toys: Vec<(&'static str, [f64; 2], [f64; 2])>,
    /// Largest |mean| and |std − 1| of the standardized CSV columns.
    pub standardized_error: f64,
    /// Largest error of standardizing and back.
    pub round_trip_error: f64,
    /// Shape `(b, c, h, w)` and value range of one digits batch, when a path was given.
    pub digits_batch: Option<(Vec<usize>, f32, f32)>,
}

fn mean_std(data: &[f64], dim: usize, j: usize) -> (f64, f64) {
    let col: Vec<f64> = data.iter().skip(j).step_by(dim).copied().collect();
    let m = col.iter().sum::<f64>() / col.len() as f64;
    (m, (col.iter().map(|v| (v - m).powi(2)).sum::<f64>() / col.len() as f64).sqrt())
}

/// Runs the tour; `csv` and `digits` are optional files.
pub fn run(quick: bool, csv: Option<&Path>, digits: Option<&Path>) -> anyhow::Result<Report> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let n = if quick { 2000 } else { 20_000 };
    let mut toys = Vec::new();
    for toy in Toy2d::ALL {
        let x: Vec<f64> = toy.sample(n, &mut rng).into_iter().map(f64::from).collect();
        let ((m0, s0), (m1, s1)) = (mean_std(&x, 2, 0), mean_std(&x, 2, 1));
        println!("{:<13} mean ({m0:6.3}, {m1:6.3})  std ({s0:6.3}, {s1:6.3})", toy.name());
        toys.push((toy.name(), [m0, m1], [s0, s1]));
    }

    let cols = vec!["eruptions".to_string(), "waiting".to_string()];
    let cloud: PointCloud = match csv {
        Some(p) => load_csv_columns(p, &cols)?,
        None => parse_csv_columns(FAITHFUL_HEAD, Path::new("faithful-head.csv"), &cols)?,
    };
    let st = Standardizer::fit(&cloud)?;
    let z = st.transform_cloud(&cloud)?;
    let mut standardized_error: f64 = 0.0;
    for j in 0..z.dim {
        let (m, s) = mean_std(&z.data, z.dim, j);
        standardized_error = standardized_error.max(m.abs()).max((s - 1.0).abs());
    }
    let mut back = z.data.clone();
    st.inverse_slice(&mut back)?;
    let round_trip_error = back.iter().zip(&cloud.data).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    println!(
        "{}: {} points × {:?}; standardized (|mean|, |std − 1| ≤ {standardized_error:.1e}), log|det J| = {:.4}",
        cloud.source.display(), cloud.n, cloud.columns, st.log_abs_det_jacobian()
    );

    let digits_batch = match digits {
        Some(p) => {
            let set = ImageFormat::Digits.load(p, Split::Train)?;
            println!("{}: {} images {:?}, {} levels", p.display(), set.n, set.image_shape(), set.levels);
            let mut batches = ImageBatcher::new(set, 0)?.with_dequantization(true);
            let b = batches.next_batch(64, &mut rng, &Device::Cpu)?;
            let v = b.images.flatten_all()?.to_vec1::<f32>()?;
            let (lo, hi) = v.iter().fold((f32::MAX, f32::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
            println!("one batch: {:?} in [{lo:.3}, {hi:.3}]", b.images.dims());
            Some((b.images.dims().to_vec(), lo, hi))
        }
        None => None,
    };
    Ok(Report { toys, standardized_error, round_trip_error, digits_batch })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let after =
        |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).map(PathBuf::from);
    run(args.iter().any(|a| a == "--quick"), after("--csv").as_deref(), after("--digits").as_deref())?;
    Ok(())
}

//! Integration tests for `fm-data`.

use std::f64::consts::PI;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{ensure, Result};
use candle::{DType, Device, Tensor};
use fm_data::{
    load_csv_columns, parse_csv_columns, sample_rows, DataSpec, Error, FiniteSet, Sampler, Standardizer,
    Toy2d,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn points(flat: &[f32]) -> Vec<[f64; 2]> {
    flat.chunks_exact(2).map(|p| [f64::from(p[0]), f64::from(p[1])]).collect()
}

/// Checks that `got` and `want` are the same multiset of points up to `tol`.
fn ensure_same_points(got: &[[f64; 2]], want: &[[f64; 2]], tol: f64) -> Result<()> {
    ensure!(got.len() == want.len(), "{} vs {} points", got.len(), want.len());
    let mut unused: Vec<[f64; 2]> = got.to_vec();
    for w in want {
        let pos = unused.iter().position(|g| (g[0] - w[0]).abs() < tol && (g[1] - w[1]).abs() < tol);
        match pos {
            Some(i) => {
                unused.swap_remove(i);
            }
            None => anyhow::bail!("expected point {w:?} not found"),
        }
    }
    Ok(())
}

/// Writes `contents` to a fresh file in the temp dir and returns its path.
fn fixture(name: &str, contents: &str) -> Result<PathBuf> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let k = COUNTER.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("fm-data-test-{}-{k}-{name}", std::process::id()));
    std::fs::write(&path, contents)?;
    Ok(path)
}

fn cols(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
    (m, var.sqrt())
}

// ---------------------------------------------------------------- toys ----

/// sklearn's make_moons at noise 0, computed independently.
fn sklearn_moons(n: usize) -> Vec<[f64; 2]> {
    let lin = |m: usize| -> Vec<f64> {
        (0..m).map(|i| if m == 1 { 0.0 } else { PI * i as f64 / (m - 1) as f64 }).collect()
    };
    let n_out = n / 2;
    let n_in = n - n_out;
    let mut v: Vec<[f64; 2]> = lin(n_out).iter().map(|t| [t.cos(), t.sin()]).collect();
    v.extend(lin(n_in).iter().map(|t| [1.0 - t.cos(), 1.0 - t.sin() - 0.5]));
    v
}

#[test]
fn moons_noiseless_match_sklearn_exactly() -> Result<()> {
    let toy = Toy2d::Moons { noise: 0.0 };
    for n in [0usize, 1, 2, 3, 7, 10, 101, 500] {
        let got = toy.sample(n, &mut rng(1));
        ensure!(got.len() == 2 * n, "n={n}: {} values", got.len());
        ensure_same_points(&points(&got), &sklearn_moons(n), 1e-6)
            .map_err(|e| anyhow::anyhow!("n={n}: {e}"))?;
    }
    // n = 7: 3 points on the outer arc at 0, π/2, π and 4 on the inner arc at
    // 0, π/3, 2π/3, π.
    let pts = points(&toy.sample(7, &mut rng(2)));
    let outer: Vec<_> = pts.iter().filter(|p| (p[0].hypot(p[1]) - 1.0).abs() < 1e-6).collect();
    let inner: Vec<_> = pts
        .iter()
        .filter(|p| ((p[0] - 1.0).hypot(p[1] - 0.5) - 1.0).abs() < 1e-6 && p[1] <= 0.5 + 1e-6)
        .collect();
    ensure!(outer.len() == 3 && inner.len() == 4, "{pts:?}");
    ensure!(pts.iter().any(|p| (p[0] - 0.0).abs() < 1e-6 && (p[1] - 1.0).abs() < 1e-6));
    ensure!(pts.iter().any(|p| (p[0] - 0.5).abs() < 1e-6 && (p[1] - (0.5 - (PI / 3.0).sin())).abs() < 1e-6));
    // Rows are shuffled: not in generation order for a larger n.
    let flat = points(&toy.sample(100, &mut rng(3)));
    ensure!(flat != sklearn_moons(100), "rows were not shuffled");
    Ok(())
}

/// Distance from p to the noiseless moons (the two arcs, end points included).
fn moons_distance(p: [f64; 2]) -> f64 {
    let arc = |c: [f64; 2], upper: bool, ends: [[f64; 2]; 2]| {
        let (dx, dy) = (p[0] - c[0], p[1] - c[1]);
        if (upper && dy >= 0.0) || (!upper && dy <= 0.0) {
            (dx.hypot(dy) - 1.0).abs()
        } else {
            ends.iter().map(|e| (p[0] - e[0]).hypot(p[1] - e[1])).fold(f64::INFINITY, f64::min)
        }
    };
    let outer = arc([0.0, 0.0], true, [[1.0, 0.0], [-1.0, 0.0]]);
    let inner = arc([1.0, 0.5], false, [[0.0, 0.5], [2.0, 0.5]]);
    outer.min(inner)
}

#[test]
fn moons_noise_has_the_stated_scale() -> Result<()> {
    let n = 20_000;
    let pts = points(&Toy2d::Moons { noise: 0.05 }.sample(n, &mut rng(4)));
    let rms = (pts.iter().map(|&p| moons_distance(p).powi(2)).sum::<f64>() / n as f64).sqrt();
    ensure!((rms - 0.05).abs() < 0.0015, "rms distance {rms}");
    // The default noise is 0.05 too.
    ensure!(Toy2d::ALL[0] == Toy2d::Moons { noise: 0.05 });
    Ok(())
}

#[test]
fn eight_gaussians_match_torchcfm() -> Result<()> {
    let n = 80_000;
    let pts = points(&Toy2d::EightGaussians.sample(n, &mut rng(5)));
    let centers: Vec<[f64; 2]> = (0..8)
        .map(|k| {
            let a = f64::from(k) * PI / 4.0;
            [5.0 * a.cos(), 5.0 * a.sin()]
        })
        .collect();
    let mut sums = [[0.0f64; 2]; 8];
    let mut counts = [0usize; 8];
    let (mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0);
    for p in &pts {
        let k = (0..8)
            .min_by(|&a, &b| {
                let da = (p[0] - centers[a][0]).hypot(p[1] - centers[a][1]);
                let db = (p[0] - centers[b][0]).hypot(p[1] - centers[b][1]);
                da.total_cmp(&db)
            })
            .unwrap_or(0);
        counts[k] += 1;
        sums[k][0] += p[0];
        sums[k][1] += p[1];
        let (dx, dy) = (p[0] - centers[k][0], p[1] - centers[k][1]);
        sxx += dx * dx;
        syy += dy * dy;
        sxy += dx * dy;
    }
    let std = 0.1f64.sqrt().sqrt();
    for k in 0..8 {
        let frac = counts[k] as f64 / n as f64;
        ensure!((frac - 0.125).abs() < 0.006, "component {k}: weight {frac}");
        let se = std / (counts[k] as f64).sqrt();
        for d in 0..2 {
            let m = sums[k][d] / counts[k] as f64;
            ensure!(
                (m - centers[k][d]).abs() < 5.0 * se,
                "component {k} mean[{d}] = {m}, want {}",
                centers[k][d]
            );
        }
    }
    let var = 0.1f64.sqrt(); // covariance √0.1·I
    let (vx, vy, cxy) = (sxx / n as f64, syy / n as f64, sxy / n as f64);
    let tol = 5.0 * var * (2.0 / n as f64).sqrt();
    ensure!((vx - var).abs() < tol, "var x {vx} vs {var}");
    ensure!((vy - var).abs() < tol, "var y {vy} vs {var}");
    ensure!(cxy.abs() < tol, "cov xy {cxy}");
    Ok(())
}

#[test]
fn checkerboard_density_and_symmetry() -> Result<()> {
    let n = 320_000;
    let pts = points(&Toy2d::Checkerboard.sample(n, &mut rng(6)));
    // 1×1 bins over [-4, 4]²: 8×8 bins, the occupied ones form 2×2 blocks.
    let mut bins = [[0usize; 8]; 8];
    for p in &pts {
        ensure!((-4.0..4.0).contains(&p[0]) && (-4.0..4.0).contains(&p[1]), "{p:?} outside [-4,4)²");
        let i = ((p[0] + 4.0).floor() as usize).min(7);
        let j = ((p[1] + 4.0).floor() as usize).min(7);
        bins[i][j] += 1;
    }
    let expected = n as f64 / 32.0; // density 1/32 × area 1
    let tol = 5.0 * expected.sqrt();
    for (i, row) in bins.iter().enumerate() {
        for (j, &count) in row.iter().enumerate() {
            // 2×2 cell (i/2, j/2) is occupied iff its index sum is even.
            let occupied = (i / 2 + j / 2) % 2 == 0;
            if occupied {
                let density = count as f64 / n as f64;
                ensure!((count as f64 - expected).abs() < tol, "bin ({i},{j}): density {density}, want 1/32");
            } else {
                ensure!(count == 0, "bin ({i},{j}) should be empty, has {count}");
            }
        }
    }
    // 8 occupied 2×2 cells, each with probability 1/8.
    let occupied_cells = (0..4)
        .flat_map(|a| (0..4).map(move |b| (a, b)))
        .filter(|&(a, b)| (0..2).any(|di| (0..2).any(|dj| bins[2 * a + di][2 * b + dj] > 0)))
        .count();
    ensure!(occupied_cells == 8, "{occupied_cells} occupied cells");
    // Symmetry under (x, y) → (−x, −y) and (x, y) → (y, x).
    for i in 0..8 {
        for j in 0..8 {
            let (a, b, c) = (bins[i][j] as f64, bins[7 - i][7 - j] as f64, bins[j][i] as f64);
            ensure!((a - b).abs() < tol && (a - c).abs() < tol, "asymmetric at ({i},{j})");
        }
    }
    let xs: Vec<f64> = pts.iter().map(|p| p[0]).collect();
    let ys: Vec<f64> = pts.iter().map(|p| p[1]).collect();
    let ((mx, sx), (my, _)) = (mean_std(&xs), mean_std(&ys));
    ensure!(mx.abs() < 0.02 && my.abs() < 0.02, "means {mx} {my}");
    // Uniform on [-4, 4]: std 8/√12.
    ensure!((sx - 8.0 / 12f64.sqrt()).abs() < 0.02, "std {sx}");
    Ok(())
}

#[test]
fn circles_spirals_swissroll_geometry_without_noise() -> Result<()> {
    // Circles: radii 3 and 1.5 (×3 of sklearn's 1 and 0.5), ⌊n/2⌋ outer.
    let pts = points(&Toy2d::Circles { noise: 0.0 }.sample(11, &mut rng(7)));
    let outer = pts.iter().filter(|p| (p[0].hypot(p[1]) - 3.0).abs() < 1e-5).count();
    let inner = pts.iter().filter(|p| (p[0].hypot(p[1]) - 1.5).abs() < 1e-5).count();
    ensure!(outer == 5 && inner == 6, "outer {outer}, inner {inner}");
    ensure!(pts.iter().any(|p| (p[0] - 3.0).abs() < 1e-6 && p[1].abs() < 1e-6));
    // Circles noise is applied before the ×3 scaling.
    let pts = points(&Toy2d::Circles { noise: 0.08 }.sample(20_000, &mut rng(8)));
    let res: Vec<f64> = pts
        .iter()
        .map(|p| {
            let r = p[0].hypot(p[1]);
            if (r - 3.0).abs() < (r - 1.5).abs() {
                r - 3.0
            } else {
                r - 1.5
            }
        })
        .collect();
    let (_, s) = mean_std(&res);
    ensure!((s - 0.24).abs() < 0.01, "circles radial std {s}");

    // Two spirals: with U' = U'' = 0 the arms are ±(−cos t·t, sin t·t)/3 with
    // t ∈ [0, 3π]; without noise the points are within 0.5/3 of that curve
    // and the two arms are point reflections of each other in distribution.
    let pts = points(&Toy2d::TwoSpirals { noise: 0.0 }.sample(4_001, &mut rng(9)));
    let max_r = pts.iter().map(|p| p[0].hypot(p[1])).fold(0.0, f64::max);
    ensure!(max_r <= (3.0 * PI + 0.5f64.hypot(0.5)) / 3.0 + 1e-6, "max radius {max_r}");
    let (mx, _) = mean_std(&pts.iter().map(|p| p[0]).collect::<Vec<_>>());
    let (my, _) = mean_std(&pts.iter().map(|p| p[1]).collect::<Vec<_>>());
    ensure!(mx.abs() < 0.1 && my.abs() < 0.1, "spirals mean ({mx}, {my})");

    // Swiss roll: 5·|p| = t ∈ [1.5π, 4.5π] and the angle of p is t (mod 2π).
    let pts = points(&Toy2d::SwissRoll { noise: 0.0 }.sample(1_000, &mut rng(10)));
    for p in &pts {
        let t = 5.0 * p[0].hypot(p[1]);
        ensure!((1.5 * PI - 1e-4..=4.5 * PI + 1e-4).contains(&t), "t = {t}");
        let (c, s) = (t.cos() * t / 5.0, t.sin() * t / 5.0);
        ensure!((c - p[0]).abs() < 1e-4 && (s - p[1]).abs() < 1e-4, "{p:?}");
    }
    Ok(())
}

#[test]
fn every_toy_is_finite_reproducible_and_seed_dependent() -> Result<()> {
    for toy in Toy2d::ALL {
        for n in [0usize, 1, 7, 256] {
            let a = toy.sample(n, &mut rng(11));
            ensure!(a.len() == 2 * n, "{toy}: n={n} gave {} values", a.len());
            ensure!(a.iter().all(|v| v.is_finite()), "{toy}: non-finite");
        }
        let a = toy.sample(256, &mut rng(11));
        let b = toy.sample(256, &mut rng(11));
        let c = toy.sample(256, &mut rng(12));
        ensure!(a == b, "{toy}: not reproducible");
        ensure!(a != c, "{toy}: same output for different seeds");

        let t = toy.sample_tensor(33, &mut rng(11), &Device::Cpu)?;
        ensure!(t.dims() == [33, 2] && t.dtype() == DType::F32, "{toy}: {t:?}");
        let flat: Vec<f32> = t.flatten_all()?.to_vec1()?;
        ensure!(flat == toy.sample(33, &mut rng(11)), "{toy}: tensor differs");
    }
    Ok(())
}

#[test]
fn toy_names_noise_and_validation() -> Result<()> {
    for (name, toy) in Toy2d::NAMES.iter().zip(Toy2d::ALL) {
        ensure!(toy.to_string() == *name);
        ensure!(name.parse::<Toy2d>()? == toy);
    }
    for (alias, name) in [
        ("two-moons", "moons"),
        ("Moons", "moons"),
        ("eight-gaussians", "8gaussians"),
        ("two-spirals", "2spirals"),
        ("2_spirals", "2spirals"),
        ("swiss-roll", "swissroll"),
        (" checkerboard ", "checkerboard"),
    ] {
        ensure!(alias.parse::<Toy2d>()?.to_string() == name, "{alias}");
    }
    let err = "galaxy".parse::<Toy2d>().map(|_| ()).unwrap_err();
    let msg = err.to_string();
    ensure!(matches!(err, Error::UnknownToy { .. }));
    ensure!(msg.contains("galaxy"), "{msg}");
    for name in Toy2d::NAMES {
        ensure!(msg.contains(name), "{msg} lacks {name}");
    }

    ensure!(Toy2d::ALL[0].with_noise(0.2) == Toy2d::Moons { noise: 0.2 });
    ensure!(Toy2d::ALL[5].with_noise(0.3).noise() == Some(0.3));
    ensure!(Toy2d::EightGaussians.with_noise(0.3) == Toy2d::EightGaussians);
    ensure!(Toy2d::Checkerboard.noise().is_none());

    for bad in [-0.1, f64::NAN, f64::INFINITY] {
        let toy = Toy2d::ALL[3].with_noise(bad);
        ensure!(toy.validate().is_err());
        let err = toy.sample_tensor(4, &mut rng(0), &Device::Cpu).map(|_| ()).unwrap_err();
        ensure!(err.to_string().contains("noise"), "{err}");
    }
    Ok(())
}

// ----------------------------------------------------------------- csv ----

#[test]
fn csv_faithful_like_with_quoted_header() -> Result<()> {
    let text = "\u{feff}\"\",\"eruptions\",\"waiting\"\r\n\"1\",3.6,79\r\n\"2\",1.8,54\r\n\"3\", 3.333 ,74\r\n\r\n\n";
    let path = fixture("faithful.csv", text)?;
    // Default columns: the two named numeric ones (the unnamed index is skipped).
    let pc = load_csv_columns(&path, &[])?;
    ensure!(pc.columns == cols(&["eruptions", "waiting"]), "{:?}", pc.columns);
    ensure!(pc.n == 3 && pc.dim == 2);
    ensure!(pc.data == vec![3.6, 79.0, 1.8, 54.0, 3.333, 74.0], "{:?}", pc.data);
    ensure!(pc.source == path);
    ensure!(pc.row(1) == Some(&[1.8, 54.0][..]) && pc.row(3).is_none());
    // Explicit columns, in the requested order; the quoted index column is numeric.
    let pc = load_csv_columns(&path, &cols(&["waiting", "", "eruptions"]))?;
    ensure!(pc.dim == 3 && pc.data[..3] == [79.0, 1.0, 3.6], "{:?}", pc.data);
    let t = pc.to_tensor(&Device::Cpu, DType::F32)?;
    ensure!(t.dims() == [3, 3] && t.dtype() == DType::F32);
    let back: Vec<Vec<f32>> = t.to_vec2()?;
    ensure!(back[2] == vec![74.0, 3.0, 3.333]);
    std::fs::remove_file(&path)?;
    Ok(())
}

#[test]
fn csv_airport_like_with_quoted_commas() -> Result<()> {
    let text = "iata,name,city,state,country,latitude,longitude\n\
        00M,Thigpen,Bay Springs,MS,USA,31.95376472,-89.23450472\n\
        35A,\"Union County, Troy Shelton\",Union,SC,USA,34.68680111,-81.64121167\n\
        Q1,\"The \"\"Quoted\"\" one,\nacross lines\",X,Y,USA,1.5,-2.5\n\
        53A,\"Dr. C.P. Savage, Sr.\",Montezuma,GA,USA,32.302,-84.00747222";
    let path = fixture("airports.csv", text)?;
    let pc = load_csv_columns(&path, &cols(&["longitude", "latitude"]))?;
    ensure!(pc.n == 4 && pc.dim == 2);
    ensure!(
        pc.data
            == vec![-89.23450472, 31.95376472, -81.64121167, 34.68680111, -2.5, 1.5, -84.00747222, 32.302],
        "{:?}",
        pc.data
    );
    // Two numeric columns: the default works here too.
    let pc = load_csv_columns(&path, &[])?;
    ensure!(pc.columns == cols(&["latitude", "longitude"]));

    // A bad cell after the multi-line field is reported on the right line (6).
    let bad = text.replace("32.302", "north");
    let path2 = fixture("airports-bad.csv", &bad)?;
    let msg = load_csv_columns(&path2, &cols(&["latitude"])).map(|_| ()).unwrap_err().to_string();
    ensure!(msg.contains("line 6") && msg.contains("\"north\""), "{msg}");
    // Asking for a text column is a non-numeric error.
    let msg = load_csv_columns(&path, &cols(&["name"])).map(|_| ()).unwrap_err().to_string();
    ensure!(msg.contains("line 2") && msg.contains("\"name\"") && msg.contains("Thigpen"), "{msg}");
    std::fs::remove_file(&path)?;
    std::fs::remove_file(&path2)?;
    Ok(())
}

/// Loads `text` as a fixture with `columns` and returns the error and its message.
fn csv_error(name: &str, text: &str, columns: &[&str]) -> Result<(Error, String, PathBuf)> {
    let path = fixture(name, text)?;
    let result = load_csv_columns(&path, &cols(columns));
    std::fs::remove_file(&path)?;
    match result {
        Ok(pc) => anyhow::bail!("{name}: expected an error, got {pc:?}"),
        Err(e) => {
            let msg = e.to_string();
            ensure!(msg.contains(&path.display().to_string()), "{msg} lacks the path");
            Ok((e, msg, path))
        }
    }
}

#[test]
fn csv_errors_name_file_line_and_column() -> Result<()> {
    // Missing file: path and OS reason.
    let missing = std::env::temp_dir().join("fm-data-test-does-not-exist.csv");
    let err = load_csv_columns(&missing, &[]).map(|_| ()).unwrap_err();
    let msg = err.to_string();
    ensure!(matches!(&err, Error::Io { io, .. } if io.kind() == std::io::ErrorKind::NotFound), "{err:?}");
    ensure!(msg.contains(&missing.display().to_string()) && msg.len() > missing.as_os_str().len() + 20);

    // Empty file, and one with only blank lines.
    for text in ["", "\n\r\n  \n"] {
        let (e, msg, _) = csv_error("empty.csv", text, &[])?;
        ensure!(matches!(e, Error::EmptyFile { .. }) && msg.contains("empty"), "{msg}");
    }

    // Unknown column: named, and the available ones listed.
    let (e, msg, _) = csv_error("unknown.csv", "x,y\n1,2\n", &["x", "z"])?;
    ensure!(matches!(e, Error::UnknownColumn { .. }));
    ensure!(msg.contains("\"z\"") && msg.contains("\"x\", \"y\""), "{msg}");

    // Row with too few cells: line number.
    let (e, msg, _) = csv_error("short.csv", "x,y\n1,2\n\n3\n", &["x", "y"])?;
    ensure!(matches!(e, Error::ShortRow { line: 4, .. }), "{e:?}");
    ensure!(msg.contains("line 4") && msg.contains("\"y\""), "{msg}");

    // Non-numeric cell: line, column and text.
    let (e, msg, _) = csv_error("text.csv", "x,y\n1,2\n3,abc\n", &["x", "y"])?;
    ensure!(matches!(e, Error::NonNumeric { line: 3, .. }), "{e:?}");
    ensure!(msg.contains("line 3") && msg.contains("\"y\"") && msg.contains("\"abc\""), "{msg}");
    let (_, msg, _) = csv_error("blank-cell.csv", "x,y\n1,\n", &["x", "y"])?;
    ensure!(msg.contains("line 2") && msg.contains("\"y\""), "{msg}");

    // NaN and infinities.
    for bad in ["NaN", "inf", "-Infinity", "1e999"] {
        let text = format!("x,y\n1,2\n{bad},4\n");
        let (e, msg, _) = csv_error("nonfinite.csv", &text, &["x", "y"])?;
        ensure!(matches!(e, Error::NonFinite { line: 3, .. }), "{bad}: {e:?}");
        ensure!(msg.contains("line 3") && msg.contains("\"x\"") && msg.contains(bad), "{msg}");
    }

    // No data rows.
    let (e, msg, _) = csv_error("header-only.csv", "x,y\r\n\r\n", &["x"])?;
    ensure!(matches!(e, Error::NoDataRows { .. }) && msg.contains("no data rows"), "{msg}");

    // Unterminated quote: the line where it starts.
    let (e, msg, _) = csv_error("quote.csv", "x,y\n1,2\n3,\"4\n5,6\n", &[])?;
    ensure!(matches!(e, Error::UnterminatedQuote { line: 3, .. }), "{e:?}");
    ensure!(msg.contains("line 3"), "{msg}");

    // No default columns: too many or too few numeric columns.
    let (e, msg, _) = csv_error("three.csv", "a,b,c\n1,2,3\n", &[])?;
    ensure!(matches!(e, Error::ColumnsRequired { .. }), "{e:?}");
    ensure!(msg.contains("--columns") && msg.contains("\"a\", \"b\", \"c\""), "{msg}");
    let (_, msg, _) = csv_error("one.csv", "a,b\n1,x\n", &[])?;
    ensure!(msg.contains("1 numeric") && msg.contains("--columns"), "{msg}");

    // Duplicate header name.
    let (e, msg, _) = csv_error("dup.csv", "a,a\n1,2\n", &["a"])?;
    ensure!(matches!(e, Error::AmbiguousColumn { .. }) && msg.contains("\"a\""), "{msg}");
    Ok(())
}

#[test]
fn csv_parser_never_panics_on_garbage() -> Result<()> {
    let source = Path::new("fuzz.csv");
    let mut r = rng(13);
    let alphabet: Vec<char> = "ab,,\"\"\n\r 0123456789.-+eEnaNinfé\u{feff}\t".chars().collect();
    let requests = [cols(&[]), cols(&["a"]), cols(&["a", "b"]), cols(&["", "0"])];
    let mut ok = 0;
    for i in 0..6_000 {
        let len = r.random_range(0..80);
        let text: String = if i % 2 == 0 {
            let bytes: Vec<u8> = (0..len).map(|_| r.random()).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            (0..len).map(|_| alphabet[r.random_range(0..alphabet.len())]).collect()
        };
        for columns in &requests {
            if let Ok(pc) = parse_csv_columns(&text, source, columns) {
                ensure!(pc.data.len() == pc.n * pc.dim && pc.n > 0);
                ensure!(pc.data.iter().all(|v| v.is_finite()));
                ok += 1;
            }
        }
    }
    // Structured inputs are accepted too.
    let pc = parse_csv_columns("a,b\n1,2\n", source, &[])?;
    ensure!(pc.data == vec![1.0, 2.0]);
    ensure!(ok > 0, "no random input parsed at all");
    Ok(())
}

// ---------------------------------------------------------- standardize ----

#[test]
fn standardizer_round_trip_and_log_det() -> Result<()> {
    let path = fixture("std.csv", "u,v\n1,0\n3,10\n2,5\n")?;
    let pc = load_csv_columns(&path, &[])?;
    std::fs::remove_file(&path)?;
    let s = Standardizer::fit(&pc)?;
    let pop_std_v = (50.0f64 / 3.0).sqrt();
    ensure!((s.mean[0] - 2.0).abs() < 1e-12 && (s.mean[1] - 5.0).abs() < 1e-12);
    ensure!((s.std[0] - (2.0f64 / 3.0).sqrt()).abs() < 1e-12 && (s.std[1] - pop_std_v).abs() < 1e-12);
    let want = -((2.0f64 / 3.0).sqrt().ln() + pop_std_v.ln());
    ensure!((s.log_abs_det_jacobian() - want).abs() < 1e-12);

    // Slice transform: mean 0, std 1; inverse restores.
    let mut d = pc.data.clone();
    s.transform(&mut d)?;
    let z = Standardizer::fit_data(&d, 3, 2)?;
    ensure!(z.mean.iter().all(|m| m.abs() < 1e-12) && z.std.iter().all(|v| (v - 1.0).abs() < 1e-12));
    s.inverse_slice(&mut d)?;
    ensure!(d.iter().zip(&pc.data).all(|(a, b)| (a - b).abs() < 1e-12));
    ensure!(s.transform_cloud(&pc)?.data.iter().zip(&pc.data).any(|(a, b)| a != b));

    // Tensor transform and inverse, in f32 and f64.
    for dtype in [DType::F32, DType::F64] {
        let x = pc.to_tensor(&Device::Cpu, dtype)?;
        let zt = s.transform_tensor(&x)?;
        ensure!(zt.dtype() == dtype && zt.dims() == [3, 2]);
        let zv: Vec<Vec<f64>> = zt.to_dtype(DType::F64)?.to_vec2()?;
        ensure!((zv[1][1] - 5.0 / pop_std_v).abs() < 1e-5, "{zv:?}");
        let back: Vec<f64> = s.inverse(&zt)?.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
        ensure!(back.iter().zip(&pc.data).all(|(a, b)| (a - b).abs() < 1e-4), "{back:?}");
    }
    // Density change of variables: a standard normal in z-space integrates to
    // one in x-space; check log p_x at the mean analytically.
    let log_pz0 = -(2.0 * PI).ln(); // 2D standard normal at 0
    let log_px = log_pz0 + s.log_abs_det_jacobian();
    let direct = -(2.0 * PI).ln() - s.std.iter().map(|v| v.ln()).sum::<f64>();
    ensure!((log_px - direct).abs() < 1e-12);

    // Identity; serde round trip.
    let id = Standardizer::identity(3);
    ensure!(id.log_abs_det_jacobian() == 0.0 && id.dim() == 3);
    let json = serde_json::to_string(&s)?;
    ensure!(serde_json::from_str::<Standardizer>(&json)? == s);
    Ok(())
}

#[test]
fn standardizer_errors() -> Result<()> {
    let path = fixture("const.csv", "u,v\n1,7\n3,7\n")?;
    let pc = load_csv_columns(&path, &[])?;
    std::fs::remove_file(&path)?;
    let err = Standardizer::fit(&pc).map(|_| ()).unwrap_err();
    ensure!(matches!(err, Error::ZeroVariance { .. }) && err.to_string().contains("\"v\""), "{err}");
    let err = Standardizer::fit_data(&[1.0, 2.0], 1, 2).map(|_| ()).unwrap_err();
    ensure!(matches!(err, Error::TooFewRows { got: 1, .. }), "{err:?}");
    ensure!(Standardizer::fit_data(&[1.0, 2.0, 3.0], 2, 2).is_err());
    ensure!(Standardizer::fit_data(&[0.0, f64::NAN, 1.0, 2.0], 2, 2).is_err());
    let s = Standardizer::identity(2);
    ensure!(s.transform(&mut [1.0, 2.0, 3.0]).is_err());
    ensure!(s.transform_tensor(&Tensor::zeros((4, 3), DType::F32, &Device::Cpu)?).is_err());
    ensure!(s.inverse(&Tensor::zeros(4, DType::F32, &Device::Cpu)?).is_err());
    Ok(())
}

// ----------------------------------------------------------------- spec ----

#[test]
fn data_spec_parsing() -> Result<()> {
    ensure!("moons".parse::<DataSpec>()? == DataSpec::Toy(Toy2d::ALL[0]));
    ensure!("Two-Spirals".parse::<DataSpec>()?.to_string() == "2spirals");
    let spec: DataSpec = "csv:/tmp/some file.csv".parse()?;
    ensure!(spec.is_csv() && spec.toy().is_none() && spec.dim() == 2);
    ensure!(spec.to_string() == "csv:/tmp/some file.csv");
    let spec = spec.with_columns(cols(&["a", "b", "c"]));
    ensure!(spec.dim() == 3);
    match &spec {
        DataSpec::Csv { path, columns } => {
            ensure!(path == Path::new("/tmp/some file.csv") && *columns == cols(&["a", "b", "c"]));
        }
        other => anyhow::bail!("unexpected {other:?}"),
    }
    ensure!(spec.to_string().parse::<DataSpec>()?.with_columns(cols(&["a", "b", "c"])) == spec);
    // Toys ignore columns.
    let toy: DataSpec = "checkerboard".parse()?;
    ensure!(toy.clone().with_columns(cols(&["x"])) == toy && toy.dim() == 2);
    ensure!(DataSpec::from(Toy2d::EightGaussians).to_string() == "8gaussians");

    // Image datasets by prefix.
    let mnist: DataSpec = "mnist:/data/mnist".parse()?;
    ensure!(
        matches!(&mnist, DataSpec::Images { format: fm_data::images::ImageFormat::Mnist, path } if path == Path::new("/data/mnist"))
    );
    ensure!(mnist.to_string() == "mnist:/data/mnist");
    ensure!("digits:d.csv.gz".parse::<DataSpec>()?.to_string() == "digits:d.csv.gz");
    for bad in ["mnist:", "galaxy", "csv:", "", "svhn:/x"] {
        let err = bad.parse::<DataSpec>().map(|_| ()).unwrap_err();
        let msg = err.to_string();
        ensure!(matches!(err, Error::UnknownDataSpec { .. }), "{bad}: {err:?}");
        ensure!(msg.contains(&format!("{bad:?}")) && msg.contains("csv:PATH"), "{msg}");
        for name in Toy2d::NAMES {
            ensure!(msg.contains(name), "{msg} lacks {name}");
        }
    }
    let json = serde_json::to_string(&spec)?;
    ensure!(serde_json::from_str::<DataSpec>(&json)? == spec);
    Ok(())
}

// ---------------------------------------------------------------- batch ----

#[test]
fn sample_rows_gathers_rows() -> Result<()> {
    let data = [0.0f32, 1.0, 10.0, 11.0, 20.0, 21.0];
    ensure!(sample_rows(&data, 2, &[2, 0, 2])? == vec![20.0, 21.0, 0.0, 1.0, 20.0, 21.0]);
    ensure!(sample_rows(&data, 2, &[])?.is_empty());
    ensure!(sample_rows(&data, 2, &[3]).is_err());
    ensure!(sample_rows(&data, 4, &[0]).is_err());
    ensure!(sample_rows(&data, 0, &[0]).is_err());
    ensure!(sample_rows(&[1.0f64, 2.0, 3.0], 3, &[0, 0])? == vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    Ok(())
}

#[test]
fn finite_set_draws_uniformly_with_replacement() -> Result<()> {
    let n = 5;
    let data: Vec<f32> = (0..n).flat_map(|i| [i as f32, -(i as f32)]).collect();
    let set = FiniteSet::new(data, 2)?;
    ensure!(set.len() == 5 && !set.is_empty() && Sampler::dim(&set) == 2);
    let b = 50_000;
    let batch = set.sample(b, &mut rng(14), &Device::Cpu)?;
    ensure!(batch.dims() == [b, 2] && batch.dtype() == DType::F32);
    let rows: Vec<Vec<f32>> = batch.to_vec2()?;
    let mut counts = [0usize; 5];
    for r in &rows {
        ensure!(r[1] == -r[0], "row {r:?} not from the set");
        counts[r[0] as usize] += 1;
    }
    let expected = b as f64 / n as f64;
    for c in counts {
        ensure!((c as f64 - expected).abs() < 5.0 * expected.sqrt(), "{counts:?}");
    }
    // Reproducible; the trait object gives the same result.
    let a: Vec<f32> = set.sample(7, &mut rng(15), &Device::Cpu)?.flatten_all()?.to_vec1()?;
    let sampler: Box<dyn Sampler> = Box::new(set.clone());
    let mut r = rng(15);
    let c: Vec<f32> = sampler.sample_batch(7, &mut r, &Device::Cpu)?.flatten_all()?.to_vec1()?;
    ensure!(a == c);

    // From a toy (--n-train), a point cloud and a tensor.
    let train = FiniteSet::from_toy(&Toy2d::ALL[0], 100, &mut rng(16))?;
    ensure!(train.len() == 100 && train.data() == Toy2d::ALL[0].sample(100, &mut rng(16)));
    let t = train.to_tensor(&Device::Cpu)?;
    ensure!(FiniteSet::from_tensor(&t)? == train);
    let path = fixture("set.csv", "x,y\n1,2\n3,4\n")?;
    let pc = load_csv_columns(&path, &[])?;
    std::fs::remove_file(&path)?;
    ensure!(FiniteSet::from_point_cloud(&pc)?.data() == [1.0, 2.0, 3.0, 4.0]);

    ensure!(FiniteSet::new(vec![], 2).is_err());
    ensure!(FiniteSet::new(vec![1.0; 3], 2).is_err());
    let toy: Box<dyn Sampler> = Box::new(Toy2d::Checkerboard);
    ensure!(toy.sample_batch(9, &mut rng(17), &Device::Cpu)?.dims() == [9, 2]);
    Ok(())
}

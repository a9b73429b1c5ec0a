//! A run's data: toy generators (fresh every step or a fixed set), CSV point
//! clouds (standardized, with the transform kept), image datasets (flattened,
//! dequantized, in `[−1, 1]`) and points or images a program already holds.
//!
//! Batches are drawn from the run's `data` stream ([`SeededRng`]), so the same
//! seed gives the same batches whatever the model family.

use std::path::PathBuf;

use candle::{DType, Device, Tensor};
use fm_core::manifold::ManifoldSpec;
use fm_core::SeededRng;
use fm_data::images::{ImageBatcher, ImageSet, Split};
use fm_data::tokens::TokenGrid;
use fm_data::{load_csv_columns, DataSpec, Standardizer, Toy2d};

pub(crate) mod manifold;
mod tokens;

use crate::error::bail;
use crate::record::RunRecord;
use crate::{Result, ResultExt};

enum Source {
    /// Fresh toy points every batch.
    Fresh(Toy2d),
    /// A fixed set (model units), row-major.
    Fixed(Vec<f32>),
    /// Images: batches drawn uniformly (with replacement) from the training split,
    /// dequantized, flattened to `(b, c·h·w)` in `[−1, 1]`; the test split for references.
    Images { train: Box<ImageBatcher>, test: Box<ImageBatcher> },
    /// Coupled pairs for reflow (model units, row-major `n · d` each): a batch
    /// draws rows, and `x₀` comes with its `x₁`.
    Pairs { x0: Vec<f32>, x1: Vec<f32>, source: Option<String> },
}

/// Shape and quantization of image data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    /// Channels (1 or 3).
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// Pixel levels (256 for 8-bit images, 17 for sklearn's digits).
    pub levels: u16,
}

/// The shape of one image, `channels × height × width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageShape {
    /// Channels (1 or 3).
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
}

impl ImageInfo {
    /// The images' shape.
    pub fn shape(&self) -> ImageShape {
        ImageShape { channels: self.channels, height: self.height, width: self.width }
    }

    /// Bits per dimension from the mean NLL (nats per image) of the density over
    /// z = 2y − 1, y = (pixel + u)/L: the discrete model's
    /// −log P(pixels) ≤ NLL − D log(2/L), divided by D ln 2.
    pub fn bits_per_dim(&self, nll_mean: f64) -> f64 {
        let d = (self.channels * self.height * self.width) as f64;
        (nll_mean - d * (2.0 / self.levels as f64).ln()) / (d * std::f64::consts::LN_2)
    }
}

/// Where training batches come from, in model units.
///
/// ```
/// use fm_core::SeededRng;
/// use fm_pipeline::TrainingData;
///
/// # fn main() -> fm_pipeline::Result<()> {
/// let mut data = TrainingData::prepare("moons", &[], Some(0.05), None, 0)?;
/// let batch = data.batch(256, &mut SeededRng::for_stream(0, "data"))?;
/// assert_eq!(batch.dims(), &[256, 2]);
/// # Ok(())
/// # }
/// ```
pub struct TrainingData {
    /// The dataset as named (`--data`), `None` for data a program passed in.
    spec: Option<DataSpec>,
    /// How [`TrainingData::describe`] names it.
    name: String,
    source: Source,
    dim: usize,
    columns: Vec<String>,
    transform: Option<Standardizer>,
    /// The whole dataset in data units, for CSV data.
    csv_points: Option<Vec<f32>>,
    /// The `--n-train` images at their bins' centres (model units), for the
    /// closed-form analyses and EFM.
    image_points: Option<Vec<f32>>,
    /// For pairs: the teacher's data (from the file's `.json` sidecar), whose
    /// points are the reference of metrics instead of the teacher's samples.
    teacher_data: Option<Box<TrainingData>>,
    /// Discrete models: the grid that makes values tokens ([`TrainingData::tokenize`]).
    tokens: Option<TokenGrid>,
    /// Riemannian models: the manifold the points were embedded on
    /// ([`TrainingData::embed_on_manifold`]); data units are its chart.
    manifold: Option<ManifoldSpec>,
}

/// What `fm reflow` writes beside its pairs (`FILE.json` for `FILE.npy`):
/// the teacher checkpoint and its training record, so that a model trained
/// on the pairs is measured against the teacher's data, not its samples.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PairsSidecar {
    /// The teacher checkpoint, as given.
    pub teacher: String,
    /// The teacher's training record.
    pub record: RunRecord,
}

impl PairsSidecar {
    /// The sidecar's path for a pairs file.
    pub fn path_for(pairs: &std::path::Path) -> PathBuf {
        pairs.with_extension("json")
    }

    /// Reads the sidecar of `pairs`, if there is one.
    pub fn read(pairs: &std::path::Path) -> Result<Option<Self>> {
        let path = Self::path_for(pairs);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| crate::Error::Setting(format!("cannot read {}: {e}", path.display())))?;
        Ok(Some(
            serde_json::from_str(&text)
                .with_context(|| format!("{}: not a pairs sidecar", path.display()))?,
        ))
    }
}

/// Splits an image spec with a target side, `FORMAT<SIDE>:PATH` (e.g.
/// `mnist14:DIR`, MNIST average-pooled to 14×14), into `FORMAT:PATH` and the side.
fn image_side(data: &str) -> (String, Option<usize>) {
    if let Some((prefix, path)) = data.trim().split_once(':') {
        for k in 1..prefix.len() {
            let (name, digits) = prefix.split_at(k);
            if !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && name.parse::<fm_data::images::ImageFormat>().is_ok()
            {
                if let Ok(side) = digits.parse::<usize>() {
                    return (format!("{name}:{path}"), Some(side));
                }
            }
        }
    }
    (data.to_string(), None)
}

/// Average-pools square images to `side × side` (`--data FORMAT<SIDE>:PATH`).
fn resize(set: ImageSet, side: usize, data: &str) -> Result<ImageSet> {
    if side == 0 || set.height != set.width || !set.height.is_multiple_of(side) {
        bail!(
            "--data {data}: cannot average-pool {}×{} images to {side}×{side} (the side must divide theirs)",
            set.height,
            set.width
        );
    }
    if side == set.height {
        return Ok(set);
    }
    set.downsample(set.height / side).with_context(|| format!("--data {data}"))
}

impl TrainingData {
    /// Prepares `--data` (`NAME` or `csv:PATH`) for training.
    pub fn prepare(
        data: &str,
        columns: &[String],
        noise: Option<f64>,
        n_train: Option<usize>,
        seed: u64,
    ) -> Result<Self> {
        let original = data;
        let (data, side) = image_side(data);
        let spec: DataSpec = data.parse()?;
        if side.is_some() && !matches!(spec, DataSpec::Images { .. }) {
            bail!("--data {original}: a size suffix applies to image datasets only");
        }
        match spec {
            DataSpec::Toy(toy) => {
                if !columns.is_empty() {
                    bail!("--columns only applies to csv:PATH data, not to `{toy}`");
                }
                let toy = match noise {
                    Some(n) => toy.with_noise(n),
                    None => toy,
                };
                let source = match n_train {
                    Some(n) => Source::Fixed(toy.sample(n, &mut SeededRng::for_stream(seed, "train-set"))),
                    None => Source::Fresh(toy),
                };
                Ok(Self {
                    name: toy.to_string(),
                    spec: Some(DataSpec::Toy(toy)),
                    source,
                    dim: 2,
                    columns: vec![],
                    transform: None,
                    csv_points: None,
                    image_points: None,
                    teacher_data: None,
                    tokens: None,
                    manifold: None,
                })
            }
            DataSpec::Csv { path, .. } => {
                if noise.is_some() {
                    bail!("--noise only applies to toy datasets, not to csv:{}", path.display());
                }
                Self::from_csv(path, columns, n_train, seed)
            }
            DataSpec::Images { format, path } => {
                if noise.is_some() || !columns.is_empty() {
                    bail!("--noise and --columns do not apply to image data ({format}:{})", path.display());
                }
                let mut train = format.load(&path, Split::Train)?;
                if let Some(n) = n_train {
                    if n > train.n {
                        bail!(
                            "--n-train {n} is larger than the {} training images of {}",
                            train.n,
                            path.display()
                        );
                    }
                    train = train.take(n);
                }
                let mut test = format.load(&path, Split::Test)?;
                if let Some(side) = side {
                    train = resize(train, side, original)?;
                    test = resize(test, side, original)?;
                }
                let image_points = match n_train {
                    Some(n) => {
                        let idx: Vec<usize> = (0..n).collect();
                        Some(train.tensor(&idx, &Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?)
                    }
                    None => None,
                };
                let dim = train.dim();
                let spec = DataSpec::Images { format, path };
                Ok(Self {
                    name: spec.to_string(),
                    spec: Some(spec),
                    source: Source::Images {
                        train: Box::new(ImageBatcher::new(train, seed)?.with_dequantization(true)),
                        test: Box::new(ImageBatcher::new(test, seed)?),
                    },
                    dim,
                    columns: vec![],
                    transform: None,
                    csv_points: None,
                    image_points,
                    teacher_data: None,
                    tokens: None,
                    manifold: None,
                })
            }
            DataSpec::Manifold(toy) => {
                // A checkpoint's record names the dataset's own columns.
                if noise.is_some() || !(columns.is_empty() || columns.iter().eq(toy.columns())) {
                    bail!("--noise and --columns do not apply to `{toy}`");
                }
                let n = n_train.unwrap_or(manifold::DEFAULT_TRAINING_POINTS);
                let points = toy.sample(n, SeededRng::for_stream(seed, "train-set").rng());
                let mut data = Self::from_points(toy.name(), points, toy.columns().len())?;
                data.spec = Some(DataSpec::Manifold(toy));
                data.columns = toy.columns().iter().map(|c| c.to_string()).collect();
                Ok(data)
            }
            DataSpec::Pairs { path } => {
                if noise.is_some() || !columns.is_empty() || n_train.is_some() {
                    bail!("--noise, --columns and --n-train do not apply to pairs:{}", path.display());
                }
                Self::from_pairs(path)
            }
            other => bail!("`{other}` cannot be used for training yet"),
        }
    }

    /// Pairs `(x₀, x₁)` from an `(n, 2d)` `.npy` file (rows `x₀` then `x₁`, model units).
    fn from_pairs(path: PathBuf) -> Result<Self> {
        let array = fm_data::npy::read(&path)?;
        let (n, width) = match array.shape.as_slice() {
            [n, w] if *n >= 1 && *w >= 2 && w % 2 == 0 => (*n, *w),
            other => bail!(
                "pairs:{}: expected an (n, 2d) array of rows x₀ then x₁ (as fm reflow writes), got shape {other:?}",
                path.display()
            ),
        };
        let d = width / 2;
        let values = array.data;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            bail!("pairs:{}: value {i} is not finite", path.display());
        }
        let (mut x0, mut x1) = (Vec::with_capacity(n * d), Vec::with_capacity(n * d));
        for row in values.chunks_exact(width) {
            x0.extend_from_slice(&row[..d]);
            x1.extend_from_slice(&row[d..]);
        }
        let sidecar = PairsSidecar::read(&path)?;
        let teacher_data = match &sidecar {
            Some(sidecar) => Some(Box::new(Self::from_record(&sidecar.record).with_context(|| {
                format!("pairs:{}: the teacher's data named in its .json sidecar", path.display())
            })?)),
            None => None,
        };
        let source = sidecar.and_then(|s| s.record.source);
        let spec = DataSpec::Pairs { path };
        Ok(Self {
            name: spec.to_string(),
            spec: Some(spec),
            source: Source::Pairs { x0, x1, source },
            dim: d,
            columns: vec![],
            transform: None,
            csv_points: None,
            image_points: None,
            teacher_data,
            tokens: None,
            manifold: None,
        })
    }

    /// The source distribution the pairs' `x₀` were drawn from, as the
    /// teacher recorded it (from the `.json` sidecar; `None`: the default).
    pub fn pairs_source(&self) -> Option<&str> {
        match &self.source {
            Source::Pairs { source, .. } => source.as_deref(),
            _ => None,
        }
    }

    /// Whether batches are coupled pairs ([`Self::pair_batch`]).
    pub fn is_paired(&self) -> bool {
        matches!(self.source, Source::Pairs { .. })
    }

    /// A batch of coupled pairs `(x₀, x₁)`, each `(b, d)` in model units (rows
    /// drawn with replacement from the data stream); `None` unless the data is pairs.
    pub fn pair_batch(&mut self, b: usize, rng: &mut SeededRng) -> Result<Option<(Tensor, Tensor)>> {
        let Source::Pairs { x0, x1, .. } = &self.source else { return Ok(None) };
        let (n, d) = (x0.len() / self.dim, self.dim);
        let (mut a, mut c) = (Vec::with_capacity(b * d), Vec::with_capacity(b * d));
        for _ in 0..b {
            let i = rand::Rng::random_range(rng.rng(), 0..n) * d;
            a.extend_from_slice(&x0[i..i + d]);
            c.extend_from_slice(&x1[i..i + d]);
        }
        Ok(Some((Tensor::from_vec(a, (b, d), &Device::Cpu)?, Tensor::from_vec(c, (b, d), &Device::Cpu)?)))
    }

    fn from_csv(path: PathBuf, columns: &[String], n_train: Option<usize>, seed: u64) -> Result<Self> {
        let cloud = load_csv_columns(&path, columns)?;
        let transform = Standardizer::fit(&cloud)
            .with_context(|| format!("{}: cannot standardize the columns", path.display()))?;
        let raw: Vec<f32> = cloud.data.iter().map(|&v| v as f32).collect();
        let mut model: Vec<f64> = cloud.data.clone();
        transform.transform(&mut model)?;
        let mut model: Vec<f32> = model.into_iter().map(|v| v as f32).collect();
        if let Some(n) = n_train {
            if n > cloud.n {
                bail!("--n-train {n} is larger than the {} rows of {}", cloud.n, path.display());
            }
            let perm = SeededRng::for_stream(seed, "train-set").permutation(cloud.n);
            model =
                perm[..n].iter().flat_map(|&i| model[i * cloud.dim..(i + 1) * cloud.dim].to_vec()).collect();
        }
        let spec = DataSpec::Csv { path, columns: cloud.columns.clone() };
        Ok(Self {
            name: spec.to_string(),
            spec: Some(spec),
            source: Source::Fixed(model),
            dim: cloud.dim,
            columns: cloud.columns,
            transform: Some(transform),
            csv_points: Some(raw),
            image_points: None,
            teacher_data: None,
            tokens: None,
            manifold: None,
        })
    }

    /// A fixed set of points a program already holds, `(n · dim)` values
    /// row-major in model units; `name` is what the run records as its data.
    pub fn from_points(name: &str, points: Vec<f32>, dim: usize) -> Result<Self> {
        if dim == 0 || points.is_empty() || !points.len().is_multiple_of(dim) {
            bail!("data `{name}`: {} values do not make points of dimension {dim}", points.len());
        }
        Ok(Self {
            spec: None,
            name: name.to_string(),
            source: Source::Fixed(points),
            dim,
            columns: vec![],
            transform: None,
            csv_points: None,
            image_points: None,
            teacher_data: None,
            tokens: None,
            manifold: None,
        })
    }

    /// Images a program already holds: batches from `train` (dequantized),
    /// references from `test`.
    pub fn from_images(train: ImageSet, test: ImageSet, seed: u64) -> Result<Self> {
        let dim = train.dim();
        if test.dim() != dim {
            bail!("the test images ({} values) do not match the training images ({dim})", test.dim());
        }
        Ok(Self {
            spec: None,
            name: train.source.clone(),
            source: Source::Images {
                train: Box::new(ImageBatcher::new(train, seed)?.with_dequantization(true)),
                test: Box::new(ImageBatcher::new(test, seed)?),
            },
            dim,
            columns: vec![],
            transform: None,
            csv_points: None,
            image_points: None,
            teacher_data: None,
            tokens: None,
            manifold: None,
        })
    }

    /// Rebuilds the data of a checkpoint's training record (for reference points).
    pub fn from_record(r: &RunRecord) -> Result<Self> {
        Self::of_record(r, None)
    }

    /// `--data` of the record `r` with `n_train` points, in the checkpoint's
    /// own units (its transform) and tokens (its grid).
    fn of_record(r: &RunRecord, n_train: Option<usize>) -> Result<Self> {
        let mut d = Self::prepare(&r.data, &r.columns, r.noise, n_train, r.seed).with_context(|| {
            format!("cannot rebuild the training data `{}` recorded in the checkpoint", r.data)
        })?;
        // Keep the checkpoint's own transform: samples must be read in its units.
        if r.transform.is_some() {
            d.transform = r.transform.clone();
        }
        d.tokens = r.tokens;
        if let Some(m) = &r.manifold {
            d.embed_on_manifold(m)?;
        }
        Ok(d)
    }

    /// Rebuilds a checkpoint's data with its finite training set: the recorded
    /// `--n-train` set (or all CSV rows), or, when `n_train` is given, a set of
    /// that many points drawn from the seed exactly as `fm train --n-train` would.
    pub fn training_set_of_record(r: &RunRecord, n_train: Option<usize>) -> Result<Self> {
        Self::of_record(r, n_train.or(r.n_train))
    }

    /// The fixed training points `(n · d values, row-major)` in model units, or
    /// `None` when training drew fresh points every step.
    pub fn fixed_points(&self) -> Option<&[f32]> {
        match &self.source {
            Source::Fixed(v) => Some(v),
            Source::Pairs { x1, .. } => Some(x1),
            // Images with --n-train: the images at their bins' centres.
            Source::Images { .. } => self.image_points.as_deref(),
            Source::Fresh(_) => None,
        }
    }

    /// Values per point (or per image).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// CSV column names (empty for other data).
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The standardization of CSV data (model units = transform of data units).
    pub fn transform(&self) -> Option<&Standardizer> {
        self.transform.as_ref()
    }

    /// How the run's log names the data, e.g. `moons (fresh points every step)`.
    pub fn describe(&self) -> String {
        if let Some(grid) = &self.tokens {
            return self.describe_tokens(grid);
        }
        match &self.source {
            Source::Fresh(toy) => format!("{toy} (fresh points every step)"),
            Source::Fixed(v) => format!("{} ({} points)", self.name, v.len() / self.dim),
            Source::Pairs { x0, .. } => format!("{} ({} coupled pairs)", self.name, x0.len() / self.dim),
            Source::Images { train, .. } => {
                let s = train.set();
                format!(
                    "{} ({} images of {}×{}×{}, dequantized, in [−1, 1])",
                    self.name, s.n, s.channels, s.height, s.width
                )
            }
        }
    }

    /// Shape and levels of image data, `None` for points.
    pub fn image_info(&self) -> Option<ImageInfo> {
        match &self.source {
            Source::Images { train, .. } => {
                let s: &ImageSet = train.set();
                Some(ImageInfo { channels: s.channels, height: s.height, width: s.width, levels: s.levels })
            }
            _ => None,
        }
    }

    /// The MMD bandwidth for metrics on the model's scale (0.5 for 2-D data,
    /// growing like √d so that the kernel stays informative in high dimension).
    pub fn metric_bandwidth(&self) -> f64 {
        0.5 * (self.dim as f64 / 2.0).sqrt().max(1.0)
    }

    /// Points for likelihoods, in data units: dequantized test images (uniform
    /// noise within each pixel's bin, as bits/dim assume), else [`Self::reference`].
    pub fn likelihood_points(&self, n: usize, seed: u64) -> Result<Vec<f32>> {
        if self.tokens.is_some() {
            // Tokens are exact values: no dequantization.
            return self.reference(n, seed);
        }
        match &self.source {
            Source::Images { test, .. } => {
                let m = n.min(test.set().n);
                let idx = SeededRng::for_stream(seed, "reference").permutation(test.set().n);
                let deq = test.as_ref().clone().with_dequantization(true);
                let mut rng = SeededRng::for_stream(seed, "dequantization");
                let b = deq.batch_of(&idx[..m], rng.rng(), &Device::Cpu)?;
                Ok(b.images.flatten_all()?.to_vec1::<f32>()?)
            }
            _ => self.reference(n, seed),
        }
    }

    /// A training batch `(b, d)` in model units.
    pub fn batch(&mut self, b: usize, rng: &mut SeededRng) -> Result<Tensor> {
        let v = match &self.source {
            Source::Fresh(toy) => toy.sample(b, rng),
            Source::Fixed(points) | Source::Pairs { x1: points, .. } => {
                let n = points.len() / self.dim;
                let mut out = Vec::with_capacity(b * self.dim);
                for _ in 0..b {
                    let i = (rand::Rng::random_range(rng.rng(), 0..n)) * self.dim;
                    out.extend_from_slice(&points[i..i + self.dim]);
                }
                out
            }
            Source::Images { .. } => return Ok(self.batch_with_labels(b, rng)?.0),
        };
        Ok(Tensor::from_vec(v, (b, self.dim), &Device::Cpu)?)
    }

    /// A training batch `(b, d)` in model units with its class labels `(b,)`
    /// (`u32`) when the data has them; the same draws as [`Self::batch`].
    pub fn batch_with_labels(&mut self, b: usize, rng: &mut SeededRng) -> Result<(Tensor, Option<Tensor>)> {
        match &self.source {
            Source::Images { train, .. } => {
                let n = train.set().n;
                let idx: Vec<usize> = (0..b).map(|_| rand::Rng::random_range(rng.rng(), 0..n)).collect();
                let batch = train.batch_of(&idx, rng.rng(), &Device::Cpu)?;
                Ok((batch.images.reshape((b, self.dim))?, batch.labels))
            }
            _ => Ok((self.batch(b, rng)?, None)),
        }
    }

    /// The number of classes of labelled image data (largest label + 1), `None` without labels.
    pub fn num_classes(&self) -> Option<usize> {
        match &self.source {
            Source::Images { train, .. } => {
                train.set().labels.as_ref().and_then(|l| l.iter().max()).map(|&m| m as usize + 1)
            }
            _ => None,
        }
    }

    /// `n` reference points in data units: fresh toy points, or (for CSV data)
    /// the dataset itself, shuffled, up to `n` rows; for tokenized data, at
    /// their tokens' values.
    pub fn reference(&self, n: usize, seed: u64) -> Result<Vec<f32>> {
        let values = self.reference_values(n, seed)?;
        match &self.tokens {
            Some(grid) => Ok(grid.snap(&values)?),
            None => Ok(values),
        }
    }

    fn reference_values(&self, n: usize, seed: u64) -> Result<Vec<f32>> {
        if let Some(teacher) = &self.teacher_data {
            return teacher.reference(n, seed);
        }
        let mut rng = SeededRng::for_stream(seed, "reference");
        if let Some(points) = &self.csv_points {
            let d = self.data_dim();
            let rows = points.len() / d;
            let perm = rng.permutation(rows);
            return Ok(perm.iter().take(n).flat_map(|&i| points[i * d..(i + 1) * d].to_vec()).collect());
        }
        if let Source::Images { test, .. } = &self.source {
            // Test images at their bins' centres, shuffled by seed.
            let idx = rng.permutation(test.set().n);
            let m = n.min(idx.len());
            return Ok(test.set().tensor(&idx[..m], &Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?);
        }
        match &self.source {
            Source::Fresh(toy) => Ok(toy.sample(n, &mut rng)),
            // The teacher's samples x₁, shuffled.
            Source::Pairs { x1, .. } => {
                let rows = x1.len() / self.dim;
                let perm = rng.permutation(rows);
                Ok(perm.iter().take(n).flat_map(|&i| x1[i * self.dim..(i + 1) * self.dim].to_vec()).collect())
            }
            _ => match &self.spec {
                Some(DataSpec::Toy(toy)) => Ok(toy.sample(n, &mut rng)),
                Some(DataSpec::Manifold(toy)) => Ok(toy.sample(n, rng.rng())),
                _ => bail!("no reference points for `{}`", self.name),
            },
        }
    }

    /// Maps points in data units to model units (identity for toys).
    pub fn to_model_units(&self, points: &[f32]) -> Result<Vec<f32>> {
        if let Some(m) = &self.manifold {
            return manifold::embed(m, points);
        }
        match &self.transform {
            None => Ok(points.to_vec()),
            Some(t) => {
                let mut v: Vec<f64> = points.iter().map(|&x| x as f64).collect();
                t.transform(&mut v)?;
                Ok(v.into_iter().map(|x| x as f32).collect())
            }
        }
    }
}

/// A model-space tensor `(n, d)` as data-unit values.
pub fn to_data_units(x: &Tensor, transform: Option<&Standardizer>) -> Result<Vec<f32>> {
    let x = match transform {
        Some(t) => t.inverse(x)?,
        None => x.clone(),
    };
    Ok(x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

#[cfg(test)]
mod image_side_tests {
    use super::image_side;

    #[test]
    fn a_size_suffix_on_an_image_format_is_split_off() {
        assert_eq!(image_side("mnist14:/d"), ("mnist:/d".to_string(), Some(14)));
        assert_eq!(image_side("fashion-mnist7:/d"), ("fashion-mnist:/d".to_string(), Some(7)));
        assert_eq!(image_side("cifar10:/d"), ("cifar10:/d".to_string(), None));
        assert_eq!(image_side("cifar1016:/d"), ("cifar10:/d".to_string(), Some(16)));
        assert_eq!(image_side("moons"), ("moons".to_string(), None));
        assert_eq!(image_side("csv:/a/b.csv"), ("csv:/a/b.csv".to_string(), None));
    }
}

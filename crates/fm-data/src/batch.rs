//! Minibatch sampling from toys and from fixed, finite training sets.

use candle::{Device, Tensor};
use rand::{Rng, RngCore};

use crate::csv::PointCloud;
use crate::error::{Error, Result};
use crate::toy::Toy2d;

/// Gathers the rows `indices` of row-major `data` (rows of `dim` values)
/// into a new row-major vector.
///
/// Fails if `dim == 0`, `data.len()` is not a multiple of `dim`, or an index
/// is out of range.
pub fn sample_rows<T: Copy>(data: &[T], dim: usize, indices: &[usize]) -> Result<Vec<T>> {
    if dim == 0 || !data.len().is_multiple_of(dim) {
        return Err(Error::Shape(format!("{} values are not whole rows of {dim} columns", data.len())));
    }
    let n = data.len() / dim;
    let mut out = Vec::with_capacity(indices.len() * dim);
    for &i in indices {
        let row = (i < n)
            .then(|| data.get(i * dim..(i + 1) * dim))
            .flatten()
            .ok_or_else(|| Error::Shape(format!("row index {i} out of range for {n} rows")))?;
        out.extend_from_slice(row);
    }
    Ok(out)
}

/// Something minibatches of `(b, dim)` `f32` tensors can be drawn from.
///
/// The trait is object safe, so a training loop can hold a
/// `Box<dyn Sampler>` regardless of the data source.
pub trait Sampler {
    /// Dimension of each point.
    fn dim(&self) -> usize;

    /// Draws a `(b, dim)` `f32` batch on `device`.
    fn sample_batch(&self, b: usize, rng: &mut dyn RngCore, device: &Device) -> Result<Tensor>;
}

impl Sampler for Toy2d {
    fn dim(&self) -> usize {
        Toy2d::DIM
    }

    fn sample_batch(&self, b: usize, rng: &mut dyn RngCore, device: &Device) -> Result<Tensor> {
        self.sample_tensor(b, rng, device)
    }
}

/// A fixed, finite training set (e.g. `--n-train N` points drawn once from a
/// toy, or a CSV file) from which minibatches are drawn uniformly *with
/// replacement*.
#[derive(Debug, Clone, PartialEq)]
pub struct FiniteSet {
    data: Vec<f32>,
    n: usize,
    dim: usize,
}

impl FiniteSet {
    /// Wraps row-major `data` with rows of `dim` values.
    ///
    /// Fails if `dim == 0`, the length is not a multiple of `dim`, or the set
    /// is empty.
    pub fn new(data: Vec<f32>, dim: usize) -> Result<Self> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(Error::Shape(format!("{} values are not whole rows of {dim} columns", data.len())));
        }
        let n = data.len() / dim;
        if n == 0 {
            return Err(Error::TooFewRows { needed: 1, got: 0 });
        }
        Ok(Self { data, n, dim })
    }

    /// Draws `n` points once from `toy`.
    pub fn from_toy<R: Rng + ?Sized>(toy: &Toy2d, n: usize, rng: &mut R) -> Result<Self> {
        toy.validate()?;
        Self::new(toy.sample(n, rng), Toy2d::DIM)
    }

    /// Uses the points of `cloud` (converted to `f32`).
    pub fn from_point_cloud(cloud: &PointCloud) -> Result<Self> {
        Self::new(cloud.to_f32(), cloud.dim)
    }

    /// Uses the rows of a `(n, dim)` tensor (converted to `f32`).
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let (_, dim) = t.dims2()?;
        let data = t.to_dtype(candle::DType::F32)?.flatten_all()?.to_vec1()?;
        Self::new(data, dim)
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Always `false`: a `FiniteSet` holds at least one point.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The points, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// All points as an `(n, dim)` `f32` tensor.
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(&self.data, (self.n, self.dim), device)?)
    }

    /// Draws `b` row indices uniformly with replacement.
    pub fn sample_indices<R: Rng + ?Sized>(&self, b: usize, rng: &mut R) -> Vec<usize> {
        (0..b).map(|_| rng.random_range(0..self.n)).collect()
    }

    /// Draws a `(b, dim)` `f32` minibatch uniformly with replacement.
    pub fn sample<R: Rng + ?Sized>(&self, b: usize, rng: &mut R, device: &Device) -> Result<Tensor> {
        let idx = self.sample_indices(b, rng);
        let rows = sample_rows(&self.data, self.dim, &idx)?;
        Ok(Tensor::from_vec(rows, (b, self.dim), device)?)
    }
}

impl Sampler for FiniteSet {
    fn dim(&self) -> usize {
        self.dim
    }

    fn sample_batch(&self, b: usize, rng: &mut dyn RngCore, device: &Device) -> Result<Tensor> {
        self.sample(b, rng, device)
    }
}

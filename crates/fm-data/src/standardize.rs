//! Per-column standardization `x ↦ (x − mean) / std` and its inverse.

use candle::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::csv::PointCloud;
use crate::error::{Error, Result};

/// An affine per-column map `z = (x − mean) / std`, fitted to data.
///
/// Models are trained on `z`; [`Standardizer::inverse`] maps samples back to
/// data units and [`Standardizer::log_abs_det_jacobian`] converts densities:
/// `log p_x(x) = log p_z(z) + log_abs_det_jacobian()`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    /// Per-column mean.
    pub mean: Vec<f64>,
    /// Per-column standard deviation (population, i.e. divided by `n`, as
    /// scikit-learn's `StandardScaler`); always finite and `> 0` when fitted.
    pub std: Vec<f64>,
}

impl Standardizer {
    /// The identity map in `dim` dimensions (mean 0, std 1).
    pub fn identity(dim: usize) -> Self {
        Self { mean: vec![0.0; dim], std: vec![1.0; dim] }
    }

    /// Fits the mean and (population) standard deviation of every column of
    /// `cloud`; errors name the offending column.
    pub fn fit(cloud: &PointCloud) -> Result<Self> {
        Self::fit_impl(&cloud.data, cloud.n, cloud.dim, Some(&cloud.columns))
    }

    /// Fits to row-major `data` of `n` rows and `dim` columns.
    ///
    /// Fails if `dim == 0`, `data.len() != n * dim`, `n < 2`, a value is not finite, or a
    /// column has zero standard deviation.
    pub fn fit_data(data: &[f64], n: usize, dim: usize) -> Result<Self> {
        Self::fit_impl(data, n, dim, None)
    }

    fn fit_impl(data: &[f64], n: usize, dim: usize, names: Option<&[String]>) -> Result<Self> {
        if n.checked_mul(dim) != Some(data.len()) {
            return Err(Error::Shape(format!("{} values cannot be {n} rows of {dim} columns", data.len())));
        }
        if dim == 0 {
            return Err(Error::Shape("cannot standardize 0-dimensional data".into()));
        }
        if n < 2 {
            return Err(Error::TooFewRows { needed: 2, got: n });
        }
        let column = |j: usize| {
            names
                .and_then(|names| names.get(j))
                .map(|name| format!("{name:?}"))
                .unwrap_or_else(|| j.to_string())
        };
        let mut mean = vec![0.0; dim];
        for row in data.chunks_exact(dim) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut var = vec![0.0; dim];
        for row in data.chunks_exact(dim) {
            for ((s, &v), &m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (v - m) * (v - m);
            }
        }
        let std: Vec<f64> = var.iter().map(|s| (s / n as f64).sqrt()).collect();
        for (j, &s) in std.iter().enumerate() {
            // Relative threshold: a column that is constant up to rounding.
            let scale = mean[j].abs().max(f64::MIN_POSITIVE);
            if !(s.is_finite() && s > 0.0 && s > scale * 1e-12) {
                return Err(Error::ZeroVariance { column: column(j), std: s });
            }
        }
        Ok(Self { mean, std })
    }

    /// Number of columns.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// `log |det ∂z/∂x| = −Σ log std`, the log-Jacobian of `x ↦ (x−mean)/std`
    /// per point. Add it to a log-density computed in standardized space to
    /// report the log-likelihood in data units.
    pub fn log_abs_det_jacobian(&self) -> f64 {
        -self.std.iter().map(|s| s.ln()).sum::<f64>()
    }

    fn check_params(&self) -> Result<()> {
        if self.std.len() != self.mean.len() {
            return Err(Error::Shape(format!(
                "standardizer has {} means but {} standard deviations",
                self.mean.len(),
                self.std.len()
            )));
        }
        Ok(())
    }

    fn check_len(&self, len: usize) -> Result<()> {
        self.check_params()?;
        let dim = self.dim();
        if dim == 0 || !len.is_multiple_of(dim) {
            return Err(Error::Shape(format!("{len} values are not whole rows of {dim} columns")));
        }
        Ok(())
    }

    /// Standardizes row-major `data` in place.
    pub fn transform(&self, data: &mut [f64]) -> Result<()> {
        self.check_len(data.len())?;
        for row in data.chunks_exact_mut(self.dim()) {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = (*v - m) / s;
            }
        }
        Ok(())
    }

    /// Maps standardized row-major `data` back to data units in place.
    pub fn inverse_slice(&self, data: &mut [f64]) -> Result<()> {
        self.check_len(data.len())?;
        for row in data.chunks_exact_mut(self.dim()) {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = *v * s + m;
            }
        }
        Ok(())
    }

    /// Returns a standardized copy of `cloud` (same columns and source).
    pub fn transform_cloud(&self, cloud: &PointCloud) -> Result<PointCloud> {
        if cloud.dim != self.dim() {
            return Err(Error::Shape(format!(
                "standardizer has {} columns, point cloud has {}",
                self.dim(),
                cloud.dim
            )));
        }
        let mut out = cloud.clone();
        self.transform(&mut out.data)?;
        Ok(out)
    }

    /// `mean` and `std` as `(1, dim)` tensors matching `x`'s dtype and device,
    /// after checking that `x` is `(b, dim)`.
    fn params_for(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.check_params()?;
        let dims = x.dims();
        if dims.len() != 2 || dims[1] != self.dim() {
            return Err(Error::Shape(format!(
                "expected a (batch, {}) tensor, got shape {:?}",
                self.dim(),
                dims
            )));
        }
        let device: &Device = x.device();
        let mean = Tensor::from_slice(&self.mean, (1, self.dim()), device)?.to_dtype(x.dtype())?;
        let std = Tensor::from_slice(&self.std, (1, self.dim()), device)?.to_dtype(x.dtype())?;
        Ok((mean, std))
    }

    /// Standardizes a `(b, dim)` tensor: `(x − mean) / std`.
    pub fn transform_tensor(&self, x: &Tensor) -> Result<Tensor> {
        let (mean, std) = self.params_for(x)?;
        Ok(x.broadcast_sub(&mean)?.broadcast_div(&std)?)
    }

    /// Maps a standardized `(b, dim)` tensor back to data units:
    /// `z · std + mean`.
    pub fn inverse(&self, z: &Tensor) -> Result<Tensor> {
        let (mean, std) = self.params_for(z)?;
        Ok(z.broadcast_mul(&std)?.broadcast_add(&mean)?)
    }
}

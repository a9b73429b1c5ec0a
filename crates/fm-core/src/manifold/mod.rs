//! Flow matching on manifolds (Chen & Lipman, "Flow Matching on General
//! Geometries", 2024): the geometry of the sphere `S^d`, the flat torus
//! `T^d`, Euclidean space and their products, the geodesic conditional path,
//! the projected velocity field, its sampler and its likelihood.
//!
//! Every manifold here is embedded in a Euclidean space with the induced
//! metric, and points are rows of their **embedding coordinates**: `S^d` as
//! unit vectors of `R^(d+1)`, the torus `T^d` as `d` unit circles
//! (`(cos θᵢ, sin θᵢ)`, so a network sees periodic inputs; the product of
//! circles with the induced metric is exactly the flat torus), `R^d` as is.
//! The metric is then the Euclidean inner product of tangent vectors, and
//! the loss `‖v_θ − u_t‖²` of Riemannian flow matching is the plain squared
//! error of tangent vectors.
//!
//! A **chart** maps a point to the coordinates users hold: longitude and
//! latitude in degrees on `S²`, an angle in degrees on a circle, the angles
//! of a torus ([`Manifold::chart`], [`Manifold::embed`]).
//!
//! ```
//! use candle::{Device, Tensor};
//! use fm_core::manifold::{Manifold, ManifoldSpec};
//!
//! # fn main() -> fm_core::Result<()> {
//! let sphere = "sphere".parse::<ManifoldSpec>()?.build();
//! // Paris and New York (longitude, latitude) on S².
//! let x = sphere.embed(&[2.35, 48.86, -74.0, 40.71])?;
//! let x = Tensor::from_vec(x, (2, 3), &Device::Cpu)?;
//! let d = sphere.distance(&x.narrow(0, 0, 1)?, &x.narrow(0, 1, 1)?)?.to_vec1::<f64>()?;
//! assert!((d[0] * 6371.0 - 5837.0).abs() < 5.0); // km on the Earth
//! # Ok(())
//! # }
//! ```

mod euclidean;
mod field;
mod likelihood;
mod path;
mod product;
mod spec;
mod sphere;
mod vmf;

use std::fmt;

use candle::{DType, Tensor};

use crate::{Error, Result, SeededRng};

pub use euclidean::Euclidean;
pub use field::{sample_on_manifold, ManifoldOde, ProjectedField, Retraction};
pub use likelihood::{riemannian_divergence, riemannian_log_likelihood};
pub use path::GeodesicPath;
pub use product::Product;
pub use spec::ManifoldSpec;
pub use sphere::Sphere;
pub use vmf::{VonMisesFisher, VonMisesFisherMixture};

/// A Riemannian manifold embedded in `R^n` with the induced metric.
///
/// The required methods act on one point (a row of `ambient_dim()` values in
/// `f64`); the provided ones apply them to every row of a `(b, n)` tensor and
/// return the tensor's dtype.
pub trait Manifold: Send + Sync + fmt::Debug {
    /// The manifold's own dimension (2 for `S²` and `T²`).
    fn dim(&self) -> usize;

    /// The dimension of the embedding space (3 for `S²`, 4 for `T²`).
    fn ambient_dim(&self) -> usize;

    /// The number of chart coordinates of a point (2 for `S²`: longitude, latitude).
    fn chart_dim(&self) -> usize;

    /// The specification that builds this manifold back.
    fn spec(&self) -> ManifoldSpec;

    /// The closest point of the manifold to `x` (in place).
    fn project_point(&self, x: &mut [f64]);

    /// The orthogonal projection of `v` onto the tangent space at `x` (in place).
    fn project_tangent_point(&self, x: &[f64], v: &mut [f64]);

    /// `exp_x(v)` for a tangent `v`.
    fn exp_point(&self, x: &[f64], v: &[f64], out: &mut [f64]);

    /// `log_x(y)`: the tangent vector at `x` whose geodesic reaches `y` at
    /// time 1 (the shortest one; undefined on the cut locus, e.g. antipodes).
    fn log_point(&self, x: &[f64], y: &[f64], out: &mut [f64]);

    /// The geodesic `γ(s) = exp_x(s·v)` and its velocity `γ'(s)`.
    fn geodesic_point(&self, x: &[f64], v: &[f64], s: f64, point: &mut [f64], velocity: &mut [f64]);

    /// The geodesic distance.
    fn distance_point(&self, x: &[f64], y: &[f64]) -> f64;

    /// The log-density of the base distribution at `x`, with respect to the
    /// Riemannian volume: uniform on compact factors, `N(0, I)` on Euclidean ones.
    fn base_log_density_point(&self, x: &[f64]) -> f64;

    /// `P(x)·J_V(x)·v` for the projected field `V(x) = P(x) f(x)`, given
    /// `f = f(x)` and the network's Jacobian–vector product `jf_v = J_f(x)·v`.
    /// On a sphere factor `P(J_f v) − (x·f) P v`; on a Euclidean one `J_f v`.
    /// Its trace, `Σⱼ eⱼ·(P J_V eⱼ)`, is the Riemannian divergence of `V`.
    fn projected_jvp_point(&self, x: &[f64], f: &[f64], jf_v: &[f64], v: &[f64], out: &mut [f64]);

    /// Embedding coordinates from chart coordinates (`chart_dim()` values).
    fn embed_point(&self, chart: &[f64], x: &mut [f64]);

    /// Chart coordinates of a point of the manifold.
    fn chart_point(&self, x: &[f64], chart: &mut [f64]);

    /// Projects every row of `x` `(b, n)` onto the manifold. Applied to
    /// `N(0, I)` draws this samples the base: normalised Gaussians are
    /// uniform on a sphere, and Euclidean factors keep their Gaussian.
    fn project(&self, x: &Tensor) -> Result<Tensor> {
        map_rows(self, x, |m, row, out| {
            out.copy_from_slice(row);
            m.project_point(out);
        })
    }

    /// Projects the rows of `v` onto the tangent spaces at the rows of `x`.
    fn project_tangent(&self, x: &Tensor, v: &Tensor) -> Result<Tensor> {
        map_rows2(self, x, v, |m, x, v, out| {
            out.copy_from_slice(v);
            m.project_tangent_point(x, out);
        })
    }

    /// `exp_x(v)` row by row.
    fn exp(&self, x: &Tensor, v: &Tensor) -> Result<Tensor> {
        map_rows2(self, x, v, |m, x, v, out| m.exp_point(x, v, out))
    }

    /// `log_x(y)` row by row.
    fn log(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        map_rows2(self, x, y, |m, x, y, out| m.log_point(x, y, out))
    }

    /// Geodesic distances `(b,)` between the rows of `x` and `y`.
    fn distance(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let n = self.check(x, "x")?;
        self.check(y, "y")?;
        let (a, b) = (crate::to_f64_vec(x)?, crate::to_f64_vec(y)?);
        let d: Vec<f64> = a.chunks(n).zip(b.chunks(n)).map(|(p, q)| self.distance_point(p, q)).collect();
        Ok(Tensor::from_vec(d, x.dim(0)?, x.device())?.to_dtype(x.dtype())?)
    }

    /// The base log-densities `(b,)` of the rows of `x`.
    fn base_log_density(&self, x: &Tensor) -> Result<Tensor> {
        let n = self.check(x, "x")?;
        let d: Vec<f64> = crate::to_f64_vec(x)?.chunks(n).map(|p| self.base_log_density_point(p)).collect();
        Ok(Tensor::from_vec(d, x.dim(0)?, x.device())?.to_dtype(x.dtype())?)
    }

    /// `b` draws of the base distribution (`N(0, I)` draws from `rng`, projected).
    fn sample_base(&self, b: usize, dtype: DType, rng: &mut SeededRng) -> Result<Tensor> {
        self.project(&rng.normal((b, self.ambient_dim()), DType::F64, &candle::Device::Cpu)?)?
            .to_dtype(dtype)
            .map_err(Into::into)
    }

    /// Embedding coordinates of points given row-major in chart coordinates.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `points` if the values do not make
    /// rows of `chart_dim()` or one is not finite.
    fn embed(&self, chart: &[f64]) -> Result<Vec<f64>> {
        let (c, n) = (self.chart_dim(), self.ambient_dim());
        if chart.is_empty() || !chart.len().is_multiple_of(c) {
            return Err(Error::invalid(
                "points",
                format!(
                    "{} values do not make points of {c} chart coordinates on {}",
                    chart.len(),
                    self.spec()
                ),
            ));
        }
        if let Some(i) = chart.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid("points", format!("row {} column {} is {}", i / c, i % c, chart[i])));
        }
        let mut out = vec![0.0; chart.len() / c * n];
        for (p, x) in chart.chunks(c).zip(out.chunks_mut(n)) {
            self.embed_point(p, x);
        }
        Ok(out)
    }

    /// Chart coordinates of points given row-major in embedding coordinates
    /// (each row is projected onto the manifold first).
    fn chart(&self, x: &[f64]) -> Result<Vec<f64>> {
        let (c, n) = (self.chart_dim(), self.ambient_dim());
        if !x.len().is_multiple_of(n) {
            return Err(Error::invalid("points", format!("{} values do not make points of R^{n}", x.len())));
        }
        let mut out = vec![0.0; x.len() / n * c];
        let mut p = vec![0.0; n];
        for (row, chart) in x.chunks(n).zip(out.chunks_mut(c)) {
            p.copy_from_slice(row);
            self.project_point(&mut p);
            self.chart_point(&p, chart);
        }
        Ok(out)
    }

    /// Checks that `x` is a `(b, ambient_dim())` matrix; returns `ambient_dim()`.
    fn check(&self, x: &Tensor, name: &'static str) -> Result<usize> {
        let n = self.ambient_dim();
        match x.dims() {
            &[_, d] if d == n => Ok(n),
            dims => Err(Error::Shape(format!(
                "`{name}` must be (batch, {n}) embedding coordinates on {}, got {dims:?}",
                self.spec()
            ))),
        }
    }
}

/// `f(manifold, row, out)` on every row of `x`.
fn map_rows<M: Manifold + ?Sized>(m: &M, x: &Tensor, f: impl Fn(&M, &[f64], &mut [f64])) -> Result<Tensor> {
    let n = m.check(x, "x")?;
    let a = crate::to_f64_vec(x)?;
    let mut out = vec![0.0; a.len()];
    for (row, o) in a.chunks(n).zip(out.chunks_mut(n)) {
        f(m, row, o);
    }
    Ok(Tensor::from_vec(out, x.dims(), x.device())?.to_dtype(x.dtype())?)
}

/// `f(manifold, x_row, y_row, out)` on every pair of rows.
fn map_rows2<M: Manifold + ?Sized>(
    m: &M,
    x: &Tensor,
    y: &Tensor,
    f: impl Fn(&M, &[f64], &[f64], &mut [f64]),
) -> Result<Tensor> {
    let n = m.check(x, "x")?;
    m.check(y, "y")?;
    if x.dims() != y.dims() {
        return Err(Error::Shape(format!("{:?} vs {:?}", x.dims(), y.dims())));
    }
    let (a, b) = (crate::to_f64_vec(x)?, crate::to_f64_vec(y)?);
    let mut out = vec![0.0; a.len()];
    for ((p, q), o) in a.chunks(n).zip(b.chunks(n)).zip(out.chunks_mut(n)) {
        f(m, p, q, o);
    }
    Ok(Tensor::from_vec(out, x.dims(), x.device())?.to_dtype(x.dtype())?)
}

/// `a · b`.
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

//! Data on a manifold: points given in chart coordinates (longitude and
//! latitude in degrees, angles in degrees) become embedding coordinates in
//! model units, and back.

use fm_core::manifold::ManifoldSpec;
use fm_data::DataSpec;

use super::{Source, TrainingData};
use crate::error::bail;
use crate::{Result, ResultExt};

/// Points a synthetic manifold dataset draws when `--n-train` is not given.
pub const DEFAULT_TRAINING_POINTS: usize = 20_000;

/// Chart coordinates (row-major) as embedding coordinates on `spec`.
pub(crate) fn embed(spec: &ManifoldSpec, points: &[f32]) -> Result<Vec<f32>> {
    let m = spec.build();
    let v: Vec<f64> = points.iter().map(|&x| x as f64).collect();
    Ok(m.embed(&v).with_context(|| format!("points on {spec}"))?.into_iter().map(|x| x as f32).collect())
}

/// Embedding coordinates (row-major) as chart coordinates on `spec`.
pub(crate) fn chart(spec: &ManifoldSpec, x: &[f32]) -> Result<Vec<f32>> {
    let m = spec.build();
    let v: Vec<f64> = x.iter().map(|&x| x as f64).collect();
    Ok(m.chart(&v).with_context(|| format!("points on {spec}"))?.into_iter().map(|x| x as f32).collect())
}

impl TrainingData {
    /// Makes the training points, given in the chart coordinates of `spec`,
    /// points of the manifold in embedding coordinates (model units); data
    /// units stay the chart's (samples come back in degrees).
    ///
    /// # Errors
    /// Data that are not a fixed set of points (fresh toy points, images,
    /// pairs), or whose columns are not the manifold's chart coordinates.
    pub fn embed_on_manifold(&mut self, spec: &ManifoldSpec) -> Result<()> {
        if self.manifold.as_ref() == Some(spec) {
            return Ok(());
        }
        let m = spec.build();
        if self.dim != m.chart_dim() {
            bail!(
                "--manifold {spec}: a point has {} chart coordinates ({}), but `{}` has {} columns{}",
                m.chart_dim(),
                chart_names(spec),
                self.name,
                self.dim,
                if self.columns.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", self.columns.join(", "))
                }
            );
        }
        let raw: Vec<f32> = match &self.source {
            Source::Fixed(points) => match &self.transform {
                // CSV data: the training rows back in the file's units.
                Some(t) => {
                    let mut v: Vec<f64> = points.iter().map(|&x| x as f64).collect();
                    t.inverse_slice(&mut v)?;
                    v.into_iter().map(|x| x as f32).collect()
                }
                None => points.clone(),
            },
            Source::Fresh(toy) => bail!(
                "--manifold needs a fixed set of points on the manifold (a manifold dataset such as \
                 sphere-mixture, or csv:PATH with --columns), not fresh `{toy}` points"
            ),
            Source::Images { .. } | Source::Pairs { .. } => {
                bail!("--manifold applies to points (a manifold dataset or csv:PATH), not to `{}`", self.name)
            }
        };
        let embedded = embed(spec, &raw).with_context(|| format!("--data {}", self.name))?;
        self.source = Source::Fixed(embedded);
        self.transform = None;
        self.dim = m.ambient_dim();
        self.manifold = Some(spec.clone());
        Ok(())
    }

    /// The manifold a synthetic manifold dataset lies on, as `--manifold` names it.
    pub fn default_manifold(&self) -> Option<&'static str> {
        match &self.spec {
            Some(DataSpec::Manifold(toy)) => Some(toy.manifold()),
            _ => None,
        }
    }

    /// The manifold the points lie on (Riemannian runs).
    pub fn manifold(&self) -> Option<&ManifoldSpec> {
        self.manifold.as_ref()
    }

    /// Values per point in data units (the chart's on a manifold).
    pub fn data_dim(&self) -> usize {
        match &self.manifold {
            Some(m) => m.chart_dim(),
            None => self.dim,
        }
    }
}

/// `longitude, latitude` and the like, for messages.
fn chart_names(spec: &ManifoldSpec) -> String {
    match spec {
        ManifoldSpec::Sphere(2) => "longitude, latitude in degrees".into(),
        ManifoldSpec::Sphere(1) => "an angle in degrees".into(),
        ManifoldSpec::Sphere(d) => format!("{} embedding coordinates", d + 1),
        ManifoldSpec::Torus(d) => format!("{d} angles in degrees"),
        ManifoldSpec::Euclidean(d) => format!("{d} coordinates"),
        ManifoldSpec::Product(f) => f.iter().map(chart_names).collect::<Vec<_>>().join("; "),
    }
}

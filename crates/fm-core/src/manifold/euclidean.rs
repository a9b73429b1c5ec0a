//! Euclidean space `R^d` as a (flat) manifold.

use super::{Manifold, ManifoldSpec};

/// `R^d` with the standard metric; the base is `N(0, I)`; the chart is the identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Euclidean {
    dim: usize,
}

impl Euclidean {
    /// `R^d`; `d ≥ 1`.
    pub fn new(dim: usize) -> Self {
        assert!(dim >= 1, "Euclidean space has dimension at least 1");
        Self { dim }
    }
}

impl Manifold for Euclidean {
    fn dim(&self) -> usize {
        self.dim
    }

    fn ambient_dim(&self) -> usize {
        self.dim
    }

    fn chart_dim(&self) -> usize {
        self.dim
    }

    fn spec(&self) -> ManifoldSpec {
        ManifoldSpec::Euclidean(self.dim)
    }

    fn project_point(&self, _x: &mut [f64]) {}

    fn project_tangent_point(&self, _x: &[f64], _v: &mut [f64]) {}

    fn exp_point(&self, x: &[f64], v: &[f64], out: &mut [f64]) {
        out.iter_mut().zip(x.iter().zip(v)).for_each(|(o, (x, v))| *o = x + v);
    }

    fn log_point(&self, x: &[f64], y: &[f64], out: &mut [f64]) {
        out.iter_mut().zip(x.iter().zip(y)).for_each(|(o, (x, y))| *o = y - x);
    }

    fn geodesic_point(&self, x: &[f64], v: &[f64], s: f64, point: &mut [f64], velocity: &mut [f64]) {
        for i in 0..x.len() {
            point[i] = x[i] + s * v[i];
            velocity[i] = v[i];
        }
    }

    fn distance_point(&self, x: &[f64], y: &[f64]) -> f64 {
        x.iter().zip(y).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt()
    }

    fn base_log_density_point(&self, x: &[f64]) -> f64 {
        -0.5 * (self.dim as f64 * (2.0 * std::f64::consts::PI).ln() + super::dot(x, x))
    }

    fn projected_jvp_point(&self, _x: &[f64], _f: &[f64], jf_v: &[f64], _v: &[f64], out: &mut [f64]) {
        out.copy_from_slice(jf_v);
    }

    fn embed_point(&self, chart: &[f64], x: &mut [f64]) {
        x.copy_from_slice(chart);
    }

    fn chart_point(&self, x: &[f64], chart: &mut [f64]) {
        chart.copy_from_slice(x);
    }
}

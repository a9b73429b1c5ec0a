//! Products `M₁ × M₂ × …` of manifolds, and the flat torus as a product of circles.

use super::{Manifold, ManifoldSpec, Sphere};

/// A product manifold: a point is the concatenation of its factors' points
/// (embedding and chart coordinates alike), tangent vectors likewise; the
/// metric is the sum of the factors' (so distances add in squares), the base
/// the product of the factors' bases.
#[derive(Debug)]
pub struct Product {
    factors: Vec<Box<dyn Manifold>>,
    /// Offsets of the factors in the embedding and in the chart (one more than factors).
    ambient: Vec<usize>,
    chart: Vec<usize>,
    /// How this product names itself (a torus is a product of circles).
    spec: ManifoldSpec,
}

impl Product {
    /// The product of `factors` (at least one).
    pub fn new(factors: Vec<Box<dyn Manifold>>) -> Self {
        let spec = ManifoldSpec::Product(factors.iter().map(|f| f.spec()).collect());
        Self::named(factors, spec)
    }

    /// The flat torus `T^d`: `d` unit circles, a point `(cos θ₁, sin θ₁, …)`,
    /// charted by its angles in degrees; the base is uniform, density `(2π)^−d`.
    pub fn torus(dim: usize) -> Self {
        let factors = (0..dim).map(|_| Box::new(Sphere::new(1)) as Box<dyn Manifold>).collect();
        Self::named(factors, ManifoldSpec::Torus(dim))
    }

    fn named(factors: Vec<Box<dyn Manifold>>, spec: ManifoldSpec) -> Self {
        assert!(!factors.is_empty(), "a product needs at least one factor");
        let mut ambient = vec![0];
        let mut chart = vec![0];
        for f in &factors {
            ambient.push(ambient.last().unwrap() + f.ambient_dim());
            chart.push(chart.last().unwrap() + f.chart_dim());
        }
        Self { factors, ambient, chart, spec }
    }

    /// The factors.
    pub fn factors(&self) -> &[Box<dyn Manifold>] {
        &self.factors
    }

    fn blocks(&self) -> impl Iterator<Item = (&dyn Manifold, std::ops::Range<usize>)> + '_ {
        self.factors.iter().enumerate().map(|(i, f)| (f.as_ref(), self.ambient[i]..self.ambient[i + 1]))
    }
}

impl Manifold for Product {
    fn dim(&self) -> usize {
        self.factors.iter().map(|f| f.dim()).sum()
    }

    fn ambient_dim(&self) -> usize {
        *self.ambient.last().unwrap()
    }

    fn chart_dim(&self) -> usize {
        *self.chart.last().unwrap()
    }

    fn spec(&self) -> ManifoldSpec {
        self.spec.clone()
    }

    fn project_point(&self, x: &mut [f64]) {
        for (f, r) in self.blocks() {
            f.project_point(&mut x[r]);
        }
    }

    fn project_tangent_point(&self, x: &[f64], v: &mut [f64]) {
        for (f, r) in self.blocks() {
            f.project_tangent_point(&x[r.clone()], &mut v[r]);
        }
    }

    fn exp_point(&self, x: &[f64], v: &[f64], out: &mut [f64]) {
        for (f, r) in self.blocks() {
            f.exp_point(&x[r.clone()], &v[r.clone()], &mut out[r]);
        }
    }

    fn log_point(&self, x: &[f64], y: &[f64], out: &mut [f64]) {
        for (f, r) in self.blocks() {
            f.log_point(&x[r.clone()], &y[r.clone()], &mut out[r]);
        }
    }

    fn geodesic_point(&self, x: &[f64], v: &[f64], s: f64, point: &mut [f64], velocity: &mut [f64]) {
        for (f, r) in self.blocks() {
            f.geodesic_point(&x[r.clone()], &v[r.clone()], s, &mut point[r.clone()], &mut velocity[r]);
        }
    }

    fn distance_point(&self, x: &[f64], y: &[f64]) -> f64 {
        self.blocks().map(|(f, r)| f.distance_point(&x[r.clone()], &y[r]).powi(2)).sum::<f64>().sqrt()
    }

    fn base_log_density_point(&self, x: &[f64]) -> f64 {
        self.blocks().map(|(f, r)| f.base_log_density_point(&x[r])).sum()
    }

    fn projected_jvp_point(&self, x: &[f64], f: &[f64], jf_v: &[f64], v: &[f64], out: &mut [f64]) {
        for (m, r) in self.blocks() {
            m.projected_jvp_point(&x[r.clone()], &f[r.clone()], &jf_v[r.clone()], &v[r.clone()], &mut out[r]);
        }
    }

    fn embed_point(&self, chart: &[f64], x: &mut [f64]) {
        for (i, (f, r)) in self.blocks().enumerate() {
            f.embed_point(&chart[self.chart[i]..self.chart[i + 1]], &mut x[r]);
        }
    }

    fn chart_point(&self, x: &[f64], chart: &mut [f64]) {
        for (i, (f, r)) in self.blocks().enumerate() {
            f.chart_point(&x[r], &mut chart[self.chart[i]..self.chart[i + 1]]);
        }
    }
}

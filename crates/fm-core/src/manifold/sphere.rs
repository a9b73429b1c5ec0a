//! The unit sphere `S^d ⊂ R^(d+1)`.

use super::{dot, Manifold, ManifoldSpec};

/// The unit sphere `S^d` in `R^(d+1)` (`d ≥ 1`; `S¹` is the circle).
///
/// Charts: `S¹` by its angle in degrees (`atan2(y, x)`, in `(−180, 180]`),
/// `S²` by longitude and latitude in degrees (`x = cos φ cos λ`,
/// `y = cos φ sin λ`, `z = sin φ`), higher spheres by their embedding
/// coordinates. The base is the uniform distribution, density
/// `1 / |S^d|` with `|S^d| = 2π^((d+1)/2) / Γ((d+1)/2)` (`2π` for `S¹`, `4π` for `S²`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sphere {
    dim: usize,
}

impl Sphere {
    /// `S^d`; `d ≥ 1`.
    pub fn new(dim: usize) -> Self {
        assert!(dim >= 1, "a sphere has dimension at least 1");
        Self { dim }
    }

    /// The area `|S^d|` of the sphere.
    pub fn area(&self) -> f64 {
        // |S^d| = 2π^((d+1)/2) / Γ((d+1)/2), by the recursion |S^d| = 2π/(d−1) |S^(d−2)|.
        let mut area =
            if self.dim % 2 == 1 { 2.0 * std::f64::consts::PI } else { 4.0 * std::f64::consts::PI };
        let mut k = if self.dim % 2 == 1 { 1 } else { 2 };
        while k < self.dim {
            k += 2;
            area *= 2.0 * std::f64::consts::PI / (k as f64 - 1.0);
        }
        area
    }
}

fn norm(v: &[f64]) -> f64 {
    dot(v, v).sqrt()
}

impl Manifold for Sphere {
    fn dim(&self) -> usize {
        self.dim
    }

    fn ambient_dim(&self) -> usize {
        self.dim + 1
    }

    fn chart_dim(&self) -> usize {
        match self.dim {
            1 | 2 => self.dim,
            d => d + 1,
        }
    }

    fn spec(&self) -> ManifoldSpec {
        ManifoldSpec::Sphere(self.dim)
    }

    fn project_point(&self, x: &mut [f64]) {
        let n = norm(x);
        if n > 0.0 && n.is_finite() {
            x.iter_mut().for_each(|v| *v /= n);
        } else {
            // The origin has no closest point: any one is as close.
            x.iter_mut().for_each(|v| *v = 0.0);
            x[0] = 1.0;
        }
    }

    fn project_tangent_point(&self, x: &[f64], v: &mut [f64]) {
        // P(x) = I − x̂ x̂ᵀ, with x̂ = x/|x| so that off-sphere stage points work too.
        let n2 = dot(x, x);
        if n2 > 0.0 {
            let c = dot(x, v) / n2;
            v.iter_mut().zip(x).for_each(|(v, x)| *v -= c * x);
        }
    }

    fn exp_point(&self, x: &[f64], v: &[f64], out: &mut [f64]) {
        let n = norm(v);
        let (c, s) = (n.cos(), if n > 0.0 { n.sin() / n } else { 1.0 });
        out.iter_mut().zip(x.iter().zip(v)).for_each(|(o, (x, v))| *o = c * x + s * v);
        self.project_point(out);
    }

    fn log_point(&self, x: &[f64], y: &[f64], out: &mut [f64]) {
        let c = dot(x, y);
        out.iter_mut().zip(x.iter().zip(y)).for_each(|(o, (x, y))| *o = y - c * x);
        let s = norm(out);
        // θ = atan2(|y − (x·y)x|, x·y) is accurate at every angle (acos is not near 0 and π).
        let theta = s.atan2(c);
        let f = if s > 0.0 { theta / s } else { 1.0 };
        out.iter_mut().for_each(|o| *o *= f);
    }

    fn geodesic_point(&self, x: &[f64], v: &[f64], s: f64, point: &mut [f64], velocity: &mut [f64]) {
        let n = norm(v);
        let (c, sn) = ((s * n).cos(), (s * n).sin());
        let sinc = if n > 0.0 { sn / n } else { s };
        for i in 0..x.len() {
            point[i] = c * x[i] + sinc * v[i];
            velocity[i] = -n * sn * x[i] + c * v[i];
        }
    }

    fn distance_point(&self, x: &[f64], y: &[f64]) -> f64 {
        let c = dot(x, y);
        let s2: f64 = x.iter().zip(y).map(|(x, y)| (y - c * x).powi(2)).sum();
        s2.sqrt().atan2(c)
    }

    fn base_log_density_point(&self, _x: &[f64]) -> f64 {
        -self.area().ln()
    }

    fn projected_jvp_point(&self, x: &[f64], f: &[f64], jf_v: &[f64], v: &[f64], out: &mut [f64]) {
        // V = P f with P = I − x xᵀ: P (dV/dx · v) = P (J_f v) − (x·f) P v (P x = 0).
        let xf = dot(x, f);
        out.iter_mut().zip(jf_v.iter().zip(v)).for_each(|(o, (j, v))| *o = j - xf * v);
        self.project_tangent_point(x, out);
    }

    fn embed_point(&self, chart: &[f64], x: &mut [f64]) {
        match self.dim {
            1 => {
                let a = chart[0].to_radians();
                x[0] = a.cos();
                x[1] = a.sin();
            }
            2 => {
                let (lon, lat) = (chart[0].to_radians(), chart[1].to_radians());
                x[0] = lat.cos() * lon.cos();
                x[1] = lat.cos() * lon.sin();
                x[2] = lat.sin();
            }
            _ => {
                x.copy_from_slice(chart);
                self.project_point(x);
            }
        }
    }

    fn chart_point(&self, x: &[f64], chart: &mut [f64]) {
        match self.dim {
            1 => chart[0] = x[1].atan2(x[0]).to_degrees(),
            2 => {
                chart[0] = x[1].atan2(x[0]).to_degrees();
                chart[1] = x[2].atan2(x[0].hypot(x[1])).to_degrees();
            }
            _ => chart.copy_from_slice(x),
        }
    }
}

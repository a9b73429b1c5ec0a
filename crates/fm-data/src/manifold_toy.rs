//! Synthetic datasets on manifolds, in chart coordinates (degrees): a
//! mixture of von Mises–Fisher components on the sphere, a mixture of
//! wrapped von Mises components on the torus (placed like the main regions of
//! a Ramachandran plot of protein backbone angles), and positions on the
//! sphere with a time of day (`S² × S¹`).
//!
//! ```
//! use fm_data::manifold_toy::ManifoldToy;
//! use rand::SeedableRng;
//!
//! let toy: ManifoldToy = "torus-mixture".parse().unwrap();
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let points = toy.sample(100, &mut rng);
//! assert_eq!(points.len(), 100 * toy.columns().len());
//! assert!(points.iter().all(|a| (-180.0..=180.0).contains(a)));
//! ```

use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

use rand::{Rng, RngCore};

use crate::{Error, Result};

/// A synthetic dataset on a manifold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManifoldToy {
    /// Five von Mises–Fisher components on `S²` (κ from 15 to 60), equal
    /// weights; columns `longitude`, `latitude` in degrees.
    SphereMixture,
    /// Three products of von Mises components on `T²` at the α-helix
    /// (−63°, −43°), β-sheet (−120°, 130°) and left-handed helix (60°, 45°)
    /// regions, weights 0.5, 0.35, 0.15; columns `phi`, `psi` in degrees.
    TorusMixture,
    /// `S² × S¹`: positions of [`ManifoldToy::SphereMixture`] and a time of
    /// day whose local hour peaks at 8 h or 18 h (von Mises, κ = 6 on the
    /// 24-hour circle), reported in UTC (local − longitude/15 h), as an angle
    /// of 15° per hour; columns `longitude`, `latitude`, `utc_hour_angle`.
    SphereClock,
}

impl ManifoldToy {
    /// Every dataset, in the order `--data` lists them.
    pub const ALL: [ManifoldToy; 3] =
        [ManifoldToy::SphereMixture, ManifoldToy::TorusMixture, ManifoldToy::SphereClock];

    /// The name `--data` takes.
    pub fn name(&self) -> &'static str {
        match self {
            ManifoldToy::SphereMixture => "sphere-mixture",
            ManifoldToy::TorusMixture => "torus-mixture",
            ManifoldToy::SphereClock => "sphere-clock",
        }
    }

    /// The chart columns of a point.
    pub fn columns(&self) -> &'static [&'static str] {
        match self {
            ManifoldToy::SphereMixture => &["longitude", "latitude"],
            ManifoldToy::TorusMixture => &["phi", "psi"],
            ManifoldToy::SphereClock => &["longitude", "latitude", "utc_hour_angle"],
        }
    }

    /// The manifold the data lie on, as `--manifold` names it.
    pub fn manifold(&self) -> &'static str {
        match self {
            ManifoldToy::SphereMixture => "sphere",
            ManifoldToy::TorusMixture => "torus:2",
            ManifoldToy::SphereClock => "product:sphere+torus:1",
        }
    }

    /// `n` points, row-major, in degrees (angles in `(−180, 180]`).
    pub fn sample<R: RngCore + ?Sized>(&self, n: usize, rng: &mut R) -> Vec<f32> {
        let mut out = Vec::with_capacity(n * self.columns().len());
        for _ in 0..n {
            match self {
                ManifoldToy::SphereMixture => {
                    let (lon, lat) = sphere_mixture(rng);
                    out.extend([lon as f32, lat as f32]);
                }
                ManifoldToy::TorusMixture => {
                    const C: [(f64, f64, f64, f64); 3] =
                        [(-63.0, -43.0, 25.0, 0.5), (-120.0, 130.0, 8.0, 0.35), (60.0, 45.0, 20.0, 0.15)];
                    let c = pick(rng, &C.map(|c| c.3));
                    let (m1, m2, k, _) = C[c];
                    let a = m1.to_radians() + von_mises(k, rng);
                    let b = m2.to_radians() + von_mises(k, rng);
                    out.extend([wrap_degrees(a.to_degrees()) as f32, wrap_degrees(b.to_degrees()) as f32]);
                }
                ManifoldToy::SphereClock => {
                    let (lon, lat) = sphere_mixture(rng);
                    let local = if rng.random::<f64>() < 0.5 { 8.0 } else { 18.0 };
                    let hour = local + von_mises(6.0, rng) * 12.0 / PI - lon / 15.0;
                    out.extend([lon as f32, lat as f32, wrap_degrees(hour * 15.0) as f32]);
                }
            }
        }
        out
    }
}

/// A draw of the sphere mixture: `(longitude, latitude)` in degrees.
fn sphere_mixture<R: RngCore + ?Sized>(rng: &mut R) -> (f64, f64) {
    // (longitude, latitude, κ): Europe, East Asia, North America, South America, Australia.
    const C: [(f64, f64, f64); 5] = [
        (10.0, 50.0, 40.0),
        (115.0, 30.0, 25.0),
        (-95.0, 40.0, 30.0),
        (-60.0, -15.0, 15.0),
        (135.0, -25.0, 60.0),
    ];
    let (lon, lat, kappa) = C[pick(rng, &[1.0; 5])];
    let mu = embed(lon, lat);
    // w = μ·x by inversion of its CDF, then a uniform direction around μ.
    let u: f64 = rng.random();
    let w = (1.0 + (u + (1.0 - u) * (-2.0 * kappa).exp()).ln() / kappa).clamp(-1.0, 1.0);
    let phi = 2.0 * PI * rng.random::<f64>();
    let e1 = normalize([-mu[1], mu[0], 0.0]);
    let e2 = [mu[1] * e1[2] - mu[2] * e1[1], mu[2] * e1[0] - mu[0] * e1[2], mu[0] * e1[1] - mu[1] * e1[0]];
    let s = (1.0 - w * w).max(0.0).sqrt();
    let x: [f64; 3] = std::array::from_fn(|i| w * mu[i] + s * (phi.cos() * e1[i] + phi.sin() * e2[i]));
    (x[1].atan2(x[0]).to_degrees(), x[2].atan2(x[0].hypot(x[1])).to_degrees())
}

fn embed(lon: f64, lat: f64) -> [f64; 3] {
    let (l, p) = (lon.to_radians(), lat.to_radians());
    [p.cos() * l.cos(), p.cos() * l.sin(), p.sin()]
}

fn normalize(v: [f64; 3]) -> [f64; 3] {
    let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    v.map(|x| x / n)
}

/// The index of a weight drawn proportionally to `w`.
fn pick<R: RngCore + ?Sized>(rng: &mut R, w: &[f64]) -> usize {
    let mut u = rng.random::<f64>() * w.iter().sum::<f64>();
    for (i, &wi) in w.iter().enumerate() {
        if u < wi {
            return i;
        }
        u -= wi;
    }
    w.len() - 1
}

/// An angle in `(−180, 180]`.
fn wrap_degrees(a: f64) -> f64 {
    let r = a.rem_euclid(360.0);
    if r > 180.0 {
        r - 360.0
    } else {
        r
    }
}

/// A von Mises draw of mean 0 and concentration `kappa > 0` in radians
/// (Best & Fisher, 1979).
fn von_mises<R: RngCore + ?Sized>(kappa: f64, rng: &mut R) -> f64 {
    let tau = 1.0 + (1.0 + 4.0 * kappa * kappa).sqrt();
    let rho = (tau - (2.0 * tau).sqrt()) / (2.0 * kappa);
    let r = (1.0 + rho * rho) / (2.0 * rho);
    loop {
        let u1: f64 = rng.random();
        let z = (PI * u1).cos();
        let f = (1.0 + r * z) / (r + z);
        let c = kappa * (r - f);
        let u2: f64 = rng.random();
        if c * (2.0 - c) - u2 > 0.0 || (c / u2).ln() + 1.0 - c >= 0.0 {
            let u3: f64 = rng.random();
            return if u3 > 0.5 { f.acos() } else { -f.acos() };
        }
    }
}

impl FromStr for ManifoldToy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        Self::ALL.into_iter().find(|t| t.name() == s).ok_or(Error::UnknownDataSpec { spec: s })
    }
}

impl fmt::Display for ManifoldToy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn von_mises_draws_have_the_mean_resultant_length_of_their_concentration() {
        // E[cos θ] = I₁(κ)/I₀(κ): 0.9495 for κ = 10 (tables), ≈ 1 − 1/(2κ) for large κ.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let n = 200_000;
        let draws: Vec<f64> = (0..n).map(|_| von_mises(10.0, &mut rng)).collect();
        let c = draws.iter().map(|a| a.cos()).sum::<f64>() / n as f64;
        let s = draws.iter().map(|a| a.sin()).sum::<f64>() / n as f64;
        assert!((c - 0.948_599).abs() < 0.002 && s.abs() < 0.003, "{c} {s}");
    }

    #[test]
    fn every_dataset_gives_its_columns_in_range_and_parses_back() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        for toy in ManifoldToy::ALL {
            assert_eq!(toy.name().parse::<ManifoldToy>().unwrap(), toy);
            let c = toy.columns().len();
            let p = toy.sample(5000, &mut rng);
            assert_eq!(p.len(), 5000 * c);
            for row in p.chunks(c) {
                assert!((-180.0..=180.0).contains(&row[0]), "{toy} {row:?}");
                assert!((-180.0..=180.0).contains(&row[c - 1]));
                if toy != ManifoldToy::TorusMixture {
                    assert!((-90.0..=90.0).contains(&row[1]));
                }
            }
        }
        // The clock's UTC hour follows longitude: the mean resultant of
        // (UTC angle + longitude) has the local hours 8 h and 18 h (120°, 270°).
        let p = ManifoldToy::SphereClock.sample(20_000, &mut rng);
        let local: Vec<f64> = p.chunks(3).map(|r| wrap_degrees(r[2] as f64 + r[0] as f64)).collect();
        let near = |h: f64| local.iter().filter(|a| (wrap_degrees(*a - h * 15.0)).abs() < 30.0).count();
        assert!(
            near(8.0) > 6000 && near(18.0) > 6000 && near(13.0) < 1500,
            "{} {} {}",
            near(8.0),
            near(18.0),
            near(13.0)
        );
    }
}

//! Classic 2D toy distributions used to benchmark flow-matching models.
//!
//! The geometries follow their reference implementations (scikit-learn,
//! FFJORD's `toy_data.py` and torchcfm) so that results are comparable with
//! published numbers; see the documentation of each [`Toy2d`] variant.

use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

use candle::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Default noise standard deviation of [`Toy2d::Moons`] (scikit-learn style).
pub const MOONS_NOISE: f64 = 0.05;
/// Default noise of [`Toy2d::Circles`] (FFJORD: `make_circles(noise=0.08)`).
pub const CIRCLES_NOISE: f64 = 0.08;
/// Default noise standard deviation of [`Toy2d::TwoSpirals`] (FFJORD).
pub const TWO_SPIRALS_NOISE: f64 = 0.1;
/// Default noise of [`Toy2d::SwissRoll`] (FFJORD: `make_swiss_roll(noise=1.0)`).
pub const SWISS_ROLL_NOISE: f64 = 1.0;
/// Radius of the circle on which the [`Toy2d::EightGaussians`] centers lie.
pub const EIGHT_GAUSSIANS_SCALE: f64 = 5.0;
/// The `var` parameter of torchcfm's `eight_normal_sample`; the actual
/// covariance of each component is `sqrt(var)·I` (see [`Toy2d::EightGaussians`]).
pub const EIGHT_GAUSSIANS_VAR: f64 = 0.1;

/// A 2D toy distribution.
///
/// Samples are returned row-major as `n × 2` values (`[x0, y0, x1, y1, …]`).
/// Sampling never fails; use [`Toy2d::validate`] (called by
/// [`Toy2d::sample_tensor`]) to reject non-finite or negative noise levels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Toy2d {
    /// Two interleaving half circles, exactly scikit-learn's
    /// `make_moons(n, noise=noise)`.
    ///
    /// With `n_out = ⌊n/2⌋` and `n_in = n − n_out`, the outer moon is
    /// `(cos θ, sin θ)` for `θ = linspace(0, π, n_out)` and the inner moon is
    /// `(1 − cos θ, 1 − sin θ − 0.5)` for `θ = linspace(0, π, n_in)`
    /// (`linspace` includes both end points, as numpy's). Independent
    /// `N(0, noise²)` noise is added to each coordinate and the rows are
    /// shuffled. No rescaling is applied. Default noise [`MOONS_NOISE`].
    Moons {
        /// Standard deviation of the Gaussian noise added to each coordinate.
        noise: f64,
    },
    /// A mixture of eight Gaussians, as torchcfm's `sample_8gaussians`.
    ///
    /// The centers are `5·(cos(kπ/4), sin(kπ/4))` for `k = 0..7`, chosen
    /// uniformly. torchcfm builds `MultivariateNormal(0, sqrt(var)·I)` with
    /// `var = 0.1`, so each component's covariance is `√0.1·I`, i.e. a
    /// per-coordinate standard deviation of `0.1^(1/4) ≈ 0.562`.
    EightGaussians,
    /// FFJORD's checkerboard on `[−4, 4]²`.
    ///
    /// `x1 ~ U[−2, 2)`, `x2 = U[0, 1) − 2·Bernoulli(½) + (⌊x1⌋ mod 2)`, and
    /// the point is `2·(x1, x2)`. The plane `[−4, 4]²` is a 4×4 board of 2×2
    /// cells of which 8 (a checkerboard pattern) are occupied uniformly, so
    /// the density is exactly `1/32` on its support and 0 elsewhere.
    Checkerboard,
    /// Two concentric circles, FFJORD style: scikit-learn's
    /// `make_circles(n, factor=0.5, noise=noise)` multiplied by 3.
    ///
    /// With `n_out = ⌊n/2⌋`, `n_in = n − n_out`, the outer circle has radius 1
    /// at angles `linspace(0, 2π, n_out, endpoint=False)`, the inner one
    /// radius 0.5 at `linspace(0, 2π, n_in, endpoint=False)`; `N(0, noise²)`
    /// is added per coordinate *before* the scaling by 3 (so the effective
    /// noise standard deviation is `3·noise`); rows are shuffled. Default
    /// noise [`CIRCLES_NOISE`].
    Circles {
        /// Noise standard deviation before the ×3 scaling.
        noise: f64,
    },
    /// FFJORD's `2spirals`.
    ///
    /// `t = √U · 540 · 2π/360`, `d1x = −cos(t)·t + U'·0.5`,
    /// `d1y = sin(t)·t + U''·0.5` (independent uniforms); the first
    /// `n − ⌊n/2⌋` points are `(d1x, d1y)` and the rest `(−d1x, −d1y)`;
    /// everything is divided by 3, then `N(0, noise²)` is added per
    /// coordinate (after the division, as in FFJORD) and the rows are
    /// shuffled. Default noise [`TWO_SPIRALS_NOISE`].
    TwoSpirals {
        /// Standard deviation of the Gaussian noise added to each coordinate.
        noise: f64,
    },
    /// FFJORD's 2D swiss roll: columns `(x, z)` of scikit-learn's
    /// `make_swiss_roll(n, noise=noise)`, divided by 5.
    ///
    /// `t = 1.5π(1 + 2U)`, `x = t·cos t + noise·ε₁`, `z = t·sin t + noise·ε₂`,
    /// point `(x, z)/5` (so the effective noise standard deviation is
    /// `noise/5`). Default noise [`SWISS_ROLL_NOISE`].
    SwissRoll {
        /// Noise standard deviation before the division by 5.
        noise: f64,
    },
}

impl Toy2d {
    /// The canonical names accepted by [`FromStr`] (and produced by
    /// [`fmt::Display`]), in the order of [`Toy2d::ALL`].
    pub const NAMES: [&'static str; 6] =
        ["moons", "8gaussians", "checkerboard", "circles", "2spirals", "swissroll"];

    /// Every toy with its default parameters, in the order of [`Toy2d::NAMES`].
    pub const ALL: [Toy2d; 6] = [
        Toy2d::Moons { noise: MOONS_NOISE },
        Toy2d::EightGaussians,
        Toy2d::Checkerboard,
        Toy2d::Circles { noise: CIRCLES_NOISE },
        Toy2d::TwoSpirals { noise: TWO_SPIRALS_NOISE },
        Toy2d::SwissRoll { noise: SWISS_ROLL_NOISE },
    ];

    /// Dimension of the samples (always 2).
    pub const DIM: usize = 2;

    /// The canonical name (one of [`Toy2d::NAMES`]).
    pub fn name(&self) -> &'static str {
        match self {
            Toy2d::Moons { .. } => "moons",
            Toy2d::EightGaussians => "8gaussians",
            Toy2d::Checkerboard => "checkerboard",
            Toy2d::Circles { .. } => "circles",
            Toy2d::TwoSpirals { .. } => "2spirals",
            Toy2d::SwissRoll { .. } => "swissroll",
        }
    }

    /// The noise parameter, or `None` for toys without one
    /// ([`Toy2d::EightGaussians`], [`Toy2d::Checkerboard`]).
    pub fn noise(&self) -> Option<f64> {
        match *self {
            Toy2d::Moons { noise }
            | Toy2d::Circles { noise }
            | Toy2d::TwoSpirals { noise }
            | Toy2d::SwissRoll { noise } => Some(noise),
            Toy2d::EightGaussians | Toy2d::Checkerboard => None,
        }
    }

    /// Returns the toy with its noise parameter replaced by `noise`; toys
    /// without a noise parameter are returned unchanged.
    pub fn with_noise(self, noise: f64) -> Self {
        match self {
            Toy2d::Moons { .. } => Toy2d::Moons { noise },
            Toy2d::Circles { .. } => Toy2d::Circles { noise },
            Toy2d::TwoSpirals { .. } => Toy2d::TwoSpirals { noise },
            Toy2d::SwissRoll { .. } => Toy2d::SwissRoll { noise },
            other @ (Toy2d::EightGaussians | Toy2d::Checkerboard) => other,
        }
    }

    /// Checks the parameters: the noise, if any, must be finite and `>= 0`.
    pub fn validate(&self) -> Result<()> {
        match self.noise() {
            Some(noise) if !(noise.is_finite() && noise >= 0.0) => Err(Error::InvalidParameter(format!(
                "{}: noise must be finite and >= 0, got {noise}",
                self.name()
            ))),
            _ => Ok(()),
        }
    }

    /// Draws `n` points, returned row-major as `n × 2` `f32` values.
    ///
    /// Computation is done in `f64` and rounded to `f32` at the end.
    pub fn sample<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Vec<f32> {
        let rows = match *self {
            Toy2d::Moons { noise } => moons(n, noise, rng),
            Toy2d::EightGaussians => eight_gaussians(n, rng),
            Toy2d::Checkerboard => checkerboard(n, rng),
            Toy2d::Circles { noise } => circles(n, noise, rng),
            Toy2d::TwoSpirals { noise } => two_spirals(n, noise, rng),
            Toy2d::SwissRoll { noise } => swiss_roll(n, noise, rng),
        };
        rows.iter().flat_map(|&[x, y]| [x as f32, y as f32]).collect()
    }

    /// Draws `n` points as an `f32` tensor of shape `(n, 2)` on `device`.
    ///
    /// Fails if the parameters are invalid (see [`Toy2d::validate`]) or the
    /// tensor cannot be created.
    pub fn sample_tensor<R: Rng + ?Sized>(&self, n: usize, rng: &mut R, device: &Device) -> Result<Tensor> {
        self.validate()?;
        let data = self.sample(n, rng);
        Ok(Tensor::from_vec(data, (n, Self::DIM), device)?)
    }
}

impl fmt::Display for Toy2d {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Toy2d {
    type Err = Error;

    /// Parses a toy name (case-insensitive; `-`, `_` and spaces ignored), with
    /// default parameters. Accepted: `moons` (`two-moons`), `8gaussians`
    /// (`eight-gaussians`), `checkerboard`, `circles`, `2spirals`
    /// (`two-spirals`, `spirals`), `swissroll` (`swiss-roll`).
    fn from_str(s: &str) -> Result<Self> {
        let key: String =
            s.trim().chars().filter(|c| !matches!(c, '-' | '_' | ' ')).flat_map(char::to_lowercase).collect();
        let toy = match key.as_str() {
            "moons" | "twomoons" | "2moons" => Toy2d::ALL[0],
            "8gaussians" | "eightgaussians" | "gaussians8" | "8gauss" => Toy2d::ALL[1],
            "checkerboard" | "checker" | "checkers" => Toy2d::ALL[2],
            "circles" | "2circles" | "twocircles" => Toy2d::ALL[3],
            "2spirals" | "twospirals" | "spirals" => Toy2d::ALL[4],
            "swissroll" | "swiss" | "roll" => Toy2d::ALL[5],
            _ => return Err(Error::UnknownToy { name: s.to_string() }),
        };
        Ok(toy)
    }
}

/// numpy's `linspace(start, stop, num)` (end point included).
fn linspace(start: f64, stop: f64, num: usize) -> impl Iterator<Item = f64> {
    let step = if num > 1 { (stop - start) / (num - 1) as f64 } else { 0.0 };
    (0..num).map(move |i| if num > 1 && i == num - 1 { stop } else { start + i as f64 * step })
}

fn normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    StandardNormal.sample(rng)
}

fn add_noise<R: Rng + ?Sized>(rows: &mut [[f64; 2]], noise: f64, rng: &mut R) {
    if noise == 0.0 {
        return;
    }
    for row in rows.iter_mut() {
        row[0] += noise * normal(rng);
        row[1] += noise * normal(rng);
    }
}

fn moons<R: Rng + ?Sized>(n: usize, noise: f64, rng: &mut R) -> Vec<[f64; 2]> {
    let n_out = n / 2;
    let n_in = n - n_out;
    let mut rows: Vec<[f64; 2]> = Vec::with_capacity(n);
    rows.extend(linspace(0.0, PI, n_out).map(|t| [t.cos(), t.sin()]));
    rows.extend(linspace(0.0, PI, n_in).map(|t| [1.0 - t.cos(), 1.0 - t.sin() - 0.5]));
    rows.shuffle(rng);
    add_noise(&mut rows, noise, rng);
    rows
}

fn eight_gaussians<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Vec<[f64; 2]> {
    // Covariance sqrt(var)·I  =>  std = var^(1/4).
    let std = EIGHT_GAUSSIANS_VAR.sqrt().sqrt();
    (0..n)
        .map(|_| {
            let k = rng.random_range(0..8u32);
            let angle = f64::from(k) * PI / 4.0;
            [
                EIGHT_GAUSSIANS_SCALE * angle.cos() + std * normal(rng),
                EIGHT_GAUSSIANS_SCALE * angle.sin() + std * normal(rng),
            ]
        })
        .collect()
}

fn checkerboard<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Vec<[f64; 2]> {
    (0..n)
        .map(|_| {
            let x1 = rng.random::<f64>() * 4.0 - 2.0;
            let flip = if rng.random::<bool>() { 2.0 } else { 0.0 };
            let x2 = rng.random::<f64>() - flip + x1.floor().rem_euclid(2.0);
            [2.0 * x1, 2.0 * x2]
        })
        .collect()
}

fn circles<R: Rng + ?Sized>(n: usize, noise: f64, rng: &mut R) -> Vec<[f64; 2]> {
    const FACTOR: f64 = 0.5;
    let n_out = n / 2;
    let n_in = n - n_out;
    let ring = move |m: usize, radius: f64| {
        (0..m).map(move |i| {
            let t = 2.0 * PI * i as f64 / m as f64;
            [radius * t.cos(), radius * t.sin()]
        })
    };
    let mut rows: Vec<[f64; 2]> = ring(n_out, 1.0).chain(ring(n_in, FACTOR)).collect();
    rows.shuffle(rng);
    add_noise(&mut rows, noise, rng);
    for row in rows.iter_mut() {
        row[0] *= 3.0;
        row[1] *= 3.0;
    }
    rows
}

fn two_spirals<R: Rng + ?Sized>(n: usize, noise: f64, rng: &mut R) -> Vec<[f64; 2]> {
    let n_pos = n - n / 2;
    let mut rows: Vec<[f64; 2]> = (0..n)
        .map(|i| {
            let t = rng.random::<f64>().sqrt() * 540.0 * (2.0 * PI) / 360.0;
            let dx = -t.cos() * t + rng.random::<f64>() * 0.5;
            let dy = t.sin() * t + rng.random::<f64>() * 0.5;
            let sign = if i < n_pos { 1.0 } else { -1.0 };
            [sign * dx / 3.0, sign * dy / 3.0]
        })
        .collect();
    add_noise(&mut rows, noise, rng);
    rows.shuffle(rng);
    rows
}

fn swiss_roll<R: Rng + ?Sized>(n: usize, noise: f64, rng: &mut R) -> Vec<[f64; 2]> {
    (0..n)
        .map(|_| {
            let t = 1.5 * PI * (1.0 + 2.0 * rng.random::<f64>());
            let x = t * t.cos() + noise * normal(rng);
            let z = t * t.sin() + noise * normal(rng);
            [x / 5.0, z / 5.0]
        })
        .collect()
}

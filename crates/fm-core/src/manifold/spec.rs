//! Naming a manifold: `sphere`, `torus:2`, `euclidean:3`, `product:sphere+torus:1`.

use std::fmt;
use std::str::FromStr;

use super::{Euclidean, Manifold, Product, Sphere};
use crate::{Error, Result};

/// The largest manifold dimension a specification may name.
pub const MAX_DIM: usize = 4096;

/// A manifold by name, as `--manifold` takes it and checkpoints record it.
///
/// Grammar: `sphere[:d]` (`S^d`, default `S²`), `torus[:d]` (`T^d`),
/// `euclidean[:d]` (`R^d`), `product:A+B+…` of those. A dimension left out
/// is filled from the data by [`ManifoldSpec::with_chart_dim`] (torus and
/// Euclidean: the number of chart columns); inside a product a torus or
/// Euclidean factor without one is 1-dimensional.
///
/// ```
/// use fm_core::manifold::{Manifold, ManifoldSpec};
///
/// # fn main() -> fm_core::Result<()> {
/// let m = "product:sphere+torus".parse::<ManifoldSpec>()?.build();
/// assert_eq!((m.dim(), m.ambient_dim(), m.chart_dim()), (3, 5, 3));
/// assert_eq!(m.spec().to_string(), "product:sphere:2+torus:1");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManifoldSpec {
    /// `S^d`.
    Sphere(usize),
    /// The flat torus `T^d`.
    Torus(usize),
    /// `R^d`.
    Euclidean(usize),
    /// A product of the others.
    Product(Vec<ManifoldSpec>),
}

/// A factor as parsed, its dimension possibly left to the data.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Sphere,
    Torus,
    Euclidean,
}

impl ManifoldSpec {
    /// The manifold.
    pub fn build(&self) -> Box<dyn Manifold> {
        match self {
            ManifoldSpec::Sphere(d) => Box::new(Sphere::new(*d)),
            ManifoldSpec::Torus(d) => Box::new(Product::torus(*d)),
            ManifoldSpec::Euclidean(d) => Box::new(Euclidean::new(*d)),
            ManifoldSpec::Product(f) => Box::new(Product::new(f.iter().map(|s| s.build()).collect())),
        }
    }

    /// Parses `s`, taking the dimension a bare `torus` or `euclidean` leaves
    /// out from `chart_columns` (the data's columns).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `manifold`: an unknown name or a bad dimension.
    pub fn with_chart_dim(s: &str, chart_columns: Option<usize>) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        if let Some(rest) = s.strip_prefix("product:") {
            let factors = rest
                .split('+')
                .map(|f| parse_factor(f, Some(1)).map(|(k, d)| build(k, d)))
                .collect::<Result<Vec<_>>>()?;
            if factors.len() < 2 {
                return Err(invalid(&s, "a product needs at least two factors joined by `+`"));
            }
            return Ok(ManifoldSpec::Product(factors));
        }
        let (kind, dim) = parse_factor(&s, chart_columns)?;
        Ok(build(kind, dim))
    }

    /// Checks a specification read from a file before [`ManifoldSpec::build`]:
    /// every dimension in `1..=MAX_DIM`, products of at least two factors
    /// that are not themselves products, at most `MAX_DIM` factors.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `manifold`.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::invalid("manifold", why));
        match self {
            ManifoldSpec::Sphere(d) | ManifoldSpec::Torus(d) | ManifoldSpec::Euclidean(d) => {
                if *d == 0 || *d > MAX_DIM {
                    return bad(format!("`{self}`: the dimension must be in 1..={MAX_DIM}"));
                }
                Ok(())
            }
            ManifoldSpec::Product(f) => {
                if f.len() < 2 || f.len() > MAX_DIM {
                    return bad(format!("a product needs 2..={MAX_DIM} factors, got {}", f.len()));
                }
                if f.iter().any(|f| matches!(f, ManifoldSpec::Product(_))) {
                    return bad("a product's factors cannot be products".into());
                }
                f.iter().try_for_each(|f| f.validate())
            }
        }
    }

    /// The dimension of the embedding space (of a valid specification).
    pub fn ambient_dim(&self) -> usize {
        match self {
            ManifoldSpec::Sphere(d) => d + 1,
            ManifoldSpec::Torus(d) => 2 * d,
            ManifoldSpec::Euclidean(d) => *d,
            ManifoldSpec::Product(f) => f.iter().map(|f| f.ambient_dim()).sum(),
        }
    }

    /// The number of chart coordinates of a point (of a valid specification).
    pub fn chart_dim(&self) -> usize {
        match self {
            ManifoldSpec::Sphere(d @ (1 | 2)) => *d,
            ManifoldSpec::Sphere(d) => d + 1,
            ManifoldSpec::Torus(d) | ManifoldSpec::Euclidean(d) => *d,
            ManifoldSpec::Product(f) => f.iter().map(|f| f.chart_dim()).sum(),
        }
    }

    /// Whether it is (or contains) a compact factor with a uniform base.
    pub fn is_compact(&self) -> bool {
        match self {
            ManifoldSpec::Sphere(_) | ManifoldSpec::Torus(_) => true,
            ManifoldSpec::Euclidean(_) => false,
            ManifoldSpec::Product(f) => f.iter().all(|f| f.is_compact()),
        }
    }
}

fn build(kind: Kind, dim: usize) -> ManifoldSpec {
    match kind {
        Kind::Sphere => ManifoldSpec::Sphere(dim),
        Kind::Torus => ManifoldSpec::Torus(dim),
        Kind::Euclidean => ManifoldSpec::Euclidean(dim),
    }
}

fn invalid(s: &str, why: &str) -> Error {
    Error::invalid(
        "manifold",
        format!("`{s}`: {why}; valid: sphere[:d], torus[:d], euclidean[:d], product:A+B (e.g. product:sphere+torus:1)"),
    )
}

fn parse_factor(s: &str, default_flat: Option<usize>) -> Result<(Kind, usize)> {
    let (name, dim) = match s.split_once(':') {
        Some((n, d)) => {
            let d: usize =
                d.trim().parse().map_err(|_| invalid(s, "the dimension must be a whole number"))?;
            (n.trim(), Some(d))
        }
        None => (s.trim(), None),
    };
    let kind = match name {
        "sphere" | "s" => Kind::Sphere,
        "torus" | "t" => Kind::Torus,
        "euclidean" | "r" | "flat" => Kind::Euclidean,
        "circle" => return Ok((Kind::Sphere, check_dim(s, dim.unwrap_or(1))?)),
        _ => return Err(invalid(s, "unknown manifold")),
    };
    let dim = match (kind, dim) {
        (_, Some(d)) => d,
        (Kind::Sphere, None) => 2,
        (_, None) => default_flat.ok_or_else(|| invalid(s, "give the dimension (e.g. torus:2)"))?,
    };
    Ok((kind, check_dim(s, dim)?))
}

fn check_dim(s: &str, d: usize) -> Result<usize> {
    if d == 0 || d > MAX_DIM {
        return Err(invalid(s, &format!("the dimension must be in 1..={MAX_DIM}")));
    }
    Ok(d)
}

impl FromStr for ManifoldSpec {
    type Err = Error;

    /// [`ManifoldSpec::with_chart_dim`] without data: a bare `torus` is `T²`, a bare `euclidean` `R²`.
    fn from_str(s: &str) -> Result<Self> {
        Self::with_chart_dim(s, Some(2))
    }
}

impl fmt::Display for ManifoldSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifoldSpec::Sphere(d) => write!(f, "sphere:{d}"),
            ManifoldSpec::Torus(d) => write!(f, "torus:{d}"),
            ManifoldSpec::Euclidean(d) => write!(f, "euclidean:{d}"),
            ManifoldSpec::Product(factors) => {
                write!(f, "product:")?;
                for (i, m) in factors.iter().enumerate() {
                    if i > 0 {
                        write!(f, "+")?;
                    }
                    write!(f, "{m}")?;
                }
                Ok(())
            }
        }
    }
}

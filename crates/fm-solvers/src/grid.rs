//! The time grid a solve runs over.

use crate::{Error, Result};

/// A strictly monotone sequence of finite times, at least two of them.
///
/// The grid runs forwards (`t0 < t1 < …`, e.g. `0 → 1` for sampling) or
/// backwards (`t0 > t1 > …`, e.g. `1 → 0` for likelihoods). Fixed-step
/// solvers take one step per interval; adaptive solvers integrate from
/// [`start`](Self::start) to [`end`](Self::end) and hit every point exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeGrid {
    points: Vec<f64>,
}

impl TimeGrid {
    /// `steps` equal intervals from `t0` to `t1` (`steps + 1` points).
    ///
    /// The first and last points are exactly `t0` and `t1`. `t1 < t0` gives a
    /// backward grid.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidGrid`] if `steps == 0`, if `t0` or `t1` is not finite,
    /// or if `t0 == t1` (or the interval is too short for `steps` distinct
    /// points).
    pub fn uniform(t0: f64, t1: f64, steps: usize) -> Result<Self> {
        if steps == 0 {
            return Err(Error::InvalidGrid("a uniform grid needs at least 1 step, got 0".into()));
        }
        if !t0.is_finite() || !t1.is_finite() {
            return Err(Error::InvalidGrid(format!("the end points must be finite, got {t0} and {t1}")));
        }
        let span = t1 - t0;
        let n = steps as f64;
        let points =
            (0..=steps).map(|k| if k == steps { t1 } else { t0 + span * (k as f64 / n) }).collect::<Vec<_>>();
        Self::from_points(points)
    }

    /// A grid from explicit points.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidGrid`] if there are fewer than two points, if any is
    /// not finite, or if they are not strictly increasing or strictly
    /// decreasing.
    pub fn from_points(points: Vec<f64>) -> Result<Self> {
        if points.len() < 2 {
            return Err(Error::InvalidGrid(format!("a grid needs at least 2 points, got {}", points.len())));
        }
        if let Some((i, t)) = points.iter().enumerate().find(|(_, t)| !t.is_finite()) {
            return Err(Error::InvalidGrid(format!("point {i} is not finite ({t})")));
        }
        let forward = points[1] > points[0];
        for (i, w) in points.windows(2).enumerate() {
            let ok = if forward { w[1] > w[0] } else { w[1] < w[0] };
            if !ok {
                let dir = if forward { "increasing" } else { "decreasing" };
                return Err(Error::InvalidGrid(format!(
                    "the points must be strictly monotone, but the grid starts {dir} and point {} ({}) follows point {i} ({})",
                    i + 1,
                    w[1],
                    w[0]
                )));
            }
        }
        Ok(Self { points })
    }

    /// All grid times, in integration order.
    pub fn points(&self) -> &[f64] {
        &self.points
    }

    /// The first time (the initial condition's time).
    pub fn start(&self) -> f64 {
        self.points[0]
    }

    /// The last time (where the solve ends).
    pub fn end(&self) -> f64 {
        self.points[self.points.len() - 1]
    }

    /// The number of intervals (`points().len() - 1`, at least 1).
    pub fn steps(&self) -> usize {
        self.points.len() - 1
    }

    /// Whether time increases along the grid.
    pub fn is_forward(&self) -> bool {
        self.end() > self.start()
    }
}

impl TryFrom<Vec<f64>> for TimeGrid {
    type Error = Error;

    fn try_from(points: Vec<f64>) -> Result<Self> {
        Self::from_points(points)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_hits_both_ends_exactly() -> Result<()> {
        let g = TimeGrid::uniform(0.0, 1.0, 3)?;
        assert_eq!(g.points().len(), 4);
        assert_eq!(g.start(), 0.0);
        assert_eq!(g.end(), 1.0);
        assert_eq!(g.steps(), 3);
        assert!(g.is_forward());
        let b = TimeGrid::uniform(1.0, 0.0, 7)?;
        assert_eq!(b.end(), 0.0);
        assert!(!b.is_forward());
        Ok(())
    }

    #[test]
    fn rejects_bad_grids() {
        assert!(matches!(TimeGrid::uniform(0.0, 1.0, 0), Err(Error::InvalidGrid(_))));
        assert!(matches!(TimeGrid::uniform(0.5, 0.5, 4), Err(Error::InvalidGrid(_))));
        assert!(matches!(TimeGrid::uniform(0.0, f64::NAN, 4), Err(Error::InvalidGrid(_))));
        assert!(matches!(TimeGrid::from_points(vec![0.0]), Err(Error::InvalidGrid(_))));
        assert!(matches!(TimeGrid::from_points(vec![0.0, 0.5, 0.5]), Err(Error::InvalidGrid(_))));
        assert!(matches!(TimeGrid::from_points(vec![1.0, 0.5, 0.7]), Err(Error::InvalidGrid(_))));
        assert!(matches!(TimeGrid::from_points(vec![0.0, f64::INFINITY]), Err(Error::InvalidGrid(_))));
    }
}

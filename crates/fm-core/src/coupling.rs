//! Minibatch couplings of source and data samples (Tong et al., arXiv 2302.00482;
//! Pooladian et al., arXiv 2304.14772).
//!
//! A [`Coupling`] re-pairs a minibatch `(x₀⁽ⁱ⁾, x₁⁽ⁱ⁾)` before the flow
//! matching loss is taken. The source rows keep their order; the data rows
//! (and their labels) are re-indexed: the output is
//! `(x₀, x₁[σ], labels[σ])` for an index map `σ` chosen by the coupling.
//!
//! - [`Coupling::Independent`]: `σ = id` (plain CFM).
//! - [`Coupling::ExactOt`]: `σ` is the **permutation** minimising
//!   `Σᵢ ‖x₀⁽ⁱ⁾ − x₁⁽σ⁽ⁱ⁾⁾‖²` on flattened inputs, solved exactly by
//!   [`crate::assignment::linear_sum_assignment`]. Every data row is used
//!   exactly once. (torchcfm's `OTPlanSampler` instead samples `b` pairs
//!   from the plan *with replacement*, so rows can repeat or go missing,
//!   its issue #142; the exact optimal plan is a permutation, so this
//!   returns it directly.)
//! - [`Coupling::Sinkhorn`]: the entropic plan `π` of [`sinkhorn_plan`],
//!   then for each source row `i` one data index drawn from row `i` of
//!   `π` (normalised). This samples **with replacement**, as torchcfm
//!   does: a data row can be used twice, another not at all. Use
//!   [`Coupling::ExactOt`] when a permutation is wanted.
//!
//! With `class_conditional = true` (and labels), rows are only paired
//! within a class: `labels[i]` is the class of data row `i` and also the
//! class source row `i` is meant to generate, so the coupling is solved
//! separately on each class's rows and `labels[σ] == labels`.
//!
//! ```
//! use candle::{Device, Tensor};
//! use fm_core::{coupling::Coupling, SeededRng};
//!
//! # fn main() -> fm_core::Result<()> {
//! let x0 = Tensor::new(&[[0.0f64, 0.0], [10.0, 0.0]], &Device::Cpu)?;
//! let x1 = Tensor::new(&[[9.0f64, 1.0], [1.0, 1.0]], &Device::Cpu)?;
//! let c = Coupling::ExactOt.couple(&x0, &x1, None, false, &mut SeededRng::new(0))?;
//! // Each source point is paired with the data point nearest to it.
//! assert_eq!(c.x1.to_vec2::<f64>()?, vec![vec![1.0, 1.0], vec![9.0, 1.0]]);
//! assert_eq!(c.index, vec![1, 0]);
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use candle::{DType, Tensor};

use crate::assignment::linear_sum_assignment;
use crate::sinkhorn::sinkhorn;
use crate::{to_f64_vec, Error, Result, SeededRng};

/// Default entropic regularisation of `--coupling sinkhorn` (torchcfm's
/// `OTPlanSampler` default `reg = 0.05`), on the max-normalised cost.
pub const DEFAULT_SINKHORN_REG: f64 = 0.05;

/// Default maximum number of Sinkhorn iterations.
pub const DEFAULT_SINKHORN_ITERS: usize = 200;

/// [`sinkhorn_plan`] stops early once the L1 error of the row marginals is
/// below this (POT's default `stopThr = 1e-9`).
pub const SINKHORN_TOL: f64 = 1e-9;

/// [`Coupling::Sinkhorn`] stops at this L1 row-marginal error: it only
/// samples one column per row from the row-normalised plan, for which a
/// relative marginal error of 10⁻⁶ is far below the sampling noise.
pub const COUPLING_SINKHORN_TOL: f64 = 1e-6;

/// How a minibatch of source and data samples is paired.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Coupling {
    /// Keep the pairs as drawn (independent coupling, plain CFM).
    #[default]
    Independent,
    /// The exact minibatch optimal transport permutation for the squared
    /// Euclidean cost.
    ExactOt,
    /// Entropic OT by stabilised Sinkhorn, then one data index sampled per
    /// source row from the plan (with replacement).
    Sinkhorn {
        /// Entropic regularisation `ε > 0` (on the normalised cost when
        /// `normalize_cost`).
        reg: f64,
        /// Maximum number of iterations (it stops early at [`COUPLING_SINKHORN_TOL`]).
        iters: usize,
        /// Divide the cost by its maximum first (torchcfm's
        /// `OTPlanSampler(normalize_cost=True)`; its default is `False`, and
        /// SB-CFM, whose `ε = 2σ²` is in data units, uses the raw cost).
        normalize_cost: bool,
    },
}

/// A coupled minibatch.
#[derive(Debug, Clone)]
pub struct Coupled {
    /// The source rows, unchanged: `(b, ...)`.
    pub x0: Tensor,
    /// The data rows re-indexed, `x1[index]`: `(b, ...)`.
    pub x1: Tensor,
    /// The labels re-indexed, `labels[index]`: `(b,)`.
    pub labels: Option<Tensor>,
    /// `index[i]` is the data row paired with source row `i`.
    pub index: Vec<usize>,
}

impl Coupling {
    /// The Sinkhorn coupling of `--coupling sinkhorn`: `ε = 0.05` on the
    /// max-normalised cost, as torchcfm's `OTPlanSampler(method="sinkhorn",
    /// normalize_cost=True)`.
    pub fn sinkhorn_default() -> Self {
        Coupling::Sinkhorn { reg: DEFAULT_SINKHORN_REG, iters: DEFAULT_SINKHORN_ITERS, normalize_cost: true }
    }

    /// The short name (`independent`, `ot`, `sinkhorn`).
    pub fn name(&self) -> &'static str {
        match self {
            Coupling::Independent => "independent",
            Coupling::ExactOt => "ot",
            Coupling::Sinkhorn { .. } => "sinkhorn",
        }
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        if let Coupling::Sinkhorn { reg, iters, .. } = *self {
            if !(reg.is_finite() && reg > 0.0) {
                return Err(Error::invalid("reg", format!("must be a positive number, got {reg}")));
            }
            if iters == 0 {
                return Err(Error::invalid("iters", "Sinkhorn needs at least 1 iteration"));
            }
        }
        Ok(())
    }

    /// The data index paired with each source row, for a square `n × n`
    /// row-major cost matrix (`cost[i * n + j]` between source `i` and data `j`).
    ///
    /// Draws from `rng` only for [`Coupling::Sinkhorn`] (one uniform per row).
    pub fn pair_indices(&self, cost: &[f64], n: usize, rng: &mut SeededRng) -> Result<Vec<usize>> {
        self.validate()?;
        if cost.len() != n * n {
            return Err(Error::invalid("cost", format!("has {} entries, expected {n} × {n}", cost.len())));
        }
        match *self {
            Coupling::Independent => Ok((0..n).collect()),
            Coupling::ExactOt => Ok(linear_sum_assignment(cost, n, n)?.row_to_col),
            Coupling::Sinkhorn { reg, iters, normalize_cost } => {
                let max = cost.iter().copied().fold(0.0f64, f64::max);
                let plan = if normalize_cost && max > 0.0 {
                    let c: Vec<f64> = cost.iter().map(|c| c / max).collect();
                    sinkhorn(&c, n, n, reg, iters, COUPLING_SINKHORN_TOL)?.plan
                } else {
                    sinkhorn(cost, n, n, reg, iters, COUPLING_SINKHORN_TOL)?.plan
                };
                let u = rng.uniform_vec(n, 0.0, 1.0);
                Ok((0..n).map(|i| sample_row(&plan[i * n..(i + 1) * n], u[i])).collect())
            }
        }
    }

    /// Re-pairs a minibatch (see the module documentation).
    ///
    /// # Shapes
    /// - `x0`, `x1`: `(b, ...)`, equal shapes
    /// - `labels`: `(b,)`, integer or float class ids (needed when `class_conditional`)
    /// - returns `x0 (b, ...)`, `x1[σ] (b, ...)`, `labels[σ] (b,)`
    ///
    /// # Errors
    /// [`Error::Shape`] on mismatched shapes; [`Error::InvalidArgument`] for
    /// `class_conditional` without labels, bad Sinkhorn parameters, or
    /// non-finite inputs.
    pub fn couple(
        &self,
        x0: &Tensor,
        x1: &Tensor,
        labels: Option<&Tensor>,
        class_conditional: bool,
        rng: &mut SeededRng,
    ) -> Result<Coupled> {
        if x0.dims() != x1.dims() || x0.rank() == 0 {
            return Err(Error::Shape(format!(
                "x0 {:?} and x1 {:?} must have equal shapes (b, ...)",
                x0.dims(),
                x1.dims()
            )));
        }
        let b = x0.dim(0)?;
        let classes = match labels {
            Some(l) => {
                if l.dims() != [b] {
                    return Err(Error::Shape(format!("labels {:?} must be ({b},)", l.dims())));
                }
                Some(l.to_dtype(DType::F64)?.to_vec1::<f64>()?)
            }
            None => None,
        };
        if class_conditional && classes.is_none() {
            return Err(Error::invalid("labels", "class-conditional coupling needs labels"));
        }
        if *self == Coupling::Independent {
            self.validate()?;
            return Ok(Coupled {
                x0: x0.clone(),
                x1: x1.clone(),
                labels: labels.cloned(),
                index: (0..b).collect(),
            });
        }
        let d = x0.elem_count().checked_div(b).unwrap_or(0);
        let a = to_f64_vec(x0)?;
        let c = to_f64_vec(x1)?;
        if let Some(k) = a.iter().chain(&c).position(|v| !v.is_finite()) {
            return Err(Error::invalid("x0/x1", format!("value {k} is not finite")));
        }
        let groups: Vec<Vec<usize>> = match (&classes, class_conditional) {
            (Some(cl), true) => {
                let mut by: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
                for (i, y) in cl.iter().enumerate() {
                    by.entry(y.to_bits()).or_default().push(i);
                }
                by.into_values().collect()
            }
            _ => vec![(0..b).collect()],
        };
        let mut index = vec![0usize; b];
        for rows in &groups {
            let cost = squared_distances(&a, &c, d, rows);
            let local = self.pair_indices(&cost, rows.len(), rng)?;
            for (p, &q) in local.iter().enumerate() {
                index[rows[p]] = rows[q];
            }
        }
        let idx = Tensor::from_vec(index.iter().map(|&i| i as u32).collect::<Vec<_>>(), b, x1.device())?;
        let labels = match labels {
            Some(l) => Some(l.index_select(&idx, 0)?),
            None => None,
        };
        Ok(Coupled { x0: x0.clone(), x1: x1.index_select(&idx, 0)?, labels, index })
    }
}

/// The `n × n` row-major matrix of squared distances `‖a_p − c_q‖²` between
/// the points `rows[p]` of `a` and `rows[q]` of `c` (both `(b, d)` row-major),
/// summed over coordinates in order. The data points are first transposed to
/// one contiguous row per coordinate, so that each cost row is built by `d`
/// vectorisable passes, compiled for AVX-512 or AVX2 where the CPU has them
/// (the same arithmetic, no FMA contraction: bit-identical results).
fn squared_distances(a: &[f64], c: &[f64], d: usize, rows: &[usize]) -> Vec<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::simd::has_avx512f() {
            // SAFETY: the feature was detected on this CPU just above.
            return unsafe { squared_distances_avx512(a, c, d, rows) };
        }
        if crate::simd::has_avx2() {
            // SAFETY: as above.
            return unsafe { squared_distances_avx2(a, c, d, rows) };
        }
    }
    squared_distances_loop(a, c, d, rows)
}

/// [`squared_distances_loop`] compiled with AVX-512.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn squared_distances_avx512(a: &[f64], c: &[f64], d: usize, rows: &[usize]) -> Vec<f64> {
    squared_distances_loop(a, c, d, rows)
}

/// [`squared_distances_loop`] compiled with AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn squared_distances_avx2(a: &[f64], c: &[f64], d: usize, rows: &[usize]) -> Vec<f64> {
    squared_distances_loop(a, c, d, rows)
}

#[inline(always)]
fn squared_distances_loop(a: &[f64], c: &[f64], d: usize, rows: &[usize]) -> Vec<f64> {
    let n = rows.len();
    let mut by_coord = vec![0.0f64; d * n];
    for (q, &j) in rows.iter().enumerate() {
        for (k, &y) in c[j * d..(j + 1) * d].iter().enumerate() {
            by_coord[k * n + q] = y;
        }
    }
    let mut cost = vec![0.0f64; n * n];
    for (row, &i) in cost.chunks_exact_mut(n).zip(rows) {
        for (&x, coord) in a[i * d..(i + 1) * d].iter().zip(by_coord.chunks_exact(n)) {
            for (out, &y) in row.iter_mut().zip(coord) {
                *out += (x - y) * (x - y);
            }
        }
    }
    cost
}

/// Index `j` with `Σ_{k<j} w_k ≤ u·Σw < Σ_{k≤j} w_k`; uniform if `w` is degenerate
/// (torchcfm falls back to the uniform plan in that case too).
fn sample_row(w: &[f64], u: f64) -> usize {
    let total: f64 = w.iter().sum();
    let n = w.len();
    if !(total.is_finite() && total > 0.0) {
        return ((u * n as f64) as usize).min(n - 1);
    }
    let target = u * total;
    let mut acc = 0.0;
    for (j, wj) in w.iter().enumerate() {
        acc += wj;
        if target < acc {
            return j;
        }
    }
    // Rounding left `target` at the very end: the last positive weight.
    w.iter().rposition(|&x| x > 0.0).unwrap_or(n - 1)
}

/// The entropic OT plan between uniform weights, by the stabilised
/// Sinkhorn solver of [`crate::sinkhorn`] run to [`SINKHORN_TOL`].
///
/// Solves `min_π ⟨π, C⟩ − ε H(π)` subject to `π 1 = 1/n_rows`,
/// `πᵀ 1 = 1/n_cols` (log-domain potentials, scaling-domain iterations with
/// absorption, ε-scaling). The cost is used as given (no normalisation here;
/// [`Coupling::Sinkhorn`] can divide it by its max). Runs at most `iters`
/// iterations; the column marginals are exact (up to rounding), the rows
/// within [`SINKHORN_TOL`] in L1 unless `iters` ran out first.
///
/// # Shapes
/// - `cost`: `n_rows * n_cols`, row-major
/// - returns the plan, `n_rows * n_cols`, row-major, summing to 1
///
/// # Errors
/// [`Error::InvalidArgument`] for a wrong length, an empty matrix, `reg ≤ 0`,
/// `iters == 0`, or non-finite costs.
///
/// ```
/// use fm_core::coupling::sinkhorn_plan;
///
/// # fn main() -> fm_core::Result<()> {
/// let plan = sinkhorn_plan(&[0.0, 1.0, 1.0, 0.0], 2, 2, 0.1, 100)?;
/// // Mass concentrates on the cheap diagonal; marginals are 1/2.
/// assert!(plan[0] > 0.49 && plan[1] < 0.01);
/// assert!((plan[0] + plan[1] - 0.5).abs() < 1e-9);
/// # Ok(())
/// # }
/// ```
pub fn sinkhorn_plan(cost: &[f64], n_rows: usize, n_cols: usize, reg: f64, iters: usize) -> Result<Vec<f64>> {
    Ok(sinkhorn(cost, n_rows, n_cols, reg, iters, SINKHORN_TOL)?.plan)
}

impl fmt::Display for Coupling {
    /// `independent`, `ot`, or `sinkhorn:REG` (the normalised-cost form
    /// `--coupling` parses; other Sinkhorn settings print in full).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Coupling::Sinkhorn { reg, iters, normalize_cost } => {
                if normalize_cost && iters == DEFAULT_SINKHORN_ITERS {
                    write!(f, "sinkhorn:{reg}")
                } else {
                    write!(f, "sinkhorn(reg={reg}, iters={iters}, normalize_cost={normalize_cost})")
                }
            }
            other => f.write_str(other.name()),
        }
    }
}

impl FromStr for Coupling {
    type Err = Error;

    /// `independent` (or `none`), `ot` (or `exact`, `exact-ot`), `sinkhorn`
    /// or `sinkhorn:REG` (normalised cost, [`DEFAULT_SINKHORN_ITERS`]).
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let (name, arg) = match lower.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (lower.as_str(), None),
        };
        let c = match (name, arg) {
            ("independent" | "none" | "indep", None) => Coupling::Independent,
            ("ot" | "exact" | "exact-ot" | "exact_ot", None) => Coupling::ExactOt,
            ("sinkhorn", None) => Coupling::sinkhorn_default(),
            ("sinkhorn", Some(r)) => {
                let reg: f64 = r
                    .parse()
                    .map_err(|_| Error::invalid("coupling", format!("bad Sinkhorn regularisation `{r}`")))?;
                Coupling::Sinkhorn { reg, iters: DEFAULT_SINKHORN_ITERS, normalize_cost: true }
            }
            _ => {
                return Err(Error::invalid(
                    "coupling",
                    format!("unknown coupling `{s}`; valid: independent, ot, sinkhorn, sinkhorn:REG"),
                ))
            }
        };
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dispatched cost matrix (AVX-512 or AVX2 where the CPU has them)
    /// is bit-identical to the baseline build, and is the squared distance.
    #[test]
    fn squared_distances_variants_agree_bit_for_bit() {
        let mut rng = SeededRng::new(9);
        for &(b, d) in &[(1usize, 1usize), (7, 3), (33, 2), (64, 5)] {
            let a = rng.normal_vec(b * d);
            let c = rng.uniform_vec(b * d, -2.0, 2.0);
            let rows: Vec<usize> = (0..b).rev().step_by(2).chain((0..b).step_by(3)).collect();
            let fast = squared_distances(&a, &c, d, &rows);
            let base = squared_distances_loop(&a, &c, d, &rows);
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast), bits(&base), "b = {b}, d = {d}");
            let n = rows.len();
            for (p, &i) in rows.iter().enumerate() {
                for (q, &j) in rows.iter().enumerate() {
                    let exact: f64 = (0..d).map(|k| (a[i * d + k] - c[j * d + k]).powi(2)).sum();
                    assert!((fast[p * n + q] - exact).abs() <= 1e-12 * (1.0 + exact));
                }
            }
        }
    }
}

//! Exact linear assignment (minimum-cost bipartite matching).
//!
//! [`linear_sum_assignment`] solves
//! `min_σ Σ_i cost[i, σ(i)]` over injective maps `σ: rows → cols` for a dense
//! row-major cost matrix with `n_rows ≤ n_cols`, with the shortest augmenting
//! path form of the Hungarian algorithm (Jonker–Volgenant / Crouse, as in
//! SciPy's `linear_sum_assignment`): one Dijkstra-like search per row on
//! reduced costs `c[i, j] − u[i] − v[j] ≥ 0`, kept non-negative by dual
//! potentials `u`, `v`. Square problems start from the column prices of an
//! ε-scaling auction (Bertsekas), which leaves the searches short paths;
//! the result is exact whatever the start, because a row stays matched
//! only on an exact minimum of its reduced costs. `O(n_rows² · n_cols)`
//! time in the worst case, `O(n_rows · n_cols)` extra memory (the auction's
//! f32 copy of the costs), no recursion.
//!
//! ```
//! use fm_core::assignment::linear_sum_assignment;
//!
//! # fn main() -> fm_core::Result<()> {
//! let cost = [4.0, 1.0, 3.0, 2.0, 0.0, 5.0, 3.0, 2.0, 2.0];
//! let a = linear_sum_assignment(&cost, 3, 3)?;
//! assert_eq!(a.row_to_col, vec![1, 0, 2]);
//! assert_eq!(a.cost, 5.0);
//! # Ok(())
//! # }
//! ```

mod kernels;

use crate::{Error, Result};
use kernels::{RowKernels, NONE};

/// An optimal assignment of rows to distinct columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// `row_to_col[i]` is the column assigned to row `i`; all entries are
    /// distinct and `< n_cols` (a permutation when the matrix is square).
    pub row_to_col: Vec<usize>,
    /// The total cost `Σ_i cost[i, row_to_col[i]]` (summed in row order).
    pub cost: f64,
}

/// Exact minimum-cost assignment of every row to a distinct column.
///
/// `cost` is a dense row-major `n_rows × n_cols` matrix, `cost[i * n_cols + j]`
/// the cost of giving column `j` to row `i`. Rectangular matrices with
/// `n_rows ≤ n_cols` are allowed (some columns stay unused); transpose the
/// problem yourself when there are more rows than columns. Ties between
/// optimal assignments are broken deterministically. An empty problem
/// (`n_rows == 0`) has the empty assignment of cost 0.
///
/// # Shapes
/// - `cost`: `n_rows * n_cols` values, row-major
/// - returns: `row_to_col` of length `n_rows`
///
/// # Errors
/// [`Error::InvalidArgument`] if `cost.len() != n_rows * n_cols`,
/// if `n_rows > n_cols`, or if any cost is NaN or infinite.
///
/// # Complexity
/// `O(n_rows² · n_cols)` worst case. The geometric case that minibatch OT
/// meets, squared distances between 256 draws of `N(0, I)` and 256 two-moons
/// points, takes about 0.29 ms of CPU in a release build with the AVX-512
/// kernels and 0.40 ms with the AVX2 ones (`cargo xtask bench`,
/// `ot_coupling`, which includes the cost matrix and the reordering).
pub fn linear_sum_assignment(cost: &[f64], n_rows: usize, n_cols: usize) -> Result<Assignment> {
    let expected = n_rows
        .checked_mul(n_cols)
        .ok_or_else(|| Error::invalid("cost", format!("{n_rows} × {n_cols} overflows usize")))?;
    if cost.len() != expected {
        return Err(Error::invalid(
            "cost",
            format!("has {} entries but a {n_rows} × {n_cols} matrix needs {expected}", cost.len()),
        ));
    }
    if n_rows > n_cols {
        return Err(Error::invalid(
            "n_rows",
            format!("{n_rows} rows exceed {n_cols} columns; transpose the cost matrix"),
        ));
    }
    if !all_finite(cost) {
        let k = cost.iter().position(|c| !c.is_finite()).unwrap_or(0);
        return Err(Error::invalid(
            "cost",
            format!("entry ({}, {}) is {}; costs must be finite", k / n_cols, k % n_cols, cost[k]),
        ));
    }
    if n_rows == 0 {
        return Ok(Assignment { row_to_col: Vec::new(), cost: 0.0 });
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = kernels::Avx512::detect() {
        return simd::solve_avx512(k, cost, n_rows, n_cols);
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = kernels::Avx2::detect() {
        return simd::solve_avx2(k, cost, n_rows, n_cols);
    }
    solve(kernels::Portable, cost, n_rows, n_cols)
}

/// The solver with the AVX2 or AVX-512 row kernels, compiled with those
/// instructions enabled throughout. Only the instructions change, not the
/// arithmetic (no FMA contraction), so the result is bit-identical to the
/// portable build's.
#[cfg(target_arch = "x86_64")]
mod simd {
    use super::kernels::{Avx2, Avx512};
    use super::Assignment;
    use crate::Result;

    pub(super) fn solve_avx2(k: Avx2, cost: &[f64], n_rows: usize, n_cols: usize) -> Result<Assignment> {
        // SAFETY: a value of `Avx2` exists only where the CPU supports AVX2.
        unsafe { avx2(k, cost, n_rows, n_cols) }
    }

    pub(super) fn solve_avx512(k: Avx512, cost: &[f64], n_rows: usize, n_cols: usize) -> Result<Assignment> {
        // SAFETY: a value of `Avx512` exists only where the CPU supports AVX-512F.
        unsafe { avx512(k, cost, n_rows, n_cols) }
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    unsafe fn avx2(k: Avx2, cost: &[f64], n_rows: usize, n_cols: usize) -> Result<Assignment> {
        super::solve(k, cost, n_rows, n_cols)
    }

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512(k: Avx512, cost: &[f64], n_rows: usize, n_cols: usize) -> Result<Assignment> {
        super::solve(k, cost, n_rows, n_cols)
    }
}

/// [`linear_sum_assignment`] on a validated, non-empty problem with the row
/// kernels `k`; inlined (with its helpers) into each instruction-set variant.
#[inline(always)]
fn solve<K: RowKernels>(k: K, cost: &[f64], n_rows: usize, n_cols: usize) -> Result<Assignment> {
    let n = n_cols;
    // Dual potentials of rows and columns: reduced costs
    // `cost[i, j] − u[i] − v[j]` are ≥ 0, and 0 on matched pairs.
    let mut u = vec![0.0f64; n_rows];
    let mut v = vec![0.0f64; n];
    // The current matching, both ways.
    let mut col4row = vec![NONE; n_rows];
    let mut row4col = vec![NONE; n];
    let free_rows = if n_rows == n && n >= 2 {
        // Square problems: an ε-scaling auction finds near-optimal column
        // prices (so the shortest paths below are short); costs too large
        // for its f32 copy fall back to the Jonker–Volgenant initialisation.
        match auction_initialise(k, cost, n, &mut u, &mut v, &mut col4row, &mut row4col) {
            Some(free) => free,
            None => {
                let free = jv_initialise(cost, n, &mut v, &mut col4row, &mut row4col);
                for (i, ui) in u.iter_mut().enumerate() {
                    *ui = k.min_reduced(&cost[i * n..(i + 1) * n], &v);
                }
                free
            }
        }
    } else {
        // Rectangular problems start from zero potentials: unmatched columns
        // must keep the largest `v`, which the searches below preserve.
        (0..n_rows).collect()
    };

    // Per search: the tentative shortest reduced path length to each column
    // (+∞ once settled), the row preceding each column on that path, the rows
    // scanned (with the path length of the column that led to them) and the
    // settled columns (with their path length and price).
    let mut shortest = vec![f64::INFINITY; n];
    let mut path = vec![NONE; n];
    let mut visited_rows: Vec<(usize, f64)> = Vec::with_capacity(n_rows);
    let mut settled: Vec<(usize, f64, f64)> = Vec::with_capacity(n);
    // The unmatched columns.
    let mut free_cols: Vec<usize> = (0..n).filter(|&j| row4col[j] == NONE).collect();

    for cur in free_rows {
        // Dijkstra from row `cur` to the nearest free column. The scans run
        // over all columns contiguously and branch-free; a settled column is
        // masked by a price of −∞ (its reduced costs become +∞) until the
        // search ends.
        shortest.fill(f64::INFINITY);
        visited_rows.clear();
        settled.clear();
        let mut min_val = 0.0f64;
        let mut reached_at = 0.0f64;
        let mut i = cur;
        let sink = loop {
            visited_rows.push((i, reached_at));
            let row = &cost[i * n..(i + 1) * n];
            let base = min_val - u[i];
            let (lowest, mut pick, second) = k.relax_row(row, base, i, &v, &mut shortest, &mut path);
            // On ties prefer a free column: it ends the search at once.
            if pick != NONE && row4col[pick] != NONE && second == lowest {
                if let Some(&j) = free_cols.iter().find(|&&j| shortest[j] == lowest) {
                    pick = j;
                }
            }
            if pick == NONE {
                return Err(Error::invalid(
                    "cost",
                    "reduced costs overflowed; the cost magnitudes are too large",
                ));
            }
            min_val = lowest;
            settled.push((pick, lowest, v[pick]));
            shortest[pick] = f64::INFINITY;
            v[pick] = f64::NEG_INFINITY;
            if row4col[pick] == NONE {
                break pick;
            }
            i = row4col[pick];
            reached_at = lowest;
        };

        // Update the potentials (restoring the masked prices) so reduced
        // costs stay non-negative and are zero along the matching.
        u[cur] += min_val;
        for &(r, d) in &visited_rows[1..] {
            u[r] += min_val - d;
        }
        for &(c, d, price) in &settled {
            v[c] = price - (min_val - d);
        }

        // Augment along the path back from the sink, which is then matched.
        if let Some(k) = free_cols.iter().position(|&j| j == sink) {
            free_cols.swap_remove(k);
        }
        let mut j = sink;
        loop {
            let i = path[j];
            row4col[j] = i;
            let previous = std::mem::replace(&mut col4row[i], j);
            if i == cur {
                break;
            }
            j = previous;
        }
    }

    let total = col4row.iter().enumerate().map(|(i, &j)| cost[i * n + j]).sum();
    Ok(Assignment { row_to_col: col4row, cost: total })
}

/// The auction's first ε, relative to the cost range.
const AUCTION_FIRST_EPS: f64 = 1e-2;
/// The auction's last ε, relative to the cost range.
const AUCTION_LAST_EPS: f64 = 1e-3;
/// ε shrinks by this factor between auction phases.
const AUCTION_SHRINK: f64 = 4.0;
/// Bids computed together against the same prices (see [`auction_phase`]).
const AUCTION_GROUP: usize = 6;
/// Bids allowed per auction phase, per row (a safety net; a phase on the
/// 2-D benchmark takes about 5 per row).
const AUCTION_BIDS_PER_ROW: usize = 64;

/// An ε-scaling auction (Bertsekas) as the initialisation of a square
/// `n × n` problem: Gauss–Seidel bidding (computed in groups of
/// [`AUCTION_GROUP`]) on an f32 copy of the costs, `ε` going from 10⁻² to
/// 10⁻³ of the cost range, so the column prices `−v` end within `n·ε` of
/// optimal. Exactness does not depend on it: afterwards only rows whose
/// column minimises `cost[i, j] − v[j]` exactly (in f64) stay matched, and
/// the others are returned for the shortest-path searches; `u[i]` is set to
/// that row minimum. `None` (nothing changed) if the costs do not fit an f32.
#[inline(always)]
fn auction_initialise<K: RowKernels>(
    k: K,
    cost: &[f64],
    n: usize,
    u: &mut [f64],
    v: &mut [f64],
    col4row: &mut [usize],
    row4col: &mut [usize],
) -> Option<Vec<usize>> {
    let (lo, hi) = cost.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &c| (l.min(c), h.max(c)));
    if !(lo.abs() < 1e20 && hi.abs() < 1e20) {
        return None;
    }
    // Costs relative to the minimum, in f32: the bids need only be close.
    let c32: Vec<f32> = cost.iter().map(|&c| (c - lo) as f32).collect();
    let range = hi - lo;
    if range == 0.0 {
        // Every assignment is optimal: the identity.
        for i in 0..n {
            col4row[i] = i;
            row4col[i] = i;
        }
        v.fill(lo);
        return Some(Vec::new());
    }
    // Column reduction prices: v[j] = min_i cost[i, j] (relative to lo).
    let mut v32 = vec![f32::INFINITY; n];
    for row in c32.chunks_exact(n) {
        for (vj, &c) in v32.iter_mut().zip(row) {
            // (A select rather than `f32::min`, so that it vectorises.)
            *vj = if c < *vj { c } else { *vj };
        }
    }
    let mut eps = range * AUCTION_FIRST_EPS;
    let last = range * AUCTION_LAST_EPS;
    loop {
        let complete = auction_phase(k, &c32, n, &mut v32, eps as f32, col4row, row4col);
        if eps <= last || !complete {
            break;
        }
        eps = (eps / AUCTION_SHRINK).max(last);
    }
    // Exact (f64) prices; keep only matches on an exact row minimum.
    for (vj, &p) in v.iter_mut().zip(&v32) {
        *vj = f64::from(p) + lo;
    }
    let mut free = Vec::new();
    for i in 0..n {
        let row = &cost[i * n..(i + 1) * n];
        let min = k.min_reduced(row, v);
        u[i] = min;
        let j = col4row[i];
        if j == NONE || row[j] - v[j] > min {
            if j != NONE {
                row4col[j] = NONE;
                col4row[i] = NONE;
            }
            free.push(i);
        }
    }
    Some(free)
}

/// One phase of the auction at `eps32` on the f32 costs `c32` (`n × n`,
/// row-major) and values `v32` (a row's value for column `j` is
/// `c32[i, j] − v32[j]`): every row starts unassigned and bids until all are
/// assigned, each within `eps32` of its best column (ε-complementary
/// slackness), or until [`AUCTION_BIDS_PER_ROW`]` · n` bids are spent
/// (returns `false`, some rows unassigned).
#[inline(always)]
fn auction_phase<K: RowKernels>(
    k: K,
    c32: &[f32],
    n: usize,
    v32: &mut [f32],
    eps32: f32,
    col4row: &mut [usize],
    row4col: &mut [usize],
) -> bool {
    col4row.fill(NONE);
    row4col.fill(NONE);
    // The unassigned rows, taken from the end.
    let mut queue: Vec<usize> = (0..n).rev().collect();
    let mut budget = AUCTION_BIDS_PER_ROW * n;
    // Bids are computed a group at a time against the same prices, so that
    // their row scans overlap in the CPU, and then placed in turn. A bid
    // whose column an earlier bid of its group took is computed again; any
    // other bid stays valid, because placing a bid only makes its column
    // dearer: the bidder's best column and value are unchanged and its
    // second best can only have risen, so its raise stays ≥ ε and it ends
    // within ε of its best.
    let mut group = [(0usize, (0.0f32, 0usize, 0.0f32)); AUCTION_GROUP];
    loop {
        let mut m = 0;
        while m < AUCTION_GROUP && m < budget {
            let Some(i) = queue.pop() else { break };
            group[m] = (i, k.best_two(&c32[i * n..(i + 1) * n], v32));
            m += 1;
        }
        if m == 0 {
            return queue.is_empty();
        }
        budget -= m;
        let mut taken = [NONE; AUCTION_GROUP];
        for q in 0..m {
            let (i, mut bid) = group[q];
            if taken[..q].contains(&bid.1) {
                bid = k.best_two(&c32[i * n..(i + 1) * n], v32);
            }
            let (h1, j1, h2) = bid;
            taken[q] = j1;
            // Bid: lower j1's value until i is ε-indifferent to its second best.
            v32[j1] -= (h2 - h1) + eps32;
            let previous = std::mem::replace(&mut row4col[j1], i);
            col4row[i] = j1;
            if previous != NONE {
                col4row[previous] = NONE;
                queue.push(previous);
            }
        }
    }
}

/// Whether every entry is finite; a lane-wise pass that vectorises (the
/// solver's input check).
#[inline(always)]
fn all_finite(values: &[f64]) -> bool {
    let mut ok = [true; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (o, c) in ok.iter_mut().zip(chunk) {
            *o &= c.is_finite();
        }
    }
    ok.iter().all(|&o| o) && chunks.remainder().iter().all(|c| c.is_finite())
}

/// The Jonker–Volgenant initialisation of a square `n × n` problem
/// (`n ≥ 2`): column reduction, reduction transfer and two passes of
/// augmenting row reduction. Sets column prices `v` and a partial matching in
/// which every matched row `i` is matched to a column minimising
/// `cost[i, j] − v[j]`; returns the unmatched rows.
#[inline(always)]
fn jv_initialise(
    cost: &[f64],
    n: usize,
    v: &mut [f64],
    col4row: &mut [usize],
    row4col: &mut [usize],
) -> Vec<usize> {
    // Column reduction: v[j] = min_i cost[i, j]; each column goes to its
    // cheapest row if that row has no cheaper column yet.
    let mut matches = vec![0u32; n];
    let mut col_min = vec![f64::INFINITY; n];
    let mut col_argmin = vec![0usize; n];
    for (i, row) in cost.chunks_exact(n).enumerate() {
        for ((c, m), a) in row.iter().zip(col_min.iter_mut()).zip(col_argmin.iter_mut()) {
            if *c < *m {
                *m = *c;
                *a = i;
            }
        }
    }
    for j in (0..n).rev() {
        let i = col_argmin[j];
        v[j] = col_min[j];
        matches[i] += 1;
        if matches[i] == 1 {
            col4row[i] = j;
            row4col[j] = i;
        } else if v[j] < v[col4row[i]] {
            row4col[col4row[i]] = NONE;
            col4row[i] = j;
            row4col[j] = i;
        }
    }

    // Reduction transfer: a row matched once gives its column all the slack
    // it has to its next-best column.
    let mut free = Vec::new();
    for i in 0..n {
        match matches[i] {
            0 => free.push(i),
            1 => {
                let j1 = col4row[i];
                let row = &cost[i * n..(i + 1) * n];
                let mut min = f64::INFINITY;
                for (j, (c, vj)) in row.iter().zip(v.iter()).enumerate() {
                    let h = c - vj;
                    if h < min && j != j1 {
                        min = h;
                    }
                }
                v[j1] -= min;
            }
            _ => {}
        }
    }

    // Augmenting row reduction: an auction-like pass in which a free row
    // takes its best column (lowering its price to the second best), and a
    // displaced row bids again. Bounded, so price wars cannot run long; rows
    // still free go to the shortest-path searches.
    let mut budget = 4 * n;
    for _ in 0..2 {
        let mut queue = std::mem::take(&mut free);
        let mut k = 0;
        while k < queue.len() {
            if budget == 0 {
                free.extend_from_slice(&queue[k..]);
                break;
            }
            budget -= 1;
            let i = queue[k];
            k += 1;
            let row = &cost[i * n..(i + 1) * n];
            let (mut umin, mut j1) = (row[0] - v[0], 0usize);
            let (mut usub, mut j2) = (f64::INFINITY, 1usize);
            for (j, (c, vj)) in row.iter().zip(v.iter()).enumerate().skip(1) {
                let h = c - vj;
                if h < usub {
                    if h >= umin {
                        usub = h;
                        j2 = j;
                    } else {
                        usub = umin;
                        j2 = j1;
                        umin = h;
                        j1 = j;
                    }
                }
            }
            let mut i0 = row4col[j1];
            let strict = umin < usub;
            if strict {
                v[j1] -= usub - umin;
            } else if i0 != NONE {
                j1 = j2;
                i0 = row4col[j2];
            }
            if i0 != NONE {
                col4row[i0] = NONE;
            }
            col4row[i] = j1;
            row4col[j1] = i;
            if i0 != NONE {
                if strict {
                    // The displaced row bids again at once.
                    k -= 1;
                    queue[k] = i0;
                } else {
                    free.push(i0);
                }
            }
        }
    }
    free
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SeededRng;

    /// Minimum over all injective maps rows → cols, by exhaustive search.
    fn brute_force(cost: &[f64], n_rows: usize, n_cols: usize) -> f64 {
        fn rec(cost: &[f64], n_rows: usize, n_cols: usize, i: usize, used: &mut [bool], acc: f64) -> f64 {
            if i == n_rows {
                return acc;
            }
            let mut best = f64::INFINITY;
            for j in 0..n_cols {
                if !used[j] {
                    used[j] = true;
                    best = best.min(rec(cost, n_rows, n_cols, i + 1, used, acc + cost[i * n_cols + j]));
                    used[j] = false;
                }
            }
            best
        }
        rec(cost, n_rows, n_cols, 0, &mut vec![false; n_cols], 0.0)
    }

    /// An independent O(n²m) Hungarian algorithm (the classical e-maxx form
    /// with 1-based potentials), used as a second opinion on large problems.
    fn hungarian_reference(cost: &[f64], n: usize, m: usize) -> f64 {
        let a = |i: usize, j: usize| cost[(i - 1) * m + (j - 1)];
        let mut u = vec![0.0; n + 1];
        let mut v = vec![0.0; m + 1];
        let mut p = vec![0usize; m + 1];
        let mut way = vec![0usize; m + 1];
        for i in 1..=n {
            p[0] = i;
            let mut j0 = 0;
            let mut minv = vec![f64::INFINITY; m + 1];
            let mut used = vec![false; m + 1];
            loop {
                used[j0] = true;
                let i0 = p[j0];
                let mut delta = f64::INFINITY;
                let mut j1 = 0;
                for j in 1..=m {
                    if !used[j] {
                        let cur = a(i0, j) - u[i0] - v[j];
                        if cur < minv[j] {
                            minv[j] = cur;
                            way[j] = j0;
                        }
                        if minv[j] < delta {
                            delta = minv[j];
                            j1 = j;
                        }
                    }
                }
                for j in 0..=m {
                    if used[j] {
                        u[p[j]] += delta;
                        v[j] -= delta;
                    } else {
                        minv[j] -= delta;
                    }
                }
                j0 = j1;
                if p[j0] == 0 {
                    break;
                }
            }
            loop {
                let j1 = way[j0];
                p[j0] = p[j1];
                j0 = j1;
                if j0 == 0 {
                    break;
                }
            }
        }
        (1..=m).filter(|&j| p[j] != 0).map(|j| a(p[j], j)).sum()
    }

    fn check_valid(a: &Assignment, cost: &[f64], n_rows: usize, n_cols: usize) {
        assert_eq!(a.row_to_col.len(), n_rows);
        let mut seen = vec![false; n_cols];
        for &j in &a.row_to_col {
            assert!(j < n_cols && !seen[j], "not injective: {:?}", a.row_to_col);
            seen[j] = true;
        }
        let total: f64 = a.row_to_col.iter().enumerate().map(|(i, &j)| cost[i * n_cols + j]).sum();
        assert!((total - a.cost).abs() <= 1e-12 * (1.0 + total.abs()));
    }

    #[test]
    fn assignment_matches_brute_force_square_and_rectangular() -> Result<()> {
        let mut rng = SeededRng::new(11);
        for n_rows in 1..=7 {
            for n_cols in n_rows..=7 {
                for trial in 0..6 {
                    // Mix continuous costs with small integers (many ties).
                    let cost: Vec<f64> = if trial % 2 == 0 {
                        rng.uniform_vec(n_rows * n_cols, -5.0, 10.0)
                    } else {
                        rng.uniform_vec(n_rows * n_cols, 0.0, 4.0).into_iter().map(f64::floor).collect()
                    };
                    let a = linear_sum_assignment(&cost, n_rows, n_cols)?;
                    check_valid(&a, &cost, n_rows, n_cols);
                    let best = brute_force(&cost, n_rows, n_cols);
                    assert!(
                        (a.cost - best).abs() < 1e-9,
                        "{n_rows}×{n_cols}: {} vs brute force {best}",
                        a.cost
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn assignment_textbook_example() -> Result<()> {
        // SciPy's documented example: optimum rows → cols [1, 0, 2], cost 5.
        let cost = [4.0, 1.0, 3.0, 2.0, 0.0, 5.0, 3.0, 2.0, 2.0];
        let a = linear_sum_assignment(&cost, 3, 3)?;
        assert_eq!(a.row_to_col, vec![1, 0, 2]);
        assert_eq!(a.cost, 5.0);
        // The classic worker/job example: optimum 2 + 6 + 1 + 4 = 13.
        let cost = [9.0, 2.0, 7.0, 8.0, 6.0, 4.0, 3.0, 7.0, 5.0, 8.0, 1.0, 8.0, 7.0, 6.0, 9.0, 4.0];
        let a = linear_sum_assignment(&cost, 4, 4)?;
        assert_eq!(a.cost, 13.0);
        assert_eq!(a.row_to_col, vec![1, 0, 2, 3]);
        Ok(())
    }

    #[test]
    fn assignment_ties_and_trivial_cases() -> Result<()> {
        // All-equal costs: any permutation is optimal.
        let cost = vec![3.0; 25];
        let a = linear_sum_assignment(&cost, 5, 5)?;
        check_valid(&a, &cost, 5, 5);
        assert_eq!(a.cost, 15.0);
        // n = 1, and 1 × m picks the smallest column.
        assert_eq!(linear_sum_assignment(&[-2.5], 1, 1)?.row_to_col, vec![0]);
        let a = linear_sum_assignment(&[3.0, 1.0, 2.0, 1.0], 1, 4)?;
        assert_eq!(a.cost, 1.0);
        // Empty problem.
        let a = linear_sum_assignment(&[], 0, 3)?;
        assert!(a.row_to_col.is_empty() && a.cost == 0.0);
        // The identity is optimal for a distance matrix of a set to itself.
        let pts = [0.0, 1.0, 2.5, 4.0, 7.0];
        let cost: Vec<f64> = pts.iter().flat_map(|a| pts.iter().map(move |b| (a - b) * (a - b))).collect();
        let a = linear_sum_assignment(&cost, 5, 5)?;
        assert_eq!(a.row_to_col, vec![0, 1, 2, 3, 4]);
        assert_eq!(a.cost, 0.0);
        Ok(())
    }

    #[test]
    fn instruction_set_variants_agree_bit_for_bit() -> Result<()> {
        // The AVX2 and AVX-512 builds (where the CPU has them) against the
        // baseline build of the same code, on geometric and random costs.
        let mut rng = SeededRng::new(11);
        for &(n_rows, n_cols) in &[(256usize, 256usize), (97, 97), (60, 75)] {
            let x = rng.normal_vec(2 * n_rows);
            let y = rng.uniform_vec(2 * n_cols, -2.0, 2.0);
            let geometric: Vec<f64> = (0..n_rows * n_cols)
                .map(|k| {
                    let (i, j) = (k / n_cols, k % n_cols);
                    (x[2 * i] - y[2 * j]).powi(2) + (x[2 * i + 1] - y[2 * j + 1]).powi(2)
                })
                .collect();
            for cost in [geometric, rng.uniform_vec(n_rows * n_cols, 0.0, 1.0)] {
                let baseline = solve(kernels::Portable, &cost, n_rows, n_cols)?;
                let mut variants = vec![linear_sum_assignment(&cost, n_rows, n_cols)?];
                #[cfg(target_arch = "x86_64")]
                {
                    if let Some(k) = kernels::Avx2::detect() {
                        variants.push(simd::solve_avx2(k, &cost, n_rows, n_cols)?);
                    }
                    if let Some(k) = kernels::Avx512::detect() {
                        variants.push(simd::solve_avx512(k, &cost, n_rows, n_cols)?);
                    }
                }
                for v in variants {
                    assert_eq!(v.row_to_col, baseline.row_to_col);
                    assert_eq!(v.cost.to_bits(), baseline.cost.to_bits());
                }
            }
        }
        Ok(())
    }

    #[test]
    fn assignment_large_matches_second_algorithm() -> Result<()> {
        let mut rng = SeededRng::new(5);
        for &(n_rows, n_cols) in &[(300usize, 300usize), (200, 260)] {
            let cost = rng.uniform_vec(n_rows * n_cols, 0.0, 1.0);
            let a = linear_sum_assignment(&cost, n_rows, n_cols)?;
            check_valid(&a, &cost, n_rows, n_cols);
            let reference = hungarian_reference(&cost, n_rows, n_cols);
            assert!((a.cost - reference).abs() < 1e-9, "{} vs {reference}", a.cost);

            // Greedy (cheapest free column per row) and random assignments cost more.
            let mut used = vec![false; n_cols];
            let mut greedy = 0.0;
            for i in 0..n_rows {
                let (j, c) = (0..n_cols)
                    .filter(|&j| !used[j])
                    .map(|j| (j, cost[i * n_cols + j]))
                    .fold((NONE, f64::INFINITY), |b, x| if x.1 < b.1 { x } else { b });
                used[j] = true;
                greedy += c;
            }
            assert!(a.cost <= greedy);
            for _ in 0..10 {
                let p = rng.permutation(n_cols);
                let random: f64 = (0..n_rows).map(|i| cost[i * n_cols + p[i]]).sum();
                assert!(a.cost <= random);
            }
            // No improving 2-swap exists (a necessary optimality condition).
            let s = &a.row_to_col;
            for i in 0..n_rows {
                for k in 0..n_rows {
                    let now = cost[i * n_cols + s[i]] + cost[k * n_cols + s[k]];
                    let swapped = cost[i * n_cols + s[k]] + cost[k * n_cols + s[i]];
                    assert!(now <= swapped + 1e-12);
                }
            }
        }
        Ok(())
    }

    #[test]
    fn assignment_hard_instances_match_second_algorithm() -> Result<()> {
        let mut rng = SeededRng::new(8);
        // Many ties: small integer costs.
        let n = 150;
        let cost: Vec<f64> = rng.uniform_vec(n * n, 0.0, 3.0).into_iter().map(f64::floor).collect();
        let a = linear_sum_assignment(&cost, n, n)?;
        check_valid(&a, &cost, n, n);
        assert_eq!(a.cost, hungarian_reference(&cost, n, n));
        // Geometric: squared distances between shifted 2-D point clouds.
        let n = 250;
        let x = rng.normal_vec(2 * n);
        let y: Vec<f64> = rng.normal_vec(2 * n).into_iter().map(|v| v + 0.5).collect();
        let cost: Vec<f64> = (0..n)
            .flat_map(|i| {
                let (x, y) = (&x, &y);
                (0..n).map(move |j| (x[2 * i] - y[2 * j]).powi(2) + (x[2 * i + 1] - y[2 * j + 1]).powi(2))
            })
            .collect();
        let a = linear_sum_assignment(&cost, n, n)?;
        check_valid(&a, &cost, n, n);
        let reference = hungarian_reference(&cost, n, n);
        assert!((a.cost - reference).abs() < 1e-9 * reference, "{} vs {reference}", a.cost);
        // Rectangular with ties.
        let (r, c) = (60, 90);
        let cost: Vec<f64> = rng.uniform_vec(r * c, 0.0, 2.0).into_iter().map(f64::floor).collect();
        let a = linear_sum_assignment(&cost, r, c)?;
        check_valid(&a, &cost, r, c);
        assert_eq!(a.cost, hungarian_reference(&cost, r, c));
        Ok(())
    }

    #[test]
    fn auction_phase_ends_in_eps_complementary_slackness() {
        let mut rng = SeededRng::new(11);
        let n = 200;
        let x = rng.normal_vec(2 * n);
        let y = rng.uniform_vec(2 * n, -1.5, 1.5);
        let c32: Vec<f32> = (0..n * n)
            .map(|k| {
                let (i, j) = (k / n, k % n);
                ((x[2 * i] - y[2 * j]).powi(2) + (x[2 * i + 1] - y[2 * j + 1]).powi(2)) as f32
            })
            .collect();
        let mut v32: Vec<f32> =
            (0..n).map(|j| (0..n).map(|i| c32[i * n + j]).fold(f32::INFINITY, f32::min)).collect();
        let (mut col4row, mut row4col) = (vec![NONE; n], vec![NONE; n]);
        for eps in [0.1f32, 0.01, 0.001] {
            let complete =
                auction_phase(kernels::Portable, &c32, n, &mut v32, eps, &mut col4row, &mut row4col);
            assert!(complete, "ε = {eps}: the bid budget ran out");
            for i in 0..n {
                let j = col4row[i];
                assert!(j != NONE && row4col[j] == i, "ε = {eps}: row {i} is not matched both ways");
                let row = &c32[i * n..(i + 1) * n];
                let best = row.iter().zip(&v32).map(|(c, v)| c - v).fold(f32::INFINITY, f32::min);
                let mine = row[j] - v32[j];
                // ε-complementary slackness, up to f32 rounding.
                assert!(
                    mine <= best + eps * 1.001 + 1e-5,
                    "ε = {eps}: row {i} is {} above its best",
                    mine - best
                );
            }
        }
    }

    #[test]
    fn assignment_rejects_bad_input() {
        assert!(linear_sum_assignment(&[1.0, 2.0, 3.0], 2, 2).is_err());
        assert!(linear_sum_assignment(&[1.0, 2.0], 2, 1).is_err());
        assert!(linear_sum_assignment(&[1.0, f64::NAN, 0.0, 1.0], 2, 2).is_err());
        assert!(linear_sum_assignment(&[1.0, f64::INFINITY, 0.0, 1.0], 2, 2).is_err());
        assert!(linear_sum_assignment(&[1.0], usize::MAX, 2).is_err());
    }
}

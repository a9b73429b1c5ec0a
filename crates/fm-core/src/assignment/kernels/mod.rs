//! The row scans the assignment solver spends its time in: a portable form
//! (the contract) and intrinsics forms with the same arithmetic
//! (bit-identical results), AVX2 in [`avx2`] and AVX-512 in [`avx512`],
//! chosen at run time. On the 2-D benchmark's 256 × 256 problem
//! (`coupling/exact_ot`) the AVX2 forms took the solver from 2.36 ms
//! (1.33 ms compiled for AVX2) to 0.70 ms.

/// Marks "no row" / "no column".
pub(crate) const NONE: usize = usize::MAX;

/// The solver's inner loops over one cost row.
pub(crate) trait RowKernels: Copy {
    /// One Dijkstra scan of row `i`: `shortest[j] ← min(shortest[j], base +
    /// row[j] − v[j])`, recording `i` in `path[j]` where it improves; returns
    /// the smallest `shortest[j]`, the smallest `j` attaining it ([`NONE`]
    /// if all are `+∞`) and the second smallest value (equal to the first
    /// when it is attained twice).
    fn relax_row(
        self,
        row: &[f64],
        base: f64,
        i: usize,
        v: &[f64],
        shortest: &mut [f64],
        path: &mut [usize],
    ) -> (f64, usize, f64);
    /// `(h₁, j₁, h₂)`: the smallest `row[j] − v[j]`, the first `j` attaining
    /// it, and the second smallest value (`+∞` if the row has one entry).
    fn best_two(self, row: &[f32], v: &[f32]) -> (f32, usize, f32);
    /// `min_j row[j] − v[j]` (`+∞` for an empty row).
    fn min_reduced(self, row: &[f64], v: &[f64]) -> f64;
}

/// Portable kernels.
#[derive(Clone, Copy)]
pub(crate) struct Portable;

impl RowKernels for Portable {
    #[inline(always)]
    fn relax_row(
        self,
        row: &[f64],
        base: f64,
        i: usize,
        v: &[f64],
        shortest: &mut [f64],
        path: &mut [usize],
    ) -> (f64, usize, f64) {
        relax_tail(row, base, i, v, shortest, path, 0, (f64::INFINITY, NONE, f64::INFINITY))
    }

    #[inline(always)]
    fn best_two(self, row: &[f32], v: &[f32]) -> (f32, usize, f32) {
        best_two_tail(row, v, 0, (f32::INFINITY, 0, f32::INFINITY))
    }

    #[inline(always)]
    fn min_reduced(self, row: &[f64], v: &[f64]) -> f64 {
        row.iter().zip(v).map(|(c, vj)| c - vj).fold(f64::INFINITY, f64::min)
    }
}

/// Continues a Dijkstra scan over `from..` from the partial result `best`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn relax_tail(
    row: &[f64],
    base: f64,
    i: usize,
    v: &[f64],
    shortest: &mut [f64],
    path: &mut [usize],
    from: usize,
    (mut low, mut at, mut second): (f64, usize, f64),
) -> (f64, usize, f64) {
    let n = row.len().min(v.len()).min(shortest.len()).min(path.len());
    for j in from..n {
        let r = base + row[j] - v[j];
        if r < shortest[j] {
            shortest[j] = r;
            path[j] = i;
        }
        let s = shortest[j];
        if s < low {
            second = low;
            low = s;
            at = j;
        } else if s < second {
            second = s;
        }
    }
    (low, at, second)
}

/// Continues a best-two scan over `from..` from the partial result `best`.
#[inline(always)]
fn best_two_tail(
    row: &[f32],
    v: &[f32],
    from: usize,
    (mut b1, mut bj, mut b2): (f32, usize, f32),
) -> (f32, usize, f32) {
    let n = row.len().min(v.len());
    for j in from..n {
        let h = row[j] - v[j];
        if h < b1 {
            b2 = b1;
            b1 = h;
            bj = j;
        } else if h < b2 {
            b2 = h;
        }
    }
    (b1, bj, b2)
}

/// Implements [`RowKernels`] for an instruction-set type `$ty` by calling the
/// invoking module's `relax_row`, `best_two` and `min_reduced`, which are
/// `unsafe` because they are compiled for that instruction set.
#[cfg(target_arch = "x86_64")]
macro_rules! row_kernels_from_module_fns {
    ($ty:ty) => {
        impl RowKernels for $ty {
            #[inline(always)]
            fn relax_row(
                self,
                row: &[f64],
                base: f64,
                i: usize,
                v: &[f64],
                shortest: &mut [f64],
                path: &mut [usize],
            ) -> (f64, usize, f64) {
                // SAFETY: a value of this type exists only on CPUs with its
                // instruction set (see its `detect`).
                unsafe { relax_row(row, base, i, v, shortest, path) }
            }

            #[inline(always)]
            fn best_two(self, row: &[f32], v: &[f32]) -> (f32, usize, f32) {
                // SAFETY: as above.
                unsafe { best_two(row, v) }
            }

            #[inline(always)]
            fn min_reduced(self, row: &[f64], v: &[f64]) -> f64 {
                // SAFETY: as above.
                unsafe { min_reduced(row, v) }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::Avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::Avx512;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SeededRng;

    /// Rows of every length up to 72 (all remainders of the 8-, 16- and 32-column
    /// blocks), with continuous values, many ties, and masked columns.
    fn rows(rng: &mut SeededRng) -> Vec<(Vec<f64>, Vec<f64>)> {
        let mut out = Vec::new();
        for n in 0..=72 {
            for kind in 0..3 {
                let row = match kind {
                    0 => rng.uniform_vec(n, -3.0, 3.0),
                    _ => rng.uniform_vec(n, 0.0, 3.0).into_iter().map(f64::floor).collect(),
                };
                let mut v = rng.uniform_vec(n, -1.0, 1.0);
                if kind == 1 {
                    v.iter_mut().for_each(|x| *x = x.floor());
                }
                if kind == 2 {
                    // Settled columns are masked with a price of −∞.
                    for (j, x) in v.iter_mut().enumerate() {
                        if j % 3 != 1 {
                            *x = f64::NEG_INFINITY;
                        }
                    }
                }
                out.push((row, v));
            }
        }
        out
    }

    /// The portable kernels against a plain sequential reading of their
    /// contracts.
    #[test]
    fn portable_kernels_follow_their_contracts() {
        let mut rng = SeededRng::new(3);
        for (row, v) in rows(&mut rng) {
            let n = row.len();
            let h: Vec<f64> = row.iter().zip(&v).map(|(c, p)| c - p).collect();
            let mut sorted = h.clone();
            sorted.sort_by(f64::total_cmp);
            let min = sorted.first().copied().unwrap_or(f64::INFINITY);
            assert_eq!(Portable.min_reduced(&row, &v), min);

            let (r32, v32): (Vec<f32>, Vec<f32>) =
                row.iter().zip(&v).map(|(&c, &p)| (c as f32, p as f32)).unzip();
            let h32: Vec<f32> = r32.iter().zip(&v32).map(|(c, p)| c - p).collect();
            let mut s32 = h32.clone();
            s32.sort_by(f32::total_cmp);
            let (b1, bj, b2) = Portable.best_two(&r32, &v32);
            if n > 0 {
                assert_eq!(b1, s32[0]);
                assert_eq!(bj, h32.iter().position(|&x| x == s32[0]).unwrap_or(NONE));
            }
            assert_eq!(b2, s32.get(1).copied().unwrap_or(f32::INFINITY));

            let mut shortest = rng.uniform_vec(n, -1.0, 4.0);
            let before = shortest.clone();
            let mut path = vec![7usize; n];
            let (low, at, second) = Portable.relax_row(&row, 0.5, 9, &v, &mut shortest, &mut path);
            for j in 0..n {
                let r = 0.5 + row[j] - v[j];
                assert_eq!(shortest[j], before[j].min(r));
                assert_eq!(path[j], if r < before[j] { 9 } else { 7 });
            }
            let mut s = shortest.clone();
            s.sort_by(f64::total_cmp);
            assert_eq!(low, s.first().copied().unwrap_or(f64::INFINITY));
            assert_eq!(at, shortest.iter().position(|&x| x == low && x < f64::INFINITY).unwrap_or(NONE));
            assert_eq!(second, s.get(1).copied().unwrap_or(f64::INFINITY));
        }
    }

    /// The AVX2 and AVX-512 kernels return exactly what the portable ones
    /// do, and leave the same shortest paths and predecessors behind.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_kernels_agree_with_portable_bit_for_bit() {
        match Avx2::detect() {
            Some(k) => agrees_with_portable(k),
            None => eprintln!("no AVX2 on this CPU; nothing to compare"),
        }
        match Avx512::detect() {
            Some(k) => agrees_with_portable(k),
            None => eprintln!("no AVX-512 on this CPU; nothing to compare"),
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn agrees_with_portable<K: RowKernels>(simd: K) {
        let mut rng = SeededRng::new(4);
        for (row, v) in rows(&mut rng) {
            let n = row.len();
            assert_eq!(simd.min_reduced(&row, &v).to_bits(), Portable.min_reduced(&row, &v).to_bits());

            let (r32, v32): (Vec<f32>, Vec<f32>) =
                row.iter().zip(&v).map(|(&c, &p)| (c as f32, p as f32)).unzip();
            let (a, p) = (simd.best_two(&r32, &v32), Portable.best_two(&r32, &v32));
            assert_eq!(
                (a.0.to_bits(), a.1, a.2.to_bits()),
                (p.0.to_bits(), p.1, p.2.to_bits()),
                "best_two, n = {n}"
            );

            // From a fresh search (all unreached, so ties in the row carry
            // through) and from partly-reached columns, as later in a search.
            let partly: Vec<f64> = rng
                .uniform_vec(n, -1.0, 4.0)
                .into_iter()
                .enumerate()
                .map(|(j, x)| if j % 4 == 0 { f64::INFINITY } else { x })
                .collect();
            for start in [vec![f64::INFINITY; n], partly] {
                let (mut sa, mut sp) = (start.clone(), start);
                let (mut pa, mut pp) = (vec![7usize; n], vec![7usize; n]);
                let a = simd.relax_row(&row, 0.25, 11, &v, &mut sa, &mut pa);
                let p = Portable.relax_row(&row, 0.25, 11, &v, &mut sp, &mut pp);
                assert_eq!(
                    (a.0.to_bits(), a.1, a.2.to_bits()),
                    (p.0.to_bits(), p.1, p.2.to_bits()),
                    "relax_row, n = {n}"
                );
                let bits = |s: &[f64]| s.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&sa), bits(&sp));
                assert_eq!(pa, pp);
            }
        }
        // Nothing reachable: no column.
        let mut s = vec![f64::INFINITY; 40];
        let mut path = vec![0usize; 40];
        let all_masked = vec![f64::NEG_INFINITY; 40];
        assert_eq!(simd.relax_row(&[1.0; 40], 0.0, 0, &all_masked, &mut s, &mut path).1, NONE);
    }
}

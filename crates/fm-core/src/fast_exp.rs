//! A vectorisable `exp` for f32.
//!
//! `f32::exp` is a call into libm per element, which keeps LLVM from
//! vectorising the loops around it (and libm takes a slow path, setting
//! `errno`, on every result that underflows). [`exp_f32`] is branch-free
//! arithmetic (Cody–Waite range reduction `x = n ln 2 + r`, `|r| ≤ ln 2 / 2`,
//! a degree-7 polynomial for `eʳ` — the classic Cephes `expf` coefficients —
//! and `2ⁿ` built in the exponent bits), so a loop over a slice compiles to
//! SIMD code. Its relative error is below 2 ulp against `f32::exp` over the
//! whole normal range (tested); it flushes results below `f32::MIN_POSITIVE`
//! to that value's neighbourhood rather than to subnormals (inputs are
//! clamped to `[−87.3, 88.3]`).
//!
//! It uses `mul_add`: compile the loop around it with FMA enabled (a
//! `#[target_feature(enable = "avx2,fma")]` copy chosen at run time), or
//! each `mul_add` becomes a libm call. `mul_add` is exactly rounded either
//! way, so both give bit-identical results.
//!
//! ```
//! use fm_core::fast_exp::exp_f32;
//!
//! assert_eq!(exp_f32(0.0), 1.0);
//! assert!((exp_f32(1.0) - std::f32::consts::E).abs() <= 2.0 * f32::EPSILON * std::f32::consts::E);
//! ```

/// `log₂ e`.
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` split in a high part exact in few bits and the rest (Cody–Waite).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Adding then subtracting `1.5 · 2²³` rounds an f32 of magnitude < 2²² to an integer.
const ROUND_MAGIC: f32 = 12_582_912.0;
/// Inputs are clamped to this range, where `eˣ` is a normal f32.
const X_MIN: f32 = -87.3;
const X_MAX: f32 = 88.3;

/// `eˣ` for f32 in branch-free, vectorisable arithmetic (< 2 ulp; NaN stays NaN).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    // Clamp by comparisons (NaN fails both and passes through).
    let xc = if x < X_MIN { X_MIN } else { x };
    let xc = if xc > X_MAX { X_MAX } else { xc };
    // n = round(x / ln 2), with the integer in the low mantissa bits of `shifted`.
    let shifted = xc.mul_add(LOG2E, ROUND_MAGIC);
    let n = shifted - ROUND_MAGIC;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, xc));
    // eʳ ≈ 1 + r + r² P(r) (Cephes expf's minimax coefficients).
    let p = 1.987_569_1e-4f32;
    let p = p.mul_add(r, 1.398_199_9e-3);
    let p = p.mul_add(r, 8.333_452e-3);
    let p = p.mul_add(r, 4.166_579_6e-2);
    let p = p.mul_add(r, 1.666_666_5e-1);
    let p = p.mul_add(r, 0.5);
    let er = p.mul_add(r * r, r) + 1.0;
    // 2ⁿ from the exponent bits: n ∈ [−126, 127] after the clamp.
    let n_int = shifted.to_bits().wrapping_sub(ROUND_MAGIC.to_bits()) as i32;
    let two_n = f32::from_bits(((n_int + 127) as u32) << 23);
    er * two_n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two finite f32 of one sign.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_within_two_ulp_of_std_over_the_normal_range() {
        let mut worst = 0;
        let mut x = -87.0f32;
        while x < 88.0 {
            let e = ulps(exp_f32(x), x.exp());
            assert!(e <= 2, "exp({x}) = {} vs {} ({e} ulp)", exp_f32(x), x.exp());
            worst = worst.max(e);
            x += 0.000_731;
        }
        // Exact at 0, and the edges stay finite and positive.
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(1e4).is_finite() && exp_f32(1e4) > 1e38);
        assert!(exp_f32(-1e4) > 0.0 && exp_f32(-1e4) < 1.3e-38);
        assert!(exp_f32(f32::NAN).is_nan());
        assert!(worst >= 1, "the test should see rounding differences");
    }
}

//! Vectorisable `exp` for f32 and f64.
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
//! `#[target_feature(enable = "avx2,fma")]` copy chosen at run time by
//! [`has_avx2_fma`](super::has_avx2_fma)), or
//! each `mul_add` becomes a libm call. `mul_add` is exactly rounded either
//! way, so both give bit-identical results.
//!
//! [`exp_f64`] is the same construction for f64 (a degree-13 Taylor
//! polynomial, plain multiplications and additions, so it needs no FMA and
//! gives the same bits on every instruction set): below 3 ulp against
//! `f64::exp` over the normal range (tested), inputs clamped to
//! `[−708.3, 709]`.
//!
//! ```
//! use fm_core::simd::{exp_f32, exp_f64};
//!
//! assert_eq!(exp_f32(0.0), 1.0);
//! assert!((exp_f32(1.0) - std::f32::consts::E).abs() <= 2.0 * f32::EPSILON * std::f32::consts::E);
//! assert_eq!(exp_f64(0.0), 1.0);
//! assert!((exp_f64(1.0) - std::f64::consts::E).abs() <= 3.0 * f64::EPSILON * std::f64::consts::E);
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

/// `ln 2` split for f64: the high part has 21 trailing zero bits, so `n ·
/// LN2_HI_F64` is exact for the `|n| ≤ 1100` met here (fdlibm's split).
const LN2_HI_F64: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO_F64: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
/// Adding then subtracting `1.5 · 2⁵²` rounds an f64 of magnitude < 2⁵¹ to an integer.
const ROUND_MAGIC_F64: f64 = 6_755_399_441_055_744.0;
/// Inputs are clamped to this range, where `eˣ` is a normal f64 and `2ⁿ`
/// has a normal exponent.
const X_MIN_F64: f64 = -708.3;
const X_MAX_F64: f64 = 709.0;
/// `1/k!` for `k = 13, 12, …, 2`: the Taylor coefficients of `eʳ` beyond
/// `1 + r`, highest first (`|r| ≤ ln 2 / 2`: the first term left out is
/// below 2⁻⁵⁵ relative).
const EXP_TAYLOR_F64: [f64; 12] = [
    1.0 / 6_227_020_800.0,
    1.0 / 479_001_600.0,
    1.0 / 39_916_800.0,
    1.0 / 3_628_800.0,
    1.0 / 362_880.0,
    1.0 / 40_320.0,
    1.0 / 5_040.0,
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
];

/// `eˣ` for f64 in branch-free, vectorisable arithmetic (< 3 ulp; NaN stays NaN).
#[inline(always)]
pub fn exp_f64(x: f64) -> f64 {
    let xc = if x < X_MIN_F64 { X_MIN_F64 } else { x };
    let xc = if xc > X_MAX_F64 { X_MAX_F64 } else { xc };
    // n = round(x / ln 2), with the integer in the low mantissa bits of `shifted`.
    let shifted = xc * std::f64::consts::LOG2_E + ROUND_MAGIC_F64;
    let n = shifted - ROUND_MAGIC_F64;
    let r = (xc - n * LN2_HI_F64) - n * LN2_LO_F64;
    // eʳ = 1 + r + r² (1/2 + r/6 + …), by Horner.
    let mut p = EXP_TAYLOR_F64[0];
    for c in &EXP_TAYLOR_F64[1..] {
        p = p * r + c;
    }
    let er = (p * (r * r) + r) + 1.0;
    // 2ⁿ from the exponent bits: n ∈ [−1022, 1023] after the clamp.
    let n_int = shifted.to_bits().wrapping_sub(ROUND_MAGIC_F64.to_bits()) as i64;
    let two_n = f64::from_bits(((n_int + 1023) as u64) << 52);
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

    #[test]
    fn exp_f64_within_three_ulp_of_std_over_the_normal_range() {
        let ulps = |a: f64, b: f64| (a.to_bits() as i128 - b.to_bits() as i128).unsigned_abs();
        let mut worst = 0;
        let mut x = -708.0f64;
        while x < 709.0 {
            for y in [x, x * 1e-3, x * 1e-9] {
                let e = ulps(exp_f64(y), y.exp());
                assert!(e <= 3, "exp({y}) = {} vs {} ({e} ulp)", exp_f64(y), y.exp());
                worst = worst.max(e);
            }
            x += 0.000_713_7;
        }
        assert_eq!(exp_f64(0.0), 1.0);
        assert!(exp_f64(1e4).is_finite() && exp_f64(1e4) > 8e307);
        assert!(exp_f64(-1e4) >= f64::MIN_POSITIVE && exp_f64(-1e4) < 2.5e-308);
        assert!(exp_f64(f64::NAN).is_nan());
        assert!(worst >= 1, "the test should see rounding differences");
    }
}

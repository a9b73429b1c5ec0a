//! SiLU kernels on f32 slices (the activation's custom op and the MLP's
//! blocked passes), built on fm-core's vectorisable `exp`
//! ([`fm_core::simd::exp_f32`]: branch-free, < 2 ulp, results below
//! `f32::MIN_POSITIVE` flushed to its neighbourhood, which is harmless for
//! an activation).
//!
//! The slice kernels ([`silu_forward`], [`silu_in_place`], [`silu_backward`]) detect AVX2 + FMA
//! at run time and then run a copy of the same loop compiled for them
//! (8 lanes, fused multiply–add); without them the same expressions run as
//! scalar code (`mul_add` is exactly rounded either way, so both paths give
//! bit-identical results).

use fm_core::simd::exp_f32;

use super::cpu::avx2_fma;

/// `x · sigmoid(x) = x / (1 + e⁻ˣ)` with [`exp_f32`].
#[inline(always)]
fn silu_one(x: f32) -> f32 {
    x / (1.0 + exp_f32(-x))
}

/// `g · σ'(x)` for SiLU, given `y = silu(x)`: `σ'(x) = s + y (1 − s)` with
/// `s = sigmoid(x)`.
#[inline(always)]
fn silu_grad_one(g: f32, x: f32, y: f32) -> f32 {
    let s = 1.0 / (1.0 + exp_f32(-x));
    g * s.mul_add(1.0 - y, y)
}

#[inline(always)]
fn silu_forward_loop(x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = silu_one(v);
    }
}

#[inline(always)]
fn silu_in_place_loop(v: &mut [f32]) {
    for z in v.iter_mut() {
        *z = silu_one(*z);
    }
}

#[inline(always)]
fn silu_backward_loop(g: &[f32], x: &[f32], y: &[f32], out: &mut [f32]) {
    let n = out.len().min(g.len()).min(x.len()).min(y.len());
    let (g, x, y, out) = (&g[..n], &x[..n], &y[..n], &mut out[..n]);
    for i in 0..n {
        out[i] = silu_grad_one(g[i], x[i], y[i]);
    }
}

avx2_fma! {
    /// `out[i] = silu(x[i])` (vectorised where the CPU allows).
    ///
    /// # Shapes
    /// - `x`, `out`: the same length (the shorter one bounds the loop)
    pub(crate) fn silu_forward(x: &[f32], out: &mut [f32]) => silu_forward_loop;
}

avx2_fma! {
    /// `v[i] ← silu(v[i])` (vectorised where the CPU allows).
    pub(crate) fn silu_in_place(v: &mut [f32]) => silu_in_place_loop;
}

avx2_fma! {
    /// `out[i] = g[i] · silu'(x[i])`, given `y[i] = silu(x[i])` (vectorised where the CPU allows).
    ///
    /// # Shapes
    /// - `g`, `x`, `y`, `out`: the same length (the shortest bounds the loop)
    pub(crate) fn silu_backward(g: &[f32], x: &[f32], y: &[f32], out: &mut [f32]) => silu_backward_loop;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silu_kernels_match_the_std_formulas() {
        let x: Vec<f32> = (0..4001).map(|i| (i as f32 - 2000.0) * 0.013 + 0.0007).collect();
        let mut y = vec![0.0; x.len()];
        silu_forward(&x, &mut y);
        let g: Vec<f32> = (0..x.len()).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut dx = vec![0.0; x.len()];
        silu_backward(&g, &x, &y, &mut dx);
        let mut scalar = vec![0.0; x.len()];
        silu_forward_loop(&x, &mut scalar);
        assert_eq!(scalar, y, "the SIMD and scalar paths agree bit for bit");
        let mut in_place = x.clone();
        silu_in_place(&mut in_place);
        assert_eq!(in_place, y);
        for i in 0..x.len() {
            let v = f64::from(x[i]);
            let s = 1.0 / (1.0 + (-v).exp());
            let want = v * s;
            assert!((f64::from(y[i]) - want).abs() <= 4e-7 * want.abs().max(1e-3), "silu({v})");
            let dwant = f64::from(g[i]) * (s + v * s * (1.0 - s));
            // σ'(x) = s (1 + x (1 − s)) cancels near x ≈ −1.28: an absolute floor there.
            assert!((f64::from(dx[i]) - dwant).abs() <= 1e-6 * dwant.abs() + 1e-7, "silu'({v})");
        }
    }
}

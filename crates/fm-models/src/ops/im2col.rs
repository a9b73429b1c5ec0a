//! im2col (the patches of a `k×k` convolution as the columns of a matrix) and
//! its adjoint col2im, as candle custom ops with explicit backward passes.
//!
//! One pass writes the patches at the convolution's real stride (a stride-2
//! convolution reads a quarter of the positions), and the backward pass is one
//! scatter-add: no padded copy, no stack of `k²` shifted views, and none of
//! the `k²` full-size zero-padded gradients the composed ops' backward builds.
//! Padding is `k / 2` on every side (PyTorch's `padding = 1` for `k = 3`).

use candle::{Shape, Tensor};

use super::cpu::{apply1, fusable, Kernel, Real};
use super::pool::par_samples;

/// The geometry of a `k×k` convolution with stride `stride` and padding `k / 2`
/// on `(c, h, w)` images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Patches {
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) k: usize,
    pub(crate) stride: usize,
}

impl Patches {
    fn pad(&self) -> usize {
        self.k / 2
    }

    /// Output height and width, `⌊(h + 2p − k) / s⌋ + 1` (`⌈h / s⌉` for odd `k`).
    pub(crate) fn out_hw(&self) -> (usize, usize) {
        let p = self.pad();
        ((self.h + 2 * p - self.k) / self.stride + 1, (self.w + 2 * p - self.k) / self.stride + 1)
    }

    /// Rows of the column matrix, `c·k·k`.
    fn rows(&self) -> usize {
        self.c * self.k * self.k
    }

    /// Input positions `(output index, input index)` of kernel offset `d` along an
    /// axis of input length `n` and output length `m`: those inside the image.
    fn valid(&self, d: usize, n: usize, m: usize) -> (usize, usize) {
        // input = out · s + d − p must lie in [0, n)
        let (s, p) = (self.stride, self.pad());
        let lo = if d >= p { 0 } else { (p - d).div_ceil(s) };
        let hi = if n + p > d { ((n + p - d - 1) / s + 1).min(m) } else { 0 };
        (lo, hi.max(lo))
    }

    /// One image `(c, h, w)` → its columns `(c·k·k, ho·wo)`.
    fn im2col<T: Real>(&self, x: &[T], cols: &mut [T]) {
        let (ho, wo) = self.out_hw();
        let (k, s, p) = (self.k, self.stride, self.pad());
        for ci in 0..self.c {
            let img = &x[ci * self.h * self.w..(ci + 1) * self.h * self.w];
            for ky in 0..k {
                let (y0, y1) = self.valid(ky, self.h, ho);
                for kx in 0..k {
                    let (x0, x1) = self.valid(kx, self.w, wo);
                    let row = (ci * k + ky) * k + kx;
                    let out = &mut cols[row * ho * wo..(row + 1) * ho * wo];
                    for oy in 0..ho {
                        let line = &mut out[oy * wo..(oy + 1) * wo];
                        if oy < y0 || oy >= y1 {
                            line.fill(T::ZERO);
                            continue;
                        }
                        let iy = oy * s + ky - p;
                        let src = &img[iy * self.w..(iy + 1) * self.w];
                        line[..x0].fill(T::ZERO);
                        line[x1..].fill(T::ZERO);
                        if s == 1 {
                            let ix0 = x0 + kx - p;
                            line[x0..x1].copy_from_slice(&src[ix0..ix0 + (x1 - x0)]);
                        } else {
                            for (ox, v) in line.iter_mut().enumerate().take(x1).skip(x0) {
                                *v = src[ox * s + kx - p];
                            }
                        }
                    }
                }
            }
        }
    }

    /// The adjoint: columns `(c·k·k, ho·wo)` → one image `(c, h, w)`, summing
    /// every column entry into the input position it was read from.
    fn col2im<T: Real>(&self, cols: &[T], x: &mut [T]) {
        let (ho, wo) = self.out_hw();
        let (k, s, p) = (self.k, self.stride, self.pad());
        x.fill(T::ZERO);
        for ci in 0..self.c {
            let img = &mut x[ci * self.h * self.w..(ci + 1) * self.h * self.w];
            for ky in 0..k {
                let (y0, y1) = self.valid(ky, self.h, ho);
                for kx in 0..k {
                    let (x0, x1) = self.valid(kx, self.w, wo);
                    let row = (ci * k + ky) * k + kx;
                    let col = &cols[row * ho * wo..(row + 1) * ho * wo];
                    for oy in y0..y1 {
                        let iy = oy * s + ky - p;
                        let dst = &mut img[iy * self.w..(iy + 1) * self.w];
                        let line = &col[oy * wo..(oy + 1) * wo];
                        if s == 1 {
                            let ix0 = x0 + kx - p;
                            for (d, &v) in dst[ix0..ix0 + (x1 - x0)].iter_mut().zip(&line[x0..x1]) {
                                *d += v;
                            }
                        } else {
                            for (ox, &v) in line.iter().enumerate().take(x1).skip(x0) {
                                dst[ox * s + kx - p] += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `(b, c, h, w)` → `(b, c·k·k, ho·wo)`.
struct Im2Col(Patches);

/// `(b, c·k·k, ho·wo)` → `(b, c, h, w)`, the adjoint of [`Im2Col`].
struct Col2Im(Patches);

impl Kernel<1> for Im2Col {
    /// Samples.
    type Dims = usize;

    fn name(&self) -> &'static str {
        "fm-im2col"
    }

    fn check(&self, [x]: [&Shape; 1]) -> candle::Result<(usize, Shape)> {
        let p = self.0;
        let (b, c, h, w) = x.dims4()?;
        if (c, h, w) != (p.c, p.h, p.w) {
            candle::bail!("fm-im2col: expected images {}×{}×{}, got {:?}", p.c, p.h, p.w, x.dims());
        }
        let (ho, wo) = p.out_hw();
        Ok((b, Shape::from((b, p.rows(), ho * wo))))
    }

    fn run<T: Real>(&self, [x]: [&[T]; 1], b: usize) -> Vec<T> {
        let p = self.0;
        let (ho, wo) = p.out_hw();
        par_samples(x, (b, p.c * p.h * p.w, p.rows() * ho * wo), |i, o| p.im2col(i, o))
    }

    fn backward(&self, _x: [&Tensor; 1], _cols: &Tensor, grad: &Tensor) -> candle::Result<[Tensor; 1]> {
        Ok([apply1(Col2Im(self.0), grad)?])
    }
}

impl Kernel<1> for Col2Im {
    /// Samples.
    type Dims = usize;

    fn name(&self) -> &'static str {
        "fm-col2im"
    }

    fn check(&self, [cols]: [&Shape; 1]) -> candle::Result<(usize, Shape)> {
        let p = self.0;
        let (b, rows, n) = cols.dims3()?;
        let (ho, wo) = p.out_hw();
        if (rows, n) != (p.rows(), ho * wo) {
            candle::bail!("fm-col2im: expected columns ({}, {}), got {:?}", p.rows(), ho * wo, cols.dims());
        }
        Ok((b, Shape::from((b, p.c, p.h, p.w))))
    }

    fn run<T: Real>(&self, [cols]: [&[T]; 1], b: usize) -> Vec<T> {
        let p = self.0;
        let (ho, wo) = p.out_hw();
        par_samples(cols, (b, p.rows() * ho * wo, p.c * p.h * p.w), |i, o| p.col2im(i, o))
    }

    fn backward(&self, _cols: [&Tensor; 1], _x: &Tensor, grad: &Tensor) -> candle::Result<[Tensor; 1]> {
        Ok([apply1(Im2Col(self.0), grad)?])
    }
}

/// The columns of a `k×k` convolution with stride `stride` and padding `k / 2`:
/// `cols[n, (ci·k + ky)·k + kx, oy·wo + ox] = x[n, ci, oy·s + ky − p, ox·s + kx − p]`
/// (zero outside the image). One custom op on the CPU (f32, f64); composed
/// tensor ops elsewhere.
///
/// # Shapes
/// - `x`: `(b, c, h, w)` → `(b, c·k·k, ho·wo)` with `(ho, wo)` = [`Patches::out_hw`]
pub(crate) fn im2col(x: &Tensor, k: usize, stride: usize) -> candle::Result<Tensor> {
    let (_, c, h, w) = x.dims4()?;
    if fusable(&[x]) {
        apply1(Im2Col(Patches { c, h, w, k, stride }), x)
    } else {
        im2col_by_ops(x, k, stride)
    }
}

/// [`im2col`] from candle's tensor ops (pad, `k²` shifted views, stack, subsample):
/// the reference, and the path on devices without the custom op.
pub(crate) fn im2col_by_ops(x: &Tensor, k: usize, stride: usize) -> candle::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let geometry = Patches { c, h, w, k, stride };
    let (ho, wo) = geometry.out_hw();
    let p = k / 2;
    let xp = x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?;
    let mut slices = Vec::with_capacity(k * k);
    for ky in 0..k {
        for kx in 0..k {
            let s = xp.narrow(2, ky, h + 2 * p - k + 1)?.narrow(3, kx, w + 2 * p - k + 1)?;
            let s = if stride == 1 {
                s
            } else {
                let pick = |n: usize, len: usize| {
                    let idx: Vec<u32> = (0..len as u32).map(|i| i * stride as u32).collect();
                    Tensor::from_vec(idx, n, x.device())
                };
                s.contiguous()?.index_select(&pick(ho, ho)?, 2)?.index_select(&pick(wo, wo)?, 3)?
            };
            slices.push(s);
        }
    }
    Tensor::stack(&slices, 2)?.reshape((b, c * k * k, ho * wo))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cpu::apply1;
    use crate::test_util::flat;
    use candle::{DType, Device, Var};

    fn ramp(shape: (usize, usize, usize, usize), dtype: DType) -> candle::Result<Tensor> {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let v: Vec<f64> = (0..n).map(|i| ((i as f64) * 0.37).sin() + 0.01 * i as f64).collect();
        Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)
    }

    /// The custom op and its gradient equal the composed ops exactly (they move
    /// the same values; the gradient sums at most `k²` terms per input, in the
    /// same order up to rounding), for odd and even sizes and strides 1 and 2.
    #[test]
    fn matches_the_composed_ops_and_their_gradient() -> candle::Result<()> {
        for dtype in [DType::F32, DType::F64] {
            for &(h, w, k, s) in
                &[(5, 7, 3, 1), (7, 7, 3, 2), (6, 4, 3, 2), (4, 5, 1, 1), (3, 3, 3, 1), (8, 6, 5, 2)]
            {
                let x = Var::from_tensor(&ramp((2, 3, h, w), dtype)?)?;
                let ours = im2col(&x, k, s)?;
                let theirs = im2col_by_ops(&x, k, s)?;
                assert_eq!(ours.dims(), theirs.dims(), "{h}×{w} k{k} s{s}");
                assert_eq!(flat(&ours), flat(&theirs), "{h}×{w} k{k} s{s} {dtype:?}");
                let weights = ramp((2, ours.dim(1)?, ours.dim(2)?, 1), dtype)?.squeeze(3)?.cos()?;
                let g_ours = (ours * &weights)?.sum_all()?.backward()?;
                let g_theirs = (theirs * &weights)?.sum_all()?.backward()?;
                let (a, b) = (flat(g_ours.get(&x).expect("grad")), flat(g_theirs.get(&x).expect("grad")));
                for (u, v) in a.iter().zip(&b) {
                    assert!((u - v).abs() < 1e-5, "{h}×{w} k{k} s{s} {dtype:?}: {u} vs {v}");
                }
            }
        }
        Ok(())
    }

    /// col2im is the adjoint of im2col: `⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩`.
    #[test]
    fn col2im_is_the_adjoint() -> candle::Result<()> {
        let p = Patches { c: 2, h: 7, w: 5, k: 3, stride: 2 };
        let x = ramp((1, 2, 7, 5), DType::F64)?;
        let (ho, wo) = p.out_hw();
        let c = ramp((1, p.rows(), ho * wo, 1), DType::F64)?.squeeze(3)?.cos()?;
        let lhs = (apply1(Im2Col(p), &x)? * &c)?.sum_all()?.to_scalar::<f64>()?;
        let rhs = (apply1(Col2Im(p), &c)? * &x)?.sum_all()?.to_scalar::<f64>()?;
        assert!((lhs - rhs).abs() < 1e-12, "{lhs} vs {rhs}");
        Ok(())
    }
}

//! What fm's CPU custom ops share: the element types they compute in (f32
//! and f64), the dispatch of a kernel on contiguous operands of one of them
//! (written once for every op, in the manner of candle's own `Map` traits),
//! the test of whether the kernels apply at all, and the candle op that runs
//! a kernel forward and its backward pass.
//!
//! An op is a [`Kernel`] (its name, a shape check, the kernel itself and,
//! for ops in the graph, the backward pass) behind a function that calls
//! [`apply1`]/[`apply3`] where [`fusable`] says the kernels apply and
//! candle's tensor ops otherwise; its backward pass runs its own kernels by
//! [`eval1`]/[`eval2`]/[`eval3`] where [`fusable_grad`] allows.

use candle::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Storage, Tensor};

/// The element types the kernels compute in (f32 and f64), with the few
/// operations they need.
pub(crate) trait Real:
    Copy
    + Send
    + Sync
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::AddAssign
    + std::ops::Neg<Output = Self>
    + 'static
{
    const ZERO: Self;
    const ONE: Self;
    /// `eˣ`, the standard library's.
    fn exp(self) -> Self;
    /// `eˣ` vectorisable in f32 ([`fm_core::simd::exp_f32`], < 2 ulp); the
    /// standard library's in f64.
    fn exp_fast(self) -> Self;
    /// `tanh x`, the standard library's.
    fn tanh(self) -> Self;
    /// Whether the sign bit is clear (`+0`, and `−0` is negative).
    fn is_sign_positive(self) -> bool;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    /// The values of a CPU storage of this type, else `None`.
    fn of(s: &CpuStorage) -> Option<&[Self]>;
}

macro_rules! real {
    ($t:ty, $variant:ident, $exp_fast:path) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn exp_fast(self) -> Self {
                $exp_fast(self)
            }
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            fn is_sign_positive(self) -> bool {
                <$t>::is_sign_positive(self)
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn of(s: &CpuStorage) -> Option<&[Self]> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
real!(f32, F32, fm_core::simd::exp_f32);
real!(f64, F64, f64::exp);

/// A custom op's CPU kernel on `N` contiguous operands of one dtype, f32 or f64.
pub(crate) trait Kernel<const N: usize>: Send + Sync + 'static {
    /// What the kernel needs to know of the operands' shapes.
    type Dims: Copy;

    /// The op's name (in candle's graph and in errors).
    fn name(&self) -> &'static str;

    /// Checks the operands' shapes: the kernel's dimensions and the result's shape.
    fn check(&self, shapes: [&Shape; N]) -> candle::Result<(Self::Dims, Shape)>;

    /// The result's values, written once for both element types.
    fn run<T: Real>(&self, xs: [&[T]; N], dims: Self::Dims) -> Vec<T>;

    /// The result in f32: [`Kernel::run`], unless the op has an f32 form of its own.
    fn run_f32(&self, xs: [&[f32]; N], dims: Self::Dims) -> Vec<f32> {
        self.run(xs, dims)
    }

    /// The gradients of the operands `xs`, given the result `y` and the
    /// gradient `grad` reaching it (ops run by [`apply1`]/[`apply3`]).
    fn backward(&self, xs: [&Tensor; N], y: &Tensor, grad: &Tensor) -> candle::Result<[Tensor; N]> {
        let _ = (xs, y, grad);
        Err(candle::Error::BackwardNotSupported { op: self.name() })
    }
}

/// The values of a contiguous operand (`op` names the custom op in the error).
fn values<'a, T>(v: &'a [T], l: &Layout, op: &str) -> candle::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle::bail!("{op}: non-contiguous operand"),
    }
}

/// The values of a contiguous CPU tensor's storage (under `layout`) if it holds `T`s.
pub(crate) fn cpu_values<'a, T: Real>(storage: &'a Storage, layout: &Layout) -> Option<&'a [T]> {
    let (start, end) = layout.contiguous_offsets()?;
    match storage {
        Storage::Cpu(s) => T::of(s).map(|v| &v[start..end]),
        _ => None,
    }
}

/// The error for operands that are not all f32 or all f64.
fn bad_dtypes(op: &str) -> candle::Error {
    candle::Error::Msg(format!("{op}: needs f32 or f64 operands of one dtype"))
}

/// The operands' values as `T`s.
fn operands<'a, T: Real, const N: usize>(
    op: &str,
    xs: [(&'a CpuStorage, &'a Layout); N],
) -> candle::Result<[&'a [T]; N]> {
    let mut out: [&[T]; N] = [&[]; N];
    for (o, (s, l)) in out.iter_mut().zip(xs) {
        *o = values(T::of(s).ok_or_else(|| bad_dtypes(op))?, l, op)?;
    }
    Ok(out)
}

/// A kernel's forward pass on the CPU: the shape check, then the kernel in
/// the operands' dtype.
fn cpu_fwd<K: Kernel<N>, const N: usize>(
    k: &K,
    xs: [(&CpuStorage, &Layout); N],
) -> candle::Result<(CpuStorage, Shape)> {
    let (dims, shape) = k.check(xs.map(|(_, l)| l.shape()))?;
    let out = match xs.first() {
        Some((CpuStorage::F32(_), _)) => CpuStorage::F32(k.run_f32(operands(k.name(), xs)?, dims)),
        Some((CpuStorage::F64(_), _)) => CpuStorage::F64(k.run(operands(k.name(), xs)?, dims)),
        _ => return Err(bad_dtypes(k.name())),
    };
    Ok((out, shape))
}

/// The candle custom op of a [`Kernel`].
struct Op<K>(K);

impl<K: Kernel<1>> CustomOp1 for Op<K> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle::Result<(CpuStorage, Shape)> {
        cpu_fwd(&self.0, [(s, l)])
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, grad: &Tensor) -> candle::Result<Option<Tensor>> {
        let [dx] = self.0.backward([x], y, grad)?;
        Ok(Some(dx))
    }
}

impl<K: Kernel<2>> CustomOp2 for Op<K> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        cpu_fwd(&self.0, [(s1, l1), (s2, l2)])
    }
}

impl<K: Kernel<3>> CustomOp3 for Op<K> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle::Result<(CpuStorage, Shape)> {
        cpu_fwd(&self.0, [(s1, l1), (s2, l2), (s3, l3)])
    }

    fn bwd(
        &self,
        x1: &Tensor,
        x2: &Tensor,
        x3: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> candle::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [d1, d2, d3] = self.0.backward([x1, x2, x3], y, grad)?;
        Ok((Some(d1), Some(d2), Some(d3)))
    }
}

/// Kernel `k` on `x` (made contiguous), differentiable by [`Kernel::backward`].
pub(crate) fn apply1<K: Kernel<1>>(k: K, x: &Tensor) -> candle::Result<Tensor> {
    x.contiguous()?.apply_op1(Op(k))
}

/// Kernel `k` on `(x1, x2, x3)` (made contiguous), differentiable by [`Kernel::backward`].
pub(crate) fn apply3<K: Kernel<3>>(k: K, x1: &Tensor, x2: &Tensor, x3: &Tensor) -> candle::Result<Tensor> {
    x1.contiguous()?.apply_op3(&x2.contiguous()?, &x3.contiguous()?, Op(k))
}

/// Kernel `k` on `x` (made contiguous), outside the autograd graph (a
/// backward pass's own products).
pub(crate) fn eval1<K: Kernel<1>>(k: K, x: &Tensor) -> candle::Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&Op(k))
}

/// [`eval1`] on two operands.
pub(crate) fn eval2<K: Kernel<2>>(k: K, x1: &Tensor, x2: &Tensor) -> candle::Result<Tensor> {
    x1.contiguous()?.apply_op2_no_bwd(&x2.contiguous()?, &Op(k))
}

/// [`eval1`] on three operands.
pub(crate) fn eval3<K: Kernel<3>>(k: K, x1: &Tensor, x2: &Tensor, x3: &Tensor) -> candle::Result<Tensor> {
    x1.contiguous()?.apply_op3_no_bwd(&x2.contiguous()?, &x3.contiguous()?, &Op(k))
}

/// Whether the CPU kernels apply to the operands `xs`: all on the CPU, all
/// f32 or all f64. Elsewhere (other devices and dtypes) the ops are composed
/// from candle's tensor ops.
pub(crate) fn fusable(xs: &[&Tensor]) -> bool {
    #[cfg(test)]
    if FORCE_COMPOSED.with(|f| f.get()) {
        return false;
    }
    let Some(first) = xs.first() else { return false };
    let dtype = first.dtype();
    matches!(dtype, DType::F32 | DType::F64) && xs.iter().all(|x| x.device().is_cpu() && x.dtype() == dtype)
}

/// Whether a backward pass can run its kernels on `grad`, the gradient
/// reaching an op that ran its kernels on `x`: on the CPU, in `x`'s dtype,
/// and carrying no graph of its own. (Under second-order autograd,
/// `CANDLE_GRAD_DO_NOT_DETACH`, the backward pass is composed from
/// differentiable tensor ops, so that higher derivatives stay correct.)
pub(crate) fn fusable_grad(grad: &Tensor, x: &Tensor) -> bool {
    !grad.track_op() && fusable(&[grad, x])
}

#[cfg(test)]
thread_local! {
    /// Tests set this to run the composed tensor-op paths on the CPU too.
    pub(crate) static FORCE_COMPOSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Defines `fn $name(args)` running the `#[inline(always)]` loop `$portable`
/// compiled for AVX2 and FMA where the CPU has them
/// ([`fm_core::simd::has_avx2_fma`]: 8 lanes, fused multiply–add), else as
/// portable code. `mul_add` is exactly rounded either way and Rust does not
/// contract `a · b + c`, so both copies give the same bits.
macro_rules! avx2_fma {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $portable:path;) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) {
            /// The loop compiled for AVX2 and FMA.
            ///
            /// # Safety
            /// The CPU must support AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2_fma($($arg: $ty),*) {
                $portable($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if fm_core::simd::has_avx2_fma() {
                // SAFETY: the features were detected on this CPU just above.
                unsafe { avx2_fma($($arg),*) };
                return;
            }
            $portable($($arg),*)
        }
    };
}
pub(crate) use avx2_fma;

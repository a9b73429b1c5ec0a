//! What the U-Net's CPU custom ops share: the float element trait and
//! access to a contiguous operand's values.

/// The element types the custom ops compute in (f32 and f64), with the few
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
{
    const ZERO: Self;
    const ONE: Self;
    fn exp(self) -> Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
}

macro_rules! real {
    ($t:ty) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
        }
    };
}
real!(f32);
real!(f64);

pub(crate) use super::cpu::values;

/// Whether the custom CPU kernels apply to `x` (CPU, f32 or f64); other
/// devices and dtypes take the composed tensor-op path.
pub(crate) fn fusable(x: &candle::Tensor) -> bool {
    #[cfg(test)]
    if FORCE_COMPOSED.with(|f| f.get()) {
        return false;
    }
    x.device().is_cpu() && matches!(x.dtype(), candle::DType::F32 | candle::DType::F64)
}

#[cfg(test)]
thread_local! {
    /// Tests set this to run the composed tensor-op paths on the CPU too.
    pub(crate) static FORCE_COMPOSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

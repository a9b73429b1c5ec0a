//! Run-time CPU-feature detection, once per process, one function per
//! instruction-set level the kernels are compiled for.
//!
//! A kernel with an AVX2 or AVX-512 copy (a `#[target_feature]` function
//! around the same portable loop) calls the copy only where the matching
//! function here returns `true`; every such copy gives the same bits as the
//! portable loop, so the choice changes speed only. Off x86-64 every level
//! is absent.

use std::sync::OnceLock;

/// The instruction sets the kernels use, as detected on this CPU.
#[derive(Debug, Clone, Copy)]
struct Features {
    avx2: bool,
    fma: bool,
    avx512f: bool,
}

/// This CPU's features, detected on the first call.
#[inline]
fn features() -> Features {
    static DETECTED: OnceLock<Features> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Features {
    Features {
        avx2: std::is_x86_feature_detected!("avx2"),
        fma: std::is_x86_feature_detected!("fma"),
        avx512f: std::is_x86_feature_detected!("avx512f"),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Features {
    Features { avx2: false, fma: false, avx512f: false }
}

/// Whether this CPU has AVX2.
#[inline]
pub fn has_avx2() -> bool {
    features().avx2
}

/// Whether this CPU has AVX2 and FMA (the `mul_add` kernels' vectorised copies need both).
#[inline]
pub fn has_avx2_fma() -> bool {
    has_avx2() && features().fma
}

/// Whether this CPU has AVX-512F.
#[inline]
pub fn has_avx512f() -> bool {
    features().avx512f
}

/// Whether this CPU has AVX-512F and FMA.
#[inline]
pub fn has_avx512f_fma() -> bool {
    has_avx512f() && features().fma
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cached answers are std's.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn agree_with_std_detection() {
        let avx2 = std::is_x86_feature_detected!("avx2");
        let fma = std::is_x86_feature_detected!("fma");
        let avx512f = std::is_x86_feature_detected!("avx512f");
        assert_eq!(has_avx2(), avx2);
        assert_eq!(has_avx2_fma(), avx2 && fma);
        assert_eq!(has_avx512f(), avx512f);
        assert_eq!(has_avx512f_fma(), avx512f && fma);
    }
}

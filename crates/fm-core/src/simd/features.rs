//! Run-time CPU-feature detection, once per process, one function per
//! instruction-set level the kernels are compiled for.
//!
//! A kernel with an AVX2 or AVX-512 copy (a `#[target_feature]` function
//! around the same portable loop) calls the copy only where the matching
//! function here returns `true`; every such copy gives the same bits as the
//! portable loop, so the choice changes speed only. Off x86-64 every level
//! is absent.
//!
//! **The switch:** the environment variable `FM_SIMD` caps what is used —
//! `portable` (no vectorised copy), `avx2` (AVX2 and FMA, no AVX-512) or
//! `native` (everything detected, the default) — read once, with the
//! detection. `cargo xtask bench --simd avx2` measures an AVX-512 machine as
//! an AVX2 one this way. It reaches fm's own kernels only: the `gemm` crate
//! behind candle's matrix products dispatches on its own (see
//! [`level_name`]).

/// The environment variable that caps the instruction sets fm's kernels use.
pub const SIMD_ENV: &str = "FM_SIMD";

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

fn detect() -> Features {
    cap(cpu(), std::env::var(SIMD_ENV).ok().as_deref())
}

#[cfg(target_arch = "x86_64")]
fn cpu() -> Features {
    Features {
        avx2: std::is_x86_feature_detected!("avx2"),
        fma: std::is_x86_feature_detected!("fma"),
        avx512f: std::is_x86_feature_detected!("avx512f"),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu() -> Features {
    Features { avx2: false, fma: false, avx512f: false }
}

/// `detected` capped by the switch's value (`None` or an unknown value: no cap).
fn cap(detected: Features, switch: Option<&str>) -> Features {
    match switch.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        Some("portable" | "scalar" | "none") => Features { avx2: false, fma: false, avx512f: false },
        Some("avx2") => Features { avx512f: false, ..detected },
        _ => detected,
    }
}

/// The level fm's kernels use, for reports: `avx512f+fma`, `avx2+fma`,
/// `avx2` or `portable`, with ` (FM_SIMD=…)` when the switch capped it.
pub fn level_name() -> String {
    let f = features();
    let level = match (f.avx512f, f.avx2, f.fma) {
        (true, _, true) => "avx512f+fma",
        (true, _, false) => "avx512f",
        (false, true, true) => "avx2+fma",
        (false, true, false) => "avx2",
        _ => "portable",
    };
    match std::env::var(SIMD_ENV) {
        Ok(v) if !v.trim().is_empty() && !v.trim().eq_ignore_ascii_case("native") => {
            format!("{level} ({SIMD_ENV}={v})")
        }
        _ => level.to_string(),
    }
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

    /// The switch caps what was detected and never adds what was not.
    #[test]
    fn the_switch_caps_the_detected_levels() {
        let all = Features { avx2: true, fma: true, avx512f: true };
        let none = Features { avx2: false, fma: false, avx512f: false };
        let key = |f: Features| (f.avx2, f.fma, f.avx512f);
        assert_eq!(key(cap(all, Some("portable"))), key(none));
        assert_eq!(key(cap(all, Some(" AVX2 "))), (true, true, false));
        assert_eq!(key(cap(all, Some("native"))), key(all));
        assert_eq!(key(cap(all, None)), key(all));
        assert_eq!(key(cap(none, Some("avx2"))), key(none));
    }

    /// The cached answers are std's, capped by the switch if this run sets it.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn agree_with_std_detection() {
        let std_detected = Features {
            avx2: std::is_x86_feature_detected!("avx2"),
            fma: std::is_x86_feature_detected!("fma"),
            avx512f: std::is_x86_feature_detected!("avx512f"),
        };
        let want = cap(std_detected, std::env::var(SIMD_ENV).ok().as_deref());
        assert_eq!(has_avx2(), want.avx2);
        assert_eq!(has_avx2_fma(), want.avx2 && want.fma);
        assert_eq!(has_avx512f(), want.avx512f);
        assert_eq!(has_avx512f_fma(), want.avx512f && want.fma);
    }
}

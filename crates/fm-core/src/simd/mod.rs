//! What fm's vectorised CPU kernels share: which instruction sets this CPU
//! has ([`features`], detected once) and a vectorisable exponential
//! ([`exp`]).
//!
//! Every kernel that picks an AVX2 or AVX-512 copy of its loop at run time
//! asks [`features`] (fm-core's Sinkhorn solver, coupling costs, closed-form
//! velocity and assignment kernels, and fm-models' custom ops), so a switch
//! that forces one path for all of them is one edit there.
//!
//! ```
//! use fm_core::simd::{exp_f32, has_avx2, has_avx2_fma};
//!
//! assert_eq!(exp_f32(0.0), 1.0);
//! // AVX2 + FMA implies AVX2.
//! assert!(!has_avx2_fma() || has_avx2());
//! ```

pub mod exp;
pub mod features;

pub use exp::{exp_f32, exp_f64};
pub use features::{has_avx2, has_avx2_fma, has_avx512f, has_avx512f_fma, level_name, SIMD_ENV};

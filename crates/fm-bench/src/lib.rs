//! Benchmark workloads of fm, shared by the criterion benches
//! (`cargo bench -p fm-bench`) and the `fm-bench` binary that `cargo xtask
//! bench` runs beside the same workloads in PyTorch (`xtask/python/peer.py`).
//!
//! Every workload is built once (weights, data) and then run repeatedly:
//!
//! ```
//! use fm_bench::{build, Scale};
//! # fn main() -> fm_bench::Result<()> {
//! let mut w = build("ot_coupling", Scale { quick: true })?;
//! assert!(w.run()?.nfe.is_none());
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod closed_form;
pub mod coupling;
pub mod discrete;
mod error;
pub mod fixtures;
mod flags;
pub mod gemm;
pub mod likelihood;
pub mod memory;
pub mod riemannian;
pub mod sample;
pub mod train;
mod workload;

pub use error::{Error, Result};
pub use workload::{build, RunInfo, Scale, Workload, NAMES};

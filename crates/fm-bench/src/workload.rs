//! The workload interface and the registry of named workloads.

use crate::{closed_form, coupling, gemm, likelihood, sample, train, Error, Result};

/// What one run of a workload reports besides its time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunInfo {
    /// Function evaluations of an ODE solve, if any.
    pub nfe: Option<usize>,
    /// Floating-point operations of the run, where a FLOP count is meaningful.
    pub flops: Option<f64>,
}

/// A benchmark workload: built once (weights, data), then run repeatedly.
pub trait Workload {
    /// One run (a training step, a full sampling solve, …).
    fn run(&mut self) -> Result<RunInfo>;
}

/// Sizes: the full ones of the issue, or `quick` (a smoke run, ~100× less work).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    /// Whether to shrink every workload for a smoke run.
    pub quick: bool,
}

impl Scale {
    /// `full` normally, `quick` in a smoke run.
    pub fn pick(&self, full: usize, quick: usize) -> usize {
        if self.quick {
            quick
        } else {
            full
        }
    }
}

/// The workload names, in the order of the report.
pub const NAMES: &[&str] = &[
    "train_b256",
    "train_b4096",
    "unet_train_mnist",
    "realnvp_train_mnist",
    "train_ot_b256",
    "train_meanflow_b256",
    "sample_euler100",
    "sample_dopri5",
    "unet_sample_mnist",
    "likelihood_exact",
    "likelihood_hutchinson",
    "closed_form",
    "ot_coupling",
    "gemm",
];

/// Builds the named workload.
///
/// # Errors
/// [`Error::UnknownWorkload`] for a name not in [`NAMES`]; tensor errors while building.
pub fn build(name: &str, scale: Scale) -> Result<Box<dyn Workload>> {
    Ok(match name {
        "train_b256" => Box::new(train::Training::cfm(256)?),
        "train_b4096" => Box::new(train::Training::cfm(scale.pick(4096, 512))?),
        "unet_train_mnist" => Box::new(train::Training::unet(scale.pick(128, 8))?),
        "realnvp_train_mnist" => Box::new(train::Training::realnvp(scale.pick(256, 16))?),
        "train_ot_b256" => Box::new(train::Training::ot_cfm(256)?),
        "train_meanflow_b256" => Box::new(train::Training::mean_flow(256)?),
        "sample_euler100" => Box::new(sample::Sampling::euler(scale.pick(10_000, 500), 100)?),
        "sample_dopri5" => Box::new(sample::Sampling::dopri5(scale.pick(10_000, 500), 1e-5)?),
        "unet_sample_mnist" => Box::new(sample::Sampling::unet_euler(scale.pick(64, 4), scale.pick(20, 2))?),
        "likelihood_exact" => Box::new(likelihood::Likelihood::exact(scale.pick(1000, 100))?),
        "likelihood_hutchinson" => Box::new(likelihood::Likelihood::hutchinson(scale.pick(1000, 100))?),
        "closed_form" => Box::new(closed_form::ClosedForm::new(scale.pick(10_000, 1000), 784, 256)?),
        "ot_coupling" => Box::new(coupling::OtCoupling::new(256, 2)?),
        "gemm" => Box::new(gemm::Gemm::new(scale.pick(1024, 256))?),
        _ => return Err(Error::UnknownWorkload { name: name.into(), known: NAMES.join(", ") }),
    })
}

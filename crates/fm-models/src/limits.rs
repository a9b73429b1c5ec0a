//! Upper bounds on the models a configuration may describe.
//!
//! A configuration can come from a file anyone wrote (a checkpoint downloaded
//! from the Hub, a `config.json`): its sizes are checked against these bounds
//! in each configuration's `validate()`, with checked arithmetic, so that a
//! crafted value fails with [`crate::Error::Config`] naming the field instead
//! of overflowing, building a parameter list without end, or asking the
//! allocator for more memory than any machine has. The bounds sit far above
//! every model fm trains (torchcfm's CIFAR-10 U-Net: 35.7 M parameters in 304
//! tensors, the largest of 1.2 M elements) and below the sizes where
//! arithmetic on shapes or 32-bit indexing in kernels breaks.

use crate::{Error, Result};

/// The most elements of one tensor a model may have: a parameter, or one
/// sample's activation (2³¹ = 2,147,483,648; 8 GiB in `f32`). Kernels that
/// index with 32-bit integers stop there too.
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 31;

/// The most trainable parameters of a model (2³² ≈ 4.3 G; 16 GiB in `f32`,
/// 64 GiB with Adam's moments and the gradients: more than one GPU holds).
pub const MAX_PARAMETERS: u64 = 1 << 32;

/// The most layers of a model: planar or coupling layers of a flow, hidden
/// layers of an MLP or conditioner, blocks of a U-Net (every convolution,
/// residual, attention, down- and upsampling layer). Deep flows in the
/// literature have tens to hundreds.
pub const MAX_LAYERS: usize = 4096;

/// The most parameter tensors of a model (2¹⁶ = 65,536): bounds the
/// parameter list built from a configuration and every comparison with the
/// tensors of a file.
pub const MAX_PARAMETER_TENSORS: usize = 1 << 16;

/// `a · b` in `u64`, `None` on overflow.
pub(crate) fn mul(a: usize, b: usize) -> Option<u64> {
    (a as u64).checked_mul(b as u64)
}

/// The number of elements of `shape`, `None` on overflow.
pub(crate) fn elements(shape: &[usize]) -> Option<u64> {
    shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
}

/// An error for `field`.
pub(crate) fn too_large(field: &'static str, reason: String) -> Error {
    Error::Config { field, reason }
}

/// Checks that a size at most [`MAX_TENSOR_ELEMENTS`] (`None`: it overflowed).
pub(crate) fn check_elements(field: &'static str, what: &str, n: Option<u64>) -> Result<()> {
    match n {
        Some(n) if n <= MAX_TENSOR_ELEMENTS => Ok(()),
        Some(n) => Err(too_large(
            field,
            format!("{what} would have {n} elements, above the limit of {MAX_TENSOR_ELEMENTS} (2^31)"),
        )),
        None => Err(too_large(field, format!("{what} would have more than 2^64 elements"))),
    }
}

/// Checks a count of layers against [`MAX_LAYERS`].
pub(crate) fn check_layers(field: &'static str, what: &str, n: Option<u64>) -> Result<()> {
    match n {
        Some(n) if n <= MAX_LAYERS as u64 => Ok(()),
        Some(n) => Err(too_large(field, format!("{what}: {n}, above the limit of {MAX_LAYERS}"))),
        None => Err(too_large(field, format!("{what}: more than 2^64, above the limit of {MAX_LAYERS}"))),
    }
}

/// Checks a count of parameter tensors against [`MAX_PARAMETER_TENSORS`].
pub(crate) fn check_tensor_count(field: &'static str, n: Option<u64>) -> Result<()> {
    match n {
        Some(n) if n <= MAX_PARAMETER_TENSORS as u64 => Ok(()),
        Some(n) => Err(too_large(
            field,
            format!("the model would have {n} parameter tensors, above the limit of {MAX_PARAMETER_TENSORS}"),
        )),
        None => Err(too_large(field, "the model would have more than 2^64 parameter tensors".into())),
    }
}

/// Checks every tensor of a parameter list against [`MAX_TENSOR_ELEMENTS`] and
/// their sum against [`MAX_PARAMETERS`]; `blame` names the field responsible
/// for a parameter (by its name), `total` the field blamed for the sum.
pub(crate) fn check_parameter_sizes<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a [usize])>,
    blame: impl Fn(&str) -> &'static str,
    total: &'static str,
) -> Result<()> {
    let mut sum = 0u64;
    for (name, shape) in params {
        let n = elements(shape);
        check_elements(blame(name), &format!("parameter `{name}` of shape {shape:?}"), n)?;
        sum = sum.saturating_add(n.unwrap_or(u64::MAX));
    }
    if sum > MAX_PARAMETERS {
        return Err(too_large(
            total,
            format!("the model would have {sum} parameters, above the limit of {MAX_PARAMETERS} (2^32)"),
        ));
    }
    Ok(())
}

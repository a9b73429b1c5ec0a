//! Helpers of the custom ops' unit tests.

use candle::{DType, Device, Tensor, Var};

/// All values of `t` as f64, flattened.
pub(crate) fn flat(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1()).expect("values")
}

/// `a ≈ b` elementwise to `tol · (1 + |b|)`.
pub(crate) fn close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (u, v)) in a.iter().zip(b).enumerate() {
        assert!((u - v).abs() <= tol * (1.0 + v.abs()), "{what}[{i}]: {u} vs {v}");
    }
}

/// A variable of `shape` with deterministic values `sin(0.73 (j + seed))`.
pub(crate) fn var(shape: &[usize], seed: f64, dtype: DType) -> Var {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|j| ((j as f64 + seed) * 0.73).sin()).collect();
    Var::from_tensor(
        &Tensor::from_vec(v, shape, &Device::Cpu).and_then(|t| t.to_dtype(dtype)).expect("tensor"),
    )
    .expect("var")
}

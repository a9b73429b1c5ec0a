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

/// `ours ≈ theirs` (values, to `tol`), and so are the gradients of
/// `Σ probe ⊙ ours` and `Σ probe ⊙ theirs` with respect to every parameter
/// in `params` (which have their parameters' shapes).
pub(crate) fn check_against(
    ours: &Tensor,
    theirs: &Tensor,
    probe: &Var,
    params: &[(&str, &Var)],
    tol: f64,
    what: &str,
) -> candle::Result<()> {
    close(&flat(ours), &flat(theirs), tol, what);
    let g_ours = (ours * probe.as_tensor())?.sum_all()?.backward()?;
    let g_theirs = (theirs * probe.as_tensor())?.sum_all()?.backward()?;
    for (name, p) in params {
        let (a, c) = (g_ours.get(p).expect("gradient"), g_theirs.get(p).expect("gradient"));
        assert_eq!(a.dims(), p.dims(), "{what} d{name}");
        close(&flat(a), &flat(c), tol, &format!("{what} d{name}"));
    }
    Ok(())
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

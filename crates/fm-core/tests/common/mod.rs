//! Fields shared by the likelihood test files.
#![allow(dead_code)]

use candle::{DType, Device, Tensor};
use candle_nn::{Linear, Module, VarBuilder, VarMap};
use fm_core::{to_f64_vec, Result, SeededRng, VelocityField};

/// The reference Gaussian of docs/reference/gaussian-oracle.md.
pub const MU: [f64; 2] = [1.0, -1.0];
pub const SIGMA: [f64; 4] = [3.694337, 0.988124, 0.988124, 0.805663];

/// The exact CondOT velocity for data N(μ, Σ) in d = 2, written with candle
/// ops so that autograd sees it:
/// `u*(x, t) = μ + (tΣ − (1 − t)I)((1 − t)²I + t²Σ)⁻¹(x − tμ)`, per row.
pub struct GaussField;

impl GaussField {
    /// The 2×2 matrix `A(t)` of the velocity, row-major.
    pub fn matrix(t: f64) -> [f64; 4] {
        let s = SIGMA;
        let m = [t * s[0] - (1.0 - t), t * s[1], t * s[2], t * s[3] - (1.0 - t)];
        let q = (1.0 - t) * (1.0 - t);
        let n = [q + t * t * s[0], t * t * s[1], t * t * s[2], q + t * t * s[3]];
        let det = n[0] * n[3] - n[1] * n[2];
        let inv = [n[3] / det, -n[1] / det, -n[2] / det, n[0] / det];
        [
            m[0] * inv[0] + m[1] * inv[2],
            m[0] * inv[1] + m[1] * inv[3],
            m[2] * inv[0] + m[3] * inv[2],
            m[2] * inv[1] + m[3] * inv[3],
        ]
    }
}

impl VelocityField for GaussField {
    fn velocity(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let ts = to_f64_vec(t)?;
        let b = ts.len();
        // A(t)ᵀ per row: (b, 2, 2), so that x_row · Aᵀ = (A x)ᵀ.
        let at: Vec<f64> = ts
            .iter()
            .flat_map(|&t| {
                let a = Self::matrix(t);
                [a[0], a[2], a[1], a[3]]
            })
            .collect();
        let at = Tensor::from_vec(at, (b, 2, 2), x.device())?.to_dtype(x.dtype())?;
        let mu = Tensor::new(&MU, x.device())?.to_dtype(x.dtype())?.unsqueeze(0)?;
        let tmu = t.unsqueeze(1)?.broadcast_mul(&mu)?;
        let centered = (x - tmu)?;
        let ax = centered.unsqueeze(1)?.matmul(&at)?.squeeze(1)?;
        Ok(ax.broadcast_add(&mu)?)
    }
}

/// A tanh MLP `[x, t] → h → h → d` on `candle_nn::Linear` layers.
pub struct Mlp {
    layers: Vec<Linear>,
}

impl VelocityField for Mlp {
    fn velocity(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let mut h = Tensor::cat(&[x, &t.unsqueeze(1)?.to_dtype(x.dtype())?], 1)?;
        let n = self.layers.len();
        for (i, l) in self.layers.iter().enumerate() {
            h = l.forward(&h)?;
            if i + 1 < n {
                h = h.tanh()?;
            }
        }
        Ok(h)
    }
}

/// An f64 MLP whose weights are `Var`s of a `VarMap`, set deterministically
/// from `seed` (candle's own initialisation cannot be seeded). Weights are
/// N(0, scale²/fan_in).
pub fn mlp(d: usize, hidden: usize, scale: f64, seed: u64) -> Result<(Mlp, VarMap)> {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
    let dims = [d + 1, hidden, hidden, d];
    let mut layers = Vec::new();
    for i in 0..3 {
        layers.push(candle_nn::linear(dims[i], dims[i + 1], vb.pp(format!("l{i}")))?);
    }
    let mut rng = SeededRng::new(seed);
    let mut named: Vec<(String, candle::Var)> =
        vm.data().lock().expect("varmap lock").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, var) in &named {
        let shape = var.as_tensor().shape().clone();
        let fan_in = if name.ends_with("weight") { shape.dims()[1] } else { 1 };
        let v = rng.normal(shape, DType::F64, &Device::Cpu)?.affine(scale / (fan_in as f64).sqrt(), 0.0)?;
        var.set(&v)?;
    }
    Ok((Mlp { layers }, vm))
}

/// The named variables of a `VarMap`, sorted by name.
pub fn sorted_vars(vm: &VarMap) -> Vec<(String, candle::Var)> {
    let mut named: Vec<(String, candle::Var)> =
        vm.data().lock().expect("varmap lock").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

//! GroupNorm, optionally followed by SiLU, as one candle custom op with a
//! hand-written backward pass.
//!
//! candle_nn's `GroupNorm` is about ten tensor ops (sums, broadcasts, a square
//! root, a division, the affine map), each a pass over the activations with its
//! own temporary, and its backward twice as many; SiLU adds five more in the
//! backward. Here the forward is two passes per group (statistics, then the
//! normalised, scaled, shifted and activated output) and the backward three
//! (recomputing the statistics, the sums, the input gradient), with the
//! parameter gradients gathered on the way.
//!
//! With `x̂ = (x − μ) / √(σ² + ε)` per (sample, group), `z = γ x̂ + β` and
//! `y = z` or `silu(z)`, the backward is, over the `M` values of a group,
//! `ż = ẏ · silu'(z)` (or `ẏ`), `β̇ = Σ ż`, `γ̇ = Σ ż x̂`, and
//! `ẋ = (γ ż − mean(γ ż) − x̂ · mean(γ ż x̂)) / √(σ² + ε)`.

use candle::{Module, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{apply3, eval3, fusable, Kernel, Real};
use super::dense::add_rows;
use super::pool::par_samples;

/// GroupNorm of `x` over `groups` groups of its channels, with `γ` and `β`
/// (`(C,)`), then SiLU if `silu`: one custom op on the CPU (f32, f64),
/// candle_nn's GroupNorm (and candle's SiLU) elsewhere.
///
/// # Shapes
/// - `x`: `(b, C, …)`, `gamma`, `beta`: `(C,)` → `(b, C, …)`
pub(crate) fn group_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> candle::Result<Tensor> {
    let op = GroupNormOp { groups, eps, silu };
    if fusable(&[x, gamma, beta]) {
        apply3(op, x, gamma, beta)
    } else {
        op.by_ops(x, gamma, beta)
    }
}

/// `(x, γ, β) ↦ y` (see the module documentation).
#[derive(Debug, Clone, Copy)]
struct GroupNormOp {
    groups: usize,
    eps: f64,
    silu: bool,
}

/// `(ẏ, x, [γ; β]) ↦ [ẋ; γ̇; β̇]`, flattened into one vector.
#[derive(Debug, Clone, Copy)]
struct GroupNormBackward(GroupNormOp);

/// `(b, C, …)` as (samples, channels, values per channel).
fn geometry(s: &Shape, groups: usize, op: &str) -> candle::Result<(usize, usize, usize)> {
    let dims = s.dims();
    let (b, c) = (dims[0], dims[1]);
    let hw: usize = dims[2..].iter().product();
    if groups == 0 || !c.is_multiple_of(groups) {
        candle::bail!("{op}: {groups} groups do not divide {c} channels");
    }
    Ok((b, c, hw))
}

/// Mean and `1 / √(σ² + ε)` of one group's values (two passes, f64 sums).
fn stats<T: Real>(x: &[T], eps: f64) -> (T, T) {
    let n = x.len() as f64;
    let mean = x.iter().map(|v| v.to_f64()).sum::<f64>() / n;
    let var = x.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>() / n;
    (T::from_f64(mean), T::from_f64(1.0 / (var + eps).sqrt()))
}

fn sigmoid<T: Real>(z: T) -> T {
    T::ONE / ((-z).exp() + T::ONE)
}

impl GroupNormOp {
    /// The op from candle's tensor ops (candle_nn's GroupNorm, candle's
    /// SiLU): the reference, and the path off the CPU.
    fn by_ops(&self, x: &Tensor, gamma: &Tensor, beta: &Tensor) -> candle::Result<Tensor> {
        let c = gamma.elem_count();
        let y =
            candle_nn::GroupNorm::new(gamma.clone(), beta.clone(), c, self.groups, self.eps)?.forward(x)?;
        if self.silu {
            y.silu()
        } else {
            Ok(y)
        }
    }

    /// One sample `(C, hw)` → its output.
    fn forward<T: Real>(&self, x: &[T], gamma: &[T], beta: &[T], hw: usize, y: &mut [T]) {
        let cg = gamma.len() / self.groups;
        for (xg, (yg, g)) in x.chunks(cg * hw).zip(y.chunks_mut(cg * hw).zip(0..)) {
            let (mean, rstd) = stats(xg, self.eps);
            for (j, (xc, yc)) in xg.chunks(hw).zip(yg.chunks_mut(hw)).enumerate() {
                let c = g * cg + j;
                let (a, b) = (gamma[c] * rstd, beta[c] - gamma[c] * rstd * mean);
                for (&v, out) in xc.iter().zip(yc.iter_mut()) {
                    let z = v * a + b;
                    *out = if self.silu { z * sigmoid(z) } else { z };
                }
            }
        }
    }

    /// One sample: `ẋ` into `dx`, and adds its `γ̇`, `β̇` into `dgamma`, `dbeta`.
    #[allow(clippy::too_many_arguments)]
    fn backward<T: Real>(
        &self,
        dy: &[T],
        x: &[T],
        gamma: &[T],
        beta: &[T],
        hw: usize,
        dx: &mut [T],
        dgamma: &mut [T],
        dbeta: &mut [T],
    ) {
        let cg = gamma.len() / self.groups;
        let m = T::from_f64((cg * hw) as f64);
        for g in 0..self.groups {
            let range = g * cg * hw..(g + 1) * cg * hw;
            let (xg, dyg) = (&x[range.clone()], &dy[range.clone()]);
            let dxg = &mut dx[range];
            let (mean, rstd) = stats(xg, self.eps);
            // Pass 1: γ ż into dx, with the sums Σ γ ż and Σ γ ż x̂.
            let (mut s1, mut s2) = (0.0f64, 0.0f64);
            for j in 0..cg {
                let c = g * cg + j;
                let (mut db, mut dg) = (T::ZERO, T::ZERO);
                let cols = j * hw..(j + 1) * hw;
                for ((&v, &d), out) in xg[cols.clone()].iter().zip(&dyg[cols.clone()]).zip(&mut dxg[cols]) {
                    let xhat = (v - mean) * rstd;
                    let dz = if self.silu {
                        let z = gamma[c] * xhat + beta[c];
                        let s = sigmoid(z);
                        d * (s * (T::ONE + z * (T::ONE - s)))
                    } else {
                        d
                    };
                    db += dz;
                    dg += dz * xhat;
                    *out = gamma[c] * dz;
                }
                dbeta[c] += db;
                dgamma[c] += dg;
                s1 += (gamma[c] * db).to_f64();
                s2 += (gamma[c] * dg).to_f64();
            }
            let (mean1, mean2) = (T::from_f64(s1) / m, T::from_f64(s2) / m);
            // Pass 2: ẋ = (γ ż − mean(γ ż) − x̂ mean(γ ż x̂)) / √(σ² + ε).
            for (&v, out) in xg.iter().zip(dxg.iter_mut()) {
                let xhat = (v - mean) * rstd;
                *out = (*out - mean1 - xhat * mean2) * rstd;
            }
        }
    }
}

impl Kernel<3> for GroupNormOp {
    /// Samples and values per channel.
    type Dims = (usize, usize);

    fn name(&self) -> &'static str {
        if self.silu {
            "fm-group-norm-silu"
        } else {
            "fm-group-norm"
        }
    }

    fn check(&self, [x, gamma, beta]: [&Shape; 3]) -> candle::Result<(Self::Dims, Shape)> {
        let name = self.name();
        let (b, c, hw) = geometry(x, self.groups, name)?;
        if gamma.elem_count() != c || beta.elem_count() != c {
            candle::bail!("{name}: γ and β need {c} values");
        }
        Ok(((b, hw), x.clone()))
    }

    fn run<T: Real>(&self, [x, gamma, beta]: [&[T]; 3], (b, hw): Self::Dims) -> Vec<T> {
        let per = gamma.len() * hw;
        par_samples(x, (b, per, per), |xs, ys| self.forward(xs, gamma, beta, hw, ys))
    }

    fn backward(
        &self,
        [x, gamma, beta]: [&Tensor; 3],
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle::Result<[Tensor; 3]> {
        let c = gamma.elem_count();
        let n = x.elem_count();
        let gb = Tensor::cat(&[gamma.flatten_all()?, beta.flatten_all()?], 0)?;
        let packed = eval3(GroupNormBackward(*self), grad, x, &gb)?;
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dgamma = packed.narrow(0, n, c)?.reshape(gamma.shape())?;
        let dbeta = packed.narrow(0, n + c, c)?.reshape(beta.shape())?;
        Ok([dx, dgamma, dbeta])
    }
}

impl Kernel<3> for GroupNormBackward {
    /// Values per channel.
    type Dims = usize;

    fn name(&self) -> &'static str {
        "fm-group-norm-backward"
    }

    fn check(&self, [dy, x, gb]: [&Shape; 3]) -> candle::Result<(usize, Shape)> {
        let name = self.name();
        let (_, c, hw) = geometry(x, self.0.groups, name)?;
        if dy.dims() != x.dims() || gb.elem_count() != 2 * c {
            candle::bail!("{name}: mismatched operands {:?}, {:?}, {:?}", dy.dims(), x.dims(), gb.dims());
        }
        Ok((hw, Shape::from(x.elem_count() + 2 * c)))
    }

    fn run<T: Real>(&self, [dy, x, gb]: [&[T]; 3], hw: usize) -> Vec<T> {
        let op = &self.0;
        let c = gb.len() / 2;
        let (gamma, beta) = gb.split_at(c);
        let per = c * hw;
        let mut out = vec![T::ZERO; x.len() + 2 * c];
        let (dx, dparams) = out.split_at_mut(x.len());
        let partials: Vec<Vec<T>> = dx
            .par_chunks_mut(per)
            .zip(x.par_chunks(per).zip(dy.par_chunks(per)))
            .map(|(dxs, (xs, dys))| {
                let mut p = vec![T::ZERO; 2 * c];
                let (dg, db) = p.split_at_mut(c);
                op.backward(dys, xs, gamma, beta, hw, dxs, dg, db);
                p
            })
            .collect();
        for p in partials {
            add_rows(dparams, &p);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{close, flat};
    use crate::Result;
    use candle::{DType, Device, Var};
    use candle_nn::{VarBuilder, VarMap};

    /// Values and all three gradients agree with candle_nn's GroupNorm (and
    /// candle's SiLU) composed from tensor ops, in f32 and f64, with and without SiLU.
    #[test]
    fn matches_the_composed_ops_and_their_gradients() -> Result<()> {
        for dtype in [DType::F32, DType::F64] {
            for silu in [false, true] {
                let dev = Device::Cpu;
                let varmap = VarMap::new();
                let vb = VarBuilder::from_varmap(&varmap, dtype, &dev);
                let (gamma, beta) = (vb.get(6, "weight")?, vb.get(6, "bias")?);
                for var in varmap.all_vars() {
                    let n = var.elem_count();
                    let v: Vec<f64> = (0..n).map(|i| 0.5 + 0.3 * (i as f64 * 1.3).sin()).collect();
                    var.set(&Tensor::from_vec(v, var.shape(), &dev)?.to_dtype(dtype)?)?;
                }
                let n = 2 * 6 * 5 * 3;
                let raw: Vec<f64> =
                    (0..n).map(|i| (i as f64 * 0.71).sin() * 2.0 + 0.1 * (i % 7) as f64).collect();
                let x = Var::from_tensor(&Tensor::from_vec(raw, (2, 6, 5, 3), &dev)?.to_dtype(dtype)?)?;
                let w: Vec<f64> = (0..n).map(|i| (i as f64 * 0.23).cos()).collect();
                let w = Tensor::from_vec(w, (2, 6, 5, 3), &dev)?.to_dtype(dtype)?;
                let ours = group_norm(&x, &gamma, &beta, 3, 1e-5, silu)?;
                let theirs = GroupNormOp { groups: 3, eps: 1e-5, silu }.by_ops(&x, &gamma, &beta)?;
                let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
                close(&flat(&ours), &flat(&theirs), tol, "forward");
                let g_ours = (ours * &w)?.sum_all()?.backward()?;
                let g_theirs = (theirs * &w)?.sum_all()?.backward()?;
                for (name, t) in [("x", x.as_tensor()), ("γ", &gamma), ("β", &beta)] {
                    let a = flat(g_ours.get(t).expect("gradient"));
                    let b = flat(g_theirs.get(t).expect("gradient"));
                    close(&a, &b, tol * 10.0, &format!("d{name} silu={silu} {dtype:?}"));
                }
            }
        }
        Ok(())
    }
}

//! The training step of a [`DiscreteMlp`] with an explicit backward pass.
//!
//! The first layer sees one-hot tokens, so its product with the input is a
//! sum of `L + 2` columns of its weight (the tokens', the time's and the
//! class's) and its weight gradient a scatter of the same columns: no dense
//! `(b, L·S)` one-hot matrix, no GEMM over it. The rest runs as the velocity
//! MLP's blocked pass (`backward_blocked`): blocks of rows go forward and
//! straight back while in cache, in fixed partitions on candle's worker
//! threads (the result does not depend on the thread count); the output's
//! gradient is the softmax's closed form
//! (`p − δ_{x₁}` for cross-entropy, and for the generalized KL
//! `−w·[p(x_t)(δ_{x_t} − p) + (1 − δ)(δ_{x₁} − p)]`). Same losses as
//! [`fm_core::discrete::cross_entropy`] and
//! [`fm_core::discrete::generalized_kl_loss`]; gradients equal autograd's to
//! f32 rounding (tested).

use candle::{DType, Tensor};

use super::backward::{apply_gradients, MlpGradients};
use super::backward_blocked::{
    activate, dense_backward, dense_forward, derivative, partition_ranges, Layer, TRAIN_BLOCK_ROWS,
};
use super::discrete::DiscreteMlp;
use crate::ops::cpu::cpu_values;
use crate::ops::dense::add_rows;
use crate::ops::pool::par_items;
use crate::optim::GradientStep;
use crate::{Activation, Error, Result};

/// One batch of discrete flow matching: `b` sequences of `L` tokens.
#[derive(Debug, Clone, Copy)]
pub struct DiscreteBatch<'a> {
    /// `x_t`, `b · L` ids `< S` (the mask is `V`).
    pub xt: &'a [u32],
    /// `x₁`, `b · L` ids `< V`.
    pub x1: &'a [u32],
    /// The time of each sequence.
    pub t: &'a [f64],
    /// Class labels of a class-conditional model (`K`: no class); `None`: no class.
    pub labels: Option<&'a [u32]>,
    /// The generalized KL's weight of each sequence
    /// ([`fm_core::discrete::MixturePath::kl_weight`]); `None`: cross-entropy.
    pub kl_weights: Option<&'a [f64]>,
}

impl DiscreteMlp {
    /// Whether [`DiscreteMlp::loss_gradients`] applies: f32 weights on the
    /// CPU and a SiLU, ELU, ReLU or tanh activation.
    pub fn has_explicit_step(&self) -> bool {
        let f32_cpu = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
        matches!(
            self.config().activation,
            Activation::Silu | Activation::Elu | Activation::Relu | Activation::Tanh
        ) && self.layers().iter().all(|l| f32_cpu(l.weight()) && l.bias().is_some_and(f32_cpu))
    }

    /// The mean loss over tokens of `batch` and the gradient of every
    /// parameter, without an autograd graph (see the module docs); an error
    /// where [`DiscreteMlp::has_explicit_step`] is false.
    pub fn loss_gradients(&self, batch: &DiscreteBatch) -> Result<MlpGradients> {
        let c = self.config();
        let layers = self.layers();
        let b = batch.t.len();
        let (l, s, v) = (c.seq_len, c.states, c.vocab);
        let shape_error = |what: String| Err(Error::Shape(what));
        if !self.has_explicit_step() {
            return shape_error(format!(
                "the explicit discrete step needs f32 weights on the CPU and silu, elu, relu or tanh, got {}",
                c.activation
            ));
        }
        if b == 0 || batch.xt.len() != b * l || batch.x1.len() != b * l {
            return shape_error(format!(
                "{} and {} tokens for {b} sequences of {l}",
                batch.xt.len(),
                batch.x1.len()
            ));
        }
        if batch.kl_weights.is_some_and(|w| w.len() != b) || batch.labels.is_some_and(|y| y.len() != b) {
            return shape_error(format!("weights or labels do not match {b} sequences"));
        }
        if let Some(bad) = batch.xt.iter().find(|&&x| x as usize >= s) {
            return shape_error(format!("token {bad} outside the model's {s} states"));
        }
        if let Some(bad) = batch.x1.iter().find(|&&x| x as usize >= v) {
            return shape_error(format!("data token {bad} outside the vocabulary of {v}"));
        }
        // The first layer's columns of every row: its tokens', then its class's.
        let mut cols = Vec::with_capacity(b * (l + 1));
        for r in 0..b {
            cols.extend((0..l).map(|i| (i * s + batch.xt[r * l + i] as usize) as u32));
            match (c.num_classes, batch.labels) {
                (None, None) => {}
                (None, Some(_)) => return shape_error("labels for a model without classes".into()),
                (Some(k), y) => {
                    let y = y.map_or(k, |y| y[r] as usize);
                    if y > k {
                        return shape_error(format!("label {y} outside the model's {k} classes"));
                    }
                    cols.push((l * s + 1 + y) as u32);
                }
            }
        }
        let per_row = cols.len() / b;
        let weights: Vec<(Tensor, Tensor)> = layers
            .iter()
            .map(|layer| -> Result<_> {
                let bias = layer.bias().map_or_else(|| layer.weight().zeros_like(), |b| Ok(b.detach()))?;
                Ok((layer.weight().detach().contiguous()?, bias.contiguous()?))
            })
            .collect::<Result<_>>()?;
        let (h1, width) = weights[0].0.dims2()?;
        // W₁ᵀ, one row per input column.
        let w1t: Vec<f32> = weights[0].0.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let b1: Vec<f32> = weights[0].1.to_vec1::<f32>()?;
        let guards: Vec<_> =
            weights[1..].iter().map(|(w, b)| (w.storage_and_layout(), b.storage_and_layout())).collect();
        let mut net = Vec::with_capacity(layers.len() - 1);
        for ((w, _), ((ws, wl), (bs, bl))) in weights[1..].iter().zip(&guards) {
            let (out, inp) = w.dims2()?;
            let (Some(w), Some(b)) = (cpu_values(ws, wl), cpu_values(bs, bl)) else {
                return shape_error("the explicit discrete step needs contiguous CPU weights".into());
            };
            net.push(Layer { w, b, out, inp });
        }
        let first = First { w1t: &w1t, b1: &b1, h1, time_col: l * s, cols: &cols, per_row };
        let head = Head { seq_len: l, vocab: v, scale: 1.0 / (b * l) as f32 };
        let ranges = partition_ranges(b);
        let slots: Vec<std::sync::Mutex<Option<Partial>>> =
            ranges.iter().map(|_| Default::default()).collect();
        par_items(ranges.len(), |items| {
            for p in items {
                let partial = partition(&first, &net, c.activation, &head, batch, ranges[p]);
                if let Ok(mut slot) = slots[p].lock() {
                    *slot = Some(partial);
                }
            }
        });
        // Sum the partitions in order.
        let mut total: Option<Partial> = None;
        for slot in slots {
            let p =
                slot.into_inner().ok().flatten().ok_or_else(|| Error::Shape("a partition failed".into()))?;
            match &mut total {
                None => total = Some(p),
                Some(t) => {
                    t.loss += p.loss;
                    for (a, b) in t.dw.iter_mut().zip(&p.dw).chain(t.db.iter_mut().zip(&p.db)) {
                        add_rows(a, b);
                    }
                }
            }
        }
        let total = total.ok_or_else(|| Error::Shape("no partition".into()))?;
        let dev = layers[0].weight().device().clone();
        let mut grads = Vec::with_capacity(2 * layers.len());
        let mut dws = total.dw.into_iter();
        let mut dbs = total.db.into_iter();
        let (dw1t, db1) = (dws.next().unwrap_or_default(), dbs.next().unwrap_or_default());
        grads.push((
            layers[0].weight().clone(),
            Tensor::from_vec(dw1t, (width, h1), &dev)?.t()?.contiguous()?,
        ));
        if let Some(bias) = layers[0].bias() {
            grads.push((bias.clone(), Tensor::from_vec(db1, h1, &dev)?));
        }
        for ((dw, db), (layer, l)) in dws.zip(dbs).zip(layers[1..].iter().zip(&net)) {
            grads.push((layer.weight().clone(), Tensor::from_vec(dw, (l.out, l.inp), &dev)?));
            if let Some(bias) = layer.bias() {
                grads.push((bias.clone(), Tensor::from_vec(db, l.out, &dev)?));
            }
        }
        Ok(MlpGradients { loss: total.loss / (b * l) as f64, grads })
    }
}

/// The first layer: `W₁ᵀ` `(width, h1)`, its bias, the time's column, and
/// the `per_row` one-hot columns of every row.
struct First<'a> {
    w1t: &'a [f32],
    b1: &'a [f32],
    h1: usize,
    time_col: usize,
    cols: &'a [u32],
    per_row: usize,
}

/// The softmax head: `vocab` logits per token, `seq_len` tokens per row; the
/// loss's gradient is scaled by `scale` (one over the tokens of the batch).
struct Head {
    seq_len: usize,
    vocab: usize,
    scale: f32,
}

/// One partition's sums: the loss (summed over tokens) and, per layer (the
/// first as `W₁ᵀ`), `dW` and `db`.
struct Partial {
    loss: f64,
    dw: Vec<Vec<f32>>,
    db: Vec<Vec<f32>>,
}

/// The loss and gradient sums of the rows `a..b` of `batch`, block by block.
fn partition(
    first: &First,
    net: &[Layer],
    act: Activation,
    head: &Head,
    batch: &DiscreteBatch,
    (a, b): (usize, usize),
) -> Partial {
    let (h1, last) = (first.h1, net.len() - 1);
    let mut dw: Vec<Vec<f32>> = std::iter::once(vec![0f32; first.w1t.len()])
        .chain(net.iter().map(|l| vec![0f32; l.out * l.inp]))
        .collect();
    let mut db: Vec<Vec<f32>> =
        std::iter::once(vec![0f32; h1]).chain(net.iter().map(|l| vec![0f32; l.out])).collect();
    let rows = TRAIN_BLOCK_ROWS;
    let mut z1 = vec![0f32; rows * h1];
    // hs[k]: the input of dense layer k (hs[0] = σ(z₁)); zs[k]: its output.
    let mut hs: Vec<Vec<f32>> = net.iter().map(|l| vec![0f32; rows * l.inp]).collect();
    let mut zs: Vec<Vec<f32>> = net.iter().map(|l| vec![0f32; rows * l.out]).collect();
    let width = net.iter().map(|l| l.out.max(l.inp)).max().unwrap_or(0).max(h1);
    let (mut dz, mut dh) = (vec![0f32; rows * width], vec![0f32; rows * width]);
    let mut p = vec![0f32; head.vocab];
    let mut loss = 0f64;
    for (block, r0) in (a..b).step_by(rows).enumerate() {
        let m = rows.min(b - r0);
        let accumulate = block > 0;
        // The first layer: its bias, t times the time's column, and the one-hot columns.
        for (i, z) in z1[..m * h1].chunks_exact_mut(h1).enumerate() {
            let r = r0 + i;
            z.copy_from_slice(first.b1);
            let t = batch.t[r] as f32;
            let time = &first.w1t[first.time_col * h1..(first.time_col + 1) * h1];
            z.iter_mut().zip(time).for_each(|(z, &w)| *z += t * w);
            for &col in &first.cols[r * first.per_row..(r + 1) * first.per_row] {
                let w = &first.w1t[col as usize * h1..(col as usize + 1) * h1];
                z.iter_mut().zip(w).for_each(|(z, &w)| *z += w);
            }
        }
        activate(act, &z1[..m * h1], &mut hs[0][..m * h1]);
        for (k, l) in net.iter().enumerate() {
            let (h_now, rest) = hs.split_at_mut(k + 1);
            dense_forward(l, &h_now[k][..m * l.inp], &mut zs[k][..m * l.out], m);
            if k < last {
                activate(act, &zs[k][..m * l.out], &mut rest[0][..m * l.out]);
            }
        }
        // The head: softmax per token, the loss, and dz at the logits.
        let (v, seq) = (head.vocab, head.seq_len);
        let logits = &zs[last][..m * seq * v];
        for (j, (zrow, drow)) in logits.chunks_exact(v).zip(dz[..m * seq * v].chunks_exact_mut(v)).enumerate()
        {
            let token = r0 * seq + j;
            let (x1, xt) = (batch.x1[token] as usize, batch.xt[token] as usize);
            let max = zrow.iter().fold(f32::NEG_INFINITY, |m, &z| m.max(z));
            let mut sum = 0f32;
            for (pj, &z) in p.iter_mut().zip(zrow) {
                *pj = (z - max).exp();
                sum += *pj;
            }
            let inv = 1.0 / sum;
            p.iter_mut().for_each(|pj| *pj *= inv);
            let log_p1 = f64::from(zrow[x1] - max) - f64::from(sum).ln();
            match batch.kl_weights {
                None => {
                    loss -= log_p1;
                    drow.iter_mut().zip(&p).for_each(|(d, &pj)| *d = head.scale * pj);
                    drow[x1] -= head.scale;
                }
                Some(w) => {
                    // ℓ = −[p(x_t) − δ + (1 − δ) log p(x₁)]; its gradient in the module docs.
                    let w = w[token / seq];
                    let p_xt = if xt < v { p[xt] } else { 0.0 };
                    let same = xt == x1;
                    loss +=
                        w * -(f64::from(p_xt) - f64::from(u8::from(same)) + if same { 0.0 } else { log_p1 });
                    let k = -(w as f32) * head.scale;
                    let (a, c) = (k * p_xt, if same { 0.0 } else { k });
                    // g_j = a (δ_{j,x_t} − p_j) + c (δ_{j,x₁} − p_j).
                    drow.iter_mut().zip(&p).for_each(|(d, &pj)| *d = -(a + c) * pj);
                    if xt < v {
                        drow[xt] += a;
                    }
                    drow[x1] += c;
                }
            }
        }
        // The dense layers, backwards.
        for k in (0..=last).rev() {
            let l = &net[k];
            let dhk = &mut dh[..m * l.inp];
            dense_backward(
                l,
                &dz[..m * l.out],
                &hs[k][..m * l.inp],
                m,
                (&mut dw[k + 1], &mut db[k + 1]),
                accumulate,
                Some(&mut *dhk),
            );
            // dz ← dh ⊙ σ'(z) of the layer below (the first layer's z₁ below dense layer 0).
            let z = if k > 0 { &zs[k - 1][..m * l.inp] } else { &z1[..m * h1] };
            derivative(act, dhk, z, &hs[k][..m * l.inp], &mut dz[..m * l.inp]);
        }
        // The first layer: scatter dz₁ into the columns each row used.
        let g1 = &dz[..m * h1];
        add_rows(&mut db[0], g1);
        for (i, g) in g1.chunks_exact(h1).enumerate() {
            let r = r0 + i;
            let t = batch.t[r] as f32;
            let time = &mut dw[0][first.time_col * h1..(first.time_col + 1) * h1];
            time.iter_mut().zip(g).for_each(|(d, &gi)| *d += t * gi);
            for &col in &first.cols[r * first.per_row..(r + 1) * first.per_row] {
                let d = &mut dw[0][col as usize * h1..(col as usize + 1) * h1];
                d.iter_mut().zip(g).for_each(|(d, &gi)| *d += gi);
            }
        }
    }
    Partial { loss, dw, db }
}

/// One optimiser step of `model` on `batch` by the explicit backward pass;
/// the batch loss.
///
/// # Errors
/// [`Error::Core`] naming `loss` if the loss is not finite (before the weights are touched).
pub fn discrete_mlp_train_step<O: GradientStep + ?Sized>(
    model: &DiscreteMlp,
    batch: &DiscreteBatch,
    opt: &mut O,
) -> Result<f64> {
    let g = model.loss_gradients(batch)?;
    if !g.loss.is_finite() {
        return Err(Error::Core(fm_core::Error::invalid(
            "loss",
            format!("the training loss became {}; lower the learning rate", g.loss),
        )));
    }
    apply_gradients(&g, opt)?;
    Ok(g.loss)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Activation, DiscreteMlpConfig};
    use candle::Device;
    use candle_nn::VarMap;
    use fm_core::discrete::{cross_entropy, generalized_kl_loss, DiscreteSource, MixturePath};
    use fm_core::scheduler::SchedulerKind;
    use fm_core::SeededRng;

    /// Loss and every gradient equal autograd's through
    /// [`fm_core::discrete::cross_entropy`] and
    /// [`fm_core::discrete::generalized_kl_loss`] (f32: relative 1e-4),
    /// class-conditional or not, with masked and unmasked tokens, in one
    /// block and across blocks and partitions.
    #[test]
    fn gradients_match_autograd() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let (l, v) = (3, 5);
        let cases = [(None, false), (Some(4), false), (None, true), (Some(4), true)];
        // One block, and several blocks in several partitions.
        for (b, (classes, kl)) in
            [37, 5 * TRAIN_BLOCK_ROWS + 1].into_iter().flat_map(|b| cases.map(|c| (b, c)))
        {
            let config = DiscreteMlpConfig {
                seq_len: l,
                vocab: v,
                states: v + 1,
                hidden: vec![16, 12],
                activation: Activation::Silu,
                num_classes: classes,
            };
            let mut rng = SeededRng::new(11);
            let (net, varmap): (DiscreteMlp, VarMap) =
                DiscreteMlp::init(&config, &mut rng, DType::F32, &dev)?;
            let path = MixturePath::new(SchedulerKind::Polynomial { n: 2.0 }, DiscreteSource::Mask, v)?;
            let x1: Vec<u32> = rng.uniform_vec(b * l, 0.0, v as f64).into_iter().map(|u| u as u32).collect();
            let t: Vec<f64> = rng.uniform_vec(b, 0.0, 0.99);
            let xt = path.sample(&x1, &t, &mut rng)?;
            let labels: Option<Vec<u32>> =
                classes.map(|k| (0..b as u32).map(|i| i % (k as u32 + 1)).collect());
            let weights: Vec<f64> = t.iter().map(|&ti| path.kl_weight(ti)).collect();
            let batch = DiscreteBatch {
                xt: &xt,
                x1: &x1,
                t: &t,
                labels: labels.as_deref(),
                kl_weights: kl.then_some(weights.as_slice()),
            };
            let ours = net.loss_gradients(&batch)?;
            let xt_t = Tensor::from_vec(xt.clone(), (b, l), &dev)?;
            let x1_t = Tensor::from_vec(x1.clone(), (b, l), &dev)?;
            let t_t = Tensor::from_vec(t.iter().map(|&x| x as f32).collect::<Vec<_>>(), b, &dev)?;
            let logits = net.logits_with(&xt_t, &t_t, labels.as_deref())?;
            let loss = match kl {
                false => cross_entropy(&logits, &x1_t)?,
                true => generalized_kl_loss(&logits, &x1_t, &xt_t, &t, &path)?,
            };
            let reference = loss.to_scalar::<f32>()? as f64;
            assert!(
                (ours.loss - reference).abs() < 1e-5 * reference.abs().max(1.0),
                "{} vs {reference}",
                ours.loss
            );
            let autograd = loss.backward()?;
            for var in varmap.all_vars() {
                let want = autograd.get(var.as_tensor()).expect("every parameter has a gradient");
                let (_, got) = ours.grads.iter().find(|(p, _)| p.id() == var.id()).expect("gradient");
                let scale = want.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                let err = (got - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                assert!(
                    err <= 1e-4 * scale.max(1e-6),
                    "classes {classes:?}, kl {kl}: error {err}, scale {scale}"
                );
            }
        }
        Ok(())
    }
}

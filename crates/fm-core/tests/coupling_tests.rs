//! Couplings, matchers and straightness (issue #8).

mod common;

use std::f64::consts::FRAC_PI_2;

use candle::{DType, Device, Tensor};
use candle_nn::Optimizer;
use common::mlp;
use fm_core::assignment::linear_sum_assignment;
use fm_core::coupling::{sinkhorn_plan, Coupling};
use fm_core::matcher::{matcher_batch_loss, Matcher, MatcherKind};
use fm_core::straightness::straightness;
use fm_core::{to_f64_vec, Result, SeededRng, VelocityField};
use fm_solvers::{Euler, Midpoint, Rk4, TimeGrid};

fn cpu() -> Device {
    Device::Cpu
}

fn sq_cost(a: &[f64], b: &[f64], n: usize, d: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            c[i * n + j] = (0..d).map(|k| (a[i * d + k] - b[j * d + k]).powi(2)).sum();
        }
    }
    c
}

/// All permutations of `0..n` (Heap's algorithm).
fn permutations(n: usize) -> Vec<Vec<usize>> {
    fn heap(k: usize, p: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if k <= 1 {
            out.push(p.clone());
            return;
        }
        for i in 0..k {
            heap(k - 1, p, out);
            if k.is_multiple_of(2) {
                p.swap(i, k - 1);
            } else {
                p.swap(0, k - 1);
            }
        }
    }
    let mut out = Vec::new();
    heap(n, &mut (0..n).collect(), &mut out);
    out
}

fn is_permutation(idx: &[usize]) -> bool {
    let mut seen = vec![false; idx.len()];
    idx.iter().all(|&j| j < seen.len() && !std::mem::replace(&mut seen[j], true))
}

fn perm_cost(c: &[f64], p: &[usize]) -> f64 {
    let n = p.len();
    p.iter().enumerate().map(|(i, &j)| c[i * n + j]).sum()
}

// ---------------------------------------------------------------- matchers

fn all_matchers() -> Result<Vec<Matcher>> {
    Ok(vec![
        Matcher::new(MatcherKind::ICfm, 0.3)?,
        Matcher::new(MatcherKind::OtCfm, 0.3)?,
        Matcher::new(MatcherKind::SbCfm, 0.7)?,
        Matcher::new(MatcherKind::Target, 0.1)?,
        Matcher::new(MatcherKind::Vp, 0.2)?,
    ])
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `x_t` and `u_t` of every matcher equal the torchcfm formulas
/// (docs/reference/couplings.md),
/// written out per coordinate here.
#[test]
fn matchers_follow_the_torchcfm_formulas() -> Result<()> {
    let mut rng = SeededRng::new(1);
    let (b, d) = (6, 3);
    let x0 = rng.normal((b, d), DType::F64, &cpu())?;
    let x1 = rng.normal((b, d), DType::F64, &cpu())?;
    let eps = rng.normal((b, d), DType::F64, &cpu())?;
    let ts = [0.0, 0.05, 0.3, 0.5, 0.8, 0.97];
    let t = Tensor::new(&ts, &cpu())?;
    let (a0, a1, e) = (to_f64_vec(&x0)?, to_f64_vec(&x1)?, to_f64_vec(&eps)?);
    for m in all_matchers()? {
        let s = m.sample_with_noise(&x0, &x1, &t, &eps)?;
        let (xt, ut) = (to_f64_vec(&s.x_t)?, to_f64_vec(&s.dx_t)?);
        let sg = m.sigma;
        for (i, &t) in ts.iter().enumerate() {
            for k in 0..d {
                let q = i * d + k;
                let (x0, x1, e) = (a0[q], a1[q], e[q]);
                let (mu, sig_t) = match m.kind {
                    MatcherKind::ICfm | MatcherKind::OtCfm => (t * x1 + (1.0 - t) * x0, sg),
                    MatcherKind::SbCfm => (t * x1 + (1.0 - t) * x0, sg * (t * (1.0 - t)).sqrt()),
                    MatcherKind::Target => (t * x1, 1.0 - (1.0 - sg) * t),
                    MatcherKind::Vp => ((FRAC_PI_2 * t).cos() * x0 + (FRAC_PI_2 * t).sin() * x1, sg),
                };
                let x_t = mu + sig_t * e;
                let u = match m.kind {
                    MatcherKind::ICfm | MatcherKind::OtCfm => x1 - x0,
                    MatcherKind::SbCfm => {
                        (1.0 - 2.0 * t) / (2.0 * t * (1.0 - t) + 1e-8) * (x_t - mu) + x1 - x0
                    }
                    MatcherKind::Target => (x1 - (1.0 - sg) * x_t) / (1.0 - (1.0 - sg) * t),
                    MatcherKind::Vp => FRAC_PI_2 * ((FRAC_PI_2 * t).cos() * x1 - (FRAC_PI_2 * t).sin() * x0),
                };
                assert!((xt[q] - x_t).abs() < 1e-12, "{:?} x_t at t={t}: {} vs {x_t}", m.kind, xt[q]);
                assert!((ut[q] - u).abs() < 1e-10, "{:?} u_t at t={t}: {} vs {u}", m.kind, ut[q]);
            }
        }
    }
    Ok(())
}

/// With `x₀, x₁, ε` fixed, `u_t` is the time derivative of `x_t`
/// (central differences, step 1e-5, away from SB's endpoints).
#[test]
fn target_is_the_time_derivative_of_the_path() -> Result<()> {
    let mut rng = SeededRng::new(2);
    let (b, d) = (5, 2);
    let x0 = rng.normal((b, d), DType::F64, &cpu())?;
    let x1 = rng.normal((b, d), DType::F64, &cpu())?;
    let eps = rng.normal((b, d), DType::F64, &cpu())?;
    let ts = [0.1, 0.25, 0.5, 0.7, 0.9];
    let h = 1e-5;
    let shift = |dt: f64| Tensor::new(&ts.map(|t| t + dt), &cpu());
    for m in all_matchers()? {
        let s = m.sample_with_noise(&x0, &x1, &shift(0.0)?, &eps)?;
        let plus = to_f64_vec(&m.sample_with_noise(&x0, &x1, &shift(h)?, &eps)?.x_t)?;
        let minus = to_f64_vec(&m.sample_with_noise(&x0, &x1, &shift(-h)?, &eps)?.x_t)?;
        let u = to_f64_vec(&s.dx_t)?;
        for q in 0..b * d {
            let fd = (plus[q] - minus[q]) / (2.0 * h);
            assert!((fd - u[q]).abs() < 1e-6 * (1.0 + u[q].abs()), "{:?}: u {} vs fd {fd}", m.kind, u[q]);
        }
    }
    Ok(())
}

#[test]
fn matcher_names_and_validation() {
    for k in MatcherKind::ALL {
        assert_eq!(k.name().parse::<MatcherKind>().ok(), Some(k));
    }
    let e = "nope".parse::<MatcherKind>().err().map(|e| e.to_string()).unwrap_or_default();
    for name in ["icfm", "otcfm", "sbcfm", "fm", "si"] {
        assert!(e.contains(name), "{e}");
    }
    let e = "nope".parse::<Coupling>().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("independent") && e.contains("ot") && e.contains("sinkhorn"), "{e}");
    assert!(Matcher::new(MatcherKind::SbCfm, 0.0).is_err());
    assert!(Matcher::new(MatcherKind::ICfm, -1.0).is_err());
    assert!(Matcher::new(MatcherKind::ICfm, f64::NAN).is_err());
    assert!(Matcher::new(MatcherKind::Target, 0.0).and_then(|m| m.with_coupling(Coupling::ExactOt)).is_err());
    assert_eq!(Matcher::new(MatcherKind::OtCfm, 0.0).map(|m| m.coupling()).ok(), Some(Coupling::ExactOt));
    let sb = Matcher::new(MatcherKind::SbCfm, 0.5).map(|m| m.coupling()).ok();
    assert!(matches!(sb, Some(Coupling::Sinkhorn { reg, normalize_cost: false, .. }) if reg == 0.5));
    for s in ["independent", "ot", "sinkhorn", "sinkhorn:0.1"] {
        let c: Coupling = s.parse().expect("valid coupling");
        assert_eq!(c.to_string().parse::<Coupling>().ok(), Some(c), "{s} round-trips");
    }
    assert!("sinkhorn:-1".parse::<Coupling>().is_err());
}

// ---------------------------------------------------------------- couplings

/// Exact OT equals brute force over all `b!` permutations for `b ≤ 7`, and
/// returns a permutation.
#[test]
fn exact_ot_matches_brute_force() -> Result<()> {
    let mut rng = SeededRng::new(3);
    for b in 1..=7 {
        for _ in 0..4 {
            let x0 = rng.normal((b, 2), DType::F64, &cpu())?;
            let x1 = (rng.normal((b, 2), DType::F64, &cpu())? + 1.0)?;
            let c = Coupling::ExactOt.couple(&x0, &x1, None, false, &mut rng)?;
            assert!(is_permutation(&c.index), "{:?}", c.index);
            let cost = sq_cost(&to_f64_vec(&x0)?, &to_f64_vec(&x1)?, b, 2);
            let best = permutations(b).iter().map(|p| perm_cost(&cost, p)).fold(f64::INFINITY, f64::min);
            let got = perm_cost(&cost, &c.index);
            assert!((got - best).abs() < 1e-9 * (1.0 + best), "b={b}: {got} vs brute force {best}");
            // The returned x1 is x1[index].
            let want = x1.index_select(
                &Tensor::from_vec(c.index.iter().map(|&i| i as u32).collect::<Vec<_>>(), b, &cpu())?,
                0,
            )?;
            assert_eq!(to_f64_vec(&c.x1)?, to_f64_vec(&want)?);
            assert_eq!(to_f64_vec(&c.x0)?, to_f64_vec(&x0)?);
        }
    }
    Ok(())
}

/// On a large batch OT uses every data row exactly once, with images
/// (3-D tensors) flattened for the cost.
#[test]
fn exact_ot_is_a_permutation_on_images() -> Result<()> {
    let mut rng = SeededRng::new(4);
    let b = 64;
    let x0 = rng.normal((b, 2, 3), DType::F32, &cpu())?;
    let x1 = rng.normal((b, 2, 3), DType::F32, &cpu())?;
    let labels = Tensor::from_vec((0..b as u32).collect::<Vec<_>>(), b, &cpu())?;
    let c = Coupling::ExactOt.couple(&x0, &x1, Some(&labels), false, &mut rng)?;
    assert!(is_permutation(&c.index));
    let mut rows: Vec<Vec<u32>> = Vec::new();
    let x1c = c.x1.flatten_from(1)?.to_vec2::<f32>()?;
    let x1o = x1.flatten_from(1)?.to_vec2::<f32>()?;
    for (i, r) in x1c.iter().enumerate() {
        assert_eq!(r, &x1o[c.index[i]]);
        rows.push(r.iter().map(|v| v.to_bits()).collect());
    }
    rows.sort();
    rows.dedup();
    assert_eq!(rows.len(), b, "every x1 row appears exactly once");
    // Labels follow their data rows.
    let l = c.labels.as_ref().map(|l| l.to_vec1::<u32>()).transpose()?.unwrap_or_default();
    assert_eq!(l, c.index.iter().map(|&i| i as u32).collect::<Vec<_>>());
    // The coupled cost is below the independent one.
    let cost = sq_cost(&to_f64_vec(&x0)?, &to_f64_vec(&x1)?, b, 6);
    let id: Vec<usize> = (0..b).collect();
    assert!(perm_cost(&cost, &c.index) < perm_cost(&cost, &id));
    Ok(())
}

/// Sinkhorn's marginals are uniform to 1e-6, and exact OT costs no more
/// than the plan's expected cost or its rounding to a permutation.
#[test]
fn sinkhorn_marginals_and_ot_optimality() -> Result<()> {
    let mut rng = SeededRng::new(5);
    for (n, reg) in [(5usize, 0.5), (16, 0.05), (32, 0.01), (7, 2.0)] {
        let a = rng.normal_vec(n * 2);
        let b: Vec<f64> = rng.normal_vec(n * 2).iter().map(|v| v + 0.5).collect();
        let cost = sq_cost(&a, &b, n, 2);
        let max = cost.iter().copied().fold(0.0, f64::max);
        let normed: Vec<f64> = cost.iter().map(|c| c / max).collect();
        let plan = sinkhorn_plan(&normed, n, n, reg, 5000)?;
        for i in 0..n {
            let row: f64 = plan[i * n..(i + 1) * n].iter().sum();
            let col: f64 = (0..n).map(|k| plan[k * n + i]).sum();
            assert!((row - 1.0 / n as f64).abs() < 1e-6, "n={n} reg={reg}: row {i} sums to {row}");
            assert!((col - 1.0 / n as f64).abs() < 1e-6, "n={n} reg={reg}: column {i} sums to {col}");
        }
        let exact = linear_sum_assignment(&cost, n, n)?.cost;
        let expected = n as f64 * plan.iter().zip(&cost).map(|(p, c)| p * c).sum::<f64>();
        let neg: Vec<f64> = plan.iter().map(|p| -p).collect();
        let rounded = perm_cost(&cost, &linear_sum_assignment(&neg, n, n)?.row_to_col);
        assert!(exact <= expected + 1e-9, "n={n}: exact {exact} > Sinkhorn expected {expected}");
        assert!(exact <= rounded + 1e-9, "n={n}: exact {exact} > rounded Sinkhorn {rounded}");
        println!(
            "n={n:2} reg={reg:<5} exact {exact:8.4}  sinkhorn expected {expected:8.4}  rounded {rounded:8.4}"
        );
    }
    // Small reg approaches the exact plan.
    let n = 8;
    let a = rng.normal_vec(n * 2);
    let b = rng.normal_vec(n * 2);
    let cost = sq_cost(&a, &b, n, 2);
    let plan = sinkhorn_plan(&cost, n, n, 1e-3, 20_000)?;
    let expected = n as f64 * plan.iter().zip(&cost).map(|(p, c)| p * c).sum::<f64>();
    let exact = linear_sum_assignment(&cost, n, n)?.cost;
    assert!(expected - exact < 0.05 * (1.0 + exact), "{expected} vs {exact}");
    Ok(())
}

/// The Sinkhorn coupling samples one data row per source row from the plan:
/// with a tiny reg on well-separated pairs it recovers the OT permutation,
/// with a huge reg the draws are close to uniform.
#[test]
fn sinkhorn_coupling_samples_from_the_plan() -> Result<()> {
    let mut rng = SeededRng::new(6);
    let b = 16;
    let x1 = Tensor::from_vec((0..b).map(|i| (i * 10) as f64).collect::<Vec<_>>(), (b, 1), &cpu())?;
    let p: Vec<u32> = rng.permutation(b).into_iter().map(|i| i as u32).collect();
    let x0 = (x1.index_select(&Tensor::new(p.as_slice(), &cpu())?, 0)? + 0.1)?;
    let sharp = Coupling::Sinkhorn { reg: 1e-3, iters: 500, normalize_cost: true };
    let c = sharp.couple(&x0, &x1, None, false, &mut rng)?;
    let ot = Coupling::ExactOt.couple(&x0, &x1, None, false, &mut rng)?;
    assert_eq!(c.index, ot.index);
    let flat = Coupling::Sinkhorn { reg: 1e3, iters: 50, normalize_cost: true };
    let mut counts = vec![0usize; b];
    for _ in 0..200 {
        for j in flat.couple(&x0, &x1, None, false, &mut rng)?.index {
            counts[j] += 1;
        }
    }
    // 200 draws per column on average; all columns are hit.
    assert!(counts.iter().all(|&c| c > 120 && c < 280), "{counts:?}");
    Ok(())
}

/// Class-conditional couplings never pair across classes; labels are carried.
#[test]
fn class_conditional_coupling_stays_within_classes() -> Result<()> {
    let mut rng = SeededRng::new(7);
    let b = 60;
    let labels: Vec<i64> = (0..b).map(|i| [0i64, 1, 2, 1, 2][i % 5]).collect();
    let lt = Tensor::new(labels.as_slice(), &cpu())?;
    let x0 = rng.normal((b, 2), DType::F64, &cpu())?;
    // Data classes far apart, so that unconstrained OT would mix them.
    let x1 = rng.normal((b, 2), DType::F64, &cpu())?;
    for coupling in [Coupling::ExactOt, Coupling::sinkhorn_default(), Coupling::Independent] {
        let c = coupling.couple(&x0, &x1, Some(&lt), true, &mut rng)?;
        for (i, &j) in c.index.iter().enumerate() {
            assert_eq!(labels[i], labels[j], "{coupling}: row {i} paired with {j}");
        }
        assert_eq!(c.labels.as_ref().map(|l| l.to_vec1::<i64>()).transpose()?, Some(labels.clone()));
        if coupling == Coupling::ExactOt {
            assert!(is_permutation(&c.index));
        }
    }
    // Without the option OT does cross classes here.
    let c = Coupling::ExactOt.couple(&x0, &x1, Some(&lt), false, &mut rng)?;
    assert!(c.index.iter().enumerate().any(|(i, &j)| labels[i] != labels[j]));
    assert!(Coupling::ExactOt.couple(&x0, &x1, None, true, &mut rng).is_err());
    Ok(())
}

// ---------------------------------------------------------------- training and straightness

/// Every matcher's training step lowers its loss on a toy problem (median
/// of the first and last 15 steps: SB-CFM's target has heavy tails near
/// `t = 0, 1`, its `σ(1−2t)/(2√(t(1−t)))` noise term having infinite variance).
#[test]
fn matcher_training_steps_run_and_learn() -> Result<()> {
    let x1 = SeededRng::new(8).normal((128, 2), DType::F64, &cpu())?.affine(0.3, 2.0)?;
    let mut matchers = all_matchers()?;
    matchers[2] = Matcher::new(MatcherKind::SbCfm, 0.1)?;
    for m in matchers {
        let (field, vm) = mlp(2, 32, 1.0, 9)?;
        let mut opt = candle_nn::AdamW::new(
            vm.all_vars(),
            candle_nn::ParamsAdamW { lr: 1e-2, weight_decay: 0.0, ..Default::default() },
        )?;
        let mut rng = SeededRng::new(10);
        let mut losses = Vec::new();
        for _ in 0..60 {
            let loss = matcher_batch_loss(&field, &m, &x1, &mut rng)?;
            losses.push(loss.to_dtype(DType::F64)?.to_scalar::<f64>()?);
            opt.backward_step(&loss)?;
        }
        let (first, last) = (median(&losses[..15]), median(&losses[45..]));
        assert!(last < first, "{m}: {first} → {last}");
    }
    Ok(())
}

/// A field whose trajectories are straight lines at constant speed has
/// straightness 0 with any solver; a curved one does not.
#[test]
fn straightness_is_zero_for_straight_fields() -> Result<()> {
    // u(x, t) = (x − 0)/(… ) is not constant; use the exact CondOT field of a
    // point mass at c: u = (c − x)/(1 − t), whose trajectories are straight.
    struct ToPoint;
    impl VelocityField for ToPoint {
        fn velocity(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
            let s = (t.affine(-1.0, 1.0)?.recip()?).unsqueeze(1)?;
            Ok(x.affine(-1.0, 3.0)?.broadcast_mul(&s)?)
        }
    }
    struct Rotate;
    impl VelocityField for Rotate {
        fn velocity(&self, x: &Tensor, _t: &Tensor) -> Result<Tensor> {
            let a = x.narrow(1, 0, 1)?;
            let b = x.narrow(1, 1, 1)?;
            Ok(Tensor::cat(&[&b.neg()?, &a], 1)?)
        }
    }
    let x0 = SeededRng::new(11).normal((32, 2), DType::F64, &cpu())?;
    let grid = TimeGrid::uniform(0.0, 0.99, 20)?;
    let s = straightness(&ToPoint, &Euler, &x0, &grid)?;
    assert!(s.value < 1e-20, "{}", s.value);
    assert!(straightness(&ToPoint, &Rk4, &x0, &grid)?.value < 1e-18);
    let full = TimeGrid::uniform(0.0, 1.0, 100)?;
    let r = straightness(&Rotate, &Midpoint, &x0, &full)?;
    // Rotation by 1 rad: ∫‖u − Δ‖² = E‖x‖² (1 + |e^{i}−1|² − 2·sin(1)·… ) > 0.
    assert!(r.value > 0.1, "{}", r.value);
    assert_eq!(r.nfe, 200 + 100);
    Ok(())
}

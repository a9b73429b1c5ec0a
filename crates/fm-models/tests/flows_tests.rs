use std::path::PathBuf;

use anyhow::{anyhow, Result};
use candle::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use fm_core::energy::TestEnergy;
use fm_core::SeededRng;
use fm_models::checkpoint::{self, varmap_tensors};
use fm_models::flows::{
    annealed_beta, ActNorm, CouplingMask, FlowLayer, LogitLayer, NormalizingFlow, PlanarConfig, PlanarLayer,
    RealNvpConfig,
};
use fm_models::{Activation, CheckpointConfig, ModelConfig};

const DEV: Device = Device::Cpu;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fm-flows-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn max_abs(t: &Tensor) -> Result<f64> {
    Ok(t.abs()?.max_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

fn realnvp_config(dim: usize, mask: CouplingMask, actnorm: bool) -> RealNvpConfig {
    RealNvpConfig {
        dim,
        layers: 2,
        hidden: vec![16, 16],
        activation: Activation::Tanh,
        scale_factor: 2.0,
        mask,
        actnorm,
        logit: None,
    }
}

/// Sets every parameter in `varmap` to fresh N(0, 0.5²) draws, so that
/// identity-initialised layers (ActNorm) are tested away from the identity.
fn randomise(varmap: &VarMap, rng: &mut SeededRng) -> Result<()> {
    let data = varmap.data().lock().map_err(|_| anyhow!("lock"))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let v = &data[name];
        let t = (rng.normal(v.shape(), v.dtype(), &DEV)? * 0.5)?;
        v.set(&t)?;
    }
    Ok(())
}

/// One flow of every layer type on `ℝ^dim`, with its variables.
fn every_kind(dim: usize, dtype: DType, seed: u64) -> Result<Vec<(String, NormalizingFlow, VarMap)>> {
    let mut rng = SeededRng::new(seed);
    let mut out = Vec::new();
    let configs = [
        ("planar", ModelConfig::Planar(PlanarConfig { dim, layers: 2 })),
        ("realnvp-halves", ModelConfig::RealNvp(realnvp_config(dim, CouplingMask::Halves, false))),
        ("realnvp-actnorm", ModelConfig::RealNvp(realnvp_config(dim, CouplingMask::Halves, true))),
    ];
    for (name, cfg) in configs {
        let (flow, vm) = NormalizingFlow::init(&cfg, &mut rng, dtype, &DEV)?;
        if name == "realnvp-actnorm" {
            randomise(&vm, &mut rng)?;
        }
        out.push((name.to_string(), flow, vm));
    }
    Ok(out)
}

/// `log|det A|` of a row-major `d × d` matrix, by LU with partial pivoting.
fn log_abs_det(mut a: Vec<f64>, d: usize) -> f64 {
    let mut total = 0.0;
    for c in 0..d {
        let p = (c..d).max_by(|&i, &j| a[i * d + c].abs().total_cmp(&a[j * d + c].abs())).unwrap_or(c);
        if p != c {
            for k in 0..d {
                a.swap(c * d + k, p * d + k);
            }
        }
        let piv = a[c * d + c];
        total += piv.abs().ln();
        for r in c + 1..d {
            let f = a[r * d + c] / piv;
            for k in c..d {
                a[r * d + k] -= f * a[c * d + k];
            }
        }
    }
    total
}

/// The Jacobian of `f` at the point `x` (length d) by central differences, row-major `(out, in)`.
fn fd_jacobian(f: impl Fn(&Tensor) -> Result<Tensor>, x: &[f64]) -> Result<Vec<f64>> {
    let d = x.len();
    let h = 1e-6;
    let mut rows = Vec::new();
    for j in 0..d {
        for sign in [1.0, -1.0] {
            let mut p = x.to_vec();
            p[j] += sign * h;
            rows.extend(p);
        }
    }
    let y = f(&Tensor::from_vec(rows, (2 * d, d), &DEV)?)?.to_vec2::<f64>()?;
    let mut jac = vec![0.0; d * d];
    for j in 0..d {
        for i in 0..d {
            jac[i * d + j] = (y[2 * j][i] - y[2 * j + 1][i]) / (2.0 * h);
        }
    }
    Ok(jac)
}

#[test]
fn round_trip_in_f32() -> Result<()> {
    for dim in [2, 5] {
        for (name, flow, _vm) in every_kind(dim, DType::F32, 1)? {
            let x = SeededRng::new(2).normal((64, dim), DType::F32, &DEV)?;
            for (k, layer) in flow.layers().iter().enumerate() {
                let (y, ld) = layer.forward(&x)?;
                let (x2, ld_inv) = layer.inverse(&y)?;
                let err = max_abs(&(x2 - &x)?)?;
                assert!(err < 1e-5, "{name} d={dim} layer {k}: round trip error {err}");
                assert!(max_abs(&(ld + ld_inv)?)? < 1e-5, "{name} d={dim} layer {k}: log-dets do not cancel");
            }
            let (y, _) = flow.forward(&x)?;
            let (x2, _) = flow.inverse(&y)?;
            let err = max_abs(&(x2 - &x)?)?;
            assert!(err < 1e-5, "{name} d={dim}: flow round trip error {err}");
        }
    }
    Ok(())
}

#[test]
fn log_det_matches_brute_force_jacobian() -> Result<()> {
    for dim in [2, 5] {
        for (name, flow, _vm) in every_kind(dim, DType::F64, 3)? {
            let pts = SeededRng::new(4).normal((3, dim), DType::F64, &DEV)?.to_vec2::<f64>()?;
            for (k, layer) in flow.layers().iter().enumerate() {
                for p in &pts {
                    let x = Tensor::new(p.as_slice(), &DEV)?.unsqueeze(0)?;
                    let (y, ld) = layer.forward(&x)?;
                    let jf = fd_jacobian(|t| Ok(layer.forward(t)?.0), p)?;
                    let want = log_abs_det(jf, dim);
                    let got = ld.to_vec1::<f64>()?[0];
                    assert!((got - want).abs() < 1e-6, "{name} d={dim} layer {k} forward: {got} vs {want}");
                    // The inverse's log-det, at y = f(x), against its own Jacobian.
                    let yv = y.squeeze(0)?.to_vec1::<f64>()?;
                    let (_, ld_inv) = layer.inverse(&y)?;
                    let ji = fd_jacobian(|t| Ok(layer.inverse(t)?.0), &yv)?;
                    let want = log_abs_det(ji, dim);
                    let got = ld_inv.to_vec1::<f64>()?[0];
                    assert!((got - want).abs() < 1e-6, "{name} d={dim} layer {k} inverse: {got} vs {want}");
                }
            }
        }
    }
    Ok(())
}

#[test]
fn checkerboard_coupling_is_exact() -> Result<()> {
    // A 2-channel 2×3 image flattened to d = 12.
    let cfg = RealNvpConfig {
        dim: 12,
        layers: 2,
        hidden: vec![8],
        activation: Activation::Elu,
        scale_factor: 1.0,
        mask: CouplingMask::Checkerboard { height: 2, width: 3 },
        actnorm: false,
        logit: None,
    };
    assert_eq!(cfg.mask(0)[..6], [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
    assert_eq!(cfg.mask(0)[6..], cfg.mask(0)[..6]);
    assert_eq!(cfg.mask(1)[..6], [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
    let (flow, _vm) =
        NormalizingFlow::init(&ModelConfig::RealNvp(cfg), &mut SeededRng::new(5), DType::F64, &DEV)?;
    let p = SeededRng::new(6).normal_vec(12);
    let x = Tensor::new(p.as_slice(), &DEV)?.unsqueeze(0)?;
    let (y, ld) = flow.forward(&x)?;
    assert!(max_abs(&(flow.inverse(&y)?.0 - &x)?)? < 1e-12);
    let want = log_abs_det(fd_jacobian(|t| Ok(flow.forward(t)?.0), &p)?, 12);
    assert!((ld.to_vec1::<f64>()?[0] - want).abs() < 1e-6);
    let bad = RealNvpConfig {
        dim: 7,
        ..realnvp_config(7, CouplingMask::Checkerboard { height: 2, width: 3 }, false)
    };
    assert!(bad.validate().is_err());
    Ok(())
}

#[test]
fn every_parameter_gets_a_gradient() -> Result<()> {
    for dim in [2, 5] {
        for (name, flow, vm) in every_kind(dim, DType::F64, 7)? {
            let x = SeededRng::new(8).normal((16, dim), DType::F64, &DEV)?;
            for direction in ["forward", "inverse"] {
                let (y, ld) = if direction == "forward" { flow.forward(&x)? } else { flow.inverse(&x)? };
                let loss = (y.sqr()?.sum_all()? + ld.sum_all()?)?;
                let grads = loss.backward()?;
                let data = vm.data().lock().map_err(|_| anyhow!("lock"))?;
                for (pname, var) in data.iter() {
                    let g = grads
                        .get(var.as_tensor())
                        .ok_or_else(|| anyhow!("{name} {direction}: `{pname}` got no gradient"))?;
                    let norm = g.sqr()?.sum_all()?.to_scalar::<f64>()?;
                    assert!(norm > 0.0 && norm.is_finite(), "{name} {direction}: `{pname}` gradient {norm}");
                }
            }
        }
    }
    Ok(())
}

#[test]
fn planar_inverse_gradient_matches_finite_differences() -> Result<()> {
    // The numerical inverse is differentiable through one Newton step in the
    // graph; its parameter gradient must be the true (implicit) one.
    let mut rng = SeededRng::new(9);
    let (flow, vm) = NormalizingFlow::planar(3, 1, &mut rng, DType::F64, &DEV)?;
    randomise(&vm, &mut rng)?;
    let x = rng.normal((5, 3), DType::F64, &DEV)?;
    let objective = |f: &NormalizingFlow| -> Result<Tensor> { Ok(f.log_prob(&x)?.sum_all()?) };
    let grads = objective(&flow)?.backward()?;
    let data = vm.data().lock().map_err(|_| anyhow!("lock"))?;
    for pname in ["layers.0.u", "layers.0.w", "layers.0.b"] {
        let var = &data[pname];
        let g = grads.get(var.as_tensor()).ok_or_else(|| anyhow!("no gradient"))?.to_vec1::<f64>()?;
        let base = var.as_tensor().copy()?;
        let h = 1e-6;
        let mut v = base.to_vec1::<f64>()?;
        v[0] += h;
        var.set(&Tensor::new(v.as_slice(), &DEV)?)?;
        let up = objective(&flow)?.to_scalar::<f64>()?;
        v[0] -= 2.0 * h;
        var.set(&Tensor::new(v.as_slice(), &DEV)?)?;
        let down = objective(&flow)?.to_scalar::<f64>()?;
        var.set(&base)?;
        let fd = (up - down) / (2.0 * h);
        assert!((fd - g[0]).abs() < 1e-5 * (1.0 + fd.abs()), "{pname}: autograd {} vs fd {fd}", g[0]);
    }
    Ok(())
}

#[test]
fn planar_reparametrisation_keeps_w_dot_u_hat_above_minus_one() -> Result<()> {
    let mut rng = SeededRng::new(10);
    let mut cases: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
    for scale in [0.1, 1.0, 10.0, 100.0] {
        let w = rng.normal_vec(3).iter().map(|v| v * scale).collect::<Vec<_>>();
        for k in [-10.0, -1000.0, -1.0, 0.0, 3.0] {
            cases.push((w.iter().map(|v| v * k).collect(), w.clone()));
        }
        cases.push((rng.normal_vec(3).iter().map(|v| v * scale * 50.0).collect(), w.clone()));
    }
    cases.push((vec![5.0, -3.0, 1.0], vec![1e-8, 0.0, 0.0])); // nearly vanishing w
    for (u, w) in cases {
        for dtype in [DType::F64, DType::F32] {
            let layer = PlanarLayer::from_tensors(
                Tensor::new(u.as_slice(), &DEV)?.to_dtype(dtype)?,
                Tensor::new(w.as_slice(), &DEV)?.to_dtype(dtype)?,
                Tensor::new(&[0.3f64], &DEV)?.to_dtype(dtype)?,
            )?;
            let m = layer.w_dot_u_hat()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            assert!(m >= -1.0, "m(wᵀu) = {m} for u = {u:?}, w = {w:?}");
            let u_hat = layer.u_hat()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
            let dot: f64 = u_hat.iter().zip(&w).map(|(a, b)| a * b).sum();
            // û = u + (…) w/‖w‖² cancels terms of size ‖u‖, so wᵀû carries a
            // rounding error of order ε‖w‖‖u‖ (the layer itself never uses
            // this dot product: it uses m(wᵀu) directly).
            let norm = |v: &[f64]| v.iter().map(|a| a * a).sum::<f64>().sqrt();
            let eps = if dtype == DType::F64 { 1e-15 } else { 1e-6 };
            let tol = eps * (1.0 + norm(&w) * norm(&u));
            assert!(dot >= -1.0 - tol, "wᵀû = {dot} for u = {u:?}, w = {w:?} ({dtype:?})");
            // The layer stays usable: finite log-dets, and it inverts.
            let x = SeededRng::new(11).normal((32, 3), dtype, &DEV)?;
            let (y, ld) = layer.forward(&x)?;
            assert!(ld.to_dtype(DType::F64)?.to_vec1::<f64>()?.iter().all(|v| v.is_finite()));
            if dtype == DType::F64 && m > -1.0 + 1e-6 {
                let (x2, _) = layer.inverse(&y)?;
                // As w → 0, û grows like 1/‖w‖: the error scales with ‖û‖.
                let err = max_abs(&(x2 - &x)?)?;
                assert!(
                    err < 1e-12 * (1e3 + norm(&u_hat)),
                    "round trip error {err} for u = {u:?}, w = {w:?}"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn rejects_bad_shapes_and_configs() -> Result<()> {
    let (flow, _) = NormalizingFlow::realnvp(3, 2, &[8], &mut SeededRng::new(0), DType::F32, &DEV)?;
    let x = Tensor::zeros((4, 2), DType::F32, &DEV)?;
    assert!(matches!(flow.log_prob(&x), Err(fm_models::Error::Shape(_))));
    assert!(matches!(
        NormalizingFlow::realnvp(1, 2, &[8], &mut SeededRng::new(0), DType::F32, &DEV),
        Err(fm_models::Error::Config { field: "dim", .. })
    ));
    assert!(NormalizingFlow::planar(2, 0, &mut SeededRng::new(0), DType::F32, &DEV).is_err());
    let mlp = ModelConfig::Mlp(fm_models::MlpConfig::guide(2));
    assert!(NormalizingFlow::init(&mlp, &mut SeededRng::new(0), DType::F32, &DEV).is_err());
    assert!(flow.sample(0, &mut SeededRng::new(0)).is_err());
    let an = ActNorm::from_tensors(Tensor::zeros(3, DType::F32, &DEV)?, Tensor::zeros(2, DType::F32, &DEV)?);
    assert!(an.is_err());
    // The planar layer's numerical inverse reports a failed root find as a typed error.
    let (planar, _) = NormalizingFlow::planar(2, 1, &mut SeededRng::new(0), DType::F64, &DEV)?;
    let nan = Tensor::new(&[[f64::NAN, 0.0]], &DEV)?;
    assert!(matches!(planar.layers()[0].inverse(&nan), Err(fm_models::Error::NotInvertible(_))));
    assert!(!planar.layers()[0].has_analytic_inverse() && flow.layers()[0].has_analytic_inverse());
    Ok(())
}

#[test]
fn init_is_reproducible() -> Result<()> {
    let (a, _) = NormalizingFlow::realnvp(2, 3, &[8], &mut SeededRng::new(42), DType::F32, &DEV)?;
    let (b, _) = NormalizingFlow::realnvp(2, 3, &[8], &mut SeededRng::new(42), DType::F32, &DEV)?;
    let x = SeededRng::new(1).normal((10, 2), DType::F32, &DEV)?;
    assert_eq!(a.log_prob(&x)?.to_vec1::<f32>()?, b.log_prob(&x)?.to_vec1::<f32>()?);
    Ok(())
}

/// `n` two-moons points (sklearn's construction) with Gaussian noise `noise`.
fn moons(n: usize, noise: f64, rng: &mut SeededRng) -> Result<Tensor> {
    let theta = rng.uniform_vec(n, 0.0, std::f64::consts::PI);
    let eps = rng.normal_vec(2 * n);
    let mut v = Vec::with_capacity(2 * n);
    for (i, t) in theta.iter().enumerate() {
        let (x, y) = if i % 2 == 0 { (t.cos(), t.sin()) } else { (1.0 - t.cos(), 0.5 - t.sin()) };
        v.push(x + noise * eps[2 * i]);
        v.push(y + noise * eps[2 * i + 1]);
    }
    Ok(Tensor::from_vec(v, (n, 2), &DEV)?.to_dtype(DType::F32)?)
}

/// `∫ exp(log q)` over `[−L, L]²` by the midpoint rule with `n × n` cells.
fn grid_mass(flow: &NormalizingFlow, half_width: f64, n: usize) -> Result<f64> {
    let h = 2.0 * half_width / n as f64;
    let c: Vec<f64> = (0..n).map(|i| -half_width + (i as f64 + 0.5) * h).collect();
    let mut pts = Vec::with_capacity(2 * n * n);
    for &y in &c {
        for &x in &c {
            pts.push(x);
            pts.push(y);
        }
    }
    let z = Tensor::from_vec(pts, (n * n, 2), &DEV)?.to_dtype(DType::F32)?;
    let lp = flow.log_prob(&z)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    Ok(lp.iter().map(|v| v.exp()).sum::<f64>() * h * h)
}

#[test]
fn trained_realnvp_density_integrates_to_one() -> Result<()> {
    let mut rng = SeededRng::new(12);
    let cfg = RealNvpConfig { actnorm: true, ..RealNvpConfig::new(2, 6, &[32, 32]) };
    let (flow, vm) = NormalizingFlow::init(&ModelConfig::RealNvp(cfg), &mut rng, DType::F32, &DEV)?;
    // lr 2e-3 over 600 steps ends near NLL 1.3 whatever the last bits of
    // the arithmetic; at 5e-3 over 300 steps, a 1e-7 relative change in the
    // log-scale moved the end point between 1.55 and 1.85.
    let mut opt =
        AdamW::new(vm.all_vars(), ParamsAdamW { lr: 2e-3, weight_decay: 0.0, ..Default::default() })?;
    let test = moons(2000, 0.1, &mut SeededRng::new(13))?;
    let nll0 = flow.forward_kl_loss(&test)?.to_scalar::<f32>()?;
    // The best Gaussian's NLL on the test set, as a yardstick.
    let t = test.to_dtype(DType::F64)?;
    let centred = t.broadcast_sub(&t.mean_keepdim(0)?)?;
    let cov = (centred.t()?.matmul(&centred)? / 2000.0)?.to_vec2::<f64>()?;
    let det = cov[0][0] * cov[1][1] - cov[0][1] * cov[1][0];
    let gauss_nll = (2.0 * std::f64::consts::PI).ln() + 0.5 * det.ln() + 1.0;
    for _ in 0..600 {
        let x = moons(256, 0.1, &mut rng)?;
        opt.backward_step(&flow.forward_kl_loss(&x)?)?;
    }
    let nll = flow.forward_kl_loss(&test)?.to_scalar::<f32>()?;
    let mass = grid_mass(&flow, 4.0, 300)?;
    eprintln!(
        "RealNVP moons: test NLL {nll0:.3} → {nll:.3} nats (best Gaussian {gauss_nll:.3}); ∫q over [−4,4]² = {mass:.5}"
    );
    assert!(
        (nll as f64) < gauss_nll - 0.3,
        "the flow did not learn the moons: NLL {nll0} → {nll}, Gaussian {gauss_nll}"
    );
    assert!((mass - 1.0).abs() < 0.01, "∫q = {mass}");
    Ok(())
}

/// `KL(q‖p₁) = E_q[log q + U₁] + log Z₁`, estimated with `n` samples.
fn kl_u1(flow: &NormalizingFlow, n: usize, rng: &mut SeededRng) -> Result<f64> {
    let f = flow.reverse_kl_loss(|z| TestEnergy::U1.energy(z), n, 1.0, rng)?;
    Ok(f.to_dtype(DType::F64)?.to_scalar::<f64>()? + TestEnergy::U1.log_z(fm_core::energy::EnergyBox::Four))
}

fn train_planar_u1(k: usize, steps: usize, seed: u64) -> Result<(f64, f64)> {
    let mut rng = SeededRng::new(seed);
    let (flow, vm) = NormalizingFlow::planar(2, k, &mut rng, DType::F32, &DEV)?;
    let kl0 = kl_u1(&flow, 20_000, &mut SeededRng::new(99))?;
    let mut opt =
        AdamW::new(vm.all_vars(), ParamsAdamW { lr: 1e-2, weight_decay: 0.0, ..Default::default() })?;
    for step in 0..steps {
        let beta = annealed_beta(step, steps / 2);
        let loss = flow.reverse_kl_loss(|z| TestEnergy::U1.energy(z), 256, beta, &mut rng)?;
        opt.backward_step(&loss)?;
    }
    Ok((kl0, kl_u1(&flow, 20_000, &mut SeededRng::new(99))?))
}

#[test]
fn planar_reverse_kl_on_u1() -> Result<()> {
    let steps = 1000;
    let (kl0_2, kl_2) = train_planar_u1(2, steps, 14)?;
    let (kl0_8, kl_8) = train_planar_u1(8, steps, 14)?;
    eprintln!("planar on U1, {steps} steps: K=2 KL {kl0_2:.3} → {kl_2:.3}; K=8 KL {kl0_8:.3} → {kl_8:.3}");
    assert!(kl_2 < kl0_2 && kl_8 < kl0_8);
    assert!(kl_8 < 0.5, "K=8 KL {kl_8}");
    assert!(kl_8 < kl_2, "K=8 ({kl_8}) should beat K=2 ({kl_2})");
    Ok(())
}

#[test]
fn checkpoint_round_trip_gives_identical_log_prob() -> Result<()> {
    let mut rng = SeededRng::new(15);
    let x = SeededRng::new(16).normal((20, 3), DType::F32, &DEV)?;
    let configs = [
        ModelConfig::Planar(PlanarConfig { dim: 3, layers: 4 }),
        ModelConfig::RealNvp(RealNvpConfig { actnorm: true, ..RealNvpConfig::new(3, 3, &[8, 8]) }),
    ];
    for (i, cfg) in configs.into_iter().enumerate() {
        let (flow, vm) = NormalizingFlow::init(&cfg, &mut rng, DType::F32, &DEV)?;
        randomise(&vm, &mut rng)?;
        let dir = temp_dir(&format!("ckpt-{i}"));
        checkpoint::save(&dir, &CheckpointConfig::new(cfg.clone()), &varmap_tensors(&vm)?)?;
        let loaded = checkpoint::load(&dir, &DEV)?;
        assert_eq!(loaded.config.model, cfg);
        let json = std::fs::read_to_string(dir.join(checkpoint::CONFIG_FILE))?;
        assert!(
            json.contains(if i == 0 { "\"kind\": \"planar\"" } else { "\"kind\": \"real-nvp\"" }),
            "{json}"
        );
        let vb = VarBuilder::from_tensors(loaded.tensors, DType::F32, &DEV);
        let restored = NormalizingFlow::new(&loaded.config.model, vb)?;
        assert_eq!(flow.log_prob(&x)?.to_vec1::<f32>()?, restored.log_prob(&x)?.to_vec1::<f32>()?);
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

#[test]
fn logit_layer_round_trips_and_its_log_det_is_the_jacobian() -> Result<()> {
    let layer = LogitLayer::new(4, 0.05)?;
    // Data in [−1, 1], ends included (dequantized pixels can reach them).
    let x_rows = [[-1.0f64, -0.3, 0.4, 1.0], [0.999, -0.999, 0.0, 0.5]];
    for p in x_rows {
        let x = Tensor::new(&p[..], &DEV)?.unsqueeze(0)?;
        let (z, ld_inv) = layer.inverse(&x)?;
        let (back, ld_fwd) = layer.forward(&z)?;
        assert!(max_abs(&(&back - &x)?)? < 1e-12);
        assert!(max_abs(&(&ld_inv + &ld_fwd)?)? < 1e-10);
        let want = log_abs_det(fd_jacobian(|t| Ok(layer.inverse(t)?.0), &p)?, 4);
        assert!((ld_inv.to_vec1::<f64>()?[0] - want).abs() < 1e-5, "{ld_inv} vs {want}");
    }
    assert!(LogitLayer::new(4, 0.5).is_err() && LogitLayer::new(4, -0.1).is_err());
    // In a RealNVP config: the flow's density includes the layer's Jacobian.
    let cfg = RealNvpConfig { logit: Some(0.05), ..realnvp_config(4, CouplingMask::Halves, false) };
    let (flow, _vm) =
        NormalizingFlow::init(&ModelConfig::RealNvp(cfg), &mut SeededRng::new(3), DType::F64, &DEV)?;
    assert_eq!(flow.layers().len(), 3);
    let x = Tensor::new(&x_rows[1][..], &DEV)?.unsqueeze(0)?;
    let (z, ld) = flow.inverse(&x)?;
    let direct = (flow.base_log_prob(&z)? + ld)?;
    assert!(max_abs(&(flow.log_prob(&x)? - direct)?)? < 1e-12);
    let bad = RealNvpConfig { logit: Some(0.7), ..realnvp_config(4, CouplingMask::Halves, false) };
    assert!(bad.validate().is_err());
    Ok(())
}

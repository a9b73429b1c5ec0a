//! Parametrizations, loss weightings and the training objective
//! (docs/reference/paths-and-losses.md, closed-form.md): exact conversions on
//! the Gaussian oracle, weighted losses equal to the diffusion losses, EFM
//! through the objective.

use candle::{DType, Device, Tensor};
use fm_core::divergence::Probe;
use fm_core::efm::efm_loss;
use fm_core::gaussian::GaussianOracle;
use fm_core::jacobian::{exact_jacobian_sq, hutchinson_jacobian_sq, jacobian_autograd, JvpField};
use fm_core::objective::{objective_loss, JacobianReg, ObjectiveSpec, RegressionTarget};
use fm_core::parametrization::{output_to_velocity, velocity_to_output, Parametrized};
use fm_core::path::{AffinePath, Prediction};
use fm_core::scheduler::{Scheduler, SchedulerKind};
use fm_core::weighting::Weighting;
use fm_core::{to_f64_vec, SeededRng, VelocityField};

const KINDS: [Prediction; 3] = [Prediction::Velocity, Prediction::Epsilon, Prediction::Target];

fn schedulers() -> Vec<SchedulerKind> {
    vec![
        SchedulerKind::CondOt,
        SchedulerKind::Cosine,
        SchedulerKind::LinearVp,
        SchedulerKind::Polynomial { n: 2.0 },
        SchedulerKind::Vp { beta_min: 0.1, beta_max: 20.0 },
    ]
}

fn max_rel_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f64> {
    let (a, b) = (to_f64_vec(a)?, to_f64_vec(b)?);
    assert_eq!(a.len(), b.len());
    Ok(a.iter().zip(&b).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())).fold(0.0, f64::max))
}

fn oracle(s: SchedulerKind) -> anyhow::Result<GaussianOracle> {
    Ok(GaussianOracle::new(vec![1.0, -1.0], vec![3.694337, 0.988124, 0.988124, 0.805663], s)?)
}

/// The oracle's exact prediction of one kind, as a "network".
struct OraclePrediction {
    oracle: GaussianOracle,
    kind: Prediction,
}

impl VelocityField for OraclePrediction {
    fn velocity(&self, x: &Tensor, t: &Tensor) -> fm_core::Result<Tensor> {
        match self.kind {
            Prediction::Velocity => self.oracle.velocity(x, t),
            Prediction::Target => self.oracle.denoiser(x, t),
            Prediction::Epsilon => {
                // ε̂ = −σ_t ∇log p_t(x), from the oracle's score.
                let (xs, ts) = (to_f64_vec(x)?, to_f64_vec(t)?);
                let score = self.oracle.score_rows(&xs, &ts)?;
                let d = self.oracle.dim();
                let s = self.oracle.scheduler();
                let eps: Vec<f64> =
                    score.iter().enumerate().map(|(i, v)| -s.at(ts[i / d]).sigma * v).collect();
                Ok(Tensor::from_vec(eps, x.dims(), x.device())?)
            }
        }
    }
}

/// The exact Gaussian velocity expressed as a noise or a data prediction gives
/// back the same velocity, on every scheduler; and the conversions from the
/// velocity land on the oracle's own denoiser and noise predictions.
#[test]
fn gaussian_oracle_predictions_give_the_same_velocity() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mut rng = SeededRng::new(0);
    for s in schedulers() {
        let o = oracle(s)?;
        let path = AffinePath::new(s);
        let x = rng.normal((64, 2), DType::F64, &dev)?;
        let t = rng.uniform(64, 0.02, 0.98, DType::F64, &dev)?;
        let u = o.velocity(&x, &t)?;
        for kind in KINDS {
            let net = OraclePrediction { oracle: o.clone(), kind };
            let exact = net.velocity(&x, &t)?;
            // velocity → kind: the oracle's own prediction of that kind.
            let converted = velocity_to_output(&path, kind, &u, &x, &t)?;
            let e1 = max_rel_diff(&converted, &exact)?;
            assert!(e1 < 1e-9, "{s}: velocity → {kind} is off by {e1}");
            // kind → velocity through the wrapper: u* again.
            let field = Parametrized::new(net, path, kind);
            let e2 = max_rel_diff(&field.velocity(&x, &t)?, &u)?;
            assert!(e2 < 1e-9, "{s}: {kind} → velocity is off by {e2}");
            // Round trip on an arbitrary output.
            let out = rng.normal((64, 2), DType::F64, &dev)?;
            let back =
                velocity_to_output(&path, kind, &output_to_velocity(&path, kind, &out, &x, &t)?, &x, &t)?;
            let e3 = max_rel_diff(&back, &out)?;
            assert!(e3 < 1e-9, "{s}: {kind} round trip is off by {e3}");
        }
    }
    Ok(())
}

/// The singular ends are clamped: a data prediction at t = 1 and a noise
/// prediction at t = 0 give finite velocities (those at 1 − 1e-3 and 1e-3).
#[test]
fn conversions_are_finite_at_the_ends() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let path = AffinePath::new(SchedulerKind::CondOt);
    let x = Tensor::new(&[[1.0f64, 2.0]], &dev)?;
    let out = Tensor::new(&[[0.5f64, -0.5]], &dev)?;
    let u1 = to_f64_vec(&output_to_velocity(
        &path,
        Prediction::Target,
        &out,
        &x,
        &Tensor::new(&[1.0f64], &dev)?,
    )?)?;
    // (x̂₁ − x)/(1 − t) at t = 1 − 1e-3.
    assert!((u1[0] - (-0.5 / 1e-3)).abs() < 1e-6 && (u1[1] - (-2.5 / 1e-3)).abs() < 1e-6, "{u1:?}");
    let u0 = to_f64_vec(&output_to_velocity(
        &path,
        Prediction::Epsilon,
        &out,
        &x,
        &Tensor::new(&[0.0f64], &dev)?,
    )?)?;
    // (x − ε̂)/t at t = 1e-3.
    assert!((u0[0] - 0.5 / 1e-3).abs() < 1e-6 && (u0[1] - 2.5 / 1e-3).abs() < 1e-6, "{u0:?}");
    Ok(())
}

/// A fixed affine "network" `out = x A + t c` (with its exact JVPs).
struct Affine {
    a: Tensor,
    c: Tensor,
}

impl VelocityField for Affine {
    fn velocity(&self, x: &Tensor, t: &Tensor) -> fm_core::Result<Tensor> {
        Ok((x.matmul(&self.a)? + t.unsqueeze(1)?.matmul(&self.c)?)?)
    }
}

impl JvpField for Affine {
    fn velocity_and_jvp(&self, x: &Tensor, t: &Tensor, v: &Tensor) -> fm_core::Result<(Tensor, Tensor)> {
        let (k, b, d) = v.dims3()?;
        let jv = v.reshape((k * b, d))?.matmul(&self.a)?.reshape((k, b, d))?;
        Ok((self.velocity(x, t)?, jv))
    }
}

/// Per-sample squared errors (summed over coordinates).
fn per_sample_sq(a: &Tensor, b: &Tensor) -> anyhow::Result<Vec<f64>> {
    Ok(to_f64_vec(&(a - b)?.sqr()?.sum(1)?)?)
}

/// For every parametrization P and weighting W, `w(t)·‖out − target_P‖²`
/// equals, sample by sample, the unweighted W-loss of the same network: the
/// FM loss, DDPM's ε-loss, the denoising loss and the v-prediction loss.
#[test]
fn weighted_losses_equal_the_diffusion_losses() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mut rng = SeededRng::new(1);
    let b = 256;
    for s in schedulers() {
        let path = AffinePath::new(s);
        let x0 = rng.normal((b, 3), DType::F64, &dev)?;
        let x1 = rng.normal((b, 3), DType::F64, &dev)?;
        let t = rng.uniform(b, 0.01, 0.99, DType::F64, &dev)?;
        let ts = to_f64_vec(&t)?;
        let ps = path.sample(&x0, &x1, &t)?;
        let col = |f: &dyn Fn(f64) -> f64| -> anyhow::Result<Tensor> {
            Ok(Tensor::from_vec(ts.iter().map(|&ti| f(ti)).collect::<Vec<_>>(), (b, 1), &dev)?)
        };
        let alpha = col(&|ti| s.at(ti).alpha)?;
        let sigma = col(&|ti| s.at(ti).sigma)?;
        // The v-prediction target α ε − σ x₁.
        let v_true = (x0.broadcast_mul(&alpha)? - x1.broadcast_mul(&sigma)?)?;
        for p in KINDS {
            let out = rng.normal((b, 3), DType::F64, &dev)?;
            let target_p = match p {
                Prediction::Velocity => ps.dx_t.clone(),
                Prediction::Epsilon => x0.clone(),
                Prediction::Target => x1.clone(),
            };
            let native = per_sample_sq(&out, &target_p)?;
            // The network's predictions of every kind.
            let u = output_to_velocity(&path, p, &out, &ps.x_t, &t)?;
            let eps = velocity_to_output(&path, Prediction::Epsilon, &u, &ps.x_t, &t)?;
            let x1_hat = velocity_to_output(&path, Prediction::Target, &u, &ps.x_t, &t)?;
            let v_hat = (eps.broadcast_mul(&alpha)? - x1_hat.broadcast_mul(&sigma)?)?;
            for (w, direct) in [
                (Weighting::Velocity, per_sample_sq(&u, &ps.dx_t)?),
                (Weighting::Noise, per_sample_sq(&eps, &x0)?),
                (Weighting::Data, per_sample_sq(&x1_hat, &x1)?),
                (Weighting::VPrediction, per_sample_sq(&v_hat, &v_true)?),
                (Weighting::Uniform, native.clone()),
            ] {
                for i in 0..b {
                    let weighted = w.weight(&path, p, ts[i]) * native[i];
                    let rel = (weighted - direct[i]).abs() / (1e-12 + direct[i].abs());
                    assert!(rel < 1e-8, "{s}, P={p}, W={w}, t={}: {weighted} vs {}", ts[i], direct[i]);
                }
            }
        }
    }
    Ok(())
}

/// docs/reference/paths-and-losses.md, on CondOT: velocity loss = (1 − t)⁻² ×
/// denoising loss, and ε-loss = t²/(1 − t)² × denoising loss; so a velocity
/// network's noise weighting is t² and its data weighting (1 − t)².
#[test]
fn condot_weights_match_the_reference_formulas() {
    let path = AffinePath::new(SchedulerKind::CondOt);
    for t in [0.1, 0.3, 0.5, 0.9] {
        let w = |w: Weighting, p| w.weight(&path, p, t);
        assert!((w(Weighting::Velocity, Prediction::Target) - (1.0 - t).powi(-2)).abs() < 1e-12);
        assert!((w(Weighting::Noise, Prediction::Target) - t * t / (1.0 - t).powi(2)).abs() < 1e-12);
        assert!((w(Weighting::Noise, Prediction::Velocity) - t * t).abs() < 1e-12);
        assert!((w(Weighting::Data, Prediction::Velocity) - (1.0 - t).powi(2)).abs() < 1e-12);
        assert_eq!(w(Weighting::Uniform, Prediction::Epsilon), 1.0);
    }
    assert!("ddpm".parse::<Weighting>().is_ok() && "bogus".parse::<Weighting>().is_err());
    assert_eq!("denoiser".parse::<Prediction>().ok(), Some(Prediction::Target));
    let e = "x".parse::<Prediction>().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("parametrization"), "{e}");
}

/// The objective's loss equals the direct loss in the weighting's space, and
/// with the velocity parametrization and EFM it equals `efm_loss` (same draws).
#[test]
fn objective_loss_matches_direct_computations() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mut rng = SeededRng::new(2);
    let net = Affine { a: rng.normal((2, 2), DType::F64, &dev)?, c: rng.normal((1, 2), DType::F64, &dev)? };
    let path = AffinePath::new(SchedulerKind::CondOt);
    let x0 = rng.normal((128, 2), DType::F64, &dev)?;
    let x1 = rng.normal((128, 2), DType::F64, &dev)?;
    let t = rng.uniform(128, 0.01, 0.99, DType::F64, &dev)?;
    let train = rng.normal((50, 2), DType::F64, &dev)?;
    // A data-predicting network trained with the FM weighting: the FM loss of its velocity.
    let spec = ObjectiveSpec {
        parametrization: Prediction::Target,
        weighting: Weighting::Velocity,
        ..Default::default()
    };
    let l = objective_loss(&net, &path, &spec, &x0, &x1, &t, None, &mut rng)?.total.to_scalar::<f64>()?;
    let field = Parametrized::new(&net, path, Prediction::Target);
    let direct = fm_core::loss::cfm_loss(&field, &path, &x0, &x1, &t)?.to_scalar::<f64>()?;
    assert!((l - direct).abs() < 1e-9 * direct, "{l} vs {direct}");
    // EFM through the objective = efm_loss with the same random stream.
    let spec = ObjectiveSpec { target: RegressionTarget::Efm { m: 8 }, ..Default::default() };
    let a = objective_loss(&net, &path, &spec, &x0, &x1, &t, Some(&train), &mut SeededRng::new(9))?;
    let b = efm_loss(&net, &path, &x0, &x1, &t, &train, 8, &mut SeededRng::new(9))?;
    assert!((a.total.to_scalar::<f64>()? - b.to_scalar::<f64>()?).abs() < 1e-12);
    // EFM with a noise network: its target is the EFM velocity target converted to ε.
    let spec = ObjectiveSpec {
        parametrization: Prediction::Epsilon,
        target: RegressionTarget::Efm { m: 8 },
        ..Default::default()
    };
    let c = objective_loss(&net, &path, &spec, &x0, &x1, &t, Some(&train), &mut SeededRng::new(9))?;
    let u = fm_core::efm::efm_target(&path, &x0, &x1, &t, &train, 8, &mut SeededRng::new(9))?;
    let x_t = path.sample(&x0, &x1, &t)?.x_t;
    let eps = velocity_to_output(&path, Prediction::Epsilon, &u, &x_t, &t)?;
    let direct = (net.velocity(&x_t, &t)? - eps)?.sqr()?.mean_all()?.to_scalar::<f64>()?;
    assert!((c.total.to_scalar::<f64>()? - direct).abs() < 1e-9 * direct);
    // EFM with M > 1 and no training set is refused, naming it.
    let e = objective_loss(&net, &path, &spec, &x0, &x1, &t, None, &mut rng).err().map(|e| e.to_string());
    assert!(e.unwrap_or_default().contains("train_set"));
    Ok(())
}

/// The Jacobian penalty of an affine field: `‖A‖²_F / d` exactly in
/// expectation; the Hutchinson estimate over many probes converges to it,
/// and the objective adds `W ×` it.
#[test]
fn jacobian_penalty_of_an_affine_field() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let mut rng = SeededRng::new(3);
    let a = rng.normal((3, 3), DType::F64, &dev)?;
    let fro = a.sqr()?.sum_all()?.to_scalar::<f64>()?;
    let net = Affine { a, c: rng.normal((1, 3), DType::F64, &dev)? };
    let x = rng.normal((4, 3), DType::F64, &dev)?;
    let t = rng.uniform(4, 0.0, 1.0, DType::F64, &dev)?;
    for e in to_f64_vec(&exact_jacobian_sq(&net, &x, &t)?)? {
        assert!((e - fro).abs() < 1e-10 * fro);
    }
    let auto = jacobian_autograd(&net, &x, &t)?.sqr()?.sum((1, 2))?;
    assert!(max_rel_diff(&auto, &Tensor::new(&[fro; 4], &dev)?)? < 1e-10);
    let v = Probe::Gaussian.draw(&mut rng, (20_000, 4, 3), DType::F64, &dev)?;
    let (_, est) = hutchinson_jacobian_sq(&net, &x, &t, &v)?;
    for e in to_f64_vec(&est)? {
        // Gaussian probes: Var ‖Aε‖² = 2‖AᵀA‖²_F ≤ 2 fro²; 5 standard errors.
        assert!((e - fro).abs() < 5.0 * (2.0f64).sqrt() * fro / (20_000f64).sqrt(), "{e} vs {fro}");
    }
    let path = AffinePath::new(SchedulerKind::CondOt);
    let (x0, x1) = (rng.normal((4, 3), DType::F64, &dev)?, rng.normal((4, 3), DType::F64, &dev)?);
    let reg = JacobianReg { weight: 0.5, probe: Probe::Rademacher, probes: 2 };
    let spec = ObjectiveSpec { jacobian: Some(reg), ..Default::default() };
    let l = objective_loss(&net, &path, &spec, &x0, &x1, &t, None, &mut rng)?;
    let (total, fit) = (l.total.to_scalar::<f64>()?, l.fit.to_scalar::<f64>()?);
    let j = l.jacobian.map(|j| j.to_scalar::<f64>()).transpose()?.unwrap_or(f64::NAN);
    assert!((total - fit - 0.5 * j).abs() < 1e-12, "{total} {fit} {j}");
    Ok(())
}

//! `fm analyze targets`: CFM against EFM on a checkpoint's finite training
//! set (docs/reference/closed-form.md). For `--n` draws `(x₀, x₁ from the training set, t)`
//! it compares the two regression targets — CFM's `α̇x₁ + σ̇x₀` and EFM's
//! `û*_M` — with the exact empirical velocity `û*` and with the model:
//!
//! - the per-sample loss `ℓᵢ = mean_d (u_θ − target)²` of each target: its
//!   mean and variance (EFM's is lower: Prop. 2);
//! - the target's own spread `mean_d (target − û*)²` (the loss floor);
//! - the model's distance to `û*` (`mean_d (u_θ − û*)²`, the "VM loss");
//!
//! overall and by bins of `t`; then the exact W2 of `--n-w2` model samples to
//! as many fresh test points and training points.

use anyhow::{bail, Result};
use candle::{DType, Tensor};
use fm_core::efm::efm_target;
use fm_core::metrics::wasserstein2_exact;
use fm_core::path::AffinePath;
use fm_core::{to_f64_vec, SeededRng, VelocityField};
use serde_json::json;

use super::{logger, out_dir, write_csv, TargetsArgs};
use crate::figures::{line_figure, Panel, Series};
use crate::io::print_json;
use fm_pipeline::solve_hybrid;

/// Mean and (population) variance.
fn mean_var(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    (m, v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n)
}

/// Row means of squared differences `mean_d (a − b)²`, `(b, d)` → `b` values.
fn per_row_sq(a: &Tensor, b: &Tensor) -> Result<Vec<f64>> {
    Ok(to_f64_vec(&(a.to_dtype(DType::F64)? - b.to_dtype(DType::F64)?)?.sqr()?.mean(1)?)?)
}

pub fn run(a: TargetsArgs) -> Result<()> {
    if a.n < 2 || a.n_w2 < 2 {
        bail!("--n and --n-w2 must be at least 2");
    }
    if a.m == 0 {
        bail!("--m must be at least 1");
    }
    if !(1..=64).contains(&a.bins) {
        bail!("--bins must lie in 1..=64, got {}", a.bins);
    }
    let device = crate::device::selected();
    let m = crate::commands::common::load(&a.checkpoint, false, &device)?;
    let model = super::velocity_field(&m)?;
    let train = m.training_points(a.n_train)?; // (n, d) f64, model units
    let (n_train, d) = train.dims2()?;
    let closed = m.closed_form(&train)?;
    let path = AffinePath::new(m.record().scheduler.unwrap_or(fm_core::scheduler::SchedulerKind::CondOt));
    let dir = out_dir(a.out.as_deref(), m.dir().join("analyze-targets"))?;
    let log = logger(a.json);
    log(format!(
        "{} draws on the {n_train} training points of {}: CFM vs EFM (M = {}) targets, û*, and the model",
        a.n,
        m.record().data,
        a.m
    ));

    let mut rng = SeededRng::for_stream(a.seed, "analyze-targets");
    let (mut ts, mut l_cfm, mut l_efm, mut f_cfm, mut f_efm, mut vm) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let chunk = 1000usize.min(a.n);
    let mut done = 0;
    let pb = crate::progress::bar(a.n, a.quiet, "{bar:30} {pos}/{len} targets {per_sec} ETA {eta}");
    while done < a.n {
        let b = chunk.min(a.n - done);
        let idx: Vec<u32> = (0..b).map(|_| rand::Rng::random_range(rng.rng(), 0..n_train) as u32).collect();
        let x1 = train.index_select(&Tensor::from_vec(idx, b, &device)?, 0)?;
        let t = rng.uniform(b, 0.0, 1.0, DType::F64, &device)?;
        let x0 = rng.normal((b, d), DType::F64, &device)?;
        let ps = path.sample(&x0, &x1, &t)?;
        let efm = efm_target(&path, &x0, &x1, &t, &train, a.m, &mut rng)?;
        let exact = closed.velocity(&ps.x_t, &t)?;
        let model = model.velocity(&ps.x_t.to_dtype(DType::F32)?, &t.to_dtype(DType::F32)?)?;
        l_cfm.extend(per_row_sq(&model, &ps.dx_t)?);
        l_efm.extend(per_row_sq(&model, &efm)?);
        f_cfm.extend(per_row_sq(&ps.dx_t, &exact)?);
        f_efm.extend(per_row_sq(&efm, &exact)?);
        vm.extend(per_row_sq(&model, &exact)?);
        ts.extend(to_f64_vec(&t)?);
        done += b;
        pb.inc(b as u64);
    }
    pb.finish_and_clear();
    let (cfm_mean, cfm_var) = mean_var(&l_cfm);
    let (efm_mean, efm_var) = mean_var(&l_efm);
    let (cfm_floor, _) = mean_var(&f_cfm);
    let (efm_floor, _) = mean_var(&f_efm);
    let (vm_mean, _) = mean_var(&vm);
    log(format!("{:<28} {:>12} {:>12}", "", "CFM", format!("EFM-{}", a.m)));
    log(format!("{:<28} {cfm_mean:>12.4} {efm_mean:>12.4}", "mean per-sample loss"));
    log(format!("{:<28} {cfm_var:>12.4} {efm_var:>12.4}", "variance of per-sample loss"));
    log(format!("{:<28} {cfm_floor:>12.4} {efm_floor:>12.4}", "E mean_d (target − û*)²"));
    log(format!("model's E mean_d (u_θ − û*)² (VM loss): {vm_mean:.4}"));

    // By bins of t.
    let mut rows = Vec::new();
    let (mut s_cfm, mut s_efm, mut s_fc, mut s_fe, mut s_vm) = (vec![], vec![], vec![], vec![], vec![]);
    for k in 0..a.bins {
        let (lo, hi) = (k as f64 / a.bins as f64, (k + 1) as f64 / a.bins as f64);
        let sel: Vec<usize> = (0..ts.len()).filter(|&i| ts[i] >= lo && ts[i] < hi).collect();
        if sel.len() < 2 {
            continue;
        }
        let pick = |v: &[f64]| -> Vec<f64> { sel.iter().map(|&i| v[i]).collect() };
        let (_, vc) = mean_var(&pick(&l_cfm));
        let (_, ve) = mean_var(&pick(&l_efm));
        let (fc, _) = mean_var(&pick(&f_cfm));
        let (fe, _) = mean_var(&pick(&f_efm));
        let (v, _) = mean_var(&pick(&vm));
        let mid = 0.5 * (lo + hi);
        for (s, y) in [(&mut s_cfm, vc), (&mut s_efm, ve), (&mut s_fc, fc), (&mut s_fe, fe), (&mut s_vm, v)] {
            s.push((mid, y.max(1e-12)));
        }
        rows.push(
            [lo, hi, sel.len() as f64, vc, ve, fc, fe, v].iter().map(|x| x.to_string()).collect::<Vec<_>>(),
        );
    }
    let csv = dir.join("targets.csv");
    write_csv(
        &csv,
        &["t_lo", "t_hi", "count", "var_loss_cfm", "var_loss_efm", "floor_cfm", "floor_efm", "vm_loss"],
        &rows,
    )?;

    // Exact W2 of model samples to fresh test points and to training points (model units).
    let choice = a.solver.choice()?;
    let x0 = m.source_draws(a.n_w2, a.seed)?;
    let samples = solve_hybrid(model, model, &x0, &choice, 0.0, false)?.state.to_dtype(DType::F64)?;
    let data = m.data()?;
    let test = data.to_model_units(&data.reference(a.n_w2, a.seed)?)?;
    let test_n = test.len() / d;
    let test = Tensor::from_vec(test, (test_n, d), &device)?.to_dtype(DType::F64)?;
    let w2_test = wasserstein2_exact(&samples.narrow(0, 0, test_n.min(a.n_w2))?, &test)?;
    let k = n_train.min(a.n_w2);
    let w2_train = wasserstein2_exact(&samples.narrow(0, 0, k)?, &train.narrow(0, 0, k)?)?;
    log(format!(
        "exact W2 of {} model samples ({}): to test points {w2_test:.4}, to training points {w2_train:.4}",
        a.n_w2, choice.label
    ));

    let png = dir.join("targets.png");
    let series = |name: &str, points: Vec<(f64, f64)>| Series { name: name.into(), points };
    line_figure(
        &png,
        &format!("{}: CFM vs EFM-{} targets ({n_train} training points)", m.record().data, a.m),
        &[
            Panel {
                caption: "variance of the per-sample loss".into(),
                x_label: "t".into(),
                y_label: "Var ℓ".into(),
                log_x: false,
                log_y: true,
                series: vec![series("CFM", s_cfm), series(&format!("EFM-{}", a.m), s_efm)],
                marker_x: None,
            },
            Panel {
                caption: "distance to û*".into(),
                x_label: "t".into(),
                y_label: "mean_d (· − û*)²".into(),
                log_x: false,
                log_y: true,
                series: vec![
                    series("CFM target", s_fc),
                    series(&format!("EFM-{} target", a.m), s_fe),
                    series("model", s_vm),
                ],
                marker_x: None,
            },
        ],
    )?;
    log(format!("csv: {}\nplot: {}", csv.display(), png.display()));
    if a.json {
        print_json(&json!({
            "checkpoint": m.dir(),
            "n": a.n,
            "n_train": n_train,
            "m": a.m,
            "loss_mean": {"cfm": cfm_mean, "efm": efm_mean},
            "loss_variance": {"cfm": cfm_var, "efm": efm_var},
            "target_floor": {"cfm": cfm_floor, "efm": efm_floor},
            "vm_loss": vm_mean,
            "w2_test": w2_test,
            "w2_train": w2_train,
            "n_w2": a.n_w2,
            "solver": choice.label,
            "csv": csv,
            "plot": png,
        }))?;
    }
    Ok(())
}

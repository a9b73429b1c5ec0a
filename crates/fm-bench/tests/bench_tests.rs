//! `cargo xtask bench --quick`'s fm side: every workload builds and runs at
//! the quick sizes, and reports what the table needs.

use fm_bench::{build, Scale, NAMES};

#[test]
fn every_quick_workload_runs() -> anyhow::Result<()> {
    for name in NAMES {
        let mut w = build(name, Scale { quick: true })?;
        let info = w.run()?;
        match *name {
            "sample_euler100" => assert_eq!(info.nfe, Some(100), "{name}"),
            "likelihood_exact" | "likelihood_hutchinson" => assert_eq!(info.nfe, Some(100), "{name}"),
            "sample_dopri5" => assert!(info.nfe.is_some_and(|n| n >= 6), "{name}: {info:?}"),
            "closed_form" => assert_eq!(info.flops, Some(4.0 * 256.0 * 1000.0 * 784.0), "{name}"),
            "gemm" => assert_eq!(info.flops, Some(2.0 * 256f64.powi(3)), "{name}"),
            _ => {}
        }
    }
    let err = build("nope", Scale { quick: true }).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("train_b256"), "{err}");
    Ok(())
}

/// Training moves the weights and lowers the loss on a fixed batch (the
/// workload does real optimisation, not a no-op).
#[test]
fn training_workload_learns() -> anyhow::Result<()> {
    use candle::Device;
    use fm_core::loss::{cfm_loss, draw_source_and_time};
    use fm_core::path::AffinePath;
    use fm_core::scheduler::SchedulerKind;
    use fm_core::SeededRng;
    use fm_models::optim::{Adam, AdamParams};

    let dev = Device::Cpu;
    let (model, varmap) =
        fm_bench::fixtures::deterministic_mlp(&fm_bench::fixtures::bench_mlp_config(), &dev)?;
    let x1 = fm_bench::fixtures::points(256, 2, &dev)?;
    let path = AffinePath::new(SchedulerKind::CondOt);
    let mut probe_rng = SeededRng::new(9);
    let (x0, t) = draw_source_and_time(&x1, &mut probe_rng)?;
    let before = cfm_loss(&model, &path, &x0, &x1, &t)?.to_scalar::<f32>()?;
    let mut opt = Adam::new(&varmap, AdamParams { weight_decay: 0.01, ..AdamParams::default() })?;
    let mut rng = SeededRng::new(0);
    for _ in 0..30 {
        fm_models::mlp_cfm_train_step(&model, &path, &mut opt, &x1, &mut rng)?;
    }
    let after = cfm_loss(&model, &path, &x0, &x1, &t)?.to_scalar::<f32>()?;
    // lr 1e-3, 30 steps: ≈ 5 % lower on this fixed probe batch.
    assert!(after < 0.97 * before, "loss {before} → {after}");
    Ok(())
}

/// The benchmarked step is the pipeline's: 30 steps of the `train_b256` run
/// (deterministic weights, AdamW) lower the loss on a fixed probe batch.
#[test]
fn the_benchmarked_run_learns_like_the_models_step() -> anyhow::Result<()> {
    use candle::{DType, Device};
    use candle_nn::VarBuilder;
    use fm_core::loss::{cfm_loss, draw_source_and_time};
    use fm_core::path::AffinePath;
    use fm_core::scheduler::SchedulerKind;
    use fm_core::SeededRng;
    use fm_models::VelocityMlp;
    use fm_pipeline::RunConfig;

    let dev = Device::Cpu;
    let config = RunConfig {
        hidden: Some(vec![256, 256, 256]),
        activation: Some("silu".into()),
        lr: Some(1e-3),
        weight_decay: Some(0.01),
        batch_size: Some(256),
        ..RunConfig::default()
    };
    let mut run = fm_bench::fixtures::bench_run(&config, fm_bench::fixtures::points_data(256, 2)?, true)?;
    let mlp_of = |weights: Vec<(String, candle::Tensor)>| -> anyhow::Result<VelocityMlp> {
        let vb = VarBuilder::from_tensors(weights.into_iter().collect(), DType::F32, &dev);
        Ok(VelocityMlp::new(&fm_bench::fixtures::bench_mlp_config(), vb)?)
    };
    let x1 = fm_bench::fixtures::points(256, 2, &dev)?;
    let path = AffinePath::new(SchedulerKind::CondOt);
    let (x0, t) = draw_source_and_time(&x1, &mut SeededRng::new(9))?;
    let before = cfm_loss(&mlp_of(run.weights()?)?, &path, &x0, &x1, &t)?.to_scalar::<f32>()?;
    for _ in 0..30 {
        run.step()?;
    }
    let after = cfm_loss(&mlp_of(run.weights()?)?, &path, &x0, &x1, &t)?.to_scalar::<f32>()?;
    // Batches drawn with replacement from the 256 points: ≈ 2.3 % lower after 30 steps.
    assert!(after < 0.985 * before, "loss {before} → {after}");
    Ok(())
}

//! Stochastic sampling through the pipeline: a trained 2-D model sampled by
//! the SDE keeps the data's distribution as well as the ODE does.

use std::path::PathBuf;

use candle::{Device, Tensor};
use fm_core::metrics::energy_distance;
use fm_core::stochastic::{Diffusion, Langevin, StochasticSampler};
use fm_pipeline::{
    Run, RunConfig, RunSettings, SampleRequest, Silent, SolverChoice, StochasticChoice, Trained,
};
use fm_solvers::SdeMethod;

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fm-pipeline-stochastic-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn sde_samples_of_a_trained_model_keep_the_marginals() -> anyhow::Result<()> {
    let out = temp("moons");
    let config = RunConfig { steps: Some(10_000), out: Some(out.clone()), ..RunConfig::default() };
    Run::new(RunSettings::resolve(&config)?, &Device::Cpu)?.train(&mut Silent)?;
    let model = Trained::load(&out, false, &Device::Cpu)?;
    let n = 4000;
    let reference = model.data()?.reference(n, 77)?;
    let rf = Tensor::from_vec(reference, (n, 2), &Device::Cpu)?;
    let energy = |stochastic: Option<StochasticChoice>| -> anyhow::Result<(f64, usize)> {
        let mut request = SampleRequest::new(n, 5, SolverChoice::parse_spec("euler:200")?);
        request.stochastic = stochastic;
        let s = model.sample(&request)?;
        Ok((energy_distance(&Tensor::from_vec(s.values, (n, 2), &Device::Cpu)?, &rf)?, s.nfe))
    };
    let (ode, _) = energy(None)?;
    let sde = |diffusion, corrector| {
        Some(StochasticChoice::Sde(StochasticSampler {
            diffusion,
            method: SdeMethod::EulerMaruyama,
            steps: 200,
            noise_floor: 0.01,
            corrector,
        }))
    };
    for (choice, nfe) in [
        (sde(Diffusion::Sigma(1.0), None), 201),
        (sde(Diffusion::Sigma(3.0), None), 201),
        (sde(Diffusion::Constant(0.5), Some(Langevin { steps: 1, step_ratio: 0.05 })), 401),
    ] {
        let (e, got) = energy(choice)?;
        assert_eq!(got, nfe);
        // Two sample sets of the same law differ by ~1e-3 in energy distance at n = 4000.
        eprintln!("{}: energy {e}, the ODE {ode}", choice.unwrap().label());
        assert!(e < ode + 2e-3, "{}: energy {e} vs the ODE's {ode}", choice.unwrap().label());
    }
    // The same seed gives the same stochastic samples; another seed others.
    let mut request = SampleRequest::new(50, 9, SolverChoice::parse_spec("euler:20")?);
    request.stochastic = sde(Diffusion::Sigma(1.0), None);
    let a = model.sample(&request)?.values;
    assert_eq!(a, model.sample(&request)?.values);
    request.seed = 10;
    assert_ne!(a, model.sample(&request)?.values);
    // Hybrid sampling follows ODEs only.
    request.hybrid = Some(0.5);
    assert!(model.sample(&request).unwrap_err().to_string().contains("--hybrid"));
    std::fs::remove_dir_all(&out).ok();
    Ok(())
}

#[test]
fn a_class_conditional_unet_samples_by_sde_in_batches_with_guidance() -> anyhow::Result<()> {
    // A tiny U-Net on 8×8 fixture digits: the SDE runs batch by batch through guidance.
    let dir = temp("unet");
    std::fs::create_dir_all(&dir)?;
    let text: String = (0..40u32)
        .map(|i| {
            let cells: Vec<String> =
                (0..64).map(|j| ((i * 5 + j * 3) % 17).to_string()).chain([(i % 10).to_string()]).collect();
            cells.join(",") + "\n"
        })
        .collect();
    std::fs::write(dir.join("digits.csv"), text)?;
    let out = dir.join("run");
    let config = RunConfig {
        model: Some("unet".into()),
        preset: Some("tiny".into()),
        data: Some(format!("digits:{}", dir.join("digits.csv").display())),
        class_cond: Some(true),
        steps: Some(3),
        batch_size: Some(4),
        out: Some(out.clone()),
        ..RunConfig::default()
    };
    Run::new(RunSettings::resolve(&config)?, &Device::Cpu)?.train(&mut Silent)?;
    let model = Trained::load(&out, false, &Device::Cpu)?;
    let mut request = SampleRequest::new(5, 3, SolverChoice::parse_spec("euler:4")?);
    request.class = Some(2);
    request.cfg_scale = 1.5;
    request.batch_size = Some(2);
    request.trajectory_rows = 3;
    request.stochastic = Some(StochasticChoice::Sde(StochasticSampler {
        diffusion: Diffusion::Sigma(1.0),
        method: SdeMethod::StochasticHeun,
        steps: 4,
        noise_floor: 0.05,
        corrector: None,
    }));
    let s = model.sample(&request)?;
    assert_eq!((s.n, s.dim, s.nfe), (5, 64, 4 * 2 + 1));
    assert!(s.values.iter().all(|v| v.is_finite()));
    // Predictor grid (5 times) and the denoised output, for the first 3 samples.
    assert_eq!(s.trajectory.len(), 6);
    assert!(s.trajectory.iter().all(|t| t.len() == 3 * 64));
    assert_eq!(s.values, model.sample(&request)?.values);
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

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

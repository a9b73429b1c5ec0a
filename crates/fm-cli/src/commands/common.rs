//! What several subcommands share: loading a checkpoint (a folder or `hf://`).

use std::path::Path;

use anyhow::{Context, Result};
use candle::Device;
use fm_pipeline::Trained;

/// The checkpoint of `--checkpoint` (an `hf://` address from the Hub cache only when `offline`).
pub fn load(checkpoint: &Path, offline: bool, device: &Device) -> Result<Trained> {
    Trained::load(checkpoint, offline || fm_pipeline::location::offline_from_env(), device)
        .context("--checkpoint")
}

/// The SDE sampler of `--diffusion`, `--sde-solver`, `--steps`, `--noise-floor`
/// and a Langevin corrector of `corrector_steps` steps (0: none) with ratio `corrector_ratio`.
pub fn sde_sampler(
    diffusion: &str,
    sde_solver: &str,
    steps: usize,
    noise_floor: f64,
    corrector_steps: usize,
    corrector_ratio: f64,
) -> Result<fm_core::stochastic::StochasticSampler> {
    let diffusion: fm_core::stochastic::Diffusion = diffusion.parse().context("--diffusion")?;
    let method = fm_solvers::SdeMethod::from_name(sde_solver).context("--sde-solver")?;
    let corrector = (corrector_steps > 0)
        .then_some(fm_core::stochastic::Langevin { steps: corrector_steps, step_ratio: corrector_ratio });
    Ok(fm_core::stochastic::StochasticSampler { diffusion, method, steps, noise_floor, corrector })
}

/// `--sampler ode|sde|langevin` with its flags: `None` for the ODE.
pub fn stochastic_choice(
    a: &crate::cli::StochasticArgs,
    steps: usize,
) -> Result<Option<fm_pipeline::StochasticChoice>> {
    use fm_pipeline::StochasticChoice;
    Ok(match a.sampler.as_str() {
        "sde" => Some(StochasticChoice::Sde(sde_sampler(
            &a.diffusion,
            &a.sde_solver,
            steps,
            a.noise_floor,
            a.corrector_steps,
            a.corrector_ratio,
        )?)),
        "langevin" => {
            Some(StochasticChoice::Langevin { steps, step: a.langevin_step, noise_floor: a.noise_floor })
        }
        _ => None,
    })
}

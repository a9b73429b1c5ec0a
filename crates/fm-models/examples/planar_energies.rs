//! Planar flows trained by reverse KL on Rezende & Mohamed's energies U1–U4.
//!
//! For every energy and every depth K, trains a K-layer planar flow with Adam
//! (batch 256, lr 1e-2) under the annealing `β_t = min(1, 0.01 + t/(steps/2))`
//! and prints, from 20,000 samples, the free energy `F = E_q[log q + U]`
//! before and after training, the share of q's mass inside `[−4, 4]²`, and
//! `F + log Z` with `log Z` on that box. For U1 (normalisable on ℝ²) the last
//! column is `KL(q‖p)`. U2–U4 do not confine `z₁`, so `p` exists only on a
//! box and `F + log Z_box` is a KL only when q's mass lies inside the box; it
//! goes negative when q spreads beyond it. Compare `F` across depths instead.
//!
//! ```text
//! cargo run -p fm-models --example planar_energies -- [steps] [energies, e.g. u1,u3] [depths, e.g. 2,8,32]
//! ```
use anyhow::{bail, Context, Result};
use candle::{DType, Device};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use fm_core::energy::{EnergyBox, TestEnergy};
use fm_core::SeededRng;
use fm_models::flows::{annealed_beta, NormalizingFlow};

/// The free energy `E_q[log q + U]` and the share of samples inside `[−4, 4]²`.
fn free_energy(flow: &NormalizingFlow, energy: TestEnergy, rng: &mut SeededRng) -> Result<(f64, f64)> {
    let (x, log_q) = flow.sample_with_log_prob(20_000, rng)?;
    let f = (log_q + energy.energy(&x)?)?.mean_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let x = x.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let inside = x.iter().filter(|p| p.iter().all(|v| v.abs() <= 4.0)).count() as f64 / x.len() as f64;
    Ok((f, inside))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let steps: usize = match args.first() {
        Some(s) => s.parse().with_context(|| format!("steps must be a positive integer, got `{s}`"))?,
        None => 2000,
    };
    if steps == 0 {
        bail!("steps must be at least 1");
    }
    let energies: Vec<TestEnergy> = match args.get(1) {
        Some(s) => s.split(',').map(|e| e.parse()).collect::<fm_core::Result<_>>()?,
        None => TestEnergy::ALL.to_vec(),
    };
    let depths: Vec<usize> = match args.get(2) {
        Some(s) => s
            .split(',')
            .map(|k| k.trim().parse().with_context(|| format!("depths must be positive integers, got `{k}`")))
            .collect::<Result<_>>()?,
        None => vec![2, 8, 32],
    };
    println!(
        "reverse KL of planar flows, {steps} Adam steps, batch 256; F = E_q[log q + U], log Z on [-4,4]^2"
    );
    println!(
        "{:<6} {:>4} {:>9} {:>9} {:>9} {:>11} {:>8}",
        "energy", "K", "F init", "F final", "in box", "F + log Z", "seconds"
    );
    for &energy in &energies {
        for &k in &depths {
            let start = std::time::Instant::now();
            let mut rng = SeededRng::new(0);
            let (flow, varmap) = NormalizingFlow::planar(2, k, &mut rng, DType::F32, &Device::Cpu)?;
            let (f0, _) = free_energy(&flow, energy, &mut SeededRng::new(99))?;
            let mut opt = AdamW::new(
                varmap.all_vars(),
                ParamsAdamW { lr: 1e-2, weight_decay: 0.0, ..Default::default() },
            )?;
            for step in 0..steps {
                let beta = annealed_beta(step, steps / 2);
                let loss = flow.reverse_kl_loss(|z| energy.energy(z), 256, beta, &mut rng)?;
                opt.backward_step(&loss)?;
            }
            let (f1, inside) = free_energy(&flow, energy, &mut SeededRng::new(99))?;
            let kl = f1 + energy.log_z(EnergyBox::Four);
            let secs = start.elapsed().as_secs_f64();
            println!("{energy:<6} {k:>4} {f0:>9.4} {f1:>9.4} {inside:>9.4} {kl:>11.4} {secs:>8.1}");
        }
    }
    Ok(())
}

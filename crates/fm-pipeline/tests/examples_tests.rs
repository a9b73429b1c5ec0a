//! Runs the crate's examples (their real code, included as modules) at a small
//! size; the Hub example against a loopback Hub (`HF_ENDPOINT`, `HF_HUB_CACHE`).

#[allow(dead_code)]
#[path = "../examples/moons.rs"]
mod moons;

#[allow(dead_code)]
#[path = "../examples/finetune_hub.rs"]
mod finetune_hub;

#[path = "../../fm-data/tests/support/hub_server.rs"]
mod hub_server;

use candle::{Device, Tensor};
use fm_core::metrics::energy_distance;
use fm_core::SeededRng;
use fm_data::Toy2d;

fn temp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("fm-pipeline-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Energy distance of 2,000 samples (data units) to 2,000 fresh moons.
fn energy_to_moons(values: &[f32]) -> anyhow::Result<f64> {
    let moons = Toy2d::Moons { noise: 0.05 }.sample(2000, SeededRng::new(99).rng());
    let a = Tensor::from_vec(values.to_vec(), (values.len() / 2, 2), &Device::Cpu)?;
    let b = Tensor::from_vec(moons, (2000, 2), &Device::Cpu)?;
    Ok(energy_distance(&a, &b)?)
}

#[test]
fn moons_example_trains_reloads_samples_and_scores() -> anyhow::Result<()> {
    let out = temp("moons");
    let r = moons::run(&out, 300)?;
    // 300 steps bring the loss near its floor (≈ 0.94; u = 0 scores ≈ 1.65).
    assert!(r.loss > 0.85 && r.loss < 1.25, "loss {}", r.loss);
    assert_eq!((r.samples.n, r.samples.dim, r.samples.nfe), (2000, 2, 16));
    let e = energy_to_moons(&r.samples.values)?;
    assert!(e < 0.05, "energy distance {e}");
    // After 10,000 steps the model gives the moons ≈ −0.56 nats per point; after 300, ≈ −1.58.
    // N(0, I) gives them ≈ −2.4 (−log 2π − E|x|²/2): the model has learnt the density.
    assert!(r.mean_log_p > -2.0 && r.mean_log_p.is_finite(), "mean log p {}", r.mean_log_p);
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

#[test]
fn finetune_example_starts_from_a_hub_checkpoint() -> anyhow::Result<()> {
    let dir = temp("finetune");
    let base = dir.join("base");
    moons::run(&base, 200)?;
    let mut server = hub_server::HubServer::start()?;
    for f in ["model.safetensors", "config.json"] {
        server.put("me/moons", "main", f, std::fs::read(base.join(f))?, None);
    }
    // The environment the Hub client reads (only this test of the binary uses the Hub).
    std::env::set_var("HF_ENDPOINT", &server.endpoint);
    std::env::set_var("HF_HUB_CACHE", dir.join("hub-cache"));
    std::env::set_var("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1");
    std::env::remove_var("HF_HUB_OFFLINE");
    let r = finetune_hub::run("hf://me/moons", &dir.join("tuned"), 100)?;
    assert!(server.requests().iter().any(|q| q.contains("/me/moons/resolve/main/model.safetensors")));
    assert_eq!((r.init.loaded, r.init.total), (8, 8), "every parameter comes from the Hub checkpoint");
    assert!(r.init.left_initialised.is_empty() && r.init.unexpected.is_empty());
    assert!(r.loss < 1.25, "fine-tuning from trained weights starts near the floor: {}", r.loss);
    let e = energy_to_moons(&r.samples.values)?;
    assert!(e < 0.05, "energy distance {e}");
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

//! Runs the crate's examples (their real code, included as modules) at a small size.

#[allow(dead_code)]
#[path = "../examples/train_moons.rs"]
mod train_moons;

#[test]
fn train_moons_example_learns_the_moons() -> anyhow::Result<()> {
    let r = train_moons::run(true)?;
    // 300 steps already bring the loss near its floor (≈ 0.94; u = 0 scores ≈ 1.65)…
    assert!(r.final_loss > 0.85 && r.final_loss < 1.25, "final loss {}", r.final_loss);
    // …and the samples far closer to the moons than the noise they started from.
    assert!(
        r.energy_samples < 0.2 * r.energy_noise,
        "energy {} vs noise {}",
        r.energy_samples,
        r.energy_noise
    );
    Ok(())
}

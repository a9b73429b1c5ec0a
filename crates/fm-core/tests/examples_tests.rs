//! Runs the crate's examples (their real code, included as modules) at a small size.

#[allow(dead_code)]
#[path = "../examples/two_moons.rs"]
mod two_moons;

#[test]
fn two_moons_example_memorizes_the_training_set() -> anyhow::Result<()> {
    let r = two_moons::run(true)?;
    assert_eq!(r.nfe, 200);
    // û* lands on training points: far closer to them than fresh moons are.
    assert!(
        r.median_nn_samples < 0.1 * r.median_nn_fresh,
        "median NN distance {} vs fresh {}",
        r.median_nn_samples,
        r.median_nn_fresh
    );
    assert!(
        r.energy_train < r.energy_fresh,
        "energy to train {} vs fresh {}",
        r.energy_train,
        r.energy_fresh
    );
    Ok(())
}

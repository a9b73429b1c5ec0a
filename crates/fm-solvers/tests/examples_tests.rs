//! Runs the crate's examples (their real code, included as modules) at a small size.

#[allow(dead_code)]
#[path = "../examples/convergence.rs"]
mod convergence;

#[test]
fn convergence_example_shows_each_methods_order() -> anyhow::Result<()> {
    let r = convergence::run(true)?;
    for (name, order) in r.orders {
        let expected = match name {
            "euler" => 1.0,
            "midpoint" | "heun" => 2.0,
            _ => 4.0,
        };
        assert!((order - expected).abs() < 0.25, "{name}: observed order {order}, expected {expected}");
    }
    // Tighter tolerances: smaller errors, more evaluations.
    for w in r.dopri5.windows(2) {
        assert!(w[1].1 < w[0].1 && w[1].2 > w[0].2, "dopri5 {:?} then {:?}", w[0], w[1]);
    }
    assert!(r.dopri5[2].1 < 1e-7, "dopri5 at 1e-9: error {}", r.dopri5[2].1);
    assert!(r.round_trip_error < 1e-8, "round trip {}", r.round_trip_error);
    Ok(())
}

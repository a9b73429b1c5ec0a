//! Runs the crate's examples (their real code, included as modules) at a small size.

use std::path::Path;

#[allow(dead_code)]
#[path = "../examples/datasets.rs"]
mod datasets;

#[test]
fn datasets_example_samples_standardizes_and_batches() -> anyhow::Result<()> {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    let csv = shared.join("old-faithful/faithful.csv");
    let digits = shared.join("sklearn-digits/digits.csv.gz");
    let r = datasets::run(
        true,
        csv.exists().then_some(csv.as_path()),
        digits.exists().then_some(digits.as_path()),
    )?;
    assert_eq!(r.toys.len(), 6);
    // 8 Gaussians: centred, radius 5 → per-coordinate std ≈ sqrt(25/2 + 0.1) = 3.55.
    let (_, m, s) = r.toys.iter().find(|t| t.0 == "8gaussians").expect("8gaussians");
    assert!(m.iter().all(|v| v.abs() < 0.25) && s.iter().all(|v| (v - 3.55).abs() < 0.1), "{m:?} {s:?}");
    assert!(r.standardized_error < 1e-9 && r.round_trip_error < 1e-9);
    match r.digits_batch {
        Some((dims, lo, hi)) => {
            assert!(dims == [64, 1, 8, 8] && lo >= -1.0 && hi <= 1.0, "{dims:?} [{lo}, {hi}]")
        }
        None => eprintln!("digits not found at {}: batch check skipped", digits.display()),
    }
    Ok(())
}

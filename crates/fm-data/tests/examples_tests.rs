//! Runs the crate's examples (their real code, included as modules) at a small
//! size, on files the test writes: a CSV in Old Faithful's layout (quoted
//! header, row numbers) and 100 digits in sklearn's layout.

#[allow(dead_code)]
#[path = "../examples/datasets.rs"]
mod datasets;

/// Writes the fixtures into a fresh folder; returns (csv, digits).
fn fixtures() -> std::io::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let dir = std::env::temp_dir().join(format!("fm-data-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let csv = dir.join("faithful.csv");
    let rows: String = (1..=40)
        .map(|i| format!("\"{i}\",{:.3},{}\n", 1.6 + 0.09 * (i % 37) as f64, 43 + (i * 7) % 53))
        .collect();
    std::fs::write(&csv, format!("\"\",\"eruptions\",\"waiting\"\n{rows}"))?;
    let digits = dir.join("digits.csv");
    let text: String = (0..100u32)
        .map(|i| {
            let cells: Vec<String> = (0..64u32)
                .map(|j| ((i * 5 + j * 3) % 17).to_string())
                .chain([(i % 10).to_string()])
                .collect();
            cells.join(",") + "\n"
        })
        .collect();
    std::fs::write(&digits, text)?;
    Ok((csv, digits))
}

#[test]
fn datasets_example_samples_standardizes_and_batches() -> anyhow::Result<()> {
    let (csv, digits) = fixtures()?;
    let r = datasets::run(true, Some(&csv), Some(&digits))?;
    assert_eq!(r.toys.len(), 6);
    // 8 Gaussians: centred, radius 5 → per-coordinate std ≈ sqrt(25/2 + 0.1) = 3.55.
    let (_, m, s) = r.toys.iter().find(|t| t.0 == "8gaussians").expect("8gaussians");
    assert!(m.iter().all(|v| v.abs() < 0.25) && s.iter().all(|v| (v - 3.55).abs() < 0.1), "{m:?} {s:?}");
    assert!(r.standardized_error < 1e-9 && r.round_trip_error < 1e-9);
    let (dims, lo, hi) = r.digits_batch.expect("a digits batch");
    assert!(dims == [64, 1, 8, 8] && lo >= -1.0 && hi <= 1.0, "{dims:?} [{lo}, {hi}]");
    // Dequantized: values strictly inside the bins, not only at their centres.
    assert!(lo > -1.0 && hi < 1.0 && hi - lo > 1.5, "[{lo}, {hi}]");
    if let Some(dir) = csv.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}

#[test]
fn datasets_example_runs_on_its_embedded_table() -> anyhow::Result<()> {
    let r = datasets::run(true, None, None)?;
    assert!(r.standardized_error < 1e-9 && r.round_trip_error < 1e-9 && r.digits_batch.is_none());
    Ok(())
}

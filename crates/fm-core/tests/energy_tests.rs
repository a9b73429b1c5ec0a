use fm_core::energy::{EnergyBox, TestEnergy};

/// A midpoint quadrature of `e^{−U}` reproduces the log Z table of docs/reference/flows.md.
#[test]
fn quadrature_reproduces_log_z_table() -> fm_core::Result<()> {
    for (bx, n) in [(EnergyBox::Four, 800), (EnergyBox::Six, 1200)] {
        for e in TestEnergy::ALL {
            let q = e.log_z_quadrature(bx.half_width(), n)?;
            let want = e.log_z(bx);
            eprintln!("{e} {bx:?}: quadrature {q:.5}, table {want}");
            assert!((q - want).abs() < 1e-3, "{e} on {bx:?}: quadrature {q:.5}, table {want}");
        }
    }
    Ok(())
}

#[test]
fn quadrature_rejects_bad_arguments() {
    assert!(TestEnergy::U1.log_z_quadrature(0.0, 10).is_err());
    assert!(TestEnergy::U1.log_z_quadrature(f64::NAN, 10).is_err());
    assert!(TestEnergy::U1.log_z_quadrature(4.0, 0).is_err());
}

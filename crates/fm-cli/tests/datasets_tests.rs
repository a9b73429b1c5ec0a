//! The real datasets load as their READMEs describe them (counts, shapes,
//! ranges): MNIST, Fashion-MNIST, sklearn's digits, Old Faithful and the US
//! airports, from the datasets folder (`FM_DATA_DIR`, see `build.rs`). Without
//! it the test runner lists these tests as ignored.

mod common;

use fm_data::images::{load_digits_csv, load_mnist_dir, Split};
use fm_data::load_csv_columns;

#[test]
#[cfg_attr(not(fm_data), ignore = "needs the datasets: set FM_DATA_DIR (see docs/data.md)")]
fn csv_datasets_load_with_their_columns() -> anyhow::Result<()> {
    let root = common::data_dir();
    let faithful = load_csv_columns(&root.join("old-faithful/faithful.csv"), &[])?;
    assert_eq!(
        (faithful.n, faithful.columns.clone()),
        (272, vec!["eruptions".to_string(), "waiting".into()])
    );
    assert_eq!(faithful.data[..2], [3.6, 79.0]);
    let cols = ["longitude".to_string(), "latitude".to_string()];
    let airports = load_csv_columns(&root.join("us-airports-2d/airports.csv"), &cols)?;
    assert_eq!((airports.n, airports.dim), (3376, 2));
    assert!(airports
        .data
        .chunks_exact(2)
        .all(|p| (-180.0..=180.0).contains(&p[0]) && (-90.0..=90.0).contains(&p[1])));
    Ok(())
}

#[test]
#[cfg_attr(not(fm_data), ignore = "needs the datasets: set FM_DATA_DIR (see docs/data.md)")]
fn image_datasets_load_with_their_labels() -> anyhow::Result<()> {
    let root = common::data_dir();
    let test = load_mnist_dir(&root.join("mnist"), Split::Test)?;
    assert_eq!((test.n, test.height, test.width), (10_000, 28, 28));
    assert_eq!(load_mnist_dir(&root.join("fashion-mnist"), Split::Test)?.n, 10_000);
    let digits = load_digits_csv(&root.join("sklearn-digits/digits.csv.gz"))?;
    assert_eq!(digits.n, 1797);
    assert_eq!(digits.labels.iter().flatten().filter(|&&l| l == 0).count(), 178);
    Ok(())
}

#![no_main]
//! Generic CSV point clouds (with and without named columns): never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let p = std::path::Path::new("fuzz.csv");
    let _ = fm_data::parse_csv_columns(&text, p, &[]);
    let _ = fm_data::parse_csv_columns(&text, p, &["a".to_string(), "b".to_string()]);
});

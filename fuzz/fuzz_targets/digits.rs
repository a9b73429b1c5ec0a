#![no_main]
//! scikit-learn digits CSV: Ok or a typed error, never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = fm_data::images::parse_digits(&text, std::path::Path::new("fuzz.csv"));
});

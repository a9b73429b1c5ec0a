#![no_main]
//! IDX (MNIST) bytes, plain or gzip: Ok or a typed error, never a panic.
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let p = Path::new("fuzz.idx");
    if let Ok(bytes) = fm_data::images::maybe_gunzip(data.to_vec(), p) {
        let _ = fm_data::images::parse_idx(&bytes, p);
    }
});

#![no_main]
//! NumPy `.npy` bytes (as `fm frechet --samples` reads them): Ok or a typed error, never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = fm_data::npy::parse(data, std::path::Path::new("fuzz.npy")) {
        assert_eq!(a.data.len(), a.shape.iter().product::<usize>());
    }
});

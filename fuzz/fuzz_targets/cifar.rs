#![no_main]
//! CIFAR-10 binary batches: Ok or a typed error, never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fm_data::images::parse_cifar10_batch(data, std::path::Path::new("fuzz.bin"));
});

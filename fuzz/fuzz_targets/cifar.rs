#![no_main]
//! CIFAR-10 binary batches: Ok or a typed error, never a panic.
//!
//! Arbitrary bytes almost never form whole 3073-byte records, so each input is
//! also tried cycled out to one or two whole records, which reaches the
//! per-record checks (labels, pixel counts).
use libfuzzer_sys::fuzz_target;

const RECORD: usize = 3073;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("fuzz.bin");
    let _ = fm_data::images::parse_cifar10_batch(data, path);
    if let Some(&first) = data.first() {
        let n = RECORD * (1 + first as usize % 2);
        let whole: Vec<u8> = data.iter().skip(1).chain(std::iter::once(&first)).cycle().take(n).copied().collect();
        let _ = fm_data::images::parse_cifar10_batch(&whole, path);
    }
});

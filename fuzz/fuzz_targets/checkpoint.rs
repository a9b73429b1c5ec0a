#![no_main]
//! Checkpoint weights files (safetensors with the fm configuration in the header),
//! and bare configurations: Ok or a typed error, never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let p = std::path::Path::new("fuzz/model.safetensors");
    let _ = fm_models::checkpoint::parse_weights(data, p, || Ok(String::from_utf8_lossy(data).into_owned()), &candle::Device::Cpu);
    let _ = serde_json::from_slice::<fm_models::checkpoint::CheckpointConfig>(data);
});

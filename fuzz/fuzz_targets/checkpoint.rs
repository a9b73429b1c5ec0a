#![no_main]
//! Checkpoint weights files (safetensors with the fm configuration in the header),
//! and bare configurations: Ok or a typed error, never a panic. A configuration
//! that validates gives a bounded parameter list (`fm_models::limits`).
//! Seeds: valid MLP, planar, RealNVP and U-Net checkpoints, as
//! `crates/fm-models/tests/fuzz_replay_tests.rs` writes them.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let p = std::path::Path::new("fuzz/model.safetensors");
    let _ = fm_models::checkpoint::parse_weights(data, p, || Ok(String::from_utf8_lossy(data).into_owned()), &candle::Device::Cpu);
    if let Ok(c) = serde_json::from_slice::<fm_models::checkpoint::CheckpointConfig>(data) {
        if c.model.validate().is_ok() {
            assert!(c.model.parameter_shapes().len() <= fm_models::limits::MAX_PARAMETER_TENSORS);
        }
    }
});

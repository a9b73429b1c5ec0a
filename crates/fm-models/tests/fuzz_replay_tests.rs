//! A short, deterministic fuzzing replay of the checkpoint parser: mutations of
//! a real weights file (mostly of its header and configuration) give `Ok` or a
//! typed error, never a panic.

use std::path::Path;

use candle::{DType, Device};
use fm_core::SeededRng;
use fm_models::checkpoint::{parse_weights, varmap_tensors, CheckpointConfig};
use fm_models::{MlpConfig, ModelConfig, VelocityMlp};

struct Mix(u64);
impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn checkpoint_parser_never_panics() -> anyhow::Result<()> {
    let cfg = MlpConfig { dim: 2, hidden: vec![4], activation: fm_models::Activation::Elu };
    let (_m, vars) = VelocityMlp::init(&cfg, &mut SeededRng::new(0), DType::F32, &Device::Cpu)?;
    let config = CheckpointConfig::new(ModelConfig::Mlp(cfg));
    let json = serde_json::to_string(&config)?;
    let meta = std::collections::HashMap::from([("fm".to_string(), json.clone())]);
    let tensors = varmap_tensors(&vars)?;
    let bytes = safetensors::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(meta))?;
    let path = Path::new("fuzz/model.safetensors");
    // The valid file parses.
    parse_weights(&bytes, path, || Ok(json.clone()), &Device::Cpu)?;

    let header_len = 8 + u64::from_le_bytes(bytes[..8].try_into()?) as usize;
    let mut rng = Mix(7);
    let mut inputs: Vec<Vec<u8>> = (0..bytes.len()).step_by(7).map(|k| bytes[..k].to_vec()).collect();
    for _ in 0..4000 {
        let mut v = bytes.clone();
        for _ in 0..1 + rng.below(3) {
            // Mostly the header (and its JSON configuration), sometimes anywhere.
            let span = if rng.below(4) == 0 { v.len() } else { header_len.min(v.len()) };
            let i = rng.below(span);
            match rng.below(3) {
                0 => v[i] ^= 1 << rng.below(8),
                1 => v[i] = rng.next() as u8,
                _ => {
                    v.remove(i);
                }
            }
        }
        inputs.push(v);
    }
    for (k, input) in inputs.iter().enumerate() {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = parse_weights(input, path, || Ok("{not json".to_string()), &Device::Cpu);
        }));
        assert!(r.is_ok(), "input #{k} ({} bytes) panicked", input.len());
    }
    // Configurations alone: mutated JSON must fail cleanly.
    for _ in 0..2000 {
        let mut j = json.clone().into_bytes();
        let i = rng.below(j.len());
        j[i] = rng.next() as u8;
        let text = String::from_utf8_lossy(&j).into_owned();
        let _ = serde_json::from_str::<CheckpointConfig>(&text);
    }
    Ok(())
}

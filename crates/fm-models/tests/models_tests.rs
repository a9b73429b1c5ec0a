use std::path::PathBuf;

use candle::{DType, Device, Tensor};
use fm_core::{SeededRng, VelocityField};
use fm_models::checkpoint::{self, varmap_tensors};
use fm_models::{Activation, CheckpointConfig, MlpConfig, ModelConfig, VelocityMlp};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fm-models-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn every_parameter_gets_a_gradient() -> anyhow::Result<()> {
    for act in [Activation::Elu, Activation::Silu, Activation::Selu, Activation::Relu, Activation::Tanh] {
        let cfg = MlpConfig { dim: 3, hidden: vec![16, 8], activation: act };
        let mut rng = SeededRng::new(1);
        let (mlp, varmap) = VelocityMlp::init(&cfg, &mut rng, DType::F64, &Device::Cpu)?;
        let x = rng.normal((7, 3), DType::F64, &Device::Cpu)?;
        let t = rng.uniform(7, 0.0, 1.0, DType::F64, &Device::Cpu)?;
        let loss = mlp.velocity(&x, &t)?.sqr()?.sum_all()?;
        let grads = loss.backward()?;
        for var in varmap.all_vars() {
            let g = grads
                .get(var.as_tensor())
                .ok_or_else(|| anyhow::anyhow!("{act}: a parameter got no gradient"))?;
            let norm = g.sqr()?.sum_all()?.to_scalar::<f64>()?;
            assert!(norm > 0.0 && norm.is_finite(), "{act}: zero or non-finite gradient");
        }
    }
    Ok(())
}

#[test]
fn gradient_matches_finite_differences() -> anyhow::Result<()> {
    let cfg = MlpConfig { dim: 2, hidden: vec![5], activation: Activation::Elu };
    let mut rng = SeededRng::new(2);
    let (mlp, varmap) = VelocityMlp::init(&cfg, &mut rng, DType::F64, &Device::Cpu)?;
    let x = rng.normal((4, 2), DType::F64, &Device::Cpu)?;
    let t = rng.uniform(4, 0.0, 1.0, DType::F64, &Device::Cpu)?;
    let f = |m: &VelocityMlp| -> anyhow::Result<f64> {
        Ok(m.velocity(&x, &t)?.sqr()?.sum_all()?.to_scalar::<f64>()?)
    };
    let grads = mlp.velocity(&x, &t)?.sqr()?.sum_all()?.backward()?;
    let data = varmap.data().lock().map_err(|_| anyhow::anyhow!("lock"))?;
    let w = data.get("net.0.weight").ok_or_else(|| anyhow::anyhow!("no net.0.weight"))?;
    let g = grads.get(w.as_tensor()).ok_or_else(|| anyhow::anyhow!("no grad"))?.to_vec2::<f64>()?;
    let base = w.as_tensor().copy()?;
    let h = 1e-6;
    let mut bumped = base.to_vec2::<f64>()?;
    bumped[1][2] += h;
    w.set(&Tensor::new(bumped, &Device::Cpu)?)?;
    let up = f(&mlp)?;
    w.set(&base)?;
    let down = f(&mlp)?;
    assert!(((up - down) / h - g[1][2]).abs() < 1e-4, "{} vs {}", (up - down) / h, g[1][2]);
    Ok(())
}

#[test]
fn same_seed_same_weights() -> anyhow::Result<()> {
    let cfg = MlpConfig::guide(2);
    let (_, a) = VelocityMlp::init(&cfg, &mut SeededRng::new(9), DType::F32, &Device::Cpu)?;
    let (_, b) = VelocityMlp::init(&cfg, &mut SeededRng::new(9), DType::F32, &Device::Cpu)?;
    for ((na, ta), (nb, tb)) in varmap_tensors(&a)?.iter().zip(varmap_tensors(&b)?.iter()) {
        assert_eq!(na, nb);
        assert_eq!(ta.flatten_all()?.to_vec1::<f32>()?, tb.flatten_all()?.to_vec1::<f32>()?);
    }
    // PyTorch's default bounds: ±1/√fan_in.
    let t = varmap_tensors(&a)?;
    let w1 = &t.iter().find(|(n, _)| n == "net.2.weight").ok_or_else(|| anyhow::anyhow!("net.2"))?.1;
    let max = w1.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(max <= 0.125 && max > 0.12, "{max}");
    Ok(())
}

#[test]
fn checkpoint_round_trip() -> anyhow::Result<()> {
    let dir = temp_dir("roundtrip");
    let cfg = MlpConfig { dim: 2, hidden: vec![8, 8], activation: Activation::Silu };
    let (mlp, varmap) = VelocityMlp::init(&cfg, &mut SeededRng::new(3), DType::F32, &Device::Cpu)?;
    let mut config = CheckpointConfig::new(ModelConfig::Mlp(cfg.clone()));
    config.training = serde_json::json!({"seed": 3, "step": 10});
    checkpoint::save(&dir, &config, &varmap_tensors(&varmap)?)?;
    let loaded = checkpoint::load(&dir, &Device::Cpu)?;
    assert_eq!(loaded.config, config);
    let ModelConfig::Mlp(lc) = &loaded.config.model else { anyhow::bail!("wrong kind") };
    let vb = candle_nn::VarBuilder::from_tensors(loaded.tensors.clone(), DType::F32, &Device::Cpu);
    let mlp2 = VelocityMlp::new(lc, vb)?;
    let x = SeededRng::new(4).normal((6, 2), DType::F32, &Device::Cpu)?;
    let t = Tensor::full(0.3f32, 6, &Device::Cpu)?;
    assert_eq!(mlp.velocity(&x, &t)?.to_vec2::<f32>()?, mlp2.velocity(&x, &t)?.to_vec2::<f32>()?);
    // The same state saved twice gives the same bytes (bit-identical checkpoints).
    let first = std::fs::read(dir.join(checkpoint::WEIGHTS_FILE))?;
    checkpoint::save(&dir, &config, &varmap_tensors(&varmap)?)?;
    assert_eq!(first, std::fs::read(dir.join(checkpoint::WEIGHTS_FILE))?);
    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn checkpoint_errors_are_clear() -> anyhow::Result<()> {
    let dir = temp_dir("errors");
    let err = checkpoint::load(&dir, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("no such directory"), "{err}");
    std::fs::create_dir_all(&dir)?;
    let err = checkpoint::load(&dir, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    std::fs::write(dir.join(checkpoint::WEIGHTS_FILE), b"garbage, not safetensors")?;
    let err = checkpoint::load(&dir, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("not a valid safetensors file"), "{err}");

    // Weights that do not fit the configured model: every problem is named.
    let cfg = MlpConfig { dim: 2, hidden: vec![4], activation: Activation::Elu };
    let config = CheckpointConfig::new(ModelConfig::Mlp(cfg));
    let tensors = vec![
        ("net.0.weight".to_string(), Tensor::zeros((4, 5), DType::F32, &Device::Cpu)?),
        ("net.0.bias".to_string(), Tensor::zeros(4, DType::F32, &Device::Cpu)?),
        ("extra".to_string(), Tensor::zeros(1, DType::F32, &Device::Cpu)?),
    ];
    checkpoint::save(&dir, &config, &tensors)?;
    let err = checkpoint::load(&dir, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("`net.0.weight` has shape [4, 5]"), "{err}");
    assert!(err.contains("missing `net.2.weight`"), "{err}");
    assert!(err.contains("unexpected `extra`"), "{err}");

    // A truncated weights file.
    let good = MlpConfig { dim: 2, hidden: vec![4], activation: Activation::Elu };
    let (_, vm) = VelocityMlp::init(&good, &mut SeededRng::new(0), DType::F32, &Device::Cpu)?;
    checkpoint::save(&dir, &CheckpointConfig::new(ModelConfig::Mlp(good)), &varmap_tensors(&vm)?)?;
    let bytes = std::fs::read(dir.join(checkpoint::WEIGHTS_FILE))?;
    std::fs::write(dir.join(checkpoint::WEIGHTS_FILE), &bytes[..bytes.len() - 10])?;
    let err = checkpoint::load(&dir, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("not a valid safetensors file"), "{err}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn wrong_input_dimension_is_an_error() -> anyhow::Result<()> {
    let (mlp, _) = VelocityMlp::init(&MlpConfig::guide(2), &mut SeededRng::new(0), DType::F32, &Device::Cpu)?;
    let x = Tensor::zeros((3, 5), DType::F32, &Device::Cpu)?;
    let t = Tensor::zeros(3, DType::F32, &Device::Cpu)?;
    let err = mlp.velocity(&x, &t).unwrap_err().to_string();
    assert!(err.contains("2-dimensional") && err.contains("(3, 5)"), "{err}");
    Ok(())
}

#[test]
fn invalid_configs_are_rejected() {
    let bad = MlpConfig { dim: 2, hidden: vec![], activation: Activation::Elu };
    assert!(VelocityMlp::init(&bad, &mut SeededRng::new(0), DType::F32, &Device::Cpu).is_err());
    let bad = MlpConfig { dim: 0, hidden: vec![4], activation: Activation::Elu };
    assert!(VelocityMlp::init(&bad, &mut SeededRng::new(0), DType::F32, &Device::Cpu).is_err());
}

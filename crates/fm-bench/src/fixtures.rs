//! Deterministic weights and points, computed by the same closed formulas in
//! `xtask/python/peer.py`, so that fm and PyTorch run on identical inputs
//! (which matters for adaptive solvers, whose NFE depends on the field).

use std::collections::HashMap;

use candle::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use fm_data::images::ImageSet;
use fm_models::checkpoint::{varmap_tensors, Checkpoint, CheckpointConfig};
use fm_models::{Activation, MlpConfig, ModelConfig, VelocityMlp};
use fm_pipeline::{Run, RunConfig, RunRecord, RunSettings, Trained, TrainingData};

use crate::Result;

/// The benchmark MLP: `3 → 256 → 256 → 256 → 2`, SiLU.
pub fn bench_mlp_config() -> MlpConfig {
    MlpConfig { dim: 2, hidden: vec![256, 256, 256], activation: Activation::Silu }
}

/// Weight `(out, inp)` of layer `k`: `w[i][j] = sin(0.7 (i·inp + j) + 1.3 k + 0.1) / √inp`.
pub fn weight_values(k: usize, out: usize, inp: usize) -> Vec<f32> {
    let bound = 1.0 / (inp as f64).sqrt();
    (0..out * inp).map(|n| (bound * (0.7 * n as f64 + 1.3 * k as f64 + 0.1).sin()) as f32).collect()
}

/// Bias `(out,)` of layer `k`: `b[i] = cos(0.3 i + k) / √inp`.
pub fn bias_values(k: usize, out: usize, inp: usize) -> Vec<f32> {
    let bound = 1.0 / (inp as f64).sqrt();
    (0..out).map(|i| (bound * (0.3 * i as f64 + k as f64).cos()) as f32).collect()
}

/// Points `(n, d)`: `x[i][j] = 1.5 sin(1.7 (i·d + j) + 0.5)`.
///
/// # Shapes
/// - returns `(n, d)`, f32
pub fn points(n: usize, d: usize, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..n * d).map(|m| (1.5 * (1.7 * m as f64 + 0.5).sin()) as f32).collect();
    Ok(Tensor::from_vec(v, (n, d), device)?)
}

/// The MLP of `config` with the deterministic weights above, as trainable
/// variables, and the map holding them.
pub fn deterministic_mlp(config: &MlpConfig, device: &Device) -> Result<(VelocityMlp, VarMap)> {
    let varmap = VarMap::new();
    let shapes = config.parameter_shapes();
    for (k, pair) in shapes.chunks_exact(2).enumerate() {
        let (wn, ws) = &pair[0];
        let (bn, _) = &pair[1];
        let (out, inp) = (ws[0], ws[1]);
        let w = Tensor::from_vec(weight_values(k, out, inp), (out, inp), device)?;
        let b = Tensor::from_vec(bias_values(k, out, inp), out, device)?;
        let mut data = varmap
            .data()
            .lock()
            .map_err(|_| crate::Error::Request("the variable map's lock is poisoned".into()))?;
        data.insert(wn.clone(), Var::from_tensor(&w)?);
        data.insert(bn.clone(), Var::from_tensor(&b)?);
    }
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    Ok((VelocityMlp::new(config, vb)?, varmap))
}

/// The deterministic weights of [`bench_mlp_config`] by name.
pub fn deterministic_weights(device: &Device) -> Result<HashMap<String, Tensor>> {
    let (_, varmap) = deterministic_mlp(&bench_mlp_config(), device)?;
    Ok(varmap_tensors(&varmap)?.into_iter().collect())
}

/// `n` fixed [`points`] of dimension `d` as a run's data.
pub fn points_data(n: usize, d: usize) -> Result<TrainingData> {
    let v = points(n, d, &Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(TrainingData::from_points("points", v, d)?)
}

/// `n` deterministic `1×28×28` 8-bit "images" (training and test split alike).
pub fn bench_images(n: usize) -> Result<TrainingData> {
    let pixels: Vec<u8> =
        (0..n * 784).map(|m| (127.5 + 120.0 * (1.7 * m as f64 + 0.5).sin()) as u8).collect();
    let set = ImageSet {
        pixels,
        labels: None,
        n,
        channels: 1,
        height: 28,
        width: 28,
        levels: 256,
        source: "bench images".into(),
    };
    Ok(TrainingData::from_images(set.clone(), set, 0)?)
}

/// A run of `config` on `data` as `fm train` makes it (nothing is written);
/// with `mlp_weights` the benchmark MLP's deterministic weights replace the fresh ones.
pub fn bench_run(config: &RunConfig, data: TrainingData, mlp_weights: bool) -> Result<Run> {
    let settings = RunSettings::resolve(config)?;
    let model = settings.family.configure(&settings, &data)?;
    let mut run = Run::with_data(settings, data, model, &Device::Cpu)?;
    if mlp_weights {
        run.load_weights(&deterministic_weights(&Device::Cpu)?)?;
    }
    Ok(run)
}

/// The benchmark MLP with its deterministic weights, as `fm sample` and `fm
/// likelihood` load a checkpoint (velocity parametrization, N(0, I) source).
pub fn bench_trained_mlp() -> Result<Trained> {
    let mut config = CheckpointConfig::new(ModelConfig::Mlp(bench_mlp_config()));
    let record = RunRecord { data: "points".into(), objective: "cfm".into(), ..RunRecord::default() };
    config.training = serde_json::to_value(record).map_err(|e| crate::Error::Request(e.to_string()))?;
    let ckpt = Checkpoint { dir: "bench".into(), config, tensors: deterministic_weights(&Device::Cpu)? };
    Ok(Trained::from_checkpoint(ckpt, &Device::Cpu)?)
}

/// The MNIST U-Net of the training workload (`fm train --model unet` on
/// 1×28×28 images: torchcfm's MNIST layout) with its fresh initialisation
/// from seed 0, loaded as `fm sample` loads a checkpoint. Sampling speed does
/// not depend on the weights; `cargo xtask parity` checks fm's and torchcfm's
/// outputs agree on the same weights.
pub fn bench_trained_unet() -> Result<Trained> {
    let config =
        RunConfig { model: Some("unet".into()), data: Some("images".into()), ..RunConfig::default() };
    let settings = RunSettings::resolve(&config)?;
    let model = settings.family.configure(&settings, &bench_images(2)?)?;
    let mut rng = fm_core::SeededRng::for_stream(0, "init");
    let (_, varmap) = fm_models::VelocityNet::init(&model, &mut rng, DType::F32, &Device::Cpu)?;
    let tensors: HashMap<String, Tensor> = varmap_tensors(&varmap)?.into_iter().collect();
    let mut config = CheckpointConfig::new(model);
    let record = RunRecord { data: "images".into(), objective: "cfm".into(), ..RunRecord::default() };
    config.training = serde_json::to_value(record).map_err(|e| crate::Error::Request(e.to_string()))?;
    let ckpt = Checkpoint { dir: "bench-unet".into(), config, tensors };
    Ok(Trained::from_checkpoint(ckpt, &Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_match_the_python_side() -> Result<()> {
        // Values printed by xtask/python/peer.py's formulas (float64 → float32).
        let w = weight_values(1, 2, 4);
        assert!((w[5] - ((0.5 * (0.7 * 5.0 + 1.3 + 0.1f64).sin()) as f32)).abs() < 1e-7);
        let x = points(3, 2, &Device::Cpu)?.to_vec2::<f32>()?;
        assert!((x[1][1] - (1.5 * (1.7 * 3.0 + 0.5f64).sin()) as f32).abs() < 1e-7);
        let (mlp, varmap) = deterministic_mlp(&bench_mlp_config(), &Device::Cpu)?;
        assert_eq!(varmap.all_vars().len(), 8);
        assert_eq!(mlp.config().hidden, vec![256, 256, 256]);
        Ok(())
    }
}

//! The U-Net: gradients reach every parameter, odd shapes work, checkpoints
//! round-trip, the same seed gives the same network, guidance is the formula.

use std::cell::RefCell;

use candle::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use fm_core::{SeededRng, VelocityField};
use fm_models::checkpoint::{self, varmap_tensors};
use fm_models::unet::{ClassifierFreeGuidance, UNet, UNetConfig};
use fm_models::{CheckpointConfig, ModelConfig, VelocityNet};

const DEV: Device = Device::Cpu;

fn tiny(c: usize, h: usize, w: usize) -> anyhow::Result<UNetConfig> {
    Ok(UNetConfig::preset("tiny", c, h, w)?)
}

fn inputs(b: usize, c: &UNetConfig, rng: &mut SeededRng) -> anyhow::Result<(Tensor, Tensor)> {
    let x = rng.normal((b, c.in_channels, c.height, c.width), DType::F32, &DEV)?;
    let t = rng.uniform(b, 0.0, 1.0, DType::F32, &DEV)?;
    Ok((x, t))
}

/// Replaces every weight by a random draw (the zero-initialised convolutions
/// would otherwise block the gradient of everything before them).
fn randomize(varmap: &candle_nn::VarMap, rng: &mut SeededRng) -> anyhow::Result<()> {
    for var in varmap.all_vars() {
        var.set(&(rng.normal(var.shape(), DType::F32, &DEV)? * 0.2)?)?;
    }
    Ok(())
}

#[test]
fn every_parameter_gets_a_gradient() -> anyhow::Result<()> {
    // Class-conditional, with dropout and attention at two levels.
    let config = UNetConfig {
        num_classes: Some(3),
        dropout: 0.1,
        attention_ds: vec![1, 2],
        num_heads: 2,
        ..tiny(2, 8, 8)?
    };
    let mut rng = SeededRng::new(1);
    let (net, varmap) = UNet::init(&config, &mut rng, DType::F32, &DEV)?;
    randomize(&varmap, &mut rng)?;
    let (x, t) = inputs(4, &config, &mut rng)?;
    let labels = Tensor::new(&[0u32, 1, 2, 3], &DEV)?; // 3 is the null class
    let drop = RefCell::new(SeededRng::new(2));
    let loss = net.forward(&x, &t, Some(&labels), Some(&drop))?.sqr()?.sum_all()?;
    let grads = loss.backward()?;
    let names: Vec<(String, Tensor)> = varmap_tensors(&varmap)?;
    assert_eq!(names.len(), config.parameter_shapes().len());
    for (name, tensor) in &names {
        let g = grads.get(tensor).ok_or_else(|| anyhow::anyhow!("`{name}` got no gradient"))?;
        let norm = g.sqr()?.sum_all()?.to_scalar::<f32>()?;
        assert!(norm > 0.0 && norm.is_finite(), "`{name}`: gradient norm {norm}");
    }
    Ok(())
}

#[test]
fn odd_shapes_come_back_unchanged() -> anyhow::Result<()> {
    let mut rng = SeededRng::new(3);
    let cases = [
        // MNIST-sized with three downsamplings: 28 → 14 → 7 → 4 and back (4 → 8, cropped to 7).
        UNetConfig { channel_mult: vec![1, 2, 2, 2], ..tiny(1, 28, 28)? },
        // sklearn digits, 8×8.
        tiny(1, 8, 8)?,
        // Non-square, odd, three channels.
        UNetConfig { channel_mult: vec![1, 1, 2], ..tiny(3, 5, 9)? },
    ];
    for c in cases {
        let (net, _) = UNet::init(&c, &mut rng, DType::F32, &DEV)?;
        let (x, t) = inputs(2, &c, &mut rng)?;
        let u = net.velocity(&x, &t)?;
        assert_eq!(u.dims(), x.dims(), "{c:?}");
        // Flattened rows work too and give the same numbers.
        let flat = net.velocity(&x.flatten_from(1)?, &t)?;
        assert_eq!(flat.dims(), &[2, c.dim()]);
        assert_eq!(flat.flatten_all()?.to_vec1::<f32>()?, u.flatten_all()?.to_vec1::<f32>()?);
    }
    // A wrong size is an error naming the expected shape, not a panic.
    let c = tiny(1, 8, 8)?;
    let (net, _) = UNet::init(&c, &mut rng, DType::F32, &DEV)?;
    let bad = Tensor::zeros((2, 63), DType::F32, &DEV)?;
    let e = net.velocity(&bad, &Tensor::zeros(2, DType::F32, &DEV)?).err().map(|e| e.to_string());
    assert!(e.unwrap_or_default().contains("1×8×8"));
    Ok(())
}

#[test]
fn checkpoint_round_trip_gives_the_same_field() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("fm-unet-roundtrip-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = UNetConfig { num_classes: Some(2), ..tiny(1, 8, 8)? };
    let mut rng = SeededRng::new(4);
    let (net, varmap) = UNet::init(&config, &mut rng, DType::F32, &DEV)?;
    randomize(&varmap, &mut rng)?;
    let model = ModelConfig::UNet(config.clone());
    checkpoint::save(&dir, &CheckpointConfig::new(model.clone()), &varmap_tensors(&varmap)?)?;
    let loaded = checkpoint::load(&dir, &DEV)?;
    assert_eq!(loaded.config.model, model);
    let vb = VarBuilder::from_tensors(loaded.tensors, DType::F32, &DEV);
    let back = VelocityNet::new(&loaded.config.model, vb)?;
    let (x, t) = inputs(3, &config, &mut rng)?;
    let a = net.velocity(&x, &t)?.flatten_all()?.to_vec1::<f32>()?;
    let b = back.velocity(&x, &t)?.flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(a, b);
    // The JSON names the kind, so `fm sample` builds the right network.
    let json = std::fs::read_to_string(dir.join(checkpoint::CONFIG_FILE))?;
    assert!(json.contains("\"kind\": \"u-net\""), "{json}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn same_seed_same_network_and_dropout_is_seeded() -> anyhow::Result<()> {
    let config = UNetConfig { dropout: 0.3, ..tiny(1, 8, 8)? };
    let (a, va) = UNet::init(&config, &mut SeededRng::new(5), DType::F32, &DEV)?;
    let (_, vb) = UNet::init(&config, &mut SeededRng::new(5), DType::F32, &DEV)?;
    for ((na, ta), (nb, tb)) in varmap_tensors(&va)?.iter().zip(varmap_tensors(&vb)?.iter()) {
        assert_eq!(na, nb);
        assert_eq!(ta.flatten_all()?.to_vec1::<f32>()?, tb.flatten_all()?.to_vec1::<f32>()?);
    }
    randomize(&va, &mut SeededRng::new(6))?;
    let (x, t) = inputs(2, &config, &mut SeededRng::new(7))?;
    let run = |seed: Option<u64>| -> anyhow::Result<Vec<f32>> {
        let rng = seed.map(|s| RefCell::new(SeededRng::new(s)));
        Ok(a.forward(&x, &t, None, rng.as_ref())?.flatten_all()?.to_vec1::<f32>()?)
    };
    assert_eq!(run(Some(1))?, run(Some(1))?);
    assert_ne!(run(Some(1))?, run(Some(2))?);
    // Without a dropout stream the network evaluates deterministically.
    assert_eq!(run(None)?, run(None)?);
    assert_ne!(run(None)?, run(Some(1))?);
    Ok(())
}

#[test]
fn classifier_free_guidance_is_the_formula() -> anyhow::Result<()> {
    let config = UNetConfig { num_classes: Some(4), ..tiny(1, 8, 8)? };
    let mut rng = SeededRng::new(8);
    let (net, varmap) = UNet::init(&config, &mut rng, DType::F32, &DEV)?;
    randomize(&varmap, &mut rng)?;
    let (x, t) = inputs(3, &config, &mut rng)?;
    let y = Tensor::new(&[0u32, 2, 3], &DEV)?;
    let cond = net.forward(&x, &t, Some(&y), None)?;
    let uncond = net.velocity(&x, &t)?; // the null class
    let w = 1.5;
    let guided = ClassifierFreeGuidance { net: &net, labels: &y, scale: w }.velocity(&x, &t)?;
    let want = ((&cond * (1.0 + w))? - (&uncond * w)?)?;
    let diff = (guided - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(diff < 1e-5, "{diff}");
    let plain = ClassifierFreeGuidance { net: &net, labels: &y, scale: 0.0 }.velocity(&x, &t)?;
    assert_eq!(plain.flatten_all()?.to_vec1::<f32>()?, cond.flatten_all()?.to_vec1::<f32>()?);
    // Labels differ → velocities differ; a label beyond ∅ is an error.
    let other = net.forward(&x, &t, Some(&Tensor::new(&[1u32, 2, 3], &DEV)?), None)?;
    assert_ne!(other.flatten_all()?.to_vec1::<f32>()?, cond.flatten_all()?.to_vec1::<f32>()?);
    assert!(net.forward(&x, &t, Some(&Tensor::new(&[5u32, 0, 0], &DEV)?), None).is_err());
    Ok(())
}

/// A few Adam steps of flow matching on a fixed batch lower the loss.
#[test]
fn a_few_steps_lower_the_loss() -> anyhow::Result<()> {
    use fm_core::loss::{cfm_loss, draw_source_and_time};
    use fm_core::path::AffinePath;
    use fm_core::scheduler::CondOtScheduler;
    use fm_models::optim::{Adam, AdamParams};
    let config = tiny(1, 8, 8)?;
    let mut rng = SeededRng::new(9);
    let (net, varmap) = UNet::init(&config, &mut rng, DType::F32, &DEV)?;
    let mut opt = Adam::new(&varmap, AdamParams::with_lr(3e-3))?;
    let signs = rng.uniform((16, 64), -1.0, 1.0, DType::F32, &DEV)?.ge(0.0)?.to_dtype(DType::F32)?;
    let x1 = signs.affine(2.0, -1.0)?;
    let path = AffinePath::new(CondOtScheduler);
    let (x0, t) = draw_source_and_time(&x1, &mut rng)?;
    let first = cfm_loss(&net, &path, &x0, &x1, &t)?.to_scalar::<f32>()?;
    for _ in 0..30 {
        opt.backward_step(&cfm_loss(&net, &path, &x0, &x1, &t)?)?;
    }
    let last = cfm_loss(&net, &path, &x0, &x1, &t)?.to_scalar::<f32>()?;
    assert!(last < 0.8 * first, "{first} → {last}");
    Ok(())
}

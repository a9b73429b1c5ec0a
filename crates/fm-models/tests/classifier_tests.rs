//! Tests of the image classifier whose features the Fréchet distance uses.

use std::path::PathBuf;

use candle::{DType, Device, Tensor};
use fm_core::SeededRng;
use fm_models::checkpoint::varmap_tensors;
use fm_models::classifier::{ClassifierConfig, ImageClassifier, CLASSIFIER_WEIGHTS_FILE};
use fm_models::optim::{Adam, AdamParams};
use fm_models::Error;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fm-classifier-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn tiny() -> ClassifierConfig {
    ClassifierConfig { channels: 1, height: 10, width: 10, conv: vec![4, 6], features: 8, classes: 3 }
}

#[test]
fn mnist_network_has_the_stated_shape() -> anyhow::Result<()> {
    let cfg = ClassifierConfig::mnist();
    assert_eq!(cfg.pooled_size(), (7, 7));
    // conv 1→32 (320), conv 32→64 (18 496), fc 3136→128 (401 536), head 128→10 (1290).
    assert_eq!(cfg.num_parameters(), 320 + 18_496 + 401_536 + 1290);
    let (net, _) = ImageClassifier::init(&cfg, &mut SeededRng::new(0), DType::F32, &Device::Cpu)?;
    let x = Tensor::zeros((2, 1, 28, 28), DType::F32, &Device::Cpu)?;
    assert_eq!(net.features(&x)?.dims(), &[2, 128]);
    assert_eq!(net.logits(&x.flatten_from(1)?)?.dims(), &[2, 10]);
    Ok(())
}

#[test]
fn convolution_matches_candle_conv2d() -> anyhow::Result<()> {
    // The im2col convolution against candle's conv2d (padding 1), through the first block.
    let cfg = ClassifierConfig { channels: 2, height: 6, width: 5, conv: vec![3], features: 4, classes: 2 };
    let mut rng = SeededRng::new(7);
    let (net, varmap) = ImageClassifier::init(&cfg, &mut rng, DType::F64, &Device::Cpu)?;
    let x = rng.uniform((2, 2, 6, 5), -1.0, 1.0, DType::F64, &Device::Cpu)?;
    let t: std::collections::HashMap<String, Tensor> = varmap_tensors(&varmap)?.into_iter().collect();
    let (w, b) = (&t["conv.0.weight"], &t["conv.0.bias"]);
    let h = x.conv2d(w, 1, 1, 1, 1)?.broadcast_add(&b.reshape((1, 3, 1, 1))?)?.relu()?.max_pool2d(2)?;
    let want = h
        .flatten_from(1)?
        .matmul(&t["fc.weight"].t()?)?
        .broadcast_add(&t["fc.bias"])?
        .relu()?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let got = net.features(&x)?.flatten_all()?.to_vec1::<f64>()?;
    assert_eq!(got.len(), 8);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
    }
    Ok(())
}

#[test]
fn every_parameter_gets_a_gradient() -> anyhow::Result<()> {
    let mut rng = SeededRng::new(1);
    let (net, varmap) = ImageClassifier::init(&tiny(), &mut rng, DType::F64, &Device::Cpu)?;
    let x = rng.uniform((6, 1, 10, 10), -1.0, 1.0, DType::F64, &Device::Cpu)?;
    let labels = Tensor::new(&[0u32, 1, 2, 0, 1, 2], &Device::Cpu)?;
    let grads = net.loss(&x, &labels)?.backward()?;
    let vars = varmap_tensors(&varmap)?;
    assert_eq!(vars.len(), tiny().parameter_shapes().len());
    for (name, t) in vars {
        let g = grads.get(&t).ok_or_else(|| anyhow::anyhow!("`{name}` got no gradient"))?;
        let norm = g.sqr()?.sum_all()?.to_scalar::<f64>()?;
        assert!(norm > 0.0 && norm.is_finite(), "`{name}`: gradient norm {norm}");
    }
    Ok(())
}

#[test]
fn loss_is_the_cross_entropy_of_the_logits() -> anyhow::Result<()> {
    let mut rng = SeededRng::new(2);
    let (net, _) = ImageClassifier::init(&tiny(), &mut rng, DType::F64, &Device::Cpu)?;
    let x = rng.uniform((4, 100), -1.0, 1.0, DType::F64, &Device::Cpu)?;
    let labels = [2u32, 0, 1, 1];
    let logits = net.logits(&x)?.to_vec2::<f64>()?;
    let want: f64 = logits
        .iter()
        .zip(labels)
        .map(|(row, y)| {
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            lse - row[y as usize]
        })
        .sum::<f64>()
        / 4.0;
    let got = net.loss(&x, &Tensor::new(&labels, &Device::Cpu)?)?.to_scalar::<f64>()?;
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    Ok(())
}

#[test]
fn learns_a_separable_toy_problem() -> anyhow::Result<()> {
    // Class k: a bright 3×3 square in one of three fixed places, plus noise.
    let dev = Device::Cpu;
    let mut rng = SeededRng::new(3);
    let n = 60;
    let mut pixels = vec![-1.0f32; n * 100];
    let mut labels = Vec::with_capacity(n);
    let noise = rng.uniform_vec(n * 100, -0.3, 0.3);
    for i in 0..n {
        let k = i % 3;
        labels.push(k as u32);
        let (r0, c0) = [(1, 1), (1, 6), (6, 3)][k];
        for r in r0..r0 + 3 {
            for c in c0..c0 + 3 {
                pixels[i * 100 + r * 10 + c] = 1.0;
            }
        }
        for (p, e) in pixels[i * 100..(i + 1) * 100].iter_mut().zip(&noise[i * 100..]) {
            *p += *e as f32;
        }
    }
    let x = Tensor::from_vec(pixels, (n, 100), &dev)?;
    let y = Tensor::new(labels.as_slice(), &dev)?;
    let (net, varmap) = ImageClassifier::init(&tiny(), &mut rng, DType::F32, &dev)?;
    let mut opt = Adam::new(&varmap, AdamParams::with_lr(1e-2))?;
    for _ in 0..60 {
        opt.backward_step(&net.loss(&x, &y)?)?;
    }
    let correct = net.predict(&x)?.iter().zip(&labels).filter(|(a, b)| a == b).count();
    assert_eq!(correct, n, "{correct}/{n} after training");
    Ok(())
}

#[test]
fn save_load_round_trip() -> anyhow::Result<()> {
    let dir = temp_dir("roundtrip");
    let mut rng = SeededRng::new(4);
    let (net, varmap) = ImageClassifier::init(&tiny(), &mut rng, DType::F32, &Device::Cpu)?;
    let record = serde_json::json!({ "test_accuracy": 0.5 });
    net.save(&dir, &varmap, &record)?;
    let loaded = ImageClassifier::load(&dir, &Device::Cpu)?;
    assert_eq!(loaded.model.config(), &tiny());
    assert_eq!(loaded.training, record);
    assert_eq!(loaded.bytes, std::fs::read(dir.join(CLASSIFIER_WEIGHTS_FILE))?);
    let x = rng.uniform((3, 1, 10, 10), -1.0, 1.0, DType::F32, &Device::Cpu)?;
    let a = net.features(&x)?.flatten_all()?.to_vec1::<f32>()?;
    let b = loaded.model.features(&x)?.flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(a, b);
    // Saving the same weights again gives the same bytes (a stable checksum).
    net.save(&dir, &varmap, &record)?;
    assert_eq!(loaded.bytes, std::fs::read(dir.join(CLASSIFIER_WEIGHTS_FILE))?);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn bad_files_and_shapes_give_clear_errors() -> anyhow::Result<()> {
    let dir = temp_dir("bad");
    let e = ImageClassifier::load(&dir, &Device::Cpu).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("no such directory"), "{e}");
    std::fs::create_dir_all(&dir)?;
    let e = ImageClassifier::load(&dir, &Device::Cpu).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains(CLASSIFIER_WEIGHTS_FILE), "{e}");
    std::fs::write(dir.join(CLASSIFIER_WEIGHTS_FILE), b"not safetensors")?;
    let e = ImageClassifier::load(&dir, &Device::Cpu).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("not a valid safetensors"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);

    let bad = ClassifierConfig { conv: vec![4, 4, 4, 4], ..tiny() }; // 10 → 0 pixels
    assert!(matches!(bad.validate(), Err(Error::Config { field: "conv", .. })));
    let (net, _) = ImageClassifier::init(&tiny(), &mut SeededRng::new(5), DType::F32, &Device::Cpu)?;
    let wrong = Tensor::zeros((2, 99), DType::F32, &Device::Cpu)?;
    assert!(matches!(net.features(&wrong), Err(Error::Shape(_))));
    Ok(())
}

/// Oversized sizes are configuration errors naming the field (checked
/// without overflow), and a classifier file whose header carries such a
/// configuration fails to load with that error instead of building anything.
#[test]
fn oversized_configurations_are_rejected_by_name() -> anyhow::Result<()> {
    let field = |c: ClassifierConfig| match c.validate() {
        Err(Error::Config { field, .. }) => field,
        _ => "(valid)",
    };
    assert_eq!(field(ClassifierConfig::mnist()), "(valid)");
    assert_eq!(field(ClassifierConfig { channels: usize::MAX, ..tiny() }), "channels");
    assert_eq!(field(ClassifierConfig { height: 1 << 40, width: 1 << 40, ..tiny() }), "channels");
    assert_eq!(field(ClassifierConfig { conv: vec![usize::MAX, 4], ..tiny() }), "conv");
    assert_eq!(field(ClassifierConfig { conv: vec![1 << 20, 1 << 20], ..tiny() }), "conv");
    assert_eq!(field(ClassifierConfig { features: 1 << 40, ..tiny() }), "features");
    assert_eq!(field(ClassifierConfig { classes: usize::MAX, ..tiny() }), "classes");

    let dir = temp_dir("crafted");
    let (net, varmap) = ImageClassifier::init(&tiny(), &mut SeededRng::new(6), DType::F32, &Device::Cpu)?;
    net.save(&dir, &varmap, &serde_json::Value::Null)?;
    let file = dir.join(CLASSIFIER_WEIGHTS_FILE);
    let bytes = std::fs::read(&file)?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)?;
    let mut meta = header.metadata().clone().unwrap_or_default();
    let key = fm_models::classifier::CLASSIFIER_METADATA_KEY;
    let mut json: serde_json::Value =
        serde_json::from_str(meta.get(key).map(String::as_str).unwrap_or("{}"))?;
    json["config"]["features"] = serde_json::json!(1u64 << 40);
    meta.insert(key.to_string(), json.to_string());
    let tensors = candle::safetensors::load_buffer(&bytes, &Device::Cpu)?;
    std::fs::write(&file, safetensors::serialize(tensors.iter(), Some(meta))?)?;
    let err = ImageClassifier::load(&dir, &Device::Cpu).err();
    assert!(matches!(err, Some(Error::Config { field: "features", .. })), "{err:?}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

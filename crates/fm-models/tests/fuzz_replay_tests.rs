//! A short, deterministic fuzzing replay of the checkpoint parser, from a valid
//! checkpoint of every kind (MLP, planar, RealNVP, U-Net, class-conditional
//! U-Net): mutations of the weights file (mostly of its header and
//! configuration) and of the configuration itself (hostile values of every
//! field, written into the safetensors metadata and into `config.json`) give
//! `Ok` or a typed error, never a panic; whatever parses also builds and runs.
//! (`fuzz/fuzz_targets/checkpoint.rs` is the cargo-fuzz target for long runs.)

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use candle::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use fm_core::SeededRng;
use fm_models::checkpoint::{
    self, parse_weights, varmap_tensors, CheckpointConfig, CONFIG_FILE, WEIGHTS_FILE,
};
use fm_models::flows::{CouplingMask, NormalizingFlow, PlanarConfig, RealNvpConfig};
use fm_models::unet::UNetConfig;
use fm_models::{Activation, Error, MlpConfig, ModelConfig, VelocityNet};
use serde_json::{json, Value};

/// A tiny deterministic generator (SplitMix64), so the replay is the same everywhere.
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

const PATH: &str = "fuzz/model.safetensors";

/// A valid checkpoint: its configuration and freshly initialised weights.
struct Seed {
    name: &'static str,
    config: CheckpointConfig,
    tensors: Vec<(String, Tensor)>,
}

impl Seed {
    fn new(name: &'static str, model: ModelConfig) -> anyhow::Result<Self> {
        let (rng, dev) = (&mut SeededRng::new(0), &Device::Cpu);
        let vars = match &model {
            ModelConfig::Planar(_) | ModelConfig::RealNvp(_) => {
                NormalizingFlow::init(&model, rng, DType::F32, dev)?.1
            }
            _ => VelocityNet::init(&model, rng, DType::F32, dev)?.1,
        };
        Ok(Self { name, tensors: varmap_tensors(&vars)?, config: CheckpointConfig::new(model) })
    }

    fn json(&self) -> anyhow::Result<String> {
        Ok(serde_json::to_string(&self.config)?)
    }

    /// The weights file, with `config` in its header (none: `config.json` must supply it).
    fn weights(&self, config: Option<&str>) -> anyhow::Result<Vec<u8>> {
        let meta = config.map(|j| HashMap::from([(checkpoint::METADATA_KEY.to_string(), j.to_string())]));
        Ok(safetensors::serialize(self.tensors.iter().map(|(k, t)| (k.as_str(), t)), meta)?)
    }
}

/// The valid checkpoints every replay starts from.
fn seeds() -> anyhow::Result<Vec<Seed>> {
    let realnvp = RealNvpConfig {
        actnorm: true,
        logit: Some(0.05),
        mask: CouplingMask::Checkerboard { height: 2, width: 2 },
        ..RealNvpConfig::new(8, 2, &[8])
    };
    let unet = UNetConfig::preset("tiny", 1, 8, 8)?;
    Ok(vec![
        Seed::new(
            "mlp",
            ModelConfig::Mlp(MlpConfig { dim: 2, hidden: vec![4], activation: Activation::Elu }),
        )?,
        Seed::new("planar", ModelConfig::Planar(PlanarConfig { dim: 2, layers: 2 }))?,
        Seed::new("real-nvp", ModelConfig::RealNvp(RealNvpConfig::new(4, 2, &[8])))?,
        Seed::new("real-nvp-checkerboard", ModelConfig::RealNvp(realnvp))?,
        Seed::new("u-net", ModelConfig::UNet(unet.clone()))?,
        Seed::new(
            "u-net-classes",
            ModelConfig::UNet(UNetConfig { num_classes: Some(3), dropout: 0.1, ..unet }),
        )?,
    ])
}

/// What a parsed checkpoint is for: build its model from its tensors and run
/// it on a small batch (skipped for images of more than 1024 values, which a
/// mutated height or width can make expensive but not wrong). Errors are fine;
/// panics are not (the caller catches them).
fn exercise(config: &CheckpointConfig, tensors: HashMap<String, Tensor>) {
    let dev = Device::Cpu;
    let model = &config.model;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
    let run = model.dim() <= 1024;
    let Ok(x) = Tensor::ones((2, model.dim().min(1024)), DType::F32, &dev) else { return };
    let Ok(t) = Tensor::full(0.5f32, 2, &dev) else { return };
    match model {
        ModelConfig::Planar(_) | ModelConfig::RealNvp(_) => {
            if let (Ok(flow), true) = (NormalizingFlow::new(model, vb), run) {
                let _ = flow.log_prob(&(x * 0.5).unwrap_or(t));
                let _ = flow.sample(2, &mut SeededRng::new(1));
            }
        }
        _ => {
            if let (Ok(net), true) = (VelocityNet::new(model, vb), run) {
                let dropout = RefCell::new(SeededRng::new(1));
                let _ = net.forward(&x, &t, None, Some(&dropout));
                let _ = net.forward(&x, &t, None, None);
            }
        }
    }
}

/// Parses `bytes` (with `fallback` as `config.json`) and exercises what
/// parses, unless `seen` (the models exercised so far) already holds its model.
fn parse_and_run(bytes: &[u8], fallback: &str, seen: Option<&mut HashSet<String>>) -> fm_models::Result<()> {
    let fallback = fallback.to_string();
    let (config, tensors) = parse_weights(bytes, Path::new(PATH), || Ok(fallback), &Device::Cpu)?;
    if let Some(seen) = seen {
        if seen.insert(format!("{:?}", config.model)) {
            exercise(&config, tensors);
        }
    }
    Ok(())
}

/// Runs `f`, failing the test with `what` if it panics.
fn no_panic<T>(what: impl Fn() -> String, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
            panic!("{} panicked: {}", what(), msg.unwrap_or_default())
        }
    }
}

#[test]
fn checkpoint_parser_never_panics() -> anyhow::Result<()> {
    let path = Path::new(PATH);
    for seed in seeds()? {
        let json = seed.json()?;
        let bytes = seed.weights(Some(&json))?;
        // The valid file parses, builds and runs.
        let (config, tensors) = parse_weights(&bytes, path, || Ok(json.clone()), &Device::Cpu)?;
        assert_eq!(config, seed.config, "{}", seed.name);
        exercise(&config, tensors);

        let header_len = 8 + u64::from_le_bytes(bytes[..8].try_into()?) as usize;
        let mut rng = Mix(7 ^ bytes.len() as u64);
        let step = (bytes.len() / 200).max(7);
        let check = |k: usize, input: &[u8]| {
            let what = || format!("{}: input #{k} ({} bytes)", seed.name, input.len());
            // What parses with a changed header (dtypes, offsets, configuration
            // text) also builds and runs; changed weights alone only parse.
            let mut fresh = HashSet::new();
            let run = (input.get(..header_len) != bytes.get(..header_len)).then_some(&mut fresh);
            let _ = no_panic(what, || parse_and_run(input, "{not json", run));
        };
        let truncations = (0..bytes.len()).step_by(step);
        let count = truncations.len();
        for (k, end) in truncations.enumerate() {
            check(k, &bytes[..end]);
        }
        for k in count..count + 4000 {
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
            check(k, &v);
        }
        // Configurations alone: mutated JSON must fail cleanly, or validate.
        for _ in 0..1000 {
            let mut j = json.clone().into_bytes();
            let i = rng.below(j.len());
            j[i] = rng.next() as u8;
            let text = String::from_utf8_lossy(&j).into_owned();
            no_panic(
                || format!("{}: configuration {text}", seed.name),
                || {
                    if let Ok(c) = serde_json::from_str::<CheckpointConfig>(&text) {
                        if c.model.validate().is_ok() {
                            let _ = c.model.parameter_shapes();
                        }
                    }
                },
            );
        }
    }
    Ok(())
}

/// Hostile JSON values, as raw text (some are not even valid JSON: `NaN`, `1e999`).
const HOSTILE: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "5",
    "64",
    "4097",
    "65537",
    "2147483648",
    "4294967296",
    "1099511627776",
    "18446744073709551615",
    "18446744073709551616",
    "-1",
    "-0.5",
    "0.5",
    "0.999",
    "1.0",
    "1.5",
    "1e308",
    "-1e308",
    "1e999",
    "NaN",
    "\"NaN\"",
    "\"8\"",
    "null",
    "true",
    "{}",
    "[]",
    "[0]",
    "[1]",
    "[2]",
    "[1, 0]",
    "[1, 2, 2, 2, 2, 2, 2, 2, 2]",
    "[1, 1099511627776]",
    "[18446744073709551615]",
    "[2147483648, 2147483648]",
    "[-1]",
    "[1.5]",
    "[null]",
];

/// The model fields of each kind (besides `kind`).
fn fields(model: &Value) -> Vec<String> {
    model.as_object().map(|o| o.keys().filter(|k| *k != "kind").cloned().collect()).unwrap_or_default()
}

/// `config` with `model.<field>` (or a top-level field `top.<name>`, or the
/// mask's `height`/`width` as `mask.<name>`) replaced by the raw JSON `value`;
/// `None` where an earlier mutation left no object to put it in.
fn mutated(config: &Value, field: &str, value: &str) -> Option<String> {
    const MARK: &str = "__fm_hostile__";
    let mut c = config.clone();
    let (object, key) = match field.split_once('.') {
        Some(("top", k)) => (c.as_object_mut()?, k),
        Some(("mask", k)) => (c.get_mut("model")?.get_mut("mask")?.as_object_mut()?, k),
        _ => (c.get_mut("model")?.as_object_mut()?, field),
    };
    object.insert(key.to_string(), Value::String(MARK.into()));
    Some(serde_json::to_string(&c).ok()?.replace(&format!("\"{MARK}\""), value))
}

/// Every configuration a file may carry gives `Ok` (and a model that builds
/// and runs) or a typed error, through the three ways a configuration is read:
/// the weights' header, `config.json` beside weights without one, and a
/// `config.json` beside weights with one (which must agree).
#[test]
fn hostile_configurations_fail_cleanly() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("fm-models-fuzz-config-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut rng = Mix(11);
    let (mut ok, mut rejected) = (0usize, 0usize);
    let mut seen = HashSet::new();
    for seed in seeds()? {
        let base: Value = serde_json::to_value(&seed.config)?;
        let mut names = fields(&base["model"]);
        names.extend(
            ["mask.height", "mask.width", "top.format_version", "top.model", "top.training"]
                .map(String::from),
        );
        names.push("kind".into());
        let bare = seed.weights(None)?;
        let headed = seed.weights(Some(&seed.json()?))?;
        let mut cases: Vec<String> = Vec::new();
        for field in &names {
            cases.extend(HOSTILE.iter().filter_map(|value| mutated(&base, field, value)));
        }
        let singles = cases.len();
        let kinds = ["\"mlp\"", "\"planar\"", "\"real-nvp\"", "\"u-net\"", "\"gan\""];
        cases.extend(kinds.iter().filter_map(|value| mutated(&base, "kind", value)));
        // Random combinations of two or three hostile fields.
        for _ in 0..300 {
            let mut c = base.clone();
            for _ in 0..2 + rng.below(2) {
                let field = &names[rng.below(names.len())];
                let text = mutated(&c, field, HOSTILE[rng.below(HOSTILE.len())]);
                let Some(Ok(v)) = text.map(|t| serde_json::from_str::<Value>(&t)) else { continue };
                c = v;
            }
            cases.push(serde_json::to_string(&c)?);
        }
        for (k, json) in cases.iter().enumerate() {
            let what = || format!("{}: case #{k} {json}", seed.name);
            // In the weights' header.
            let with_meta = seed.weights(Some(json))?;
            let r1 = no_panic(what, || parse_and_run(&with_meta, "{not json", Some(&mut seen)));
            // As `config.json`, the weights carrying none.
            let r2 = no_panic(what, || parse_and_run(&bare, json, None));
            assert_eq!(r1.is_ok(), r2.is_ok(), "{}: header and config.json disagree", what());
            if r1.is_ok() {
                ok += 1;
            } else {
                rejected += 1;
            }
            // Through `checkpoint::load`: config.json alone, then beside a valid header.
            if k < singles {
                std::fs::write(dir.join(CONFIG_FILE), json)?;
                for weights in [&bare, &headed] {
                    std::fs::write(dir.join(WEIGHTS_FILE), weights)?;
                    let r = no_panic(what, || checkpoint::load(&dir, &Device::Cpu));
                    if std::ptr::eq(weights, &bare) {
                        assert_eq!(r.is_ok(), r2.is_ok(), "{}: load and parse disagree", what());
                    }
                }
            }
        }
    }
    std::fs::remove_dir_all(&dir)?;
    // Both outcomes were exercised: some hostile values are harmless (e.g. a
    // `training` record of `null`), most are rejected.
    assert!(ok > 0 && rejected > ok, "{ok} accepted, {rejected} rejected");
    Ok(())
}

/// The error of `json` as a checkpoint's configuration, through the header
/// and through `config.json`, which must agree.
fn config_error(seed: &Seed, json: &str) -> anyhow::Result<Error> {
    let path = Path::new(PATH);
    let with_meta = seed.weights(Some(json))?;
    let bare = seed.weights(None)?;
    let a = parse_weights(&with_meta, path, || Ok("{not json".into()), &Device::Cpu);
    let b = parse_weights(&bare, path, || Ok(json.to_string()), &Device::Cpu);
    match (a, b) {
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string());
            Ok(a)
        }
        (a, b) => {
            anyhow::bail!("{}: {json} was accepted: {:?} / {:?}", seed.name, a.map(|_| ()), b.map(|_| ()))
        }
    }
}

/// Hostile values whose rejection must name the field: the invalid and
/// oversized values of each kind.
#[test]
fn invalid_and_oversized_fields_are_rejected_by_name() -> anyhow::Result<()> {
    let huge = "1099511627776"; // 2^40
    let max = "18446744073709551615"; // u64::MAX
    let cases: &[(&str, &str, &str, &str)] = &[
        // (seed, field, value, the field the error names)
        ("mlp", "dim", "0", "dim"),
        ("mlp", "dim", max, "dim"),
        ("mlp", "hidden", "[]", "hidden"),
        ("mlp", "hidden", "[0]", "hidden"),
        ("mlp", "hidden", "[1099511627776]", "hidden"),
        ("mlp", "hidden", "[2147483648, 2147483648]", "hidden"),
        ("planar", "layers", "0", "layers"),
        ("planar", "layers", huge, "layers"),
        ("planar", "layers", "4097", "layers"),
        ("planar", "dim", max, "dim"),
        ("real-nvp", "dim", "1", "dim"),
        ("real-nvp", "dim", huge, "dim"),
        ("real-nvp", "layers", huge, "layers"),
        ("real-nvp", "hidden", "[1099511627776]", "hidden"),
        ("real-nvp", "hidden", "[]", "hidden"),
        ("real-nvp", "scale_factor", "-0.5", "scale_factor"),
        ("real-nvp", "logit", "0.5", "logit"),
        ("real-nvp-checkerboard", "mask.height", max, "mask"),
        ("real-nvp-checkerboard", "mask.width", "0", "mask"),
        ("u-net", "channel_mult", "[]", "channel_mult"),
        ("u-net", "channel_mult", "[0]", "channel_mult"),
        ("u-net", "channel_mult", "[1, 0]", "channel_mult"),
        ("u-net", "channel_mult", "[1, 2, 2, 2, 2, 2, 2, 2, 2]", "channel_mult"),
        ("u-net", "channel_mult", "[1, 1099511627776]", "channel_mult"),
        ("u-net", "channel_mult", "[18446744073709551615]", "channel_mult"),
        ("u-net", "num_res_blocks", huge, "num_res_blocks"),
        ("u-net", "num_res_blocks", "4097", "num_res_blocks"),
        ("u-net", "model_channels", "0", "model_channels"),
        ("u-net", "model_channels", huge, "model_channels"),
        ("u-net", "model_channels", max, "model_channels"),
        ("u-net", "height", "0", "dim"),
        ("u-net", "height", huge, "dim"),
        ("u-net", "width", max, "dim"),
        ("u-net", "in_channels", "4294967296", "dim"),
        ("u-net", "dropout", "-0.5", "dropout"),
        ("u-net", "dropout", "1.0", "dropout"),
        ("u-net", "dropout", "1e308", "dropout"),
        ("u-net", "norm_groups", "0", "norm_groups"),
        ("u-net", "norm_groups", "3", "norm_groups"),
        ("u-net", "num_heads", "5", "num_heads"),
        ("u-net", "num_classes", "0", "num_classes"),
        ("u-net-classes", "num_classes", max, "num_classes"),
        ("u-net-classes", "num_classes", huge, "num_classes"),
    ];
    let seeds = seeds()?;
    for &(name, field, value, named) in cases {
        let Some(seed) = seeds.iter().find(|s| s.name == name) else { anyhow::bail!("no seed {name}") };
        let json = mutated(&serde_json::to_value(&seed.config)?, field, value)
            .ok_or_else(|| anyhow::anyhow!("{name}: no field {field}"))?;
        let err = config_error(seed, &json)?;
        match &err {
            Error::Config { field: f, .. } if *f == named => {}
            other => {
                anyhow::bail!("{name}.{field} = {value}: expected an error naming `{named}`, got {other}")
            }
        }
        assert!(err.to_string().contains(named) && err.to_string().contains(PATH), "{err}");
    }
    // Long lists: 65 attention factors, 4097 hidden layers, 70 levels.
    let unet = seeds.iter().find(|s| s.name == "u-net").map(|s| &s.config);
    let Some(unet) = unet else { anyhow::bail!("no u-net seed") };
    for (field, value, named) in [
        ("attention_ds", json!(vec![1; 65]), "attention_ds"),
        ("channel_mult", json!(vec![1; 70]), "channel_mult"),
    ] {
        let mut c = serde_json::to_value(unet)?;
        c["model"][field] = value;
        let seed = seeds.iter().find(|s| s.name == "u-net").ok_or_else(|| anyhow::anyhow!("seed"))?;
        let err = config_error(seed, &serde_json::to_string(&c)?)?;
        assert!(matches!(&err, Error::Config { field: f, .. } if *f == named), "{field}: {err}");
    }
    let mlp = seeds.iter().find(|s| s.name == "mlp").ok_or_else(|| anyhow::anyhow!("seed"))?;
    let mut c = serde_json::to_value(&mlp.config)?;
    c["model"]["hidden"] = json!(vec![1; 4097]);
    let err = config_error(mlp, &serde_json::to_string(&c)?)?;
    assert!(matches!(&err, Error::Config { field: "hidden", .. }), "{err}");
    // Bounds on the whole model, each within its per-field bounds: the tensor
    // count of a deep RealNVP, the parameter count of a wide planar flow.
    let deep = RealNvpConfig::new(4, 4096, &[8; 8]);
    assert!(matches!(deep.validate(), Err(Error::Config { field: "layers", .. })), "{:?}", deep.validate());
    assert!(RealNvpConfig::new(4, 4096, &[8]).validate().is_ok());
    let wide = PlanarConfig { dim: 1 << 30, layers: 4096 };
    assert!(matches!(wide.validate(), Err(Error::Config { field: "layers", .. })), "{:?}", wide.validate());
    assert!(PlanarConfig { dim: 1 << 18, layers: 4096 }.validate().is_ok());
    Ok(())
}

/// The crafted checkpoint of the issue: a U-Net with `"channel_mult": []`
/// used to panic in the layer plan before validation; through every reader
/// (the weights' header, `config.json`, `checkpoint::load`, the resume file)
/// it is now an error naming `channel_mult`.
#[test]
fn crafted_empty_channel_mult_is_rejected_by_name() -> anyhow::Result<()> {
    let Some(seed) = seeds()?.into_iter().find(|s| s.name == "u-net") else { anyhow::bail!("no u-net seed") };
    let ModelConfig::UNet(unet) = &seed.config.model else { anyhow::bail!("not a U-Net") };
    let crafted =
        CheckpointConfig::new(ModelConfig::UNet(UNetConfig { channel_mult: vec![], ..unet.clone() }));
    let json = serde_json::to_string(&crafted)?;
    assert!(json.contains("\"channel_mult\":[]"), "{json}");
    let names_the_field = |e: &Error| matches!(e, Error::Config { field: "channel_mult", .. });

    let err = config_error(&seed, &json)?;
    assert!(names_the_field(&err), "{err}");
    assert!(err.to_string().contains("channel_mult"), "{err}");

    // A checkpoint directory (as `fm sample --checkpoint hf://…` downloads one).
    let dir: PathBuf = std::env::temp_dir().join(format!("fm-models-crafted-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    checkpoint::save(&dir, &crafted, &seed.tensors)?;
    let err = no_panic(|| "checkpoint::load".into(), || checkpoint::load(&dir, &Device::Cpu)).err();
    assert!(err.as_ref().is_some_and(names_the_field), "{err:?}");
    // Its resume file.
    fm_models::resume::save(&dir, &crafted, &seed.tensors, &[], "{}")?;
    let err = no_panic(|| "resume::load".into(), || fm_models::resume::load(&dir, &Device::Cpu)).err();
    assert!(err.as_ref().is_some_and(names_the_field), "{err:?}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

//! The run of every family through the library: a run interrupted and resumed
//! (its settings rebuilt from the checkpoint's record) gives the weights of an
//! uninterrupted one, bit for bit; flags that do not apply are refused.

use std::path::{Path, PathBuf};

use candle::Device;
use fm_pipeline::{Error, Observer, Run, RunConfig, RunSettings, Silent, Trained};

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fm-pipeline-run-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `rows` labelled 8×8 "digits" with 17 levels in sklearn's CSV layout; returns `digits:PATH`.
fn digits(dir: &Path, rows: u32) -> String {
    std::fs::create_dir_all(dir).expect("temp dir");
    let text: String = (0..rows)
        .map(|i| {
            let cells: Vec<String> =
                (0..64).map(|j| ((i * 5 + j * 3) % 17).to_string()).chain([(i % 10).to_string()]).collect();
            cells.join(",") + "\n"
        })
        .collect();
    let csv = dir.join("digits.csv");
    std::fs::write(&csv, text).expect("fixture");
    format!("digits:{}", csv.display())
}

/// Stops the run before step `at + 1`.
struct StopAt(usize, usize);

impl Observer for StopAt {
    fn step(&mut self, done: usize, _steps: usize, _loss: f64) {
        self.1 = done;
    }

    fn interrupted(&self) -> bool {
        self.1 >= self.0
    }
}

fn weights(dir: &Path) -> Vec<(String, Vec<u32>)> {
    let m = candle::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).expect("weights");
    let mut v: Vec<(String, Vec<u32>)> = m
        .into_iter()
        .map(|(k, t)| {
            let bits = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("f32");
            (k, bits.iter().map(|x| x.to_bits()).collect())
        })
        .collect();
    v.sort();
    v
}

/// Straight to `steps`, and interrupted at `steps / 2` then resumed: the same checkpoint.
fn resumes_bit_identically(name: &str, config: RunConfig, steps: usize) -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let (a, b) = (temp(&format!("{name}-straight")), temp(&format!("{name}-resumed")));
    let with_out = |out: &Path| RunConfig { steps: Some(steps), out: Some(out.into()), ..config.clone() };
    Run::new(RunSettings::resolve(&with_out(&a))?, &dev)?.train(&mut Silent)?;
    let mut run = Run::new(RunSettings::resolve(&with_out(&b))?, &dev)?;
    match run.train(&mut StopAt(steps / 2, 0)) {
        Err(Error::Interrupted { step, steps: planned, .. }) => {
            assert_eq!((step, planned), (steps / 2, steps))
        }
        other => panic!("{name}: expected an interruption, got {:?}", other.map(|s| s.loss)),
    }
    let mut resumed = Run::resume(&b, None, &dev)?;
    assert_eq!(resumed.steps_done(), steps / 2, "{name}");
    resumed.train(&mut Silent)?;
    assert!(weights(&a) == weights(&b), "{name}: the resumed run's weights differ");
    let ta = Trained::load(&a, false, &dev)?;
    assert_eq!(ta.record().step, steps, "{name}");
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
    Ok(())
}

#[test]
fn every_family_resumes_bit_identically() -> anyhow::Result<()> {
    let data = digits(&temp("data"), 40);
    let mlp = RunConfig {
        hidden: Some(vec![16, 16]),
        weight_decay: Some(0.01),
        ema_decay: Some(0.9),
        warmup: Some(3),
        grad_clip: Some(1.0),
        ..RunConfig::default()
    };
    resumes_bit_identically("mlp", mlp, 20)?;
    let ot = RunConfig { matcher: Some("otcfm".into()), batch_size: Some(32), ..RunConfig::default() };
    resumes_bit_identically("mlp-ot", ot, 20)?;
    let unet = RunConfig {
        model: Some("unet".into()),
        preset: Some("tiny".into()),
        data: Some(data.clone()),
        class_cond: Some(true),
        dropout: Some(0.1),
        batch_size: Some(4),
        ..RunConfig::default()
    };
    resumes_bit_identically("unet", unet, 4)?;
    let realnvp = RunConfig { model: Some("realnvp".into()), layers: Some(2), ..RunConfig::default() };
    resumes_bit_identically("realnvp", realnvp, 20)?;
    let planar = RunConfig { model: Some("planar".into()), layers: Some(4), ..RunConfig::default() };
    resumes_bit_identically("planar", planar, 20)?;
    let mean_flow =
        RunConfig { model: Some("meanflow".into()), hidden: Some(vec![16, 16]), ..RunConfig::default() };
    resumes_bit_identically("meanflow", mean_flow, 20)?;
    let mean_flow_unet = RunConfig {
        model: Some("meanflow-unet".into()),
        preset: Some("tiny".into()),
        data: Some(data.clone()),
        batch_size: Some(4),
        ..RunConfig::default()
    };
    resumes_bit_identically("meanflow-unet", mean_flow_unet, 4)?;
    Ok(())
}

#[test]
fn a_checkpoint_records_its_family_and_optimiser() -> anyhow::Result<()> {
    let out = temp("record");
    let config = RunConfig {
        steps: Some(5),
        weight_decay: Some(0.05),
        out: Some(out.clone()),
        model: Some("realnvp".into()),
        ..RunConfig::default()
    };
    let mut run = Run::new(RunSettings::resolve(&config)?, &Device::Cpu)?;
    run.train(&mut Silent)?;
    let m = Trained::load(&out, false, &Device::Cpu)?;
    let r = m.record();
    assert_eq!(
        (m.family().name(), r.objective.as_str(), r.weight_decay),
        ("realnvp", "forward-kl", Some(0.05))
    );
    assert!(r.optimizer.starts_with("adamw") && r.scheduler.is_none(), "{r:?}");
    assert!(!m.family().solves_ode() && m.family().exact_likelihood());
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

#[test]
fn flags_that_do_not_apply_to_a_family_are_refused_by_name() {
    let refused = |c: RunConfig| RunSettings::resolve(&c).err().map(|e| e.to_string()).unwrap_or_default();
    let e = refused(RunConfig {
        model: Some("realnvp".into()),
        matcher: Some("otcfm".into()),
        ..Default::default()
    });
    assert!(e.contains("--matcher") && e.contains("realnvp"), "{e}");
    let e = refused(RunConfig { channels: Some(8), ..Default::default() });
    assert!(e.contains("--channels") && e.contains("unet"), "{e}");
    let e = refused(RunConfig { layers: Some(3), ..Default::default() });
    assert!(e.contains("--layers"), "{e}");
    let e = refused(RunConfig {
        model: Some("unet".into()),
        hidden: Some(vec![8]),
        data: Some("x".into()),
        ..Default::default()
    });
    assert!(e.contains("--hidden"), "{e}");
    let e = refused(RunConfig { model: Some("nope".into()), ..Default::default() });
    assert!(e.contains("mlp, unet, planar, realnvp"), "{e}");
    let e = refused(RunConfig { weight_decay: Some(-1.0), ..Default::default() });
    assert!(e.contains("--weight-decay"), "{e}");
}

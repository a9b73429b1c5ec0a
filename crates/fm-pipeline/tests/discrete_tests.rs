//! Discrete flow matching through the library: the checkerboard as tokens
//! (samples on the right squares, the ELBO between the data's entropy and the
//! uniform guess's), class-conditional images with guidance for both networks,
//! bit-identical resume, and the flags a discrete model refuses.

use std::path::{Path, PathBuf};

use candle::Device;
use fm_pipeline::{
    LikelihoodRequest, Run, RunConfig, RunSettings, SampleRequest, Silent, SolverChoice, Trained,
};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fm-pipeline-discrete-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn train(config: RunConfig) -> anyhow::Result<Trained> {
    let out = config.out.clone().expect("out");
    Run::new(RunSettings::resolve(&config)?, &Device::Cpu)?.train(&mut Silent)?;
    Ok(Trained::load(&out, false, &Device::Cpu)?)
}

/// sklearn-digits-shaped images (8×8, 17 levels) of two classes: class 0 all
/// black, class 1 all white.
fn two_classes(dir: &Path, rows: usize) -> String {
    let row = |level: u32, label: u32| -> String {
        (0..64).map(|_| level.to_string()).chain([label.to_string()]).collect::<Vec<_>>().join(",")
    };
    let lines: Vec<String> = (0..rows).map(|i| if i % 2 == 0 { row(0, 0) } else { row(16, 1) }).collect();
    let csv = dir.join("digits.csv");
    std::fs::write(&csv, lines.join("\n") + "\n").expect("fixture");
    format!("digits:{}", csv.display())
}

/// On the checkerboard at 16 cells per coordinate (each square 4 × 4 cells),
/// a short run samples points on the data's squares, and the negative ELBO
/// of test points lies above the data's entropy (log 128 nats: uniform on the
/// 128 cells of its squares, up to the estimate's standard error) and below
/// the uniform guess over all 256 cells (log 256).
#[test]
fn a_discrete_mlp_learns_the_checkerboard_and_bounds_its_likelihood() -> anyhow::Result<()> {
    let dir = temp("checkerboard");
    let model = train(RunConfig {
        model: Some("discrete".into()),
        data: Some("checkerboard".into()),
        bins: Some(16),
        hidden: Some(vec![64, 64]),
        steps: Some(1500),
        batch_size: Some(1024),
        lr: Some(3e-3),
        out: Some(dir.join("run")),
        ..RunConfig::default()
    })?;
    assert_eq!(model.family().name(), "discrete");
    let n = 4000;
    let s = model.sample(&SampleRequest::new(n, 1, SolverChoice::parse_spec("euler:50")?))?;
    assert_eq!((s.n, s.dim, s.nfe), (n, 2, 50));
    // Cell centres tiling [−4, 4] by 16: −3.75, −3.25, …; squares of side 2.
    let square = |v: f32| ((v + 4.0) / 2.0).floor() as i32;
    let reference = model.data()?.reference(2, 0)?;
    let colour = (square(reference[0]) + square(reference[1])) % 2;
    let on = s.values.chunks(2).filter(|p| (square(p[0]) + square(p[1])) % 2 == colour).count();
    assert!(on as f64 > 0.95 * n as f64, "{on} of {n} samples on the data's squares");
    assert!(
        s.values.iter().all(|v| ((v + 4.0) * 2.0 - 0.5).fract().abs() < 1e-5),
        "samples are cell centres"
    );
    let test = model.data()?.likelihood_points(2000, 9)?;
    let request = LikelihoodRequest {
        solver: SolverChoice::new("euler", 32, 1e-5, 1e-5)?,
        ..LikelihoodRequest::exact_rk4(32)?
    };
    let lp = model.log_likelihood(&test, &request, &mut |_| ())?;
    let (nll, se) = lp.nll();
    let (entropy, uniform) = (128f64.ln(), 256f64.ln());
    assert!(
        nll > entropy - 3.0 * se && nll < uniform,
        "negative ELBO {nll} ± {se}: not in ({entropy}, {uniform})"
    );
    Ok(())
}

/// Class-conditional models of black-or-white images, the MLP and the U-Net:
/// `--class` picks the colour of (nearly) every pixel, with and without
/// guidance; a resumed run ends bit-identical to an uninterrupted one.
#[test]
fn class_conditional_discrete_models_sample_their_class_and_resume_exactly() -> anyhow::Result<()> {
    let dir = temp("classes");
    let data = two_classes(&dir, 64);
    for (family, steps, lr) in [("discrete", 800, 3e-3), ("discrete-unet", 120, 3e-3)] {
        let config = RunConfig {
            model: Some(family.into()),
            preset: (family == "discrete-unet").then(|| "tiny".into()),
            data: Some(data.clone()),
            bins: Some(2),
            class_cond: Some(true),
            hidden: (family == "discrete").then(|| vec![64]),
            steps: Some(steps),
            batch_size: Some(32),
            lr: Some(lr),
            out: Some(dir.join(family)),
            ..RunConfig::default()
        };
        let model = train(config.clone())?;
        assert_eq!((model.family().name(), model.model().num_classes()), (family, Some(2)));
        assert!(model.model().image_shape().is_some());
        for (class, white) in [(0u32, -1.0f32), (1, 1.0)] {
            for w in [0.0, 2.0] {
                let mut request = SampleRequest::new(16, 3, SolverChoice::parse_spec("euler:10")?);
                request.class = Some(class);
                request.cfg_scale = w;
                let s = model.sample(&request)?;
                let right = s.values.iter().filter(|&&v| v == white).count();
                assert!(
                    right as f64 > 0.95 * s.values.len() as f64,
                    "{family}, class {class}, w {w}: {right}"
                );
            }
        }
        // Resume: half the steps, then the rest, equals the whole run.
        let half =
            RunConfig { steps: Some(steps / 2), out: Some(dir.join(format!("{family}-half"))), ..config };
        Run::new(RunSettings::resolve(&half)?, &Device::Cpu)?.train(&mut Silent)?;
        Run::resume(&dir.join(format!("{family}-half")), Some(steps), &Device::Cpu)?.train(&mut Silent)?;
        let whole = fm_models::checkpoint::load(&dir.join(family), &Device::Cpu)?;
        let resumed = fm_models::checkpoint::load(&dir.join(format!("{family}-half")), &Device::Cpu)?;
        for (name, t) in &whole.tensors {
            let r = &resumed.tensors[name];
            assert_eq!(
                t.flatten_all()?.to_vec1::<f32>()?,
                r.flatten_all()?.to_vec1::<f32>()?,
                "{family}: {name} differs after resume"
            );
        }
    }
    Ok(())
}

/// What a discrete model cannot do is refused, naming the flag.
#[test]
fn discrete_models_refuse_what_does_not_apply() -> anyhow::Result<()> {
    let dir = temp("refusals");
    let err = |c: RunConfig| match RunSettings::resolve(&RunConfig { model: Some("discrete".into()), ..c }) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    };
    assert!(err(RunConfig { matcher: Some("otcfm".into()), ..RunConfig::default() }).contains("--matcher"));
    assert!(err(RunConfig { source: Some("normal".into()), ..RunConfig::default() }).contains("--source"));
    assert!(err(RunConfig { bins: Some(1), ..RunConfig::default() }).contains("--bins"));
    assert!(err(RunConfig { scheduler: Some("vp".into()), ..RunConfig::default() }).contains("--scheduler"));
    assert!(err(RunConfig { objective: Some("cfm".into()), ..RunConfig::default() }).contains("--objective"));
    assert!(err(RunConfig { channels: Some(8), ..RunConfig::default() }).contains("--channels"));
    // No labels on the checkerboard.
    let c = RunConfig {
        model: Some("discrete".into()),
        class_cond: Some(true),
        out: Some(dir.join("cc")),
        ..RunConfig::default()
    };
    let e =
        Run::new(RunSettings::resolve(&c)?, &Device::Cpu).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("--class-cond"), "{e}");
    // An unconditional model refuses a class and guidance; no SDE sampler.
    let model = train(RunConfig {
        model: Some("discrete".into()),
        bins: Some(8),
        steps: Some(2),
        hidden: Some(vec![8]),
        out: Some(dir.join("plain")),
        ..RunConfig::default()
    })?;
    let mut request = SampleRequest::new(4, 0, SolverChoice::parse_spec("euler:4")?);
    request.cfg_scale = 1.0;
    assert!(model.sample(&request).err().map(|e| e.to_string()).unwrap_or_default().contains("--cfg-scale"));
    request.cfg_scale = 0.0;
    request.class = Some(0);
    assert!(model.sample(&request).err().map(|e| e.to_string()).unwrap_or_default().contains("--class"));
    assert!(model.velocity_field().is_none());
    Ok(())
}

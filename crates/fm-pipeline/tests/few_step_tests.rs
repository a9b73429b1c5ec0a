//! Few-step models through the library. Reflow (rectified flow): the pairs
//! are the teacher's ODE map of their noise, and training on them
//! straightens the paths. MeanFlow: one step samples the data.

use std::path::PathBuf;

use candle::{Device, Tensor};
use fm_pipeline::{PairsSidecar, Run, RunConfig, RunSettings, SampleRequest, Silent, SolverChoice, Trained};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fm-pipeline-reflow-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn train(config: RunConfig) -> anyhow::Result<Trained> {
    let out = config.out.clone().expect("out");
    Run::new(RunSettings::resolve(&config)?, &Device::Cpu)?.train(&mut Silent)?;
    Ok(Trained::load(&out, false, &Device::Cpu)?)
}

#[test]
fn pairs_are_the_ode_map_and_reflow_straightens_the_paths() -> anyhow::Result<()> {
    let dir = temp("moons");
    let teacher =
        train(RunConfig { steps: Some(3000), out: Some(dir.join("teacher")), ..RunConfig::default() })?;
    let solver = SolverChoice::parse_spec("midpoint:20")?;
    let (n, d) = (20_000, 2);
    let (mut x0, mut x1) = (Vec::new(), Vec::new());
    let nfe = teacher.reflow_pairs(n, 7, &solver, 5000, &mut |a, b| {
        x0.extend_from_slice(a);
        x1.extend_from_slice(b);
        Ok(())
    })?;
    assert_eq!((nfe, x0.len(), x1.len()), (40, n * d, n * d));
    // Re-solving from the same noise reproduces x₁ (same solver, same batches).
    let first = Tensor::from_vec(x0[..5000 * d].to_vec(), (5000, d), &Device::Cpu)?;
    let again = teacher.sample_from(&first, &SampleRequest::new(5000, 0, solver.clone()))?;
    assert_eq!(again.values, x1[..5000 * d]);
    // The noise is the seed's sample-noise stream.
    assert_eq!(teacher.source_draws(n, 7)?.flatten_all()?.to_vec1::<f32>()?, x0);

    // Train the 2-rectified flow on the pairs, written as fm reflow writes them.
    let rows: Vec<f32> =
        x0.chunks_exact(d).zip(x1.chunks_exact(d)).flat_map(|(a, b)| [a, b].concat()).collect();
    let pairs = dir.join("pairs.npy");
    std::fs::write(&pairs, fm_data::npy::encode_f32(&rows, &[n, 2 * d]))?;
    let sidecar = PairsSidecar { teacher: "teacher".into(), record: teacher.record().clone() };
    std::fs::write(PairsSidecar::path_for(&pairs), serde_json::to_string(&sidecar)?)?;
    let student = train(RunConfig {
        data: Some(format!("pairs:{}", pairs.display())),
        steps: Some(3000),
        out: Some(dir.join("student")),
        ..RunConfig::default()
    })?;
    let (s_teacher, s_student) = (teacher.straightness(1000, 1, 100)?, student.straightness(1000, 1, 100)?);
    assert!(s_student < s_teacher / 10.0, "straightness {s_teacher} → {s_student}");
    // Measured against the teacher's data (moons), through the sidecar.
    assert_eq!(student.data()?.reference(10, 3)?, teacher.data()?.reference(10, 3)?);

    // Distillation: one Euler step of the distilled map reproduces the pairs'
    // x₁ far better than one step of the teacher or of the 2-rectified flow.
    let distilled = train(RunConfig {
        data: Some(format!("pairs:{}", pairs.display())),
        objective: Some("distill".into()),
        steps: Some(3000),
        out: Some(dir.join("distilled")),
        ..RunConfig::default()
    })?;
    let one_step = SampleRequest::new(5000, 0, SolverChoice::parse_spec("euler:1")?);
    let error = |m: &Trained| -> anyhow::Result<f64> {
        let y = m.sample_from(&first, &one_step)?.values;
        Ok(y.iter().zip(&x1).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / y.len() as f64)
    };
    let (e_teacher, e_student, e_distilled) = (error(&teacher)?, error(&student)?, error(&distilled)?);
    // Measured: teacher 0.52, 2-rectified flow 0.0020, distilled 0.00026.
    assert!(e_distilled < e_student / 2.0 && e_distilled < e_teacher / 10.0, "{e_distilled}");
    let unpaired = RunConfig { objective: Some("distill".into()), steps: Some(5), ..RunConfig::default() };
    let err = Run::new(RunSettings::resolve(&unpaired)?, &Device::Cpu)
        .and_then(|mut r| r.train(&mut Silent).map(|_| ()));
    assert!(err.unwrap_err().to_string().contains("pairs:FILE"));
    // Flags that do not apply to coupled pairs are refused by name.
    let bad = RunConfig {
        data: Some(format!("pairs:{}", pairs.display())),
        matcher: Some("otcfm".into()),
        steps: Some(5),
        out: Some(dir.join("bad")),
        ..RunConfig::default()
    };
    let err = Run::new(RunSettings::resolve(&bad)?, &Device::Cpu)
        .and_then(|mut r| r.train(&mut Silent).map(|_| ()));
    assert!(err.unwrap_err().to_string().contains("--matcher"));
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

#[test]
fn a_malformed_pairs_file_is_a_named_error() -> anyhow::Result<()> {
    let dir = temp("bad");
    let odd = dir.join("odd.npy");
    std::fs::write(&odd, fm_data::npy::encode_f32(&[0.0; 9], &[3, 3]))?;
    let err = fm_pipeline::TrainingData::prepare(&format!("pairs:{}", odd.display()), &[], None, None, 0)
        .err()
        .expect("odd width");
    assert!(err.to_string().contains("odd.npy") && err.to_string().contains("(n, 2d)"), "{err}");
    let nan = dir.join("nan.npy");
    std::fs::write(&nan, fm_data::npy::encode_f32(&[0.0, 1.0, f32::NAN, 2.0], &[1, 4]))?;
    let err = fm_pipeline::TrainingData::prepare(&format!("pairs:{}", nan.display()), &[], None, None, 0)
        .err()
        .expect("nan");
    assert!(err.to_string().contains("not finite"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

#[test]
fn a_mean_flow_model_samples_moons_in_one_step() -> anyhow::Result<()> {
    let dir = temp("meanflow");
    let config = RunConfig {
        model: Some("meanflow".into()),
        steps: Some(4000),
        out: Some(dir.join("run")),
        ..RunConfig::default()
    };
    let model = train(config)?;
    let n = 3000;
    let rf = Tensor::from_vec(model.data()?.reference(n, 9)?, (n, 2), &Device::Cpu)?;
    let energy = |steps: usize| -> anyhow::Result<(f64, usize)> {
        let s =
            model.sample(&SampleRequest::new(n, 4, SolverChoice::parse_spec(&format!("euler:{steps}"))?))?;
        let x = Tensor::from_vec(s.values, (n, 2), &Device::Cpu)?;
        Ok((fm_core::metrics::energy_distance(&x, &rf)?, s.nfe))
    };
    let (one, nfe) = energy(1)?;
    assert_eq!(nfe, 1);
    // One Euler step of an I-CFM model of this size scores about 0.43 here
    // (0.008 for MeanFlow after 10,000 steps: the guide's table).
    assert!(one < 0.1, "one-step energy distance {one}");
    let (two, nfe) = energy(2)?;
    assert!(two < 0.1 && nfe == 2, "{two}");
    // Its instantaneous velocity ū(x, t, t) is a velocity field for analyses.
    assert!(model.straightness(200, 1, 20)?.is_finite());
    // Flags that do not apply are refused by name.
    let bad =
        RunConfig { model: Some("meanflow".into()), matcher: Some("otcfm".into()), ..RunConfig::default() };
    assert!(RunSettings::resolve(&bad).unwrap_err().to_string().contains("--matcher"));
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

#[test]
fn pairs_carry_the_teachers_source_and_mean_flow_takes_any_source() -> anyhow::Result<()> {
    let dir = temp("source");
    let teacher = train(RunConfig {
        source: Some("8gaussians".into()),
        matcher: Some("icfm".into()),
        steps: Some(50),
        out: Some(dir.join("teacher")),
        ..RunConfig::default()
    })?;
    let (n, d) = (400, 2);
    let mut rows = Vec::new();
    teacher.reflow_pairs(n, 0, &SolverChoice::parse_spec("euler:5")?, 100, &mut |a, b| {
        rows.extend(a.chunks_exact(d).zip(b.chunks_exact(d)).flat_map(|(x, y)| [x, y].concat()));
        Ok(())
    })?;
    // The x₀ are the teacher's 8-Gaussian draws.
    assert_eq!(rows[..2 * d].to_vec()[..d], teacher.source_draws(1, 0)?.flatten_all()?.to_vec1::<f32>()?[..]);
    let pairs = dir.join("pairs.npy");
    std::fs::write(&pairs, fm_data::npy::encode_f32(&rows, &[n, 2 * d]))?;
    let sidecar = PairsSidecar { teacher: "teacher".into(), record: teacher.record().clone() };
    std::fs::write(PairsSidecar::path_for(&pairs), serde_json::to_string(&sidecar)?)?;
    let student = train(RunConfig {
        data: Some(format!("pairs:{}", pairs.display())),
        steps: Some(20),
        out: Some(dir.join("student")),
        ..RunConfig::default()
    })?;
    assert_eq!(student.source(), teacher.source());
    let mean_flow = train(RunConfig {
        model: Some("meanflow".into()),
        source: Some("8gaussians".into()),
        steps: Some(20),
        out: Some(dir.join("meanflow")),
        ..RunConfig::default()
    })?;
    assert_eq!(mean_flow.source(), teacher.source());
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// `rows` copies of one 8×8 image (17 levels) in sklearn's digits CSV layout; returns `digits:PATH`.
fn one_digit(dir: &std::path::Path, rows: usize) -> String {
    let row: Vec<String> =
        (0..64).map(|j| ((j * 7 + j / 8) % 17).to_string()).chain(["3".to_string()]).collect();
    let csv = dir.join("digits.csv");
    std::fs::write(&csv, vec![row.join(","); rows].join("\n") + "\n").expect("fixture");
    format!("digits:{}", csv.display())
}

/// The MeanFlow U-Net through the library: trained on images that are all the
/// same digit, its one-step map sends every noise draw to that digit (the
/// samples' spread collapses from the noise's 1 per pixel); 1, 2 and 4 steps
/// cost 1, 2 and 4 evaluations; the checkpoint is its family's, not the
/// velocity U-Net's; what it cannot do is refused by flag.
#[test]
fn a_mean_flow_unet_maps_noise_to_images_in_one_step() -> anyhow::Result<()> {
    let dir = temp("meanflow-unet");
    let data = one_digit(&dir, 64);
    let config = RunConfig {
        model: Some("meanflow-unet".into()),
        preset: Some("tiny".into()),
        data: Some(data.clone()),
        steps: Some(150),
        batch_size: Some(16),
        lr: Some(3e-3),
        out: Some(dir.join("run")),
        ..RunConfig::default()
    };
    let model = train(config.clone())?;
    assert_eq!(model.family().name(), "meanflow-unet");
    assert!(model.model().image_shape().is_some());
    let n = 64;
    // Mean over pixels of the variance across samples.
    let spread = |values: &[f32]| -> f64 {
        let d = values.len() / n;
        (0..d)
            .map(|j| {
                let col: Vec<f64> = (0..n).map(|i| values[i * d + j] as f64).collect();
                let m = col.iter().sum::<f64>() / n as f64;
                col.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n as f64
            })
            .sum::<f64>()
            / d as f64
    };
    let noise = model.source_draws(n, 2)?.flatten_all()?.to_vec1::<f32>()?;
    for steps in [1, 2, 4] {
        let s =
            model.sample(&SampleRequest::new(n, 2, SolverChoice::parse_spec(&format!("euler:{steps}"))?))?;
        assert_eq!((s.n, s.dim, s.nfe), (n, 64, steps));
        let (ours, theirs) = (spread(&s.values), spread(&noise));
        // 0.048 after 120 steps, 0.012 in 4 steps; an untrained model keeps the noise's.
        assert!(ours < 0.1 * theirs, "{steps} step(s): spread {ours} against the noise's {theirs}");
    }
    // Refused by flag: guidance, dropout, a coupling.
    for (bad, flag) in [
        (RunConfig { class_cond: Some(true), ..config.clone() }, "--class-cond"),
        (RunConfig { dropout: Some(0.1), ..config.clone() }, "--dropout"),
        (RunConfig { matcher: Some("otcfm".into()), ..config.clone() }, "--matcher"),
    ] {
        let err = RunSettings::resolve(&bad).expect_err(flag).to_string();
        assert!(err.contains(flag), "{flag}: {err}");
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

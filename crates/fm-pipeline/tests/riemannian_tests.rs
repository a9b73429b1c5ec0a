//! Riemannian flow matching through the library: a model of a von
//! Mises–Fisher distribution recovers its log-likelihood, models on the torus
//! and on `S² × S¹` sample their data's structure and resume bit-identically,
//! and the flags a Riemannian model refuses.

use std::path::{Path, PathBuf};

use candle::Device;
use fm_core::divergence::{Divergence, Probe};
use fm_core::manifold::{ManifoldSpec, VonMisesFisher};
use fm_core::SeededRng;
use fm_pipeline::{
    LikelihoodRequest, Run, RunConfig, RunSettings, SampleRequest, Silent, SolverChoice, Trained,
};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fm-pipeline-riemannian-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn train(config: RunConfig) -> anyhow::Result<Trained> {
    let out = config.out.clone().expect("out");
    Run::new(RunSettings::resolve(&config)?, &Device::Cpu)?.train(&mut Silent)?;
    Ok(Trained::load(&out, false, &Device::Cpu)?)
}

/// `n` draws of `vmf` as `longitude,latitude` rows (degrees) in `dir/name.csv`.
fn vmf_csv(dir: &Path, name: &str, vmf: &VonMisesFisher, n: usize, seed: u64) -> (PathBuf, Vec<f64>) {
    let x = vmf.sample(n, &mut SeededRng::new(seed));
    let sphere = ManifoldSpec::Sphere(2).build();
    let chart = sphere.chart(&x).expect("chart");
    let mut text = String::from("longitude,latitude\n");
    for p in chart.chunks(2) {
        text.push_str(&format!("{},{}\n", p[0], p[1]));
    }
    let path = dir.join(format!("{name}.csv"));
    std::fs::write(&path, text).expect("fixture");
    (path, x)
}

fn wrap(a: f64) -> f64 {
    let r = a.rem_euclid(360.0);
    if r > 180.0 {
        r - 360.0
    } else {
        r
    }
}

/// A model of vMF(μ, 10) on S², trained on 20,000 of its draws, gives 2,000
/// fresh draws the vMF's own mean log-density within 0.05 nats (exact
/// divergence; Hutchinson's estimate agrees), and its samples have the
/// vMF's mean resultant `E[x] = A(κ) μ`.
#[test]
fn a_model_of_a_von_mises_fisher_recovers_its_log_likelihood() -> anyhow::Result<()> {
    let dir = temp("vmf");
    let vmf = VonMisesFisher::new([0.3, -0.5, 0.8], 10.0)?;
    let (train_csv, _) = vmf_csv(&dir, "train", &vmf, 20_000, 1);
    let (test_csv, test) = vmf_csv(&dir, "test", &vmf, 2000, 2);
    let model = train(RunConfig {
        manifold: Some("sphere".into()),
        data: Some(format!("csv:{}", train_csv.display())),
        columns: Some(vec!["longitude".into(), "latitude".into()]),
        hidden: Some(vec![64, 64]),
        steps: Some(1500),
        out: Some(dir.join("run")),
        ..RunConfig::default()
    })?;
    assert_eq!(model.family().name(), "riemannian");
    assert_eq!((model.dim(), model.data_dim()), (3, 2));
    let truth = -test.chunks(3).map(|x| vmf.log_density(x)).sum::<f64>() / 2000.0;
    let points: Vec<f32> = {
        let text = std::fs::read_to_string(&test_csv)?;
        text.lines().skip(1).flat_map(|l| l.split(',').map(|v| v.parse::<f32>().unwrap())).collect()
    };
    let exact = model.log_likelihood(&points, &LikelihoodRequest::exact_rk4(50)?, &mut |_| ())?;
    let (nll, se) = exact.nll();
    assert!((nll - truth).abs() < 0.05, "model NLL {nll} ± {se} vs the vMF's {truth}");
    let hutch = LikelihoodRequest {
        divergence: Divergence::hutchinson(Probe::Rademacher, 1),
        ..LikelihoodRequest::exact_rk4(50)?
    };
    let (h, _) = model.log_likelihood(&points, &hutch, &mut |_| ())?.nll();
    assert!((h - nll).abs() < 0.05, "Hutchinson {h} vs exact {nll}");
    // Samples: on the sphere (degrees in range) with E[x] = A(κ) μ, A(10) = coth 10 − 1/10.
    let s = model.sample(&SampleRequest::new(4000, 3, SolverChoice::parse_spec("midpoint:50")?))?;
    assert_eq!((s.n, s.dim, s.nfe), (4000, 2, 100));
    let x = ManifoldSpec::Sphere(2).build().embed(&s.values.iter().map(|&v| v as f64).collect::<Vec<_>>())?;
    let a = 1.0 / 10f64.tanh() - 0.1;
    for i in 0..3 {
        let m = x.chunks(3).map(|p| p[i]).sum::<f64>() / 4000.0;
        assert!((m - a * vmf.mean[i]).abs() < 0.03, "coordinate {i}: {m} vs {}", a * vmf.mean[i]);
    }
    Ok(())
}

/// On the torus the samples find the mixture's α-helix component (about half
/// the data within ±30° of (−63°, −43°); a uniform density puts 2.8 % there);
/// on `S² × S¹` they keep the clock's dependence on longitude (local hours
/// near 8 h and 18 h); a resumed run ends bit-identical to an uninterrupted one.
#[test]
fn torus_and_product_models_sample_their_data_and_resume_exactly() -> anyhow::Result<()> {
    let dir = temp("torus");
    let config = |data: &str, steps: usize, out: &str| RunConfig {
        data: Some(data.into()),
        model: Some("riemannian".into()),
        hidden: Some(vec![64, 64]),
        steps: Some(steps),
        out: Some(dir.join(out)),
        ..RunConfig::default()
    };
    let torus = train(config("torus-mixture", 1500, "torus"))?;
    assert_eq!(torus.record().manifold, Some(ManifoldSpec::Torus(2)));
    let s = torus.sample(&SampleRequest::new(4000, 1, SolverChoice::parse_spec("midpoint:50")?))?;
    let helix = s
        .values
        .chunks(2)
        .filter(|p| wrap(p[0] as f64 + 63.0).abs() < 30.0 && wrap(p[1] as f64 + 43.0).abs() < 30.0);
    let helix = helix.count() as f64 / 4000.0;
    assert!(helix > 0.35, "{helix} of the samples in the α-helix region");

    let clock = train(config("sphere-clock", 1500, "clock"))?;
    let s = clock.sample(&SampleRequest::new(4000, 1, SolverChoice::parse_spec("midpoint:50")?))?;
    assert_eq!(s.dim, 3);
    let local: Vec<f64> = s.values.chunks(3).map(|p| wrap(p[2] as f64 + p[0] as f64)).collect();
    let near = |h: f64| local.iter().filter(|a| wrap(*a - h * 15.0).abs() < 30.0).count() as f64 / 4000.0;
    assert!(near(8.0) + near(18.0) > 0.45, "local hours near 8 h and 18 h: {} + {}", near(8.0), near(18.0));

    // Resume: 300 steps at once, or 150 then 150 more.
    train(config("sphere-clock", 300, "full"))?;
    let half = config("sphere-clock", 150, "half");
    Run::new(RunSettings::resolve(&half)?, &Device::Cpu)?.train(&mut Silent)?;
    Run::resume(&dir.join("half"), Some(300), &Device::Cpu)?.train(&mut Silent)?;
    let a = fm_models::checkpoint::load(&dir.join("full"), &Device::Cpu)?;
    let b = fm_models::checkpoint::load(&dir.join("half"), &Device::Cpu)?;
    assert_eq!(a.config.model, b.config.model);
    for (name, t) in &a.tensors {
        let diff = (t - &b.tensors[name])?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0, "{name} differs after resume");
    }
    Ok(())
}

#[test]
fn riemannian_models_refuse_what_does_not_apply() -> anyhow::Result<()> {
    let dir = temp("refuse");
    // A dataset on a manifold, or --manifold, selects the family; --model mlp on degrees stays Euclidean.
    let family = |c: RunConfig| RunSettings::resolve(&c).map(|s| s.family.name());
    assert_eq!(
        family(RunConfig { data: Some("torus-mixture".into()), ..RunConfig::default() })?,
        "riemannian"
    );
    assert_eq!(family(RunConfig { manifold: Some("sphere".into()), ..RunConfig::default() })?, "riemannian");
    let mlp =
        RunConfig { model: Some("mlp".into()), data: Some("torus-mixture".into()), ..RunConfig::default() };
    assert_eq!(family(mlp)?, "mlp");
    let err = |c: RunConfig| -> String {
        let c = RunConfig { out: Some(dir.join("run")), steps: Some(2), ..c };
        match RunSettings::resolve(&c).and_then(|s| Run::new(s, &Device::Cpu)) {
            Ok(_) => panic!("{c:?} was accepted"),
            Err(e) => format!("{:#}", anyhow::Error::from(e)),
        }
    };
    let e =
        err(RunConfig { model: Some("mlp".into()), manifold: Some("sphere".into()), ..RunConfig::default() });
    assert!(e.contains("--manifold applies to --model riemannian"), "{e}");
    let e = err(RunConfig {
        manifold: Some("sphere".into()),
        objective: Some("efm".into()),
        ..RunConfig::default()
    });
    assert!(e.contains("--objective does not apply to a Riemannian model"), "{e}");
    let e = err(RunConfig { manifold: Some("cube".into()), ..RunConfig::default() });
    assert!(e.contains("--manifold") && e.contains("cube"), "{e}");
    let e = err(RunConfig {
        manifold: Some("sphere".into()),
        data: Some("moons".into()),
        ..RunConfig::default()
    });
    assert!(e.contains("fixed set of points") && e.contains("moons"), "{e}");
    let e = err(RunConfig {
        manifold: Some("torus:3".into()),
        data: Some("sphere-mixture".into()),
        ..RunConfig::default()
    });
    assert!(e.contains("3 chart coordinates") && e.contains("longitude, latitude"), "{e}");
    let e = err(RunConfig {
        manifold: Some("sphere".into()),
        scheduler: Some("vp".into()),
        ..RunConfig::default()
    });
    assert!(e.contains("--scheduler"), "{e}");
    Ok(())
}

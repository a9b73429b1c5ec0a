//! End-to-end tests of the `fm` binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fails, last_json, ok, s, temp_in, tensor_bytes};

fn temp(name: &str) -> PathBuf {
    temp_in("cli", name)
}

#[test]
fn train_writes_checkpoint_samples_plot_and_metrics() {
    let dir = temp("train");
    let out = ok(&["train", "--steps", "300", "--out", s(&dir), "--json", "--quiet", "--sample-n", "500"]);
    let j = last_json(&out);
    assert!(j["loss"].as_f64().is_some_and(|l| l.is_finite() && l > 0.5 && l < 2.0), "{j}");
    assert!(j["steps_per_s"].as_f64().is_some_and(|v| v > 0.0), "{j}");
    assert!(j["metrics"]["energy_distance"].as_f64().is_some(), "{j}");
    for f in ["model.safetensors", "config.json", "samples.npy", "plot.png", "metrics.json"] {
        assert!(dir.join(f).is_file(), "missing {f}");
    }
    let png = std::fs::read(dir.join("plot.png")).unwrap_or_default();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap_or_default())
            .unwrap_or_default();
    assert_eq!(config["model"]["kind"], "mlp");
    assert_eq!(config["training"]["seed"], 0);
    assert_eq!(config["training"]["step"], 300);
    assert_eq!(config["training"]["data"], "moons");

    // Sampling from the checkpoint: NFE per solver, .npy and .csv output.
    for (solver, steps, nfe) in [("euler", "8", 8), ("midpoint", "8", 16), ("heun", "4", 8), ("rk4", "5", 20)]
    {
        let f = dir.join(format!("s-{solver}.csv"));
        let j = last_json(&ok(&[
            "sample",
            "--checkpoint",
            s(&dir),
            "--solver",
            solver,
            "--steps",
            steps,
            "--n",
            "100",
            "--out",
            s(&f),
            "--json",
        ]));
        assert_eq!(j["nfe"], nfe, "{solver}");
        let csv = std::fs::read_to_string(&f).unwrap_or_default();
        assert_eq!(csv.lines().count(), 101, "header + 100 rows");
    }
    let j = last_json(&ok(&[
        "sample",
        "--checkpoint",
        s(&dir),
        "--solver",
        "dopri5",
        "--rtol",
        "1e-4",
        "--atol",
        "1e-4",
        "--n",
        "100",
        "--json",
    ]));
    assert!(j["nfe"].as_u64().is_some_and(|n| n > 6), "{j}");
    assert!(dir.join("samples.npy").is_file());

    let j = last_json(&ok(&[
        "eval",
        "--checkpoint",
        s(&dir),
        "--solvers",
        "euler:4,midpoint:4",
        "--n",
        "300",
        "--exact-n",
        "100",
        "--json",
    ]));
    assert_eq!(j["results"].as_array().map(|a| a.len()), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn same_seed_gives_bit_identical_checkpoints() {
    let (a, b, c) = (temp("seed-a"), temp("seed-b"), temp("seed-c"));
    for (d, seed) in [(&a, "7"), (&b, "7"), (&c, "8")] {
        ok(&["train", "--steps", "50", "--seed", seed, "--out", s(d), "--quiet", "--sample-n", "100"]);
    }
    // The tensor bytes after the safetensors header; the header records the command line,
    // which names a different output directory in each run.
    let read = |d: &Path| {
        let bytes = std::fs::read(d.join("model.safetensors")).unwrap_or_default();
        let header = bytes.get(..8).map(|h| u64::from_le_bytes(h.try_into().unwrap_or([0; 8])));
        bytes.get(8 + header.unwrap_or(0) as usize..).map(<[u8]>::to_vec).unwrap_or_default()
    };
    assert!(!read(&a).is_empty());
    assert_eq!(read(&a), read(&b), "same seed, same bytes");
    assert_ne!(read(&a), read(&c), "another seed, other weights");
    let samples = |d: &Path| std::fs::read(d.join("samples.npy")).unwrap_or_default();
    assert_eq!(samples(&a), samples(&b));
    for d in [a, b, c] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn csv_data_is_standardized_and_sampled_in_data_units() {
    let dir = temp("csv");
    std::fs::create_dir_all(&dir).ok();
    let csv = dir.join("points.csv");
    let mut text = String::from("\"\",\"a\",\"b\"\n");
    for i in 0..200 {
        let u = i as f64 / 200.0;
        text.push_str(&format!("\"{i}\",{},{}\n", 100.0 + 10.0 * (6.0 * u).sin(), -5.0 + 0.1 * u));
    }
    std::fs::write(&csv, text).ok();
    let ckpt = dir.join("ckpt");
    let data = format!("csv:{}", s(&csv));
    ok(&[
        "train",
        "--data",
        &data,
        "--columns",
        "a,b",
        "--steps",
        "200",
        "--out",
        s(&ckpt),
        "--quiet",
        "--sample-n",
        "300",
    ]);
    let out = dir.join("samples.csv");
    ok(&["sample", "--checkpoint", s(&ckpt), "--n", "300", "--out", s(&out)]);
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("a,b"));
    let rows: Vec<(f64, f64)> = lines
        .filter_map(|l| l.split_once(','))
        .filter_map(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .collect();
    assert_eq!(rows.len(), 300);
    let mean_a = rows.iter().map(|r| r.0).sum::<f64>() / 300.0;
    let mean_b = rows.iter().map(|r| r.1).sum::<f64>() / 300.0;
    assert!((mean_a - 100.0).abs() < 5.0, "samples come back in data units: mean a = {mean_a}");
    assert!((mean_b + 4.95).abs() < 0.2, "mean b = {mean_b}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_gives_clear_errors() {
    let e = fails(&["train", "--data", "nope", "--steps", "1"]);
    assert!(e.contains("nope") && e.contains("moons") && e.contains("checkerboard"), "{e}");
    assert!(fails(&["train", "--steps", "0"]).contains("--steps"));
    assert!(fails(&["train", "--batch-size", "0"]).contains("--batch-size"));
    assert!(fails(&["train", "--lr=-1"]).contains("--lr"));
    assert!(fails(&["train", "--preset", "nope"]).contains("guide-moons"));
    assert!(fails(&["train", "--activation", "nope", "--steps", "1"]).contains("elu"));
    let e = fails(&["train", "--data", "csv:/definitely/not/here.csv", "--steps", "1"]);
    assert!(e.contains("/definitely/not/here.csv"), "{e}");
    let e = fails(&["sample", "--checkpoint", "/definitely/not/a/checkpoint"]);
    assert!(e.contains("/definitely/not/a/checkpoint"), "{e}");

    let dir = temp("bad");
    ok(&["train", "--steps", "20", "--out", s(&dir), "--quiet", "--sample-n", "50"]);
    let e = fails(&["sample", "--checkpoint", s(&dir), "--solver", "nope"]);
    assert!(e.contains("nope") && e.contains("dopri5"), "{e}");
    assert!(fails(&["sample", "--checkpoint", s(&dir), "--solver", "dopri5", "--rtol", "0"]).contains("rtol"));
    assert!(fails(&["sample", "--checkpoint", s(&dir), "--steps", "0"]).contains("--steps"));
    let e = fails(&["sample", "--checkpoint", s(&dir), "--out", s(&dir.join("x.txt"))]);
    assert!(e.contains(".npy"), "{e}");
    let e = fails(&["sample", "--checkpoint", s(&dir), "--out", "/proc/forbidden/x.npy"]);
    assert!(e.contains("/proc/forbidden"), "{e}");
    let csv = dir.join("bad.csv");
    std::fs::write(&csv, "a,b\n1,2\n3,oops\n").ok();
    let e = fails(&["train", "--data", &format!("csv:{}", s(&csv)), "--columns", "a,b", "--steps", "1"]);
    assert!(e.contains("bad.csv") && e.contains("oops"), "{e}");
    for (name, text, needle) in [
        ("nan.csv", "a,b\n1,2\nNaN,3\n", "NaN"),
        ("inf.csv", "a,b\n1,2\n3,inf\n", "inf"),
        ("empty-cell.csv", "a,b\n1,2\n,3\n", "line 3"),
        ("short-row.csv", "a,b\n1,2\n3\n", "line 3"),
    ] {
        let csv = dir.join(name);
        std::fs::write(&csv, text).ok();
        let e = fails(&["train", "--data", &format!("csv:{}", s(&csv)), "--columns", "a,b", "--steps", "1"]);
        assert!(e.contains(name) && e.contains(needle), "{name}: {e}");
    }
    // Unwritable output: refused before any training.
    let blocker = dir.join("a-file");
    std::fs::write(&blocker, "").ok();
    let e = fails(&["train", "--steps", "1", "--out", s(&blocker.join("sub"))]);
    assert!(e.contains("--out") && e.contains("a-file"), "{e}");
    assert!(!e.contains("training MLP"), "the error comes before training: {e}");
    // Corrupt and truncated checkpoints.
    let broken = dir.join("broken");
    std::fs::create_dir_all(&broken).ok();
    let weights = std::fs::read(dir.join("model.safetensors")).unwrap_or_default();
    std::fs::write(broken.join("model.safetensors"), &weights[..weights.len() / 2]).ok();
    let e = fails(&["sample", "--checkpoint", s(&broken)]);
    assert!(e.contains("broken") && e.contains("model.safetensors"), "{e}");
    std::fs::write(broken.join("model.safetensors"), b"not a safetensors file").ok();
    assert!(fails(&["sample", "--checkpoint", s(&broken)]).contains("safetensors"));
    // Resume: nothing to resume, or a flag that would change the run.
    let e = fails(&["train", "--resume", s(&dir.join("nothing-here"))]);
    assert!(e.contains("--resume") && e.contains("nothing-here"), "{e}");
    let e = fails(&["train", "--resume", s(&dir), "--lr", "0.5"]);
    assert!(e.contains("--lr"), "{e}");
    // Config files: unknown keys and bad values name the file and the key.
    let cfg = dir.join("recipe.toml");
    std::fs::write(&cfg, "batch-sise = 3\n").ok();
    let e = fails(&["train", "--config", s(&cfg)]);
    assert!(e.contains("recipe.toml") && e.contains("batch-sise"), "{e}");
    std::fs::write(&cfg, "steps = -3\n").ok();
    let e = fails(&["train", "--config", s(&cfg)]);
    assert!(e.contains("recipe.toml") && e.contains("steps = -3"), "{e}");
    // Nonsensical numbers.
    let e = fails(&["sample", "--checkpoint", s(&dir), "--solver", "dopri5", "--rtol", "0"]);
    assert!(e.contains("rtol"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn diverging_training_stops_and_keeps_the_last_checkpoint() {
    let dir = temp("diverge");
    let e = fails(&[
        "train",
        "--lr",
        "1e30",
        "--steps",
        "50",
        "--checkpoint-every",
        "1",
        "--out",
        s(&dir),
        "--quiet",
    ]);
    assert!(e.contains("diverged at step 2") && e.contains("step 1") && e.contains("intact"), "{e}");
    // The checkpoint of step 1 still loads.
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap_or_default();
    assert!(config.contains("\"step\": 1"), "{config}");
    ok(&["sample", "--checkpoint", s(&dir), "--n", "5", "--out", s(&dir.join("s.npy"))]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn config_file_sets_defaults_and_flags_override_it() {
    let dir = temp("config");
    std::fs::create_dir_all(&dir).ok();
    let cfg = dir.join("recipe.toml");
    std::fs::write(
        &cfg,
        "data = \"circles\"\nsteps = 40\nbatch-size = 32\nhidden = [16, 16]\nout = \"run\"\nsample-n = 50\n",
    )
    .ok();
    let j = last_json(&ok(&["train", "--config", s(&cfg), "--steps", "30", "--quiet", "--json"]));
    assert_eq!(j["steps"].as_u64(), Some(30), "the flag wins");
    let out = dir.join("run"); // relative to the config file
    let config = std::fs::read_to_string(out.join("config.json")).unwrap_or_default();
    let c: serde_json::Value = serde_json::from_str(&config).unwrap_or_default();
    assert_eq!(c["training"]["data"], "circles");
    assert_eq!(c["training"]["batch_size"], 32);
    assert_eq!(c["model"]["hidden"], serde_json::json!([16, 16]));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The reference recipe (Lipman et al.'s guide, Code 1): the loss ends near the
/// irreducible floor ≈ 0.94 of two moons, and sample quality orders as
/// Euler-8 worse than midpoint-8 ≈ Euler-100 on energy distance.
///
/// Observed on the development machine (seed 0): loss 0.9707; energy distance
/// euler-8 0.00869, midpoint-8 0.00563, euler-100 0.00540.
#[test]
fn guide_moons_recipe_reproduces() {
    let dir = temp("guide-moons");
    let j = last_json(&ok(&["train", "--preset", "guide-moons", "--out", s(&dir), "--quiet", "--json"]));
    let loss = j["loss"].as_f64().unwrap_or(f64::NAN);
    assert!((loss - 0.94).abs() < 0.08, "final loss {loss} is not within 0.08 of 0.94");
    assert_eq!(j["steps"].as_u64(), Some(10_000));

    let e = last_json(&ok(&[
        "eval",
        "--checkpoint",
        s(&dir),
        "--solvers",
        "euler:8,midpoint:8,euler:100",
        "--exact-n",
        "0",
        "--json",
    ]));
    let energy = |k: usize| e["results"][k]["metrics"]["energy_distance"].as_f64().unwrap_or(f64::NAN);
    let (euler8, midpoint8, euler100) = (energy(0), energy(1), energy(2));
    assert!(euler8 > 1.2 * midpoint8, "euler-8 {euler8} should be clearly worse than midpoint-8 {midpoint8}");
    assert!(
        (midpoint8 - euler100).abs() < 0.25 * euler100,
        "midpoint-8 {midpoint8} should match euler-100 {euler100}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Starts `fm train` in the background and waits until it has saved a checkpoint past `step`.
/// The caller owns the child and waits for it.
#[allow(clippy::zombie_processes)]
fn spawn_until_step(args: &[&str], dir: &Path, step: u64) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fm"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("fm starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if saved_step(dir) >= step {
            return child;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no checkpoint past step {step} in time");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The step of the checkpoint in `dir` (0 when there is none).
fn saved_step(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|j| j["training"]["step"].as_u64())
        .unwrap_or(0)
}

#[test]
fn killed_or_interrupted_runs_resume_bit_identically() {
    let (full, killed, stopped) = (temp("resume-full"), temp("resume-killed"), temp("resume-int"));
    let args = |d: &Path, steps: &str| -> Vec<String> {
        [
            "train",
            "--steps",
            steps,
            "--checkpoint-every",
            "100",
            "--seed",
            "3",
            "--quiet",
            "--sample-n",
            "100",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["--out".to_string(), s(d).to_string()])
        .collect()
    };
    ok(&strs(&args(&full, "3000")));
    let reference = tensor_bytes(&full.join("model.safetensors"));
    assert!(!reference.is_empty());
    // The stopped runs are planned far longer than any test lasts, so that the
    // signal always lands mid-run; resuming them with `--steps 3000` must give
    // the 3000-step run's weights (the total does not enter the training).
    let endless = "100000000";

    // SIGKILL mid-run: what is on disk always loads, and resuming gives the same weights.
    let mut child = spawn_until_step(&strs(&args(&killed, endless)), &killed, 200);
    child.kill().expect("kill");
    let status = child.wait().expect("fm is reaped");
    assert!(!status.success(), "the run ended before SIGKILL: {status}");
    let at = saved_step(&killed);
    assert!((200..3000).contains(&at), "killed at step {at}");
    ok(&["sample", "--checkpoint", s(&killed), "--n", "10", "--out", s(&killed.join("s.csv"))]);
    ok(&["train", "--resume", s(&killed), "--steps", "3000", "--quiet", "--sample-n", "100"]);
    assert_eq!(tensor_bytes(&killed.join("model.safetensors")), reference, "resumed after SIGKILL");

    // Ctrl-C (SIGINT): saves, exits with 130 and says how to resume.
    let child = spawn_until_step(&strs(&args(&stopped, endless)), &stopped, 200);
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status().map(|s| s.success()).unwrap_or(false);
    assert!(sent, "kill -INT {pid} failed");
    let out = child.wait_with_output().expect("fm exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "Ctrl-C must stop the run with code 130: {stderr}");
    assert!(stderr.contains("--resume") && stderr.contains("interrupted at step"), "{stderr}");
    let at = saved_step(&stopped);
    assert!((200..3000).contains(&at), "interrupted at step {at}");
    ok(&["train", "--resume", s(&stopped), "--steps", "3000", "--quiet", "--sample-n", "100"]);
    assert_eq!(tensor_bytes(&stopped.join("model.safetensors")), reference, "resumed after Ctrl-C");
    let a = std::fs::read_to_string(full.join("metrics.json")).unwrap_or_default();
    let b = std::fs::read_to_string(stopped.join("metrics.json")).unwrap_or_default();
    let loss = |t: &str| serde_json::from_str::<serde_json::Value>(t).ok().and_then(|j| j["loss"].as_f64());
    assert_eq!(loss(&a), loss(&b), "the reported loss survives the interruption");
    for d in [full, killed, stopped] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn train_with_a_matcher_records_it_and_resumes() {
    let dir = temp("otcfm");
    let args = ["train", "--matcher", "otcfm", "--steps", "50", "--out", s(&dir), "--json", "--quiet"];
    let j = last_json(&ok(&[&args[..], &["--sample-n", "100"]].concat()));
    assert!(j["loss"].as_f64().is_some_and(|l| l.is_finite()), "{j}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap_or_default())
            .unwrap_or_default();
    let t = &config["training"];
    assert_eq!(t["matcher"], "otcfm", "{t}");
    assert_eq!(t["coupling"], "exact-ot", "{t}");
    assert_eq!(t["sigma"].as_f64(), Some(0.0), "{t}");
    assert!(fails(&["train", "--resume", s(&dir), "--matcher", "icfm"]).contains("--matcher"));
    ok(&["train", "--resume", s(&dir), "--steps", "60", "--quiet", "--sample-n", "50"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn exact_ot_runs_resume_bit_identically() {
    // The OT-CFM pipeline holds one batch ahead; with σ > 0 the path noise is
    // drawn after it, so a resume must redraw the queued batch from the saved
    // positions. 30 + 30 resumed steps equal 60 straight, from both sources.
    for source in ["normal", "8gaussians"] {
        let (full, half) = (temp(&format!("ot-full-{source}")), temp(&format!("ot-half-{source}")));
        let run = |dir: &Path, steps: &str| {
            let args = ["--matcher", "otcfm", "--sigma", "0.05", "--source", source, "--batch-size", "64"];
            ok(&[&["train"][..], &args, &["--steps", steps, "--out", s(dir), "--quiet", "--sample-n", "20"]]
                .concat());
        };
        run(&full, "60");
        run(&half, "30");
        let weights = |dir: &Path| tensor_bytes(&dir.join("model.safetensors"));
        assert!(weights(&half) != weights(&full), "{source}: 30 steps differ from 60");
        ok(&["train", "--resume", s(&half), "--steps", "60", "--quiet", "--sample-n", "20"]);
        assert!(weights(&half) == weights(&full), "{source}: the resumed run differs from the straight one");
        let _ = std::fs::remove_dir_all(&full);
        let _ = std::fs::remove_dir_all(&half);
    }
}

#[test]
fn plain_runs_record_no_matcher_and_bad_matcher_names_list_the_valid_ones() {
    let dir = temp("nomatcher");
    ok(&["train", "--steps", "5", "--out", s(&dir), "--quiet", "--sample-n", "20"]);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap_or_default())
            .unwrap_or_default();
    let t = &config["training"];
    assert!(t.get("objective").is_some(), "{t}");
    for key in ["matcher", "coupling", "sigma"] {
        assert!(t.get(key).is_none(), "plain runs keep the old record: {t}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let e = fails(&["train", "--matcher", "nope", "--steps", "1"]);
    for name in ["icfm", "otcfm", "sbcfm", "fm", "si"] {
        assert!(e.contains(name), "{e}");
    }
    let e = fails(&["train", "--coupling", "nope", "--steps", "1"]);
    assert!(e.contains("--coupling") && e.contains("independent") && e.contains("sinkhorn"), "{e}");
    assert!(fails(&["train", "--matcher", "sbcfm", "--sigma", "0", "--steps", "1"]).contains("--sigma"));
    assert!(fails(&["train", "--matcher", "fm", "--coupling", "ot", "--steps", "1"]).contains("--coupling"));
    assert!(fails(&["train", "--matcher", "icfm", "--scheduler", "cosine", "--steps", "1"])
        .contains("--scheduler"));
}

/// Every subcommand's `--help` carries examples, and every command that can run
/// for more than a second takes `--quiet` (its progress bar).
/// The subcommands `fm HELP_PATH --help` lists (without `help`).
fn subcommands(path: &[&str]) -> Vec<String> {
    let mut args = path.to_vec();
    args.push("--help");
    let h = ok(&args);
    let Some(list) = h.split("Commands:\n").nth(1) else { return vec![] };
    list.lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Every subcommand (found in `fm --help`, recursively) has examples, and every
/// one that can run longer than a few seconds takes `--quiet` (its progress bar).
#[test]
fn every_subcommand_has_examples_and_long_ones_take_quiet() {
    // Only these are quick whatever their input (they copy or convert files).
    let quick = ["export", "convert", "plot grid"];
    let mut leaves: Vec<Vec<String>> = Vec::new();
    let mut todo: Vec<Vec<String>> = subcommands(&[]).into_iter().map(|c| vec![c]).collect();
    while let Some(path) = todo.pop() {
        let refs: Vec<&str> = path.iter().map(String::as_str).collect();
        let children = subcommands(&refs);
        if children.is_empty() {
            leaves.push(path);
        } else {
            todo.extend(children.into_iter().map(|c| [path.clone(), vec![c]].concat()));
        }
    }
    assert!(leaves.len() >= 16, "found only {leaves:?}");
    for path in &leaves {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let h = ok(&args);
        assert!(h.contains("Examples:"), "fm {path:?} --help has no examples:\n{h}");
        if !quick.contains(&path[0].as_str()) && !quick.contains(&path.join(" ").as_str()) {
            assert!(h.contains("--quiet"), "fm {path:?} takes no --quiet:\n{h}");
        }
    }
}

#[test]
fn eight_gaussian_source_is_recorded_used_by_sampling_and_refused_by_likelihood() {
    let dir = temp("source8g");
    let args = ["train", "--matcher", "otcfm", "--source", "8gaussians", "--steps", "1", "--out", s(&dir)];
    ok(&[&args[..], &["--quiet", "--sample-n", "50"]].concat());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap_or_default())
            .unwrap_or_default();
    assert_eq!(config["training"]["source"], "8gaussians", "{config}");
    // One Euler step of a barely trained field stays near the source:
    // points at radius ≈ 5, far from N(0, I) (mean radius ≈ 1.25).
    let out = dir.join("x0.csv");
    ok(&[
        "sample",
        "--checkpoint",
        s(&dir),
        "--solver",
        "euler",
        "--steps",
        "1",
        "--n",
        "200",
        "--out",
        s(&out),
    ]);
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let radii: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            let v: Vec<f64> = l.split(',').filter_map(|x| x.trim().parse().ok()).collect();
            (v.len() == 2).then(|| (v[0] * v[0] + v[1] * v[1]).sqrt())
        })
        .collect();
    assert!(radii.len() == 200, "{text}");
    let mean = radii.iter().sum::<f64>() / radii.len() as f64;
    assert!(mean > 2.5, "mean radius {mean}: not the 8-Gaussian source");
    assert!(fails(&["likelihood", "--checkpoint", s(&dir)]).contains("source"));
    // The closed-form velocity transports N(0, I): its analyses refuse this checkpoint.
    let d = s(&dir);
    for args in [
        &["analyze", "hybrid", "--checkpoint", d, "--n-train", "100", "--n", "20"][..],
        &["analyze", "memorization", "--checkpoint", d, "--n-train", "100", "--n", "20", "--closed-form"],
        &["sample", "--checkpoint", d, "--hybrid", "0.5", "--n", "20"],
    ] {
        let e = fails(args);
        assert!(e.contains("--source 8gaussians") && e.contains("closed-form"), "{args:?}: {e}");
    }
    assert!(fails(&["train", "--source", "8gaussians", "--steps", "1"]).contains("--matcher"));
    assert!(fails(&["train", "--matcher", "icfm", "--source", "nope", "--steps", "1"]).contains("8gaussians"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn device_flag_runs_on_the_cpu_and_explains_cuda() {
    let dir = temp("device");
    let j = last_json(&ok(&[
        "train",
        "--device",
        "cpu",
        "--steps",
        "2",
        "--sample-n",
        "20",
        "--out",
        s(&dir),
        "--json",
    ]));
    assert_eq!(j["steps"], 2, "{j}");
    let e = fails(&["sample", "--checkpoint", s(&dir), "--device", "gpu"]);
    assert!(e.contains("--device gpu") && e.contains("cuda:N"), "{e}");
    if !cfg!(feature = "cuda") {
        let e = fails(&["--device", "cuda:0", "sample", "--checkpoint", s(&dir)]);
        assert!(e.contains("--features cuda"), "{e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

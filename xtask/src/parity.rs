//! `cargo xtask parity`: fm's U-Net and MLP against torchcfm's, on the same
//! weights and inputs.
//!
//! `xtask/python/parity.py export` builds torchcfm's `UNetModelWrapper` for
//! MNIST and CIFAR-10 shapes and its `MLP` with fixed seeds and saves their
//! state dicts, inputs and outputs as safetensors; `fm convert --from
//! torchcfm-unet|torchcfm-mlp` turns each state dict into an fm checkpoint,
//! `fm velocity` evaluates it on the same inputs, `fm convert --to …` writes
//! the weights back, and `parity.py compare` prints the max abs difference
//! (≤ 1e-4 required), checks that torchcfm loads the written-back weights
//! strictly and reproduces its own output exactly, and prints both timings.
//! The venv is the bench's (`target/bench-venv`, created when missing).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

pub const USAGE: &str = "usage: cargo xtask parity [--release] [--threads N]

Builds `fm` (the dev profile, or --release), exports torchcfm's MNIST and CIFAR-10 U-Nets and
its MLP with fixed seeds (xtask/python/parity.py, in the venv at target/bench-venv, installing
torch and torchcfm when missing), converts them with `fm convert`, runs `fm velocity` on the
same inputs, and prints the max abs difference (≤ 1e-4, f32) and the forward-pass timings.
Files go to target/parity/.";

const CASES: &[(&str, &str)] =
    &[("mnist-unet", "torchcfm-unet"), ("cifar10-unet", "torchcfm-unet"), ("mlp", "torchcfm-mlp")];

fn run_checked(cmd: &mut Command, what: &str) -> Result<String> {
    eprintln!("$ {what}");
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The value of `"key": <number>` in a one-line JSON object.
fn json_number(line: &str, key: &str) -> Option<f64> {
    let start = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &line[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

pub fn run(args: &[String]) -> Result<()> {
    let release = args.iter().any(|a| a == "--release");
    let threads = match args.iter().position(|a| a == "--threads") {
        Some(i) => Some(args.get(i + 1).context("--threads needs a number")?.clone()),
        None => None,
    };
    if let Some(a) =
        args.iter().find(|a| a.starts_with("--") && !matches!(a.as_str(), "--release" | "--threads"))
    {
        bail!("unknown option {a}\n\n{USAGE}");
    }
    let python = crate::bench::peer_python()?;
    let has_safetensors = Command::new(&python)
        .args(["-c", "import safetensors"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !has_safetensors {
        run_checked(
            Command::new(&python).args(["-m", "pip", "install", "--quiet", "safetensors"]),
            "pip install safetensors",
        )?;
    }
    let mut build = vec!["build", "-p", "fm-cli"];
    if release {
        build.push("--release");
    }
    crate::cargo(&build, &[])?;
    let fm = crate::bench::target_dir().join(if release { "release" } else { "debug" }).join("fm");
    let root = crate::bench::target_dir().join("parity");
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join("parity.py");
    let py = |verb: &str| {
        let mut c = Command::new(&python);
        c.arg(&script).arg(verb).arg(&root);
        if let Some(t) = &threads {
            c.args(["--threads", t]);
        }
        c
    };
    run_checked(&mut py("export"), "python parity.py export")?;
    for (case, format) in CASES {
        let dir = root.join(case);
        let ckpt = dir.join("fm");
        let p = |name: &str| -> PathBuf { dir.join(name) };
        let mut convert = Command::new(&fm);
        convert.args(["convert", "--from", format]).arg(p("torch.safetensors")).arg("--out").arg(&ckpt);
        if *format == "torchcfm-unet" {
            convert.arg("--config").arg(p("config.json"));
        }
        run_checked(&mut convert, &format!("fm convert --from {format} ({case})"))?;
        let mut velocity = Command::new(&fm);
        velocity
            .args(["velocity", "--repeat", "3", "--json", "--checkpoint"])
            .arg(&ckpt)
            .arg("--inputs")
            .arg(p("inputs.safetensors"))
            .arg("--out")
            .arg(p("fm_out.safetensors"));
        if let Some(t) = &threads {
            velocity.env("RAYON_NUM_THREADS", t);
        }
        let out = run_checked(&mut velocity, &format!("fm velocity ({case})"))?;
        let last = out.lines().last().unwrap_or_default();
        let seconds =
            json_number(last, "seconds_median").with_context(|| format!("fm velocity printed {last}"))?;
        std::fs::write(p("fm.json"), format!("{{\"seconds_median\": {seconds}}}"))?;
        run_checked(
            Command::new(&fm)
                .args(["convert", "--to", format])
                .arg(&ckpt)
                .arg("--out")
                .arg(p("back.safetensors")),
            &format!("fm convert --to {format} ({case})"),
        )?;
    }
    let status = py("compare").status().context("cannot run python parity.py compare")?;
    if !status.success() {
        bail!("parity failed (see the table above)");
    }
    Ok(())
}

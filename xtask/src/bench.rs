//! `cargo xtask bench`: fm's workloads against the same workloads in PyTorch
//! (torchcfm, torchdiffeq), alternated in one loop so that machine noise hits
//! both, with one markdown table at the end.
//!
//! The fm side is the `fm-bench` binary (crates/fm-bench), the PyTorch side
//! `xtask/python/peer.py` in a virtual environment under `target/bench-venv`
//! (created, and torch, torchcfm and torchdiffeq installed from the package
//! registry, when missing). Both run as long-lived children answering
//! `NAME ITERS` requests with JSON lines.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{bail, Context, Result};

pub const USAGE: &str =
    "cargo xtask bench [--quick] [--threads 1,2] [--reps N] [--only A,B] [--no-peer] [--simd native|avx2|portable] [--out FILE.md]
  --quick     smoke run: small sizes, one repetition, no thresholds
  --only      only these workloads (names as `fm-bench list` prints them)
  --threads   thread counts to run at (candle: RAYON_NUM_THREADS, torch.set_num_threads); default 1,2
  --reps      repetitions of the alternating loop (default 5; medians are reported)
  --no-peer   fm only, no PyTorch
  --simd      cap the instruction sets of fm's own kernels (FM_SIMD; default native): avx2 measures
              an AVX-512 machine as an AVX2 one, portable without vector copies (the gemm crate
              behind candle's matrix products keeps its own dispatch)
  --out       also write the table there (default target/bench/report.md)";

/// Workloads, with how many runs one request makes (full, quick).
const WORKLOADS: &[(&str, &str, usize)] = &[
    ("train_b256", "CFM train step, MLP 3-256-256-256-2 SiLU, AdamW, batch 256", 40),
    ("train_b4096", "CFM train step, same MLP, batch 4096", 4),
    ("train_ot_b256", "exact OT-CFM train step, same MLP, batch 256", 40),
    (
        "train_meanflow_b256",
        "MeanFlow train step, MLP 4-256-256-256-2 SiLU (JVP along (u, 1, 0); torch.func.jvp in PyTorch), batch 256",
        20,
    ),
    ("unet_train_mnist", "U-Net train step, MNIST 1×28×28 (torchcfm's MNIST U-Net), Adam, batch 128", 2),
    (
        "realnvp_train_mnist",
        "RealNVP train step, MNIST 784 (8 checkerboard couplings, ELU 64-64 conditioners, logit), Adam, batch 256",
        10,
    ),
    ("sample_euler100", "sample 10,000 points, Euler 100 steps", 1),
    ("sample_dopri5", "sample 10,000 points, Dopri5 rtol=atol=1e-5", 1),
    ("unet_sample_mnist", "sample 64 MNIST images from the U-Net (torchcfm's MNIST layout), Euler 20 steps", 1),
    ("likelihood_exact", "likelihood of 1,000 points, exact divergence, RK4 25 steps", 1),
    ("likelihood_hutchinson", "likelihood of 1,000 points, Hutchinson (1 probe), RK4 25 steps", 2),
    ("closed_form", "closed-form velocity n=10,000, d=784, b=256", 4),
    ("ot_coupling", "exact OT coupling, batch 256 (2-D)", 10),
    ("gemm", "f32 GEMM 1024³ into a preallocated result (peak rate)", 10),
];

/// Workloads whose peak memory is compared.
const MEMORY_WORKLOADS: &[&str] =
    &["sample_euler100", "sample_dopri5", "likelihood_exact", "likelihood_hutchinson"];

struct Options {
    quick: bool,
    threads: Vec<usize>,
    reps: usize,
    peer: bool,
    only: Option<Vec<String>>,
    simd: String,
    out: PathBuf,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        quick: false,
        threads: vec![1, 2],
        reps: 5,
        peer: true,
        only: None,
        simd: "native".into(),
        out: PathBuf::from("target/bench/report.md"),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value =
            |flag: &str| it.next().cloned().with_context(|| format!("{flag} needs a value\n{USAGE}"));
        match a.as_str() {
            "--quick" => o.quick = true,
            "--no-peer" => o.peer = false,
            "--threads" => {
                let v = value("--threads")?;
                o.threads = v
                    .split(',')
                    .map(|s| s.trim().parse::<usize>().ok().filter(|&n| n > 0))
                    .collect::<Option<Vec<_>>>()
                    .with_context(|| format!("--threads: expected counts like 1,2, got `{v}`"))?;
            }
            "--reps" => {
                let v = value("--reps")?;
                o.reps = v.parse().ok().filter(|&n| n > 0).with_context(|| format!("--reps: got `{v}`"))?;
            }
            "--out" => o.out = PathBuf::from(value("--out")?),
            "--simd" => {
                let v = value("--simd")?.to_ascii_lowercase();
                if !["native", "avx2", "portable"].contains(&v.as_str()) {
                    bail!("--simd: expected native, avx2 or portable, got `{v}`");
                }
                o.simd = v;
            }
            "--only" => {
                let v = value("--only")?;
                let names: Vec<String> = v.split(',').map(|s| s.trim().to_string()).collect();
                if let Some(bad) = names.iter().find(|n| !WORKLOADS.iter().any(|w| w.0 == n.as_str())) {
                    let known: Vec<&str> = WORKLOADS.iter().map(|w| w.0).collect();
                    bail!("--only: unknown workload `{bad}`; known: {}", known.join(", "));
                }
                o.only = Some(names);
            }
            other => bail!("unknown flag `{other}`\n{USAGE}"),
        }
    }
    if o.quick && !args.iter().any(|a| a == "--reps") {
        o.reps = 1;
    }
    Ok(o)
}

/// A long-lived benchmark child answering `NAME ITERS` with a JSON line.
struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    what: &'static str,
}

impl Server {
    fn start(mut cmd: Command, what: &'static str) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start the {what} benchmark process"))?;
        let stdin = child.stdin.take().context("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        Ok(Self { child, stdin, stdout, what })
    }

    fn request(&mut self, name: &str, iters: usize) -> Result<Reply> {
        writeln!(self.stdin, "{name} {iters}").and_then(|_| self.stdin.flush())?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line.trim().is_empty() {
            bail!("the {} side died on `{name}` (see its error above)", self.what);
        }
        Reply::parse(&line)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone, Default)]
struct Reply {
    secs: Vec<f64>,
    nfe: Option<f64>,
    flops: Option<f64>,
}

impl Reply {
    fn parse(line: &str) -> Result<Self> {
        let secs = json_field(line, "secs")
            .and_then(|v| {
                v.trim_start_matches('[')
                    .trim_end_matches(']')
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| s.trim().parse::<f64>().ok())
                    .collect::<Option<Vec<_>>>()
            })
            .with_context(|| format!("malformed reply `{}`", line.trim()))?;
        Ok(Self { secs, nfe: json_number(line, "nfe"), flops: json_number(line, "flops") })
    }
}

/// The raw text of `"key": VALUE` in a flat JSON object (arrays of numbers allowed).
fn json_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":");
    let start = line.find(&pat)? + pat.len();
    let rest = line[start..].trim_start();
    let end = if rest.starts_with('[') { rest.find(']')? + 1 } else { rest.find([',', '}'])? };
    Some(rest[..end].trim())
}

fn json_number(line: &str, key: &str) -> Option<f64> {
    json_field(line, key)?.parse().ok()
}

fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"))
}

/// The venv's python with torch, torchcfm and torchdiffeq, installing them when missing.
pub(crate) fn peer_python() -> Result<PathBuf> {
    let venv = target_dir().join("bench-venv");
    let python = venv.join("bin").join("python");
    let ready = |p: &Path| {
        Command::new(p)
            .args(["-c", "import torch, torchcfm, torchdiffeq"])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if python.exists() && ready(&python) {
        return Ok(python);
    }
    if !python.exists() {
        eprintln!("creating the PyTorch environment in {}", venv.display());
        let ok = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().map(|s| s.success());
        if !matches!(ok, Ok(true)) {
            bail!("cannot create a Python virtual environment (is python3 with venv installed?)");
        }
    }
    // PyPI's Linux torch wheel is the CUDA build: it needs the nvidia-* wheels
    // to import at all, even on a CPU-only machine (~3 GB in all).
    eprintln!("installing torch, torchcfm and torchdiffeq from the package registry (large download, once)");
    let ok = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "torch", "torchcfm", "torchdiffeq"])
        .status()
        .map(|s| s.success());
    if !matches!(ok, Ok(true)) || !ready(&python) {
        bail!("could not install torch, torchcfm and torchdiffeq into {}", venv.display());
    }
    Ok(python)
}

/// Peak memory of one run in a fresh process: `(peak increase over the RSS
/// before the run, peak RSS)`, in MiB.
fn memory(mut cmd: Command) -> Result<(f64, f64)> {
    let out = cmd.stderr(Stdio::inherit()).output().context("cannot run the memory probe")?;
    let line = String::from_utf8_lossy(&out.stdout);
    let before = json_number(&line, "rss_before_kib").with_context(|| format!("malformed reply `{line}`"))?;
    let peak = json_number(&line, "peak_kib").with_context(|| format!("malformed reply `{line}`"))?;
    Ok(((peak - before) / 1024.0, peak / 1024.0))
}

#[derive(Default)]
struct Row {
    fm: Vec<f64>,
    peer: Vec<f64>,
    ratio: Vec<f64>,
    fm_nfe: Option<f64>,
    peer_nfe: Option<f64>,
    flops: Option<f64>,
}

/// The smallest and largest of `v` (`None` when empty).
fn spread(v: &[f64]) -> Option<(f64, f64)> {
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    (!v.is_empty()).then_some((lo, hi))
}

/// The CPU's model name (`/proc/cpuinfo` on Linux; the architecture elsewhere).
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The vector instruction sets the CPU has, from `/proc/cpuinfo`'s flags
/// (`avx512f, avx2, fma`; `asimd` is NEON on aarch64).
fn cpu_sets() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = info
        .lines()
        .find(|l| l.starts_with("flags") || l.starts_with("Features"))
        .and_then(|l| l.split(':').nth(1))
        .map(|f| f.split_whitespace().collect())
        .unwrap_or_default();
    let sets: Vec<&str> =
        ["avx512f", "avx2", "fma", "asimd"].into_iter().filter(|s| flags.contains(s)).collect();
    if sets.is_empty() {
        "no vector extensions fm uses, or no /proc/cpuinfo".into()
    } else {
        sets.join(", ")
    }
}

fn fmt_time(s: f64) -> String {
    if !s.is_finite() {
        "—".into()
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let status = Command::new(cargo())
        .args(["build", "--release", "-p", "fm-bench", "--bin", "fm-bench"])
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("building fm-bench failed");
    }
    let fm_bin = target_dir().join("release").join("fm-bench");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join("peer.py");
    let python = if o.peer {
        match peer_python() {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("PyTorch side unavailable, running fm only: {e:#}");
                None
            }
        }
    } else {
        None
    };
    let quick_flag: &[&str] = if o.quick { &["--quick"] } else { &[] };
    let selected = |name: &str| o.only.as_ref().is_none_or(|names| names.iter().any(|n| n == name));
    let workloads: Vec<&(&str, &str, usize)> = WORKLOADS.iter().filter(|w| selected(w.0)).collect();

    let mut table = String::new();
    let level = Command::new(&fm_bin)
        .arg("simd")
        .env("FM_SIMD", &o.simd)
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    table.push_str(&format!(
        "CPU: {} ({} logical CPUs; has {}); fm's kernels: {level}; PyTorch: its own dispatch (MKL, oneDNN)\n\n",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_sets()
    ));
    table.push_str(&format!(
        "{} repetitions; the ratio is the median of the per-repetition ratios, with their min–max\n\n",
        o.reps
    ));
    table.push_str(
        "| workload | threads | fm | PyTorch | PyTorch time / fm time (min–max) | GFLOP/s (fm; % of measured peak) |\n|---|---|---|---|---|---|\n",
    );
    let mut overheads: Vec<(usize, Option<f64>, Option<f64>)> = Vec::new();
    for &threads in &o.threads {
        let t = threads.to_string();
        let mut cmd = Command::new(&fm_bin);
        cmd.arg("serve").args(quick_flag).env("RAYON_NUM_THREADS", &t).env("FM_SIMD", &o.simd);
        let mut fm = Server::start(cmd, "fm")?;
        let mut peer = match &python {
            Some(p) => {
                let mut cmd = Command::new(p);
                cmd.arg(&script).arg("serve").args(quick_flag).args(["--threads", &t]);
                cmd.env("OMP_NUM_THREADS", &t).env("MKL_NUM_THREADS", &t);
                Some(Server::start(cmd, "PyTorch")?)
            }
            None => None,
        };
        // Wait until both sides are up before timing anything: importing torch
        // takes seconds of CPU, and fm's first requests ran beside it (the
        // closed-form velocity's first two-thread runs took 97 ms instead of 49).
        if let Some((name, _, _)) = workloads.first() {
            fm.request(name, 1)?;
            if let Some(p) = peer.as_mut() {
                p.request(name, 1)?;
            }
        }
        let mut rows: Vec<Row> = workloads.iter().map(|_| Row::default()).collect();
        for rep in 0..o.reps {
            eprintln!("threads {threads}: repetition {}/{}", rep + 1, o.reps);
            for (i, (name, _, iters)) in workloads.iter().enumerate() {
                let iters = if o.quick { 1 } else { *iters };
                // Alternate who goes first, so that slow drifts hit both.
                let mut replies = (None, None);
                for side in 0..2 {
                    if (side + rep) % 2 == 0 {
                        replies.0 = Some(fm.request(name, iters)?);
                    } else if let Some(p) = peer.as_mut() {
                        replies.1 = Some(p.request(name, iters)?);
                    }
                }
                let row = &mut rows[i];
                if let Some(r) = replies.0 {
                    let m = median(&r.secs);
                    row.fm.push(m);
                    row.fm_nfe = r.nfe;
                    row.flops = r.flops;
                    if let Some(p) = replies.1 {
                        let pm = median(&p.secs);
                        row.peer.push(pm);
                        row.ratio.push(pm / m);
                        row.peer_nfe = p.nfe;
                    }
                }
            }
        }
        let position = |name: &str| workloads.iter().position(|w| w.0 == name);
        if let (Some(i), Some(o)) = (position("train_b256"), position("train_ot_b256")) {
            let extra =
                |a: &[f64], b: &[f64]| (!a.is_empty() && !b.is_empty()).then(|| median(b) / median(a) - 1.0);
            overheads.push((threads, extra(&rows[i].fm, &rows[o].fm), extra(&rows[i].peer, &rows[o].peer)));
        }
        let rate = |r: &[f64], flops: Option<f64>| flops.map(|f| f / median(r) / 1e9);
        // The machine's measured peak: the faster of the two GEMMs (NaN when
        // not run).
        let is_gemm = |name: &str| name.starts_with("gemm");
        let peak = workloads
            .iter()
            .zip(&rows)
            .filter(|(w, _)| is_gemm(w.0))
            .flat_map(|(_, row)| [rate(&row.fm, row.flops), rate(&row.peer, row.flops)])
            .flatten()
            .filter(|r| r.is_finite())
            .fold(f64::NAN, f64::max);
        for ((name, label, _), row) in workloads.iter().zip(&rows) {
            let nfe = |n: Option<f64>| n.map(|n| format!(" (NFE {n})")).unwrap_or_default();
            let fm_cell = format!("{}{}", fmt_time(median(&row.fm)), nfe(row.fm_nfe));
            let peer_cell = if row.peer.is_empty() {
                "—".into()
            } else {
                format!("{}{}", fmt_time(median(&row.peer)), nfe(row.peer_nfe))
            };
            let ratio = match spread(&row.ratio) {
                None => "—".into(),
                Some((lo, hi)) if row.ratio.len() > 1 => {
                    format!("{:.2}× ({lo:.2}–{hi:.2})", median(&row.ratio))
                }
                Some(_) => format!("{:.2}×", median(&row.ratio)),
            };
            let flop = match rate(&row.fm, row.flops) {
                Some(r) if is_gemm(name) => format!("{r:.0} (peak {peak:.0})"),
                Some(r) => format!("{r:.0}; {:.0} %", 100.0 * r / peak),
                None => String::new(),
            };
            table
                .push_str(&format!("| {label} | {threads} | {fm_cell} | {peer_cell} | {ratio} | {flop} |\n"));
        }
    }

    // Issue #8: the exact OT coupling's share of a training step.
    if !overheads.is_empty() {
        table.push_str("\n| OT-CFM step over I-CFM step, batch 256 (wall clock) | threads | fm | PyTorch |\n|---|---|---|---|\n");
        for (threads, fm, peer) in &overheads {
            let cell =
                |v: &Option<f64>| v.map(|v| format!("{:+.1} %", 100.0 * v)).unwrap_or_else(|| "—".into());
            table.push_str(&format!("| overhead | {threads} | {} | {} |\n", cell(fm), cell(peer)));
        }
    }

    // Peak memory, each run in a fresh process, one thread.
    table.push_str("\n| peak memory of one run (MiB above the RSS before it; total peak RSS) | fm | PyTorch |\n|---|---|---|\n");
    for name in MEMORY_WORKLOADS.iter().filter(|n| selected(n)) {
        let mut cmd = Command::new(&fm_bin);
        cmd.args(["mem", name]).args(quick_flag).env("RAYON_NUM_THREADS", "1");
        let (fm_inc, fm_peak) = memory(cmd)?;
        let peer_cell = match &python {
            Some(p) => {
                let mut cmd = Command::new(p);
                cmd.arg(&script).args(["mem", name]).args(quick_flag).args(["--threads", "1"]);
                let (inc, peak) = memory(cmd)?;
                format!("{inc:.1} ({peak:.0})")
            }
            None => "—".into(),
        };
        table.push_str(&format!("| {name} | {fm_inc:.1} ({fm_peak:.0}) | {peer_cell} |\n"));
    }

    println!("\n{table}");
    if let Some(dir) = o.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("--out {}", o.out.display()))?;
    }
    std::fs::write(&o.out, &table).with_context(|| format!("--out {}", o.out.display()))?;
    eprintln!("table written to {}", o.out.display());
    Ok(())
}

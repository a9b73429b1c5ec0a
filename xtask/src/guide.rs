//! `cargo xtask guide [--quick] [CHAPTER…]`: runs every `fm` command of
//! `docs/guide/*.md` with a release build and copies each figure's PNG into
//! `docs/guide/figures/`, so the guide never drifts from the code.
//!
//! `--quick` runs the same commands with the capped settings of
//! [`guide_commands::quick`] in a temporary directory and leaves the figures
//! alone (the check that `crates/fm-cli/tests/guide_tests.rs` makes in CI).
//! Datasets come from `$FM_DATA_DIR`, else `data/` in the repository (where
//! `fm data fetch NAME` puts them); the blocks that read a missing one, and the
//! blocks that read what those wrote, are skipped with a note.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::guide_commands::{self, Relocate};

/// Figures larger than this get a warning: they are committed.
const MAX_FIGURE_BYTES: u64 = 200 * 1024;

/// Runs the guide's commands; `args` are the task's arguments after `guide`.
pub fn run(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let only: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    if let Some(bad) = args.iter().find(|a| a.starts_with("--") && *a != "--quick") {
        bail!("unknown flag `{bad}` (usage: cargo xtask guide [--quick] [CHAPTER…])");
    }
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("xtask has a parent directory")?.to_path_buf();
    let guide = root.join("docs/guide");

    crate::cargo(&["build", "--release", "-p", "fm-cli"], &[])?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let fm = target.join("release").join(format!("fm{}", std::env::consts::EXE_SUFFIX));

    let runs = if quick {
        let d = std::env::temp_dir().join(format!("fm-guide-quick-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    } else {
        root.join(guide_commands::RUN_PREFIX)
    };
    let relocate = Relocate { runs: runs.clone(), data: data_root(&root) };

    let mut timings = Vec::new();
    let mut skipped = Vec::new();
    let chapters =
        guide_commands::chapters(&guide).with_context(|| format!("cannot list {}", guide.display()))?;
    for chapter in &chapters {
        let name = chapter.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !only.is_empty() && !only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        let text =
            std::fs::read_to_string(chapter).with_context(|| format!("cannot read {}", chapter.display()))?;
        let blocks = guide_commands::parse(&text).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        let present = |rest: &str| relocate.data.join(rest).exists();
        let needs = guide_commands::needs_missing_data(&blocks, &present);
        for (block, needs) in blocks.into_iter().zip(needs) {
            let at = format!("{name}:{}", block.line);
            if needs {
                eprintln!("skipping {at}: no datasets at {}", relocate.data.display());
                skipped.push(at);
                continue;
            }
            let start = Instant::now();
            for cmd in &block.commands {
                let args = if quick { guide_commands::quick(cmd) } else { cmd.clone() };
                let args = relocate.apply(&args);
                eprintln!("$ fm {}", args.join(" "));
                let status = Command::new(&fm)
                    .args(&args)
                    .current_dir(&root)
                    .status()
                    .with_context(|| format!("cannot run {}", fm.display()))?;
                if !status.success() {
                    bail!("{at}: `fm {}` failed ({status})", cmd.join(" "));
                }
            }
            let secs = start.elapsed().as_secs_f64();
            if let (Some(fig), false) = (&block.figure, quick) {
                let from = PathBuf::from(relocate.path(&fig.source));
                let to = guide.join(&fig.image);
                std::fs::copy(&from, &to).with_context(|| {
                    format!("{at}: cannot copy the figure {} to {}", from.display(), to.display())
                })?;
                let bytes = std::fs::metadata(&to).map(|m| m.len()).unwrap_or(0);
                if bytes > MAX_FIGURE_BYTES {
                    eprintln!("warning: {} is {} kB (keep figures under 200 kB)", fig.image, bytes / 1024);
                }
            }
            let what = block.figure.as_ref().map(|f| f.image.clone()).unwrap_or_else(|| "(no figure)".into());
            timings.push((at, what, secs));
        }
    }
    println!("{:<28} {:<40} {:>8}", "block", "figure", "time s");
    for (at, what, secs) in &timings {
        println!("{at:<28} {what:<40} {secs:>8.1}");
    }
    let total: f64 = timings.iter().map(|t| t.2).sum();
    println!("{} blocks in {total:.1} s{}", timings.len(), if quick { " (quick)" } else { "" });
    if !skipped.is_empty() {
        println!("skipped (no data): {}", skipped.join(", "));
    }
    if quick {
        let _ = std::fs::remove_dir_all(&runs);
    }
    Ok(())
}

/// `$FM_DATA_DIR`, else `data/` of the repository.
fn data_root(root: &Path) -> PathBuf {
    match std::env::var_os("FM_DATA_DIR") {
        Some(d) => PathBuf::from(d),
        None => root.join(guide_commands::DATA_PREFIX),
    }
}

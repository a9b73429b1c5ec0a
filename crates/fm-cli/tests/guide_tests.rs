//! The guide's commands still run: every `fm …` line of `docs/guide/*.md` is
//! run with quick settings (capped steps and sizes, outputs in a temporary
//! directory), and every figure block must write the PNG it names.
//! `cargo xtask guide` runs the same commands at full settings to regenerate
//! the figures.
//!
//! The chapters' own tests run everywhere, with the digits that ship with fm
//! (`fm data fetch digits` into a temporary data folder). Blocks that read
//! another real dataset (MNIST), and the blocks that read what those wrote,
//! run (only they) in the chapter's `…_with_datasets` test, which the runner
//! lists as ignored when the datasets folder (`FM_DATA_DIR`, see `build.rs`)
//! is absent.

use std::path::{Path, PathBuf};
use std::process::Command;

#[allow(dead_code)]
#[path = "../../../xtask/src/guide_commands.rs"]
mod guide_commands;

use guide_commands::Relocate;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn guide_dir() -> PathBuf {
    root().join("docs/guide")
}

/// The datasets folder (`FM_DATA_DIR`, else the development layout; see `build.rs`).
fn data_root() -> PathBuf {
    PathBuf::from(env!("FM_TEST_DATA_DIR"))
}

fn is_png(p: &Path) -> bool {
    std::fs::read(p).map(|b| b.starts_with(b"\x89PNG\r\n\x1a\n")).unwrap_or(false)
}

/// Which blocks of a chapter run.
#[derive(Clone, Copy, PartialEq)]
enum Blocks {
    /// Those that need no dataset but the digits (directly or through a run that read one).
    WithoutDatasets,
    /// All of them, with the datasets folder.
    All,
}

/// Whether a dataset path (after `data/`) ships with fm.
fn shipped(rest: &str) -> bool {
    rest.starts_with("sklearn-digits/")
}

/// A data folder holding the digits, as `fm data fetch digits` writes them.
fn shipped_data(root: &Path) -> PathBuf {
    let data = root.join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_fm"))
        .args(["data", "fetch", "digits", "--quiet", "--dir"])
        .arg(data.join("sklearn-digits"))
        .output()
        .expect("fm runs");
    assert!(out.status.success(), "fm data fetch digits: {}", String::from_utf8_lossy(&out.stderr));
    data
}

/// Runs one chapter's commands in quick mode.
fn run_chapter(name: &str, which: Blocks) {
    let path = guide_dir().join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let blocks = guide_commands::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let runs = std::env::temp_dir().join(format!(
        "fm-guide-{}-{}-{}",
        name.trim_end_matches(".md"),
        if which == Blocks::All { "all" } else { "plain" },
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&runs);
    let data = match which {
        Blocks::All => data_root(),
        Blocks::WithoutDatasets => shipped_data(&runs),
    };
    let relocate = Relocate { runs: runs.clone(), data };
    let needs = guide_commands::needs_missing_data(&blocks, &shipped);
    if which == Blocks::All {
        assert!(
            needs.contains(&true),
            "{name}: every dataset it reads ships with fm; drop its _with_datasets test"
        );
    }
    for (block, needs) in blocks.iter().zip(needs) {
        if needs && which == Blocks::WithoutDatasets {
            eprintln!("{name}:{}: left to the chapter's _with_datasets test", block.line);
            continue;
        }
        // The plain test runs the rest; a dataset block that read a plain block's
        // output would fail here for the missing file, and say which.
        if !needs && which == Blocks::All {
            continue;
        }
        for cmd in &block.commands {
            let args = relocate.apply(&guide_commands::quick(cmd));
            let out = Command::new(env!("CARGO_BIN_EXE_fm"))
                .args(&args)
                .current_dir(root())
                .output()
                .expect("fm runs");
            assert!(
                out.status.success(),
                "{name}:{}: `fm {}` failed (quick: `fm {}`):\n{}",
                block.line,
                cmd.join(" "),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Some(fig) = &block.figure {
            let png = PathBuf::from(relocate.path(&fig.source));
            assert!(
                is_png(&png),
                "{name}:{}: the commands did not write the figure {}",
                block.line,
                fig.source
            );
        }
    }
    let _ = std::fs::remove_dir_all(&runs);
}

/// Every chapter has a test below, and every figure the chapters show is committed and small.
#[test]
fn every_chapter_is_tested_and_every_figure_is_committed() {
    let tested = [
        "01-pushforward.md",
        "02-normalizing-flows.md",
        "03-cnf.md",
        "04-flow-matching.md",
        "05-generalization.md",
        "06-couplings.md",
        "07-images.md",
        "08-discrete.md",
        "09-manifolds.md",
    ];
    let chapters: Vec<String> = guide_commands::chapters(&guide_dir())
        .expect("docs/guide exists")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(chapters, tested, "add a test for every chapter");
    let mut figures = 0;
    for name in &chapters {
        let text = std::fs::read_to_string(guide_dir().join(name)).unwrap();
        for block in guide_commands::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}")) {
            if let Some(fig) = block.figure {
                let png = guide_dir().join(&fig.image);
                assert!(is_png(&png), "{name}: {} is not committed", fig.image);
                // The three-panel 2-D plots of `fm train` are 235–300 kB and the planar
                // flow's 630 kB (200 trajectories, antialiased): bound them, aim lower.
                let kb = std::fs::metadata(&png).unwrap().len() / 1024;
                assert!(kb < 700, "{name}: {} is {kb} kB (keep figures small)", fig.image);
                figures += 1;
            }
        }
    }
    assert!(figures >= 10, "only {figures} figures in the guide");
}

#[test]
fn chapter_01_pushforward() {
    run_chapter("01-pushforward.md", Blocks::WithoutDatasets);
}

#[test]
fn chapter_02_normalizing_flows() {
    run_chapter("02-normalizing-flows.md", Blocks::WithoutDatasets);
}

#[test]
fn chapter_03_cnf() {
    run_chapter("03-cnf.md", Blocks::WithoutDatasets);
}

#[test]
fn chapter_04_flow_matching() {
    run_chapter("04-flow-matching.md", Blocks::WithoutDatasets);
}

#[test]
fn chapter_05_generalization() {
    run_chapter("05-generalization.md", Blocks::WithoutDatasets);
}

#[test]
fn chapter_06_couplings() {
    run_chapter("06-couplings.md", Blocks::WithoutDatasets);
}

#[test]
fn chapter_07_images() {
    run_chapter("07-images.md", Blocks::WithoutDatasets);
}

#[test]
fn chapter_08_discrete() {
    run_chapter("08-discrete.md", Blocks::WithoutDatasets);
}

#[test]
fn chapter_09_manifolds() {
    run_chapter("09-manifolds.md", Blocks::WithoutDatasets);
}

#[test]
#[cfg_attr(not(fm_data), ignore = "needs the datasets: set FM_DATA_DIR (see docs/data.md)")]
fn chapter_05_generalization_with_datasets() {
    run_chapter("05-generalization.md", Blocks::All);
}

#[test]
#[cfg_attr(not(fm_data), ignore = "needs the datasets: set FM_DATA_DIR (see docs/data.md)")]
fn chapter_06_couplings_with_datasets() {
    run_chapter("06-couplings.md", Blocks::All);
}

#[test]
#[cfg_attr(not(fm_data), ignore = "needs the datasets: set FM_DATA_DIR (see docs/data.md)")]
fn chapter_08_discrete_with_datasets() {
    run_chapter("08-discrete.md", Blocks::All);
}

#[test]
#[cfg_attr(not(fm_data), ignore = "needs the datasets: set FM_DATA_DIR (see docs/data.md)")]
fn chapter_09_manifolds_with_datasets() {
    run_chapter("09-manifolds.md", Blocks::All);
}

/// Every chapter whose blocks read a dataset that does not ship with fm has a `_with_datasets` test above.
#[test]
fn chapters_reading_datasets_have_a_datasets_test() {
    let source = include_str!("guide_tests.rs");
    for path in guide_commands::chapters(&guide_dir()).expect("docs/guide exists") {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let blocks = guide_commands::parse(&text).unwrap_or_default();
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let test = format!("run_chapter(\"{name}\", Blocks::All)");
        assert_eq!(
            guide_commands::needs_missing_data(&blocks, &shipped).contains(&true),
            source.contains(&test),
            "{name}: a chapter with dataset blocks needs a _with_datasets test, and only such a chapter"
        );
    }
}

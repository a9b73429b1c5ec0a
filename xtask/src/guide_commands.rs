//! The `fm` commands of the guide (`docs/guide/*.md`), as data.
//!
//! Shared, std only, by `cargo xtask guide` (which runs them to regenerate the
//! figures) and by `crates/fm-cli/tests/guide_tests.rs` (which runs them with
//! quick settings, so CI notices when a command in the guide stops working).
//!
//! The convention of the chapters:
//!
//! - every `fm …` line (continued with a trailing `\`) inside a ```` ```sh ````
//!   block is a command; other lines (`cargo …`, comments) are not run;
//! - a figure is an image `![…](figures/NAME.png)` followed by a `sh` block
//!   whose line `# figure: PATH` names the PNG that the block's commands write;
//!   every `figures/` image must be claimed by such a block;
//! - outputs go under `runs/guide/`, datasets are read from `data/`; both
//!   prefixes are relocated when the commands run ([`Relocate`]).

use std::path::{Path, PathBuf};

/// Where the runs of the guide write their outputs, as written in the chapters.
pub const RUN_PREFIX: &str = "runs/guide/";
/// Where the chapters read real datasets from.
pub const DATA_PREFIX: &str = "data/";

/// A figure: the image the chapter shows and the PNG the commands write.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// The image path as the chapter references it, relative to `docs/guide/`.
    pub image: String,
    /// The PNG written by the block's commands (under [`RUN_PREFIX`]).
    pub source: String,
}

/// One `sh` block of a chapter that holds `fm` commands.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// 1-based line of the opening fence.
    pub line: usize,
    /// The commands, each as its arguments after `fm`.
    pub commands: Vec<Vec<String>>,
    /// The figure this block produces, if any.
    pub figure: Option<Figure>,
}

/// For each block of a chapter, whether it needs a dataset that is missing:
/// it reads a path under [`DATA_PREFIX`] for which `present` (given the path
/// after the prefix) says no, or reads a run folder (`runs/guide/NAME`) that
/// such a block wrote. These blocks are skipped together.
pub fn needs_missing_data(blocks: &[Block], present: &dyn Fn(&str) -> bool) -> Vec<bool> {
    let mut tainted: Vec<String> = Vec::new();
    blocks
        .iter()
        .map(|b| {
            let folders: Vec<String> = b.commands.iter().flatten().filter_map(|a| run_folder(a)).collect();
            let missing =
                b.commands.iter().flatten().any(|a| data_path(a).is_some_and(|(_, rest)| !present(rest)));
            let needs = missing || folders.iter().any(|f| tainted.contains(f));
            if needs {
                tainted.extend(folders);
            }
            needs
        })
        .collect()
}

/// An argument `[SCHEME:]runs/guide/REST` split into `SCHEME:` (possibly
/// empty) and `REST`: `pairs:runs/guide/rf1/pairs.npy` reads a run's output too.
fn run_path(arg: &str) -> Option<(&str, &str)> {
    if let Some(rest) = arg.strip_prefix(RUN_PREFIX) {
        return Some(("", rest));
    }
    let (scheme, path) = arg.split_once(':')?;
    let rest = path.strip_prefix(RUN_PREFIX)?;
    Some((&arg[..scheme.len() + 1], rest))
}

/// `NAME` of an argument `[SCHEME:]runs/guide/NAME[/…]`.
fn run_folder(arg: &str) -> Option<String> {
    let (_, rest) = run_path(arg)?;
    rest.split('/').next().filter(|n| !n.is_empty()).map(str::to_string)
}

/// The chapters: the `*.md` files of `dir` except `README.md`, sorted by name.
pub fn chapters(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "md") && p.file_name().is_some_and(|n| n != "README.md")
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The `fm` blocks of one chapter, with errors naming the line.
pub fn parse(markdown: &str) -> Result<Vec<Block>, String> {
    let mut blocks = Vec::new();
    let mut pending_image: Option<(usize, String)> = None;
    let mut lines = markdown.lines().enumerate().map(|(i, l)| (i + 1, l));
    while let Some((no, line)) = lines.next() {
        let trimmed = line.trim();
        if let Some(image) = figure_image(trimmed) {
            if let Some((at, img)) = &pending_image {
                return Err(format!("line {at}: figure {img} has no `# figure:` block under it"));
            }
            pending_image = Some((no, image));
            continue;
        }
        if !trimmed.starts_with("```") {
            continue;
        }
        let is_sh = trimmed == "```sh";
        let mut body = Vec::new();
        for (_, l) in lines.by_ref() {
            if l.trim().starts_with("```") {
                break;
            }
            body.push(l.to_string());
        }
        if !is_sh {
            continue;
        }
        let (commands, source) = parse_block(&body);
        let figure = match (source, pending_image.take()) {
            (Some(source), Some((_, image))) => Some(Figure { image, source }),
            (Some(source), None) => {
                return Err(format!("line {no}: `# figure: {source}` without an image above it"))
            }
            (None, Some((at, image))) => {
                return Err(format!("line {at}: figure {image} is followed by a block without `# figure:`"))
            }
            (None, None) => None,
        };
        if figure.is_some() && commands.is_empty() {
            return Err(format!("line {no}: a figure block without `fm` commands"));
        }
        if !commands.is_empty() {
            blocks.push(Block { line: no, commands, figure });
        }
    }
    if let Some((at, image)) = pending_image {
        return Err(format!("line {at}: figure {image} has no `# figure:` block under it"));
    }
    Ok(blocks)
}

/// `figures/NAME.png` of a Markdown image line `![alt](figures/NAME.png)`.
fn figure_image(line: &str) -> Option<String> {
    let rest = line.strip_prefix("![")?;
    let start = rest.find("](")? + 2;
    let end = rest[start..].find(')')? + start;
    let path = &rest[start..end];
    path.starts_with("figures/").then(|| path.to_string())
}

/// The commands of a block (joined over `\` continuations) and its `# figure:` path.
fn parse_block(body: &[String]) -> (Vec<Vec<String>>, Option<String>) {
    let mut commands = Vec::new();
    let mut figure = None;
    let mut current = String::new();
    for line in body {
        let l = line.trim();
        if current.is_empty() {
            if let Some(p) = l.strip_prefix("# figure:") {
                figure = Some(p.trim().to_string());
                continue;
            }
            if !l.starts_with("fm ") {
                continue;
            }
        }
        // A trailing comment is for the reader.
        let code = l.split(" # ").next().unwrap_or(l).trim();
        match code.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(code);
                let args: Vec<String> = current.split_whitespace().skip(1).map(str::to_string).collect();
                commands.push(args);
                current.clear();
            }
        }
    }
    (commands, figure)
}

/// The part of an argument that is a path under [`DATA_PREFIX`], with what precedes it
/// (`digits:data/x` → `("digits:", "x")`).
fn data_path(arg: &str) -> Option<(&str, &str)> {
    if let Some(rest) = arg.strip_prefix(DATA_PREFIX) {
        return Some(("", rest));
    }
    let colon = arg.find(':')?;
    let rest = arg[colon + 1..].strip_prefix(DATA_PREFIX)?;
    Some((&arg[..=colon], rest))
}

/// Where the commands' outputs and datasets really are.
#[derive(Debug, Clone)]
pub struct Relocate {
    /// Replaces [`RUN_PREFIX`].
    pub runs: PathBuf,
    /// Replaces [`DATA_PREFIX`].
    pub data: PathBuf,
}

impl Relocate {
    /// The arguments with both prefixes replaced.
    pub fn apply(&self, args: &[String]) -> Vec<String> {
        args.iter().map(|a| self.path(a)).collect()
    }

    /// One argument or path with both prefixes replaced.
    pub fn path(&self, arg: &str) -> String {
        if let Some((scheme, rest)) = run_path(arg) {
            return format!("{scheme}{}", self.runs.join(rest).display());
        }
        if let Some((head, rest)) = data_path(arg) {
            return format!("{head}{}", self.data.join(rest).display());
        }
        arg.to_string()
    }
}

/// Upper bounds of the quick mode, per flag (every element of a comma list is capped).
const QUICK_CAPS: &[(&str, usize)] = &[
    ("--steps", 20),
    ("--n", 120),
    ("--sample-n", 200),
    ("--eval-n", 500),
    ("--exact-n", 50),
    ("--pairs", 30),
    ("--grid", 16),
    ("--batch-size", 128),
    ("--cnf-steps", 4),
    ("--hutchinson", 2),
    ("--anneal-steps", 10),
];

/// The command with quick settings: numeric flags capped by `QUICK_CAPS`,
/// the `--dims` of an alignment analysis cut to those ≤ 32, no progress bar for
/// `train` and `energies`. A command that runs in the guide's settings runs in these.
pub fn quick(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len() + 1);
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        out.push(args[i].clone());
        if let Some(value) = args.get(i + 1) {
            if let Some(&(_, cap)) = QUICK_CAPS.iter().find(|(f, _)| *f == flag) {
                out.push(cap_list(value, |v| v.min(cap)));
                i += 2;
                continue;
            }
            if flag == "--dims" {
                out.push(cap_list(value, |v| v.min(32)));
                i += 2;
                continue;
            }
        }
        i += 1;
    }
    let first = args.first().map(String::as_str);
    if matches!(first, Some("train" | "energies")) && !args.iter().any(|a| a == "--quiet") {
        out.push("--quiet".into());
    }
    if first == Some("train") && !args.iter().any(|a| a == "--sample-n" || a == "--resume") {
        out.extend(["--sample-n".to_string(), "200".to_string()]);
    }
    out
}

/// Applies `f` to every integer of a comma list, dropping repeats; other values pass unchanged.
fn cap_list(value: &str, f: impl Fn(usize) -> usize) -> String {
    let mut seen = Vec::new();
    for item in value.split(',') {
        match item.parse::<usize>() {
            Ok(v) => {
                let v = f(v).to_string();
                if !seen.contains(&v) {
                    seen.push(v);
                }
            }
            Err(_) => return value.to_string(),
        }
    }
    seen.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAPTER: &str = "Text.\n\n![moons](figures/moons.png)\n\n```sh\nfm train --data moons \\\n   --steps 3000 --out runs/guide/moons   # comment\n# figure: runs/guide/moons/plot.png\n```\n\n```sh\ncargo run --example x\nfm likelihood --checkpoint runs/guide/moons --n 2000\n```\n";

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_commands_and_figures() {
        let blocks = parse(CHAPTER).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(
            blocks[0].commands,
            vec![strings(&["train", "--data", "moons", "--steps", "3000", "--out", "runs/guide/moons"])]
        );
        let fig = blocks[0].figure.as_ref().unwrap();
        assert_eq!(
            (fig.image.as_str(), fig.source.as_str()),
            ("figures/moons.png", "runs/guide/moons/plot.png")
        );
        assert_eq!(blocks[1].commands.len(), 1);
        assert!(blocks[1].figure.is_none());
    }

    #[test]
    fn an_unclaimed_figure_is_an_error() {
        let err = parse("![a](figures/a.png)\n\n```sh\nfm train\n```\n").unwrap_err();
        assert!(err.contains("line 1") && err.contains("figures/a.png"), "{err}");
        assert!(parse("```sh\nfm train\n# figure: runs/guide/x.png\n```\n").is_err());
    }

    #[test]
    fn quick_caps_and_relocates() {
        let args =
            strings(&["train", "--steps", "3000", "--n-train", "500", "--data", "digits:data/d.csv.gz"]);
        let q = quick(&args);
        assert_eq!(q[..5], strings(&["train", "--steps", "20", "--n-train", "500"])[..]);
        assert!(q.contains(&"--quiet".to_string()));
        let r = Relocate { runs: "/tmp/r".into(), data: "/d".into() };
        let md = "```sh\nfm train --data data/x.csv --out runs/guide/a\n```\n\
                  ```sh\nfm sample --checkpoint runs/guide/a/x --out runs/guide/b\n```\n\
                  ```sh\nfm train --out runs/guide/c\n```\n\
                  ```sh\nfm eval --checkpoint runs/guide/b\n```\n";
        let blocks = parse(md).expect("parses");
        assert_eq!(needs_missing_data(&blocks, &|_| false), vec![true, true, false, true]);
        assert_eq!(needs_missing_data(&blocks, &|rest| rest == "x.csv"), vec![false; 4]);
        let moved = r.apply(&q);
        assert!(moved.contains(&"digits:/d/d.csv.gz".to_string()));
        assert_eq!(r.path("runs/guide/a/plot.png"), "/tmp/r/a/plot.png");
        assert_eq!(r.path("pairs:runs/guide/rf1/p.npy"), "pairs:/tmp/r/rf1/p.npy");
        assert_eq!(run_folder("pairs:runs/guide/rf1/p.npy").as_deref(), Some("rf1"));
        assert_eq!(quick(&strings(&["analyze", "alignment", "--dims", "2,8,512,2048"]))[3], "2,8,32");
    }
}

//! `fm data fetch NAME`: a dataset a user can get — MNIST, Fashion-MNIST and
//! CIFAR-10 through the Hugging Face Hub cache (checked image by image and
//! written in the formats `--data` reads), sklearn's digits from fm itself —
//! and the `--data` spec to use.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::cli::HubArgs;

/// The data subcommands.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Download a dataset into a folder (through the Hub cache), check it, and print its --data spec.
    #[command(
        after_help = "Examples:\n  fm data fetch mnist                      # data/mnist, then --data mnist:data/mnist\n  fm data fetch fashion-mnist --dir ~/datasets/fashion\n  fm data fetch cifar10 --json\n  fm data fetch digits                     # ships with fm: no network\n  HF_HUB_OFFLINE=1 fm data fetch mnist --dir other   # from the Hub cache only\n\nSources: MNIST ylecun/mnist, Fashion-MNIST zalando-datasets/fashion_mnist, CIFAR-10 uoft-cs/cifar10\n(dataset repositories on the Hugging Face Hub, parquet); the endpoint, cache and token come from\nHF_ENDPOINT, HF_HUB_CACHE (or HF_HOME) and HF_TOKEN."
    )]
    Fetch(FetchArgs),
}

#[derive(Debug, Args, Clone)]
pub struct FetchArgs {
    /// The dataset: mnist, fashion-mnist, cifar10 or digits.
    pub name: String,
    /// Folder to write it to [default: data/mnist, data/fashion-mnist, data/cifar10, data/sklearn-digits].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub hub: HubArgs,
    /// Print one JSON object (`spec`, `files`, `train`, `test`, `matches_original`) as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress messages.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(c: DataCommand) -> Result<()> {
    match c {
        DataCommand::Fetch(a) => fetch(a),
    }
}

#[cfg(feature = "hub")]
fn fetch(a: FetchArgs) -> Result<()> {
    use anyhow::Context;
    use fm_data::hub::HubOptions;
    use fm_data::images::fetch::{fetch, FetchName};
    use serde_json::json;

    let name = FetchName::parse(&a.name)?;
    let folder = match name {
        FetchName::Digits => "sklearn-digits",
        other => other.name(),
    };
    let dir = a.dir.clone().unwrap_or_else(|| PathBuf::from("data").join(folder));
    let offline = a.hub.offline || fm_pipeline::location::offline_from_env();
    let bar = crate::progress::spinner(a.quiet);
    let fetched = fetch(name, &dir, &HubOptions { offline, ..HubOptions::default() }, &mut |s| {
        bar.set_message(s.to_string())
    })
    .with_context(|| format!("fm data fetch {}", name.name()))?;
    bar.finish_and_clear();
    let log = |s: String| if a.json { eprintln!("{s}") } else { println!("{s}") };
    let (train, test) = fetched.counts;
    let images =
        if test > 0 { format!("{train} training and {test} test images") } else { format!("{train} images") };
    log(format!(
        "{}: {images}, each checked; {} files in {}",
        name.name(),
        fetched.files.len(),
        dir.display()
    ));
    match fetched.matches_original {
        Some(true) => log("the files are identical to the original dataset's (SHA-256)".into()),
        Some(false) => log(
            "note: the files differ from the original dataset's (SHA-256), though every image and count checked"
                .into(),
        ),
        None => {}
    }
    log(format!("use it with: --data {}", fetched.spec));
    if a.json {
        crate::io::print_json(&json!({
            "dataset": name.name(),
            "spec": fetched.spec,
            "files": fetched.files,
            "train": train,
            "test": test,
            "matches_original": fetched.matches_original,
        }))?;
    }
    Ok(())
}

#[cfg(not(feature = "hub"))]
fn fetch(a: FetchArgs) -> Result<()> {
    anyhow::bail!("fm data fetch {}: this fm was built without the `hub` feature", a.name)
}

//! [`RunConfig`]: what a person asks of a run, every key optional.
//!
//! The keys are the long flags of `fm train` and the keys of its `--config`
//! TOML file (kebab-case). [`crate::RunSettings::resolve`] fills what is unset
//! from the model family's defaults or a preset, and refuses what does not
//! apply to the family.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A run as asked for; `None` (or `false`) means "the default".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[allow(missing_docs)] // each key is the `fm train` flag of the same name
pub struct RunConfig {
    /// The model family: `mlp` (default), `unet`, `planar`, `realnvp`.
    pub model: Option<String>,
    /// A named recipe (`guide-moons`; U-Net presets `tiny`, `mnist`, `cifar10`).
    pub preset: Option<String>,
    /// The dataset: a toy name, `csv:PATH`, an image spec (`mnist:DIR`, `digits:FILE`, …).
    pub data: Option<String>,
    pub columns: Option<Vec<String>>,
    pub noise: Option<f64>,
    pub n_train: Option<usize>,
    pub steps: Option<usize>,
    pub batch_size: Option<usize>,
    pub lr: Option<f64>,
    /// Decoupled weight decay (AdamW); absent: plain Adam.
    pub weight_decay: Option<f64>,
    pub seed: Option<u64>,
    /// The run's folder (checkpoints, samples).
    pub out: Option<PathBuf>,
    pub checkpoint_every: Option<usize>,
    // Networks.
    pub hidden: Option<Vec<usize>>,
    pub activation: Option<String>,
    pub layers: Option<usize>,
    pub channels: Option<usize>,
    pub channel_mult: Option<Vec<usize>>,
    pub res_blocks: Option<usize>,
    pub attention_res: Option<String>,
    pub dropout: Option<f64>,
    pub class_cond: Option<bool>,
    pub label_dropout: Option<f64>,
    // Flow matching.
    pub scheduler: Option<String>,
    pub objective: Option<String>,
    pub cnf_steps: Option<usize>,
    pub efm_m: Option<usize>,
    pub parametrization: Option<String>,
    pub weighting: Option<String>,
    pub jacobian_reg: Option<f64>,
    pub jacobian_probes: Option<usize>,
    pub matcher: Option<String>,
    pub coupling: Option<String>,
    pub sigma: Option<f64>,
    pub source: Option<String>,
    /// Discrete models: token values per coordinate (points) or grey levels (images).
    pub bins: Option<usize>,
    /// Riemannian models: the manifold (`sphere`, `torus:2`, `product:sphere+torus:1`, …).
    pub manifold: Option<String>,
    // Optimisation.
    pub ema_decay: Option<f64>,
    pub grad_clip: Option<f64>,
    pub warmup: Option<usize>,
    /// Weights to start from: a checkpoint folder, a `.safetensors` file or an `hf://` address.
    pub init: Option<String>,
    pub allow_partial: Option<bool>,
    /// Never download (`--init hf://…` from the Hub cache only).
    pub offline: Option<bool>,
    // What a front end does after the run (the library only carries them).
    pub sample_n: Option<usize>,
    pub sample_solver: Option<String>,
    pub sample_steps: Option<usize>,
    pub json: Option<bool>,
    pub quiet: Option<bool>,
}

macro_rules! keys {
    ($($field:ident => $flag:literal),* $(,)?) => {
        impl RunConfig {
            /// Every key of `self`, falling back to `other`'s where `self` has none
            /// (flags over a config file).
            pub fn or(self, other: RunConfig) -> RunConfig {
                RunConfig { $($field: self.$field.or(other.$field)),* }
            }

            /// The flags of the keys that are set, in declaration order.
            pub fn given(&self) -> Vec<&'static str> {
                let mut out = Vec::new();
                $(if self.$field.is_some() { out.push($flag); })*
                out
            }
        }
    };
}

keys! {
    model => "--model", preset => "--preset", data => "--data", columns => "--columns",
    noise => "--noise", n_train => "--n-train", steps => "--steps", batch_size => "--batch-size",
    lr => "--lr", weight_decay => "--weight-decay", seed => "--seed", out => "--out",
    checkpoint_every => "--checkpoint-every", hidden => "--hidden", activation => "--activation",
    layers => "--layers", channels => "--channels", channel_mult => "--channel-mult",
    res_blocks => "--res-blocks", attention_res => "--attention-res", dropout => "--dropout",
    class_cond => "--class-cond", label_dropout => "--label-dropout", scheduler => "--scheduler",
    objective => "--objective", cnf_steps => "--cnf-steps", efm_m => "--efm-m",
    parametrization => "--parametrization", weighting => "--weighting",
    jacobian_reg => "--jacobian-reg", jacobian_probes => "--jacobian-probes", matcher => "--matcher",
    coupling => "--coupling", sigma => "--sigma", source => "--source", bins => "--bins",
    manifold => "--manifold",
    ema_decay => "--ema-decay",
    grad_clip => "--grad-clip", warmup => "--warmup", init => "--init",
    allow_partial => "--allow-partial", offline => "--offline", sample_n => "--sample-n",
    sample_solver => "--sample-solver", sample_steps => "--sample-steps", json => "--json",
    quiet => "--quiet",
}

/// Keys a resumed run may still set: how far to go and what to do afterwards.
pub(crate) const RESUMABLE: &[&str] = &[
    "--model",
    "--steps",
    "--checkpoint-every",
    "--offline",
    "--sample-n",
    "--sample-solver",
    "--sample-steps",
    "--json",
    "--quiet",
];

impl RunConfig {
    /// The keys every family records the same way, from a checkpoint's record
    /// (a family adds its own in [`crate::family::Family::config_of_record`]).
    pub(crate) fn of_record(r: &crate::RunRecord) -> Self {
        RunConfig {
            preset: r.preset.clone(),
            data: Some(r.data.clone()),
            columns: (!r.columns.is_empty()).then(|| r.columns.clone()),
            noise: r.noise,
            n_train: r.n_train,
            steps: Some(r.steps),
            batch_size: Some(r.batch_size),
            lr: Some(r.lr),
            weight_decay: r.weight_decay,
            seed: Some(r.seed),
            warmup: r.warmup,
            grad_clip: r.grad_clip,
            ema_decay: r.ema_decay,
            ..RunConfig::default()
        }
    }

    /// Whether `flag` is set.
    pub fn has(&self, flag: &str) -> bool {
        self.given().contains(&flag)
    }

    /// The set flags among `flags`.
    pub(crate) fn given_of(&self, flags: &[&'static str]) -> Vec<&'static str> {
        self.given().into_iter().filter(|f| flags.contains(f)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn or_prefers_self_and_given_lists_flags() {
        let flags = RunConfig { steps: Some(7), class_cond: Some(true), ..Default::default() };
        let file = RunConfig { steps: Some(100), lr: Some(0.1), ..Default::default() };
        let c = flags.or(file);
        assert_eq!((c.steps, c.lr), (Some(7), Some(0.1)));
        assert_eq!(c.given(), vec!["--steps", "--lr", "--class-cond"]);
        assert!(c.has("--lr") && !c.has("--seed"));
    }
}

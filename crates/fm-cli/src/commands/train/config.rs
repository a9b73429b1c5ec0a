//! `fm train`'s flags and its `--config` TOML file, as the pipeline's
//! [`RunConfig`]: the file's keys are the long flag names, and flags override it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use fm_pipeline::RunConfig;

use crate::cli::TrainArgs;

/// The run `a` asks for: its flags over its `--config` file.
pub fn run_config(a: &TrainArgs) -> Result<RunConfig> {
    let flags = flags(a);
    let Some(path) = &a.config else { return Ok(flags) };
    Ok(flags.or(read_file(path)?))
}

/// The flags given on the command line (unset flags are `None`).
fn flags(a: &TrainArgs) -> RunConfig {
    let u = &a.unet;
    RunConfig {
        model: a.model.clone(),
        preset: a.preset.clone(),
        data: a.data.clone(),
        columns: a.columns.clone(),
        noise: a.noise,
        n_train: a.n_train,
        steps: a.steps,
        batch_size: a.batch_size,
        lr: a.lr,
        weight_decay: a.weight_decay,
        seed: a.seed,
        out: a.out.clone(),
        checkpoint_every: a.checkpoint_every,
        hidden: a.hidden.clone(),
        activation: a.activation.clone(),
        layers: a.layers,
        channels: u.channels,
        channel_mult: u.channel_mult.clone(),
        res_blocks: u.res_blocks,
        attention_res: u.attention_res.clone(),
        dropout: u.dropout,
        class_cond: u.class_cond.then_some(true),
        label_dropout: u.label_dropout,
        scheduler: a.scheduler.clone(),
        objective: a.objective.clone(),
        cnf_steps: a.cnf_steps,
        efm_m: a.efm_m,
        parametrization: a.parametrization.clone(),
        weighting: a.weighting.clone(),
        jacobian_reg: a.jacobian_reg,
        jacobian_probes: a.jacobian_probes,
        matcher: a.matcher.clone(),
        coupling: a.coupling.clone(),
        sigma: a.sigma,
        source: a.source.clone(),
        bins: a.bins,
        manifold: a.manifold.clone(),
        ema_decay: u.ema_decay,
        grad_clip: u.grad_clip,
        warmup: u.warmup,
        init: a.init.as_ref().map(|p| p.display().to_string()),
        allow_partial: a.allow_partial.then_some(true),
        offline: (a.hub.offline || fm_pipeline::location::offline_from_env()).then_some(true),
        sample_n: a.sample_n,
        sample_solver: a.sample_solver.clone(),
        sample_steps: a.sample_steps,
        json: a.json.then_some(true),
        quiet: a.quiet.then_some(true),
    }
}

/// A `--config` file; relative paths in it are relative to the file, as users expect of config files.
fn read_file(path: &Path) -> Result<RunConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--config {}: cannot read the file", path.display()))?;
    let mut f: RunConfig =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new(""));
    let rel = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
    f.data = f.data.map(|d| match d.strip_prefix("csv:") {
        Some(p) => format!("csv:{}", rel(PathBuf::from(p)).display()),
        None => d,
    });
    f.out = f.out.map(rel);
    f.init = f.init.map(|i| {
        if fm_pipeline::location::is_hub(Path::new(&i)) {
            i
        } else {
            rel(i.into()).display().to_string()
        }
    });
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fm_pipeline::RunSettings;

    fn write(name: &str, text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("fm-settings-{name}-{}.toml", std::process::id()));
        std::fs::write(&p, text).expect("temp file");
        p
    }

    #[test]
    fn flags_override_the_config_file() -> Result<()> {
        let p = write("ok", "steps = 123\nbatch-size = 64\nhidden = [32, 32]\nlr = 0.005\n");
        let a = TrainArgs { config: Some(p.clone()), steps: Some(7), ..Default::default() };
        let r = RunSettings::resolve(&run_config(&a)?)?;
        assert_eq!((r.steps, r.batch_size, r.network.hidden.clone(), r.lr), (7, 64, vec![32, 32], 0.005));
        std::fs::remove_file(p)?;
        Ok(())
    }

    #[test]
    fn unknown_keys_and_bad_types_name_the_key() {
        let p = write("bad", "stepz = 3\n");
        let e = run_config(&TrainArgs { config: Some(p.clone()), ..Default::default() })
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(e.contains("stepz") && e.contains(&p.display().to_string()), "{e}");
        let q = write("type", "steps = \"many\"\n");
        let e = run_config(&TrainArgs { config: Some(q.clone()), ..Default::default() })
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(e.contains("steps") || e.contains("integer"), "{e}");
        let _ = std::fs::remove_file(p);
        let _ = std::fs::remove_file(q);
    }
}

//! `fm train`: a run of any model family (fm-pipeline's [`Run`]), then
//! samples, a plot and metrics from the checkpoint it wrote.
//!
//! Runs save a resumable checkpoint every `--checkpoint-every` steps, on
//! Ctrl-C and at the end; `--resume DIR` continues bit-identically.

mod config;
mod report;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Result};
use fm_pipeline::{check_resume_config, family, Observer, Run, RunSettings};
use indicatif::ProgressBar;
use serde_json::json;

use crate::cli::TrainArgs;
use crate::io::print_json;

/// Returned when Ctrl-C stopped the run after saving it; `main` exits with code 130.
#[derive(Debug, thiserror::Error)]
#[error("interrupted at step {step} of {steps}; the run is saved in {dir}: continue it with `fm train --resume {dir}`")]
pub struct Interrupted {
    pub step: usize,
    pub steps: usize,
    pub dir: String,
}

/// A flag raised by Ctrl-C; a second Ctrl-C exits at once.
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    // Failing to install the handler (e.g. one is already set in tests) only loses the graceful stop.
    let _ = ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
    flag
}

/// The progress bar and the Ctrl-C flag, as the run's observer.
struct Progress {
    bar: ProgressBar,
    interrupted: Arc<AtomicBool>,
}

impl Observer for Progress {
    fn step(&mut self, done: usize, steps: usize, recent_loss: f64) {
        if done.is_multiple_of(50) || done == steps {
            self.bar.set_message(format!("{recent_loss:.4}"));
            self.bar.set_position(done as u64);
        }
    }

    fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }
}

pub fn run(a: TrainArgs) -> Result<()> {
    let config = config::run_config(&a)?;
    let device = crate::device::selected();
    // Validate the sampling settings before spending minutes on training.
    report::Options::of(&config, false, None)?;
    let mut run = match &a.resume {
        Some(dir) => {
            check_resume_config(&config)?;
            let run = Run::resume(dir, config.steps, &device)?;
            if let Some(m) = &config.model {
                if !family::named(Some(m))?.owns(run.model()) {
                    bail!("--model {m}: --resume {} holds another kind of model", dir.display());
                }
            }
            run
        }
        None => {
            let mut settings = RunSettings::resolve(&config)?;
            settings.command = std::env::args().collect();
            Run::new(settings, &device)?
        }
    };
    // Image models that solve an ODE: fewer samples and steps after training (each is a U-Net solve).
    let costly = run.data().image_info().is_some() && run.settings().family.solves_ode();
    let o = report::Options::of(&config, costly, run.settings().family.default_sample_steps())?;
    let log = |s: String| if o.json { eprintln!("{s}") } else { println!("{s}") };
    if let Some(init) = run.init_report() {
        log(init.describe());
    }
    log(run.describe());

    let s = run.settings().clone();
    let bar = crate::progress::bar(s.steps, o.quiet, "{bar:30} {pos}/{len} loss {msg} {per_sec} ETA {eta}");
    bar.set_position(run.steps_done() as u64);
    bar.reset_eta();
    let mut progress = Progress { bar, interrupted: interrupt_flag() };
    let trained = run.train(&mut progress);
    progress.bar.finish_and_clear();
    let summary = match trained {
        Ok(summary) => summary,
        Err(fm_pipeline::Error::Interrupted { step, steps, dir }) => {
            return Err(Interrupted { step, steps, dir: dir.display().to_string() }.into())
        }
        Err(e) => return Err(e.into()),
    };
    let loss_name = match s.family.loss_name() {
        "loss" => String::new(),
        name => format!("{name}, "),
    };
    log(format!(
        "trained in {:.1} s ({:.0} steps/s); loss ({loss_name}mean of the last {} steps) {:.4}; checkpoint in {}",
        summary.seconds,
        summary.steps_per_s,
        summary.loss_window,
        summary.loss,
        s.out.display()
    ));

    let (fields, lines) = report::samples_plot_metrics(&s, &o, &device)?;
    let mut report = json!({
        "loss": summary.loss,
        "steps": s.steps,
        "steps_per_s": summary.steps_per_s,
        "seconds": summary.seconds,
        "checkpoint": s.out,
        "model": s.family.name(),
    });
    if let (Some(obj), Some(extra)) = (report.as_object_mut(), fields.as_object()) {
        obj.extend(extra.clone());
    }
    if let (Some(obj), Some(init)) = (report.as_object_mut(), run.init_report()) {
        obj.insert("init".into(), serde_json::to_value(init)?);
    }
    fm_models::checkpoint::atomic_write(
        &s.out.join("metrics.json"),
        format!("{}\n", serde_json::to_string_pretty(&report)?).as_bytes(),
    )?;
    for l in lines {
        log(l);
    }
    if o.json {
        print_json(&report)?;
    }
    Ok(())
}

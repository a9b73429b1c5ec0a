//! `fm train`: conditional flow matching on a dataset, then samples, a plot and metrics.
//!
//! Runs save a resumable checkpoint every `--checkpoint-every` steps, on
//! Ctrl-C and at the end; `--resume DIR` continues bit-identically.

mod images;
mod init;
mod objective;
mod report;
mod session;
mod settings;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use serde_json::json;

use crate::cli::TrainArgs;
use crate::io::print_json;
use crate::solver::SolverChoice;
pub use objective::parametrization_of;
use session::{Session, LOSS_WINDOW};

/// Returned when Ctrl-C stopped the run after saving it; `main` exits with code 130.
#[derive(Debug, thiserror::Error)]
#[error("interrupted at step {step} of {steps}; the run is saved in {dir}: continue it with `fm train --resume {dir}`")]
pub struct Interrupted {
    pub step: usize,
    pub steps: usize,
    pub dir: String,
}

fn progress(steps: usize, done: usize, quiet: bool) -> ProgressBar {
    let pb = crate::progress::bar(steps, quiet, "{bar:30} {pos}/{len} loss {msg} {per_sec} ETA {eta}");
    pb.set_position(done as u64);
    pb.reset_eta();
    pb
}

/// A flag raised by Ctrl-C; a second Ctrl-C exits at once.
pub(crate) fn interrupt_flag() -> Arc<AtomicBool> {
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

pub fn run(a: TrainArgs) -> Result<()> {
    let a = settings::merge_config_file(a)?;
    // `--model planar|realnvp` (or `--resume` of a flow checkpoint): discrete flows, in commands/flow.
    if !images::is_unet_model(a.model.as_deref()) && crate::commands::flow::train::is_flow_run(&a)? {
        if a.init.is_some() {
            anyhow::bail!("--init applies to velocity networks (--model mlp|unet), not to normalizing flows");
        }
        return crate::commands::flow::train::run(a);
    }
    let mut o = settings::run_options(&a)?;
    let device = crate::device::selected();
    // Validate the sampling settings before spending minutes on training.
    let choice = SolverChoice::new(&o.sample_solver, o.sample_steps, 1e-5, 1e-5)
        .context("--sample-solver/--sample-steps")?;
    let mut s = match &a.resume {
        Some(dir) => {
            settings::check_resume_flags(&a)?;
            Session::resume(dir, a.steps, &device)?
        }
        None => Session::new(settings::resolve(&a)?, &device)?,
    };
    let mut choice = choice;
    if s.model.as_unet().is_some() {
        images::image_run_options(&a, &mut o);
        choice = SolverChoice::new(&o.sample_solver, o.sample_steps, 1e-5, 1e-5)
            .context("--sample-solver/--sample-steps")?;
    }
    let r = s.settings.clone();
    let log = |s: String| if o.json { eprintln!("{s}") } else { println!("{s}") };
    if let Some(init) = &s.init_report {
        log(init.describe());
    }
    log(format!(
        "{} {} by {} on {} for {} steps{}, batch {}, Adam lr {}{}, {} path, seed {}",
        if a.resume.is_some() { "resuming" } else { "training" },
        s.describe_model(),
        match r.objective {
            settings::Objective::Cfm | settings::Objective::Efm { .. } => match &r.matcher {
                Some(m) => format!("flow matching with the {m} matcher"),
                None => objective::describe(r.objective, &r.spec),
            },
            settings::Objective::Likelihood { steps } => format!("maximum likelihood (RK4-{steps})"),
        },
        s.data.describe(),
        r.steps,
        if s.step > 0 { format!(" (from step {})", s.step) } else { String::new() },
        r.batch_size,
        r.lr,
        images::describe_training(&r.training, r.label_dropout),
        r.scheduler,
        r.seed
    ));

    let interrupted = interrupt_flag();
    let pb = progress(r.steps, s.step, o.quiet);
    let start = Instant::now();
    let first = s.step;
    while s.step < r.steps {
        if interrupted.load(Ordering::SeqCst) {
            pb.finish_and_clear();
            let dir = s.save()?;
            return Err(Interrupted { step: s.step, steps: r.steps, dir: dir.display().to_string() }.into());
        }
        if let Err(e) = s.train_step() {
            pb.finish_and_clear();
            let kept = match s.last_saved {
                Some(k) => format!("the checkpoint of step {k} in {} is intact", r.out.display()),
                None => format!("no checkpoint was written to {}", r.out.display()),
            };
            return Err(e.context(format!("training diverged at step {}; {kept}", s.step + 1)));
        }
        if s.step % 50 == 0 || s.step == r.steps {
            pb.set_message(format!("{:.4}", s.mean_loss(50)));
            pb.set_position(s.step as u64);
        }
        if o.checkpoint_every > 0 && s.step % o.checkpoint_every == 0 && s.step < r.steps {
            s.save()?;
        }
    }
    pb.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let steps_per_s = (s.step - first) as f64 / seconds.max(1e-9);
    let final_loss = s.mean_loss(LOSS_WINDOW);
    if s.last_saved != Some(s.step) {
        s.save()?;
    }
    log(format!(
        "trained in {seconds:.1} s ({steps_per_s:.0} steps/s); loss (mean of the last {} steps) {final_loss:.4}; checkpoint in {}",
        s.loss_window(),
        r.out.display()
    ));

    let title = format!("{} — {}, {} steps", r.data, r.objective.name().to_uppercase(), r.steps);
    let (fields, lines) = report::samples_plot_metrics(&r.out, &o, &choice, r.seed, &title, &device)?;
    let mut report = json!({
        "loss": final_loss,
        "steps": r.steps,
        "steps_per_s": steps_per_s,
        "seconds": seconds,
        "checkpoint": r.out,
    });
    if let (Some(obj), Some(extra)) = (report.as_object_mut(), fields.as_object()) {
        obj.extend(extra.clone());
    }
    if let (Some(obj), Some(init)) = (report.as_object_mut(), &s.init_report) {
        obj.insert("init".into(), serde_json::to_value(init)?);
    }
    fm_models::checkpoint::atomic_write(
        &r.out.join("metrics.json"),
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

//! Progress bars on stderr for anything that can take more than a second.
//!
//! Hidden with `--quiet`, and (by indicatif) whenever stderr is not a terminal,
//! so pipes, logs and `--json` consumers never see them.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `len` units with indicatif's `template` (falls back to the default style).
pub fn bar(len: usize, quiet: bool, template: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_draw_target(if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() });
    pb.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    pb
}

/// A spinner with a message, for work of unknown length (downloads).
pub fn spinner(quiet: bool) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_draw_target(if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() });
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    pb
}

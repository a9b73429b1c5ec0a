//! The flags of `fm-bench`'s comparison commands (`discrete`, `riemannian`).

use crate::{Error, Result};

/// `--flag value` pairs of a command line.
pub(crate) struct Flags<'a>(pub(crate) &'a [String]);

impl<'a> Flags<'a> {
    /// The value after `flag`, if given.
    pub(crate) fn get(&self, flag: &str) -> Option<&'a str> {
        self.0.iter().position(|a| a == flag).and_then(|i| self.0.get(i + 1)).map(String::as_str)
    }

    /// The value after `flag`, which must be given.
    pub(crate) fn need(&self, flag: &str) -> Result<&'a str> {
        self.get(flag).ok_or_else(|| Error::Request(format!("{flag} is needed")))
    }

    /// A count after `flag`, `default` when not given.
    pub(crate) fn count(&self, flag: &str, default: usize) -> Result<usize> {
        match self.get(flag) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| Error::Request(format!("{flag} must be a count, got `{v}`"))),
        }
    }

    /// Comma-separated widths after `flag` (`default` when not given).
    pub(crate) fn widths(&self, flag: &str, default: &str) -> Result<Vec<usize>> {
        self.get(flag)
            .unwrap_or(default)
            .split(',')
            .map(|w| w.trim().parse().map_err(|_| Error::Request(format!("{flag}: bad width `{w}`"))))
            .collect()
    }

    /// Whether the switch `flag` is present.
    pub(crate) fn has(&self, flag: &str) -> bool {
        self.0.iter().any(|a| a == flag)
    }
}

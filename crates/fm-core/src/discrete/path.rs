//! The mixture path `p_t(x | x₁) = κ_t δ_{x₁}(x) + (1 − κ_t) p₀(x)`.

use super::source::{check_vocab, uniform_token, DiscreteSource};
use crate::scheduler::{Scheduler, SchedulerKind};
use crate::{Error, Result, SeededRng};

/// A mixture path over a vocabulary of `vocab` tokens: `κ_t` is the
/// scheduler's `α_t` (it must go from 0 at `t = 0` to 1 at `t = 1`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixturePath {
    scheduler: SchedulerKind,
    source: DiscreteSource,
    vocab: usize,
}

impl MixturePath {
    /// The path of `scheduler` from `source` over `vocab` tokens; an error for
    /// a scheduler whose `α` does not run from 0 to 1 (the variance-preserving ones).
    pub fn new(scheduler: SchedulerKind, source: DiscreteSource, vocab: usize) -> Result<Self> {
        check_vocab(vocab)?;
        let (a0, a1) = (scheduler.at(0.0).alpha, scheduler.at(1.0).alpha);
        if a0.abs() > 1e-12 || (a1 - 1.0).abs() > 1e-12 {
            return Err(Error::invalid(
                "scheduler",
                format!("a mixture path needs κ₀ = 0 and κ₁ = 1; {scheduler} has α₀ = {a0}, α₁ = {a1}"),
            ));
        }
        Ok(Self { scheduler, source, vocab })
    }

    /// The vocabulary size `V` (the mask, if any, is id `V`).
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// The source.
    pub fn source(&self) -> DiscreteSource {
        self.source
    }

    /// `(κ_t, κ̇_t)`.
    pub fn kappa(&self, t: f64) -> (f64, f64) {
        let s = self.scheduler.at(t);
        (s.alpha, s.d_alpha)
    }

    /// The generalized-KL loss's weight `κ̇/(1 − κ)` at `t`, `1 − κ` floored
    /// at `1e-4` (the weight diverges at `t = 1`).
    pub fn kl_weight(&self, t: f64) -> f64 {
        let (kappa, d_kappa) = self.kappa(t);
        d_kappa / (1.0 - kappa).max(1e-4)
    }

    /// `x_t ~ p_t(· | x₁)` for every token of `x1` (`t` per token: one time per
    /// sequence of length `x1.len() / t.len()`).
    pub fn sample(&self, x1: &[u32], t: &[f64], rng: &mut SeededRng) -> Result<Vec<u32>> {
        if t.is_empty() || !x1.len().is_multiple_of(t.len()) {
            return Err(Error::Shape(format!("{} tokens do not split into {} sequences", x1.len(), t.len())));
        }
        let len = x1.len() / t.len();
        let u = rng.uniform_vec(2 * x1.len(), 0.0, 1.0);
        Ok(x1
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let (kappa, _) = self.kappa(t[i / len]);
                if u[2 * i] < kappa {
                    x
                } else {
                    match self.source {
                        DiscreteSource::Mask => self.vocab as u32,
                        DiscreteSource::Uniform => uniform_token(u[2 * i + 1], self.vocab),
                    }
                }
            })
            .collect())
    }

    /// Replaces the posterior of every unmasked token by certainty of its own
    /// value: with a mask source, a token that is no longer masked is data, so
    /// the exact posterior there is `δ_x` (masked diffusion's carry-over). A
    /// network's `1 − p(x)` there would otherwise be charged by the ELBO at
    /// every `τ` and every position, and would make the sampler move data
    /// tokens. `posterior` holds `V` values per token of `x`; nothing changes
    /// for a uniform source.
    pub fn carry_unmasked(&self, x: &[u32], posterior: &mut [f32]) {
        if self.source != DiscreteSource::Mask {
            return;
        }
        let v = self.vocab;
        for (&xi, row) in x.iter().zip(posterior.chunks_exact_mut(v)) {
            if (xi as usize) < v {
                row.fill(0.0);
                row[xi as usize] = 1.0;
            }
        }
    }

    /// `p_t(x | x₁)`.
    pub fn probability(&self, x: u32, x1: u32, t: f64) -> f64 {
        let (kappa, _) = self.kappa(t);
        kappa * f64::from(x == x1) + (1.0 - kappa) * self.source.probability(x, self.vocab)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The conditional path's marginals by Monte Carlo (200,000 draws, within
    /// 5 standard errors), for both sources, at two times; κ is the
    /// scheduler's α; a scheduler with α₀ ≠ 0 is refused by name.
    #[test]
    fn marginals_match_the_mixture() -> Result<()> {
        let v = 5;
        let n = 200_000;
        for source in [DiscreteSource::Mask, DiscreteSource::Uniform] {
            for (scheduler, t) in [(SchedulerKind::CondOt, 0.3), (SchedulerKind::Cosine, 0.8)] {
                let path = MixturePath::new(scheduler, source, v)?;
                let x1 = vec![2u32; n];
                let xt = path.sample(&x1, &vec![t; n], &mut SeededRng::new(4))?;
                for x in 0..source.states(v) as u32 {
                    let freq = xt.iter().filter(|&&y| y == x).count() as f64 / n as f64;
                    let p = path.probability(x, 2, t);
                    let se = (p * (1.0 - p) / n as f64).sqrt().max(1e-9);
                    assert!((freq - p).abs() < 5.0 * se, "{source} {scheduler} t={t} x={x}: {freq} vs {p}");
                }
                let total: f64 = (0..source.states(v) as u32).map(|x| path.probability(x, 2, t)).sum();
                assert!((total - 1.0).abs() < 1e-12);
            }
        }
        let (kappa, d_kappa) = MixturePath::new(SchedulerKind::CondOt, DiscreteSource::Mask, 3)?.kappa(0.25);
        assert_eq!((kappa, d_kappa), (0.25, 1.0));
        let vp = SchedulerKind::Vp { beta_min: 0.1, beta_max: 20.0 };
        let err = MixturePath::new(vp, DiscreteSource::Mask, 3).unwrap_err().to_string();
        assert!(err.contains("scheduler"), "{err}");
        assert!(MixturePath::new(SchedulerKind::CondOt, DiscreteSource::Mask, 0).is_err());
        Ok(())
    }

    /// With a mask source, unmasked tokens get certainty of their own value
    /// and masked ones keep the network's posterior; a uniform source is left alone.
    #[test]
    fn unmasked_tokens_are_carried_over() -> Result<()> {
        let posterior = vec![0.2f32, 0.5, 0.3, 0.6, 0.1, 0.3];
        let x = [3u32, 1]; // masked (id V = 3), then unmasked at 1
        let mask = MixturePath::new(SchedulerKind::CondOt, DiscreteSource::Mask, 3)?;
        let mut p = posterior.clone();
        mask.carry_unmasked(&x, &mut p);
        assert_eq!(p, vec![0.2, 0.5, 0.3, 0.0, 1.0, 0.0]);
        let uniform = MixturePath::new(SchedulerKind::CondOt, DiscreteSource::Uniform, 3)?;
        let mut p = posterior.clone();
        uniform.carry_unmasked(&[0, 1], &mut p);
        assert_eq!(p, posterior);
        Ok(())
    }
}

//! Sampling the discrete path: the CTMC's Euler step with the jump
//! probability clipped to 1, on a fixed grid, NFE counted.

use super::path::MixturePath;
use crate::{Error, Result, SeededRng};

/// A model of the factorized posterior `p_{1|t}(x₁ⁱ | x_t)`.
pub trait DiscretePosterior {
    /// For tokens `x` (`b · len` values, `b = t.len()` sequences at times `t`),
    /// `b · len · V` probabilities, each token's `V` summing to 1.
    fn posterior(&self, x: &[u32], t: &[f64]) -> Result<Vec<f32>>;
}

/// One Euler step from `t` to `t + h` of every token of `x` (all at time `t`):
/// a token at `x` jumps with probability `min(1, h·λ)`, where
/// `λ = κ̇/(1 − κ) · (1 − p_{1|t}(x | x_t))` is its total rate out, to
/// `y ≠ x` drawn with probability `∝ p_{1|t}(y | x_t)`. `posterior` holds
/// `V` probabilities per token.
///
/// A step that reaches `t + h ≥ 1` takes the coefficient the rate integrates
/// to exactly, `(κ₁ − κ_t)/(1 − κ_t) = 1`, in place of `h·κ̇/(1 − κ)` (which
/// is below 1 there for `κ = t²`: `2(1 − h)/(2 − h)`): every token is then
/// drawn from the posterior, and the chain ends on data tokens whatever the
/// scheduler.
pub fn ctmc_euler_step(
    path: &MixturePath,
    x: &mut [u32],
    posterior: &[f32],
    t: f64,
    h: f64,
    rng: &mut SeededRng,
) -> Result<()> {
    let v = path.vocab();
    if posterior.len() != x.len() * v {
        return Err(Error::Shape(format!(
            "{} posterior values for {} tokens of V = {v}",
            posterior.len(),
            x.len()
        )));
    }
    let (kappa, d_kappa) = path.kappa(t);
    // h·κ̇/(1 − κ), or 1 on the step that ends the chain.
    let step = if t + h >= 1.0 - 1e-12 { 1.0 } else { h * super::rate::jump_coefficient(kappa, d_kappa) };
    let u = rng.uniform_vec(2 * x.len(), 0.0, 1.0);
    for (i, xi) in x.iter_mut().enumerate() {
        let p = &posterior[i * v..(i + 1) * v];
        let stay = p.get(*xi as usize).copied().unwrap_or(0.0) as f64;
        let out = (1.0 - stay).max(0.0);
        if out <= 0.0 || u[2 * i] >= (step * out).min(1.0) {
            continue;
        }
        // y ≠ x with probability p(y) / (1 − p(x)).
        let mut target = u[2 * i + 1] * out;
        let mut chosen = None;
        for (y, &py) in p.iter().enumerate() {
            if y == *xi as usize {
                continue;
            }
            target -= py as f64;
            chosen = Some(y);
            if target < 0.0 {
                break;
            }
        }
        if let Some(y) = chosen {
            *xi = y as u32;
        }
    }
    Ok(())
}

/// Samples the path from the source draws `x0` (`b · len` tokens, `b`
/// sequences) to `t = 1` in `steps` equal Euler steps of the CTMC driven by
/// `model`; returns the tokens and the NFE (= steps). The last step draws
/// every token from the posterior ([`ctmc_euler_step`]), so no mask is left.
pub fn ctmc_euler<M: DiscretePosterior + ?Sized>(
    model: &M,
    path: &MixturePath,
    x0: &[u32],
    b: usize,
    steps: usize,
    rng: &mut SeededRng,
) -> Result<(Vec<u32>, usize)> {
    if steps == 0 {
        return Err(Error::invalid("steps", "the CTMC sampler needs at least 1 step"));
    }
    if b == 0 || !x0.len().is_multiple_of(b) {
        return Err(Error::Shape(format!("{} tokens do not split into {b} sequences", x0.len())));
    }
    let mut x = x0.to_vec();
    let h = 1.0 / steps as f64;
    for k in 0..steps {
        let t = k as f64 * h;
        let p = model.posterior(&x, &vec![t; b])?;
        ctmc_euler_step(path, &mut x, &p, t, h, rng)?;
    }
    Ok((x, steps))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discrete::DiscreteSource;
    use crate::scheduler::SchedulerKind;

    /// The exact posterior of a one-token problem with target `p1`.
    struct Exact {
        p1: Vec<f64>,
        path: MixturePath,
    }

    impl DiscretePosterior for Exact {
        fn posterior(&self, x: &[u32], t: &[f64]) -> Result<Vec<f32>> {
            let v = self.p1.len();
            let (kappa, _) = self.path.kappa(t[0]);
            let mut out = Vec::with_capacity(x.len() * v);
            for &xi in x {
                // p(y | x) ∝ p1(y) · p_t(x | y).
                let w: Vec<f64> =
                    (0..v).map(|y| self.p1[y] * self.path.probability(xi, y as u32, t[0])).collect();
                let z: f64 = w.iter().sum();
                assert!(z > 0.0 || kappa >= 1.0, "state {xi} impossible at t = {}", t[0]);
                out.extend(w.iter().map(|wi| (wi / z) as f32));
            }
            Ok(out)
        }
    }

    /// On one token with a known target, the Euler CTMC driven by the exact
    /// posterior samples the target: Pearson's χ² over the 6 states below the
    /// 0.1 % quantile of χ²₅ (20.5), from both sources and for the schedulers
    /// whose Euler coefficient stays below 1 on the last step (`κ = t²`,
    /// cosine), with no mask left; the NFE is the step count.
    #[test]
    fn the_exact_posterior_samples_the_target() -> Result<()> {
        let p1 = vec![0.1, 0.3, 0.05, 0.25, 0.2, 0.1];
        let n = 20_000;
        let schedulers = [SchedulerKind::CondOt, SchedulerKind::Polynomial { n: 2.0 }, SchedulerKind::Cosine];
        for (source, scheduler) in [DiscreteSource::Mask, DiscreteSource::Uniform]
            .into_iter()
            .flat_map(|s| schedulers.into_iter().map(move |k| (s, k)))
        {
            let path = MixturePath::new(scheduler, source, p1.len())?;
            let model = Exact { p1: p1.clone(), path };
            let mut rng = SeededRng::new(11);
            let x0 = source.sample(n, p1.len(), &mut rng)?;
            let (x, nfe) = ctmc_euler(&model, &path, &x0, n, 20, &mut rng)?;
            assert_eq!(nfe, 20);
            let mut counts = vec![0usize; p1.len()];
            for &xi in &x {
                counts[xi as usize] += 1; // a leftover mask (id 6) would panic here
            }
            let chi2: f64 = counts
                .iter()
                .zip(&p1)
                .map(|(&c, &p)| (c as f64 - n as f64 * p).powi(2) / (n as f64 * p))
                .sum();
            assert!(chi2 < 20.5, "{source}, {scheduler}: χ² = {chi2}, counts {counts:?}");
        }
        Ok(())
    }

    /// A jump never lands on the current state, and a certain posterior with
    /// rate ≥ 1/h moves every token there in one step.
    #[test]
    fn a_certain_posterior_moves_every_token() -> Result<()> {
        let path = MixturePath::new(SchedulerKind::CondOt, DiscreteSource::Uniform, 3)?;
        let mut x = vec![0u32, 1, 2, 0];
        let posterior: Vec<f32> = (0..4).flat_map(|_| [0.0f32, 0.0, 1.0]).collect();
        ctmc_euler_step(&path, &mut x, &posterior, 0.5, 0.5, &mut SeededRng::new(1))?;
        assert_eq!(x, vec![2, 2, 2, 2]);
        let err = ctmc_euler_step(&path, &mut x, &posterior[..9], 0.5, 0.5, &mut SeededRng::new(1));
        assert!(err.is_err());
        Ok(())
    }
}

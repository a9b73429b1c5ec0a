//! A seeded random number generator that builds candle tensors.
//!
//! candle's CPU RNG cannot be seeded (`Device::Cpu.set_seed` fails), so every
//! random draw in fm (data, initialisation, `t`, noise, probes) comes from a
//! [`SeededRng`]: the same seed gives bit-identical tensors on every run.

use candle::{DType, Device, Shape, Tensor};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::Result;

/// A portable, seedable RNG (ChaCha8) with helpers that draw tensors.
#[derive(Debug, Clone)]
pub struct SeededRng {
    inner: ChaCha8Rng,
}

impl SeededRng {
    /// A generator from a 64-bit seed.
    pub fn new(seed: u64) -> Self {
        Self { inner: ChaCha8Rng::seed_from_u64(seed) }
    }

    /// An independent generator for a named purpose under one seed (e.g.
    /// `"init"`, `"data"`), so that adding draws to one stream never shifts another.
    pub fn for_stream(seed: u64, stream: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in stream.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        Self::new(seed ^ h.rotate_left(17))
    }

    /// `n` standard normal draws.
    pub fn normal_vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| StandardNormal.sample(&mut self.inner)).collect()
    }

    /// `n` uniform draws in `[lo, hi)`.
    pub fn uniform_vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.inner.random_range(lo..hi)).collect()
    }

    /// A tensor of standard normal draws.
    pub fn normal(&mut self, shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let v = self.normal_vec(shape.elem_count());
        Ok(Tensor::from_vec(v, shape, device)?.to_dtype(dtype)?)
    }

    /// A tensor of uniform draws in `[lo, hi)`.
    pub fn uniform(
        &mut self,
        shape: impl Into<Shape>,
        lo: f64,
        hi: f64,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let v = self.uniform_vec(shape.elem_count(), lo, hi);
        Ok(Tensor::from_vec(v, shape, device)?.to_dtype(dtype)?)
    }

    /// A tensor of Rademacher (±1) draws.
    pub fn rademacher(&mut self, shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let v: Vec<f64> =
            (0..shape.elem_count()).map(|_| if self.inner.random::<bool>() { 1.0 } else { -1.0 }).collect();
        Ok(Tensor::from_vec(v, shape, device)?.to_dtype(dtype)?)
    }

    /// A uniformly random permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.inner.random_range(0..=i);
            p.swap(i, j);
        }
        p
    }

    /// How far the generator has advanced (ChaCha's 32-bit word position).
    ///
    /// With the seed, this is the whole state: a run that records it can be
    /// resumed with [`SeededRng::set_position`] and draw exactly what an
    /// uninterrupted run would have drawn.
    pub fn position(&self) -> u128 {
        self.inner.get_word_pos()
    }

    /// Moves the generator to a position returned by [`SeededRng::position`].
    pub fn set_position(&mut self, position: u128) {
        self.inner.set_word_pos(position);
    }

    /// The underlying [`rand`] generator, for draws not covered here.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.inner
    }
}

impl RngCore for SeededRng {
    fn next_u32(&mut self) -> u32 {
        self.inner.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.inner.fill_bytes(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_tensor() -> Result<()> {
        let a = SeededRng::new(7).normal((3, 4), DType::F32, &Device::Cpu)?;
        let b = SeededRng::new(7).normal((3, 4), DType::F32, &Device::Cpu)?;
        let c = SeededRng::new(8).normal((3, 4), DType::F32, &Device::Cpu)?;
        assert_eq!(a.to_vec2::<f32>()?, b.to_vec2::<f32>()?);
        assert_ne!(a.to_vec2::<f32>()?, c.to_vec2::<f32>()?);
        Ok(())
    }

    #[test]
    fn forks_are_independent_streams() {
        let mut a = SeededRng::for_stream(1, "init");
        let mut b = SeededRng::for_stream(1, "data");
        assert_ne!(a.normal_vec(4), b.normal_vec(4));
    }

    #[test]
    fn position_restores_the_stream() {
        let mut a = SeededRng::for_stream(5, "data");
        a.normal_vec(37); // an odd count, so the position falls inside a ChaCha block
        let saved = a.position();
        let next = a.normal_vec(10);
        let mut b = SeededRng::for_stream(5, "data");
        b.set_position(saved);
        assert_eq!(b.normal_vec(10), next);
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut p = SeededRng::new(3).permutation(100);
        p.sort_unstable();
        assert_eq!(p, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn normal_moments() {
        let v = SeededRng::new(5).normal_vec(100_000);
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(m.abs() < 0.01 && (var - 1.0).abs() < 0.02, "{m} {var}");
    }
}

//! Minibatches of images: shuffled by seed each epoch, optional horizontal
//! flips and uniform dequantization, scaled to `[−1, 1]`.

use candle::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::ImageSet;
use crate::{Error, Result};

/// A batch: images `(b, c, h, w)` in `[−1, 1]` (`f32`) and their labels `(b,)` (`u32`), if any.
#[derive(Debug, Clone)]
pub struct ImageBatch {
    /// The images.
    pub images: Tensor,
    /// The labels.
    pub labels: Option<Tensor>,
}

/// Draws epochs of shuffled minibatches from an [`ImageSet`].
///
/// The order of epoch `e` depends only on `(seed, e)`, and the state is just
/// `(epoch, position)`, so a resumed run sees the same batches.
///
/// ```
/// use candle::Device;
/// use fm_data::images::{ImageBatcher, ImageSet};
/// use rand::SeedableRng;
///
/// # fn main() -> fm_data::Result<()> {
/// let set = ImageSet { pixels: (0..=255).collect(), labels: None, n: 4, channels: 1,
///                      height: 8, width: 8, levels: 256, source: "ramp".into() };
/// let mut batches = ImageBatcher::new(set, 7)?.with_dequantization(true);
/// let mut rng = rand::rngs::StdRng::seed_from_u64(0);
/// let b = batches.next_batch(3, &mut rng, &Device::Cpu)?;
/// assert_eq!(b.images.dims(), &[3, 1, 8, 8]);
/// let v = b.images.flatten_all()?.to_vec1::<f32>()?;
/// assert!(v.iter().all(|x| (-1.0..1.0).contains(x)));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ImageBatcher {
    set: ImageSet,
    seed: u64,
    epoch: u64,
    pos: usize,
    order: Vec<usize>,
    hflip: bool,
    dequantize: bool,
}

impl ImageBatcher {
    /// Batches from `set`, shuffled with `seed`.
    pub fn new(set: ImageSet, seed: u64) -> Result<Self> {
        set.validate()?;
        if set.n == 0 {
            return Err(Error::InvalidParameter(format!("{}: no images", set.source)));
        }
        let mut b = Self { set, seed, epoch: 0, pos: 0, order: Vec::new(), hflip: false, dequantize: false };
        b.shuffle();
        Ok(b)
    }

    /// Flip each image left–right with probability ½.
    pub fn with_hflip(mut self, on: bool) -> Self {
        self.hflip = on;
        self
    }

    /// Add uniform noise within each pixel's bin (`x = 2 (p + u) / levels − 1`, `u ~ U[0, 1)`)
    /// instead of using the bin's centre.
    pub fn with_dequantization(mut self, on: bool) -> Self {
        self.dequantize = on;
        self
    }

    /// The images.
    pub fn set(&self) -> &ImageSet {
        &self.set
    }

    /// `(epoch, position within the epoch)`, to save with a checkpoint.
    pub fn state(&self) -> (u64, usize) {
        (self.epoch, self.pos)
    }

    /// Restores a state returned by [`ImageBatcher::state`].
    pub fn set_state(&mut self, epoch: u64, pos: usize) -> Result<()> {
        if pos > self.set.n {
            return Err(Error::InvalidParameter(format!(
                "batcher position {pos} beyond {} images",
                self.set.n
            )));
        }
        self.epoch = epoch;
        self.shuffle();
        self.pos = pos;
        Ok(())
    }

    fn shuffle(&mut self) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ self.epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        self.order = (0..self.set.n).collect();
        for i in (1..self.order.len()).rev() {
            let j = rng.random_range(0..=i);
            self.order.swap(i, j);
        }
        self.pos = 0;
    }

    /// The next `b` images (an epoch boundary reshuffles and continues).
    pub fn next_batch<R: Rng + ?Sized>(
        &mut self,
        b: usize,
        rng: &mut R,
        device: &Device,
    ) -> Result<ImageBatch> {
        if b == 0 {
            return Err(Error::InvalidParameter("batch size must be at least 1".into()));
        }
        let mut idx = Vec::with_capacity(b);
        while idx.len() < b {
            if self.pos == self.order.len() {
                self.epoch += 1;
                self.shuffle();
            }
            idx.push(self.order[self.pos]);
            self.pos += 1;
        }
        self.batch_of(&idx, rng, device)
    }

    /// The images `idx` with this batcher's augmentation.
    pub fn batch_of<R: Rng + ?Sized>(
        &self,
        idx: &[usize],
        rng: &mut R,
        device: &Device,
    ) -> Result<ImageBatch> {
        let s = &self.set;
        let (c, h, w) = s.image_shape();
        let d = s.dim();
        let scale = 2.0 / s.levels as f32;
        let mut v = Vec::with_capacity(idx.len() * d);
        for &i in idx {
            let img = s.pixels.get(i * d..(i + 1) * d).ok_or_else(|| {
                Error::InvalidParameter(format!("image index {i} out of range for {} images", s.n))
            })?;
            let flip = self.hflip && rng.random::<bool>();
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        let sx = if flip { w - 1 - x } else { x };
                        let p = img[(ch * h + y) * w + sx] as f32;
                        let u = if self.dequantize { rng.random::<f32>() } else { 0.5 };
                        v.push((p + u) * scale - 1.0);
                    }
                }
            }
        }
        let images = Tensor::from_vec(v, (idx.len(), c, h, w), device)?;
        let labels = match &s.labels {
            Some(l) => {
                let lv: Vec<u32> = idx.iter().map(|&i| l[i] as u32).collect();
                Some(Tensor::from_vec(lv, idx.len(), device)?)
            }
            None => None,
        };
        Ok(ImageBatch { images, labels })
    }
}

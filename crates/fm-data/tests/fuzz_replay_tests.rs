//! A short, deterministic fuzzing replay of every file parser: valid inputs,
//! their truncations and thousands of random mutations must give `Ok` or a
//! typed error, never a panic. (`fuzz/` holds the cargo-fuzz targets for long runs.)

use std::path::Path;

use fm_data::images::{parse_cifar10_batch, parse_digits, parse_idx};
use fm_data::{npy, parse_csv_columns};

/// A tiny deterministic generator (SplitMix64), so the replay is the same everywhere.
struct Mix(u64);
impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Truncations, byte flips, insertions, deletions and splices of `seed`.
fn mutations(seed: &[u8], count: usize, rng: &mut Mix) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> =
        (0..=seed.len()).step_by((seed.len() / 64).max(1)).map(|k| seed[..k].to_vec()).collect();
    for _ in 0..count {
        let mut v = seed.to_vec();
        for _ in 0..1 + rng.below(4) {
            match rng.below(5) {
                0 if !v.is_empty() => {
                    let i = rng.below(v.len());
                    v[i] ^= 1 << rng.below(8);
                }
                1 if !v.is_empty() => {
                    let i = rng.below(v.len());
                    v[i] = rng.next() as u8;
                }
                2 => {
                    let i = rng.below(v.len() + 1);
                    v.insert(i, rng.next() as u8);
                }
                3 if !v.is_empty() => {
                    let i = rng.below(v.len());
                    v.remove(i);
                }
                _ => {
                    let i = rng.below(v.len() + 1);
                    let j = rng.below(v.len() + 1);
                    let (a, b) = (i.min(j), i.max(j));
                    let chunk = v[a..b].to_vec();
                    v.splice(a..a, chunk);
                }
            }
        }
        out.push(v);
    }
    out
}

fn replay(name: &str, seed: &[u8], count: usize, parse: impl Fn(&[u8])) {
    let mut rng = Mix(0xF00D ^ seed.len() as u64);
    for (k, input) in mutations(seed, count, &mut rng).iter().enumerate() {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(input)));
        assert!(
            r.is_ok(),
            "{name}: input #{k} ({} bytes) panicked: {:?}",
            input.len(),
            &input[..input.len().min(64)]
        );
    }
}

#[test]
fn idx_parser_never_panics() {
    let mut seed = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 3];
    seed.extend(0..18u8);
    replay("idx", &seed, 3000, |b| {
        let _ = parse_idx(b, Path::new("fuzz.idx"));
    });
}

#[test]
fn cifar_parser_never_panics() {
    let mut seed = vec![3u8];
    seed.extend((0..3072).map(|i| (i % 251) as u8));
    replay("cifar", &seed, 300, |b| {
        let _ = parse_cifar10_batch(b, Path::new("fuzz.bin"));
    });
}

#[test]
fn digits_parser_never_panics() {
    let row: Vec<String> = (0..65).map(|i| (i % 10).to_string()).collect();
    let seed = format!("{}\n{}\n", row.join(","), row.join(","));
    replay("digits", seed.as_bytes(), 2000, |b| {
        let _ = parse_digits(&String::from_utf8_lossy(b), Path::new("fuzz.csv"));
    });
}

#[test]
fn csv_parser_never_panics() {
    let seed = "\u{feff}\"\",\"a\",\"b,c\"\n\"1\",3.6,79\n\"2\",\"1.8\",54\n3,NaN,\"x\"\"y\"\n";
    let columns = ["a".to_string(), "b,c".to_string()];
    replay("csv", seed.as_bytes(), 3000, |b| {
        let text = String::from_utf8_lossy(b);
        let _ = parse_csv_columns(&text, Path::new("fuzz.csv"), &columns);
        let _ = parse_csv_columns(&text, Path::new("fuzz.csv"), &[]);
    });
}

#[test]
fn npy_parser_never_panics() {
    let seed = npy::encode_f32(&[1.0, -2.0, 0.5, 4.0, 1e-3, 7.0], &[2, 3]);
    replay("npy", &seed, 3000, |b| {
        if let Ok(a) = npy::parse(b, Path::new("fuzz.npy")) {
            assert_eq!(a.data.len(), a.shape.iter().product::<usize>());
        }
    });
}

//! CFM training step, MLP 3→256→256→256→2 SiLU, AdamW, f32.

use criterion::{criterion_group, Criterion};

fn train(c: &mut Criterion) {
    let mut g = c.benchmark_group("train");
    super::bench_workload(&mut g, "cpu_step_b256", "train_b256");
    super::bench_workload(&mut g, "cpu_step_b4096", "train_b4096");
    g.finish();
}

criterion_group!(benches, train);

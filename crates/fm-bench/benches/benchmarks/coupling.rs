//! Exact OT coupling of a batch of 256 2-D points.

use criterion::{criterion_group, Criterion};

fn coupling(c: &mut Criterion) {
    let mut g = c.benchmark_group("coupling");
    super::bench_workload(&mut g, "cpu_exact_ot_b256", "ot_coupling");
    g.finish();
}

criterion_group!(benches, coupling);

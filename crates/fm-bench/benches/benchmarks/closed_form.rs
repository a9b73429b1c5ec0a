//! The closed-form velocity (n = 10,000, d = 784, b = 256) and a 1024³ GEMM
//! for the machine's peak rate.

use criterion::{criterion_group, Criterion};

fn closed_form(c: &mut Criterion) {
    let mut g = c.benchmark_group("closed_form");
    g.sample_size(20);
    super::bench_workload(&mut g, "cpu_velocity_n10000_d784_b256", "closed_form");
    super::bench_workload(&mut g, "cpu_gemm_1024", "gemm");
    g.finish();
}

criterion_group!(benches, closed_form);

//! Sampling (10,000 points, Euler-100 and Dopri5 at 1e-5) and likelihood
//! (1,000 points, exact and Hutchinson, RK4-25).

use criterion::{criterion_group, Criterion};

fn inference(c: &mut Criterion) {
    let mut g = c.benchmark_group("inference");
    g.sample_size(10);
    super::bench_workload(&mut g, "cpu_sample_euler100_n10000", "sample_euler100");
    super::bench_workload(&mut g, "cpu_sample_dopri5_n10000", "sample_dopri5");
    super::bench_workload(&mut g, "cpu_likelihood_exact_n1000", "likelihood_exact");
    super::bench_workload(&mut g, "cpu_likelihood_hutchinson_n1000", "likelihood_hutchinson");
    g.finish();
}

criterion_group!(benches, inference);

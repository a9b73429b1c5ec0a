//! Criterion benches of fm's workloads (`cargo bench -p fm-bench`).

mod benchmarks;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

criterion::criterion_main!(
    benchmarks::train::benches,
    benchmarks::inference::benches,
    benchmarks::closed_form::benches,
    benchmarks::coupling::benches
);

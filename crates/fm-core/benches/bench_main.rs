//! fm-core benchmarks (`cargo bench -p fm-core`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod coupling;

criterion::criterion_main!(coupling::benches);

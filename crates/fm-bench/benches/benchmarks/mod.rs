pub mod closed_form;
pub mod coupling;
pub mod inference;
pub mod train;

use criterion::measurement::WallTime;
use criterion::BenchmarkGroup;
use fm_bench::{build, Scale, Workload};

/// Benchmarks the named workload (full size) as `id` in `group`.
pub fn bench_workload(group: &mut BenchmarkGroup<'_, WallTime>, id: &str, name: &str) {
    let mut w: Box<dyn Workload> = match build(name, Scale { quick: false }) {
        Ok(w) => w,
        Err(e) => panic!("building {name}: {e}"),
    };
    group.bench_function(id, |b| {
        b.iter(|| {
            if let Err(e) = w.run() {
                panic!("{name}: {e}");
            }
        })
    });
}

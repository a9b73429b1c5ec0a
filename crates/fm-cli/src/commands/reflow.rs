//! `fm reflow`: the coupled pairs `(x₀, Φ(x₀))` of a velocity model's ODE,
//! streamed to an `.npy` file, for training the next rectified flow with
//! `fm train --data pairs:FILE`; reports the teacher's straightness.

use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use fm_models::checkpoint::atomic_write;
use fm_pipeline::{PairsSidecar, SolverChoice};
use serde_json::json;

use crate::cli::ReflowArgs;
use crate::io::print_json;

/// Source draws the teacher's straightness is measured on (Euler, 100 steps).
const STRAIGHTNESS_POINTS: usize = 1000;

pub fn run(a: ReflowArgs) -> Result<()> {
    if a.pairs == 0 {
        bail!("--pairs must be at least 1");
    }
    if !a.out.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        bail!("--out {}: the pairs are written as .npy; give a path ending in .npy", a.out.display());
    }
    let device = crate::device::selected();
    let choice = SolverChoice::new(&a.solver.solver, a.solver.steps, a.solver.rtol, a.solver.atol)?;
    let m = super::common::load(&a.checkpoint, a.hub.offline, &device)?;
    let d = m.dim();
    let log = |s: String| if a.json { eprintln!("{s}") } else { println!("{s}") };
    let partial = a.out.with_extension("npy.partial");
    let mut file = std::fs::File::create(&partial)
        .with_context(|| format!("--out {}: cannot create {}", a.out.display(), partial.display()))?;
    let header = fm_data::npy::encode_f32(&[], &[a.pairs, 2 * d]);
    file.write_all(&header).with_context(|| format!("cannot write {}", partial.display()))?;
    let pb = crate::progress::bar(a.pairs, a.quiet, "{bar:30} {pos}/{len} pairs {per_sec} ETA {eta}");
    let start = Instant::now();
    let mut buffer = Vec::new();
    let result = m.reflow_pairs(a.pairs, a.seed, &choice, a.batch_size, &mut |x0, x1| {
        buffer.clear();
        for (r0, r1) in x0.chunks_exact(d).zip(x1.chunks_exact(d)) {
            for v in r0.iter().chain(r1) {
                buffer.extend_from_slice(&v.to_le_bytes());
            }
        }
        file.write_all(&buffer)
            .map_err(|e| fm_pipeline::Error::Setting(format!("cannot write {}: {e}", partial.display())))?;
        pb.inc((x0.len() / d) as u64);
        Ok(())
    });
    pb.finish_and_clear();
    let nfe = match result {
        Ok(nfe) => nfe,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.into());
        }
    };
    file.sync_all().with_context(|| format!("cannot write {}", partial.display()))?;
    drop(file);
    std::fs::rename(&partial, &a.out)
        .with_context(|| format!("cannot move {} to {}", partial.display(), a.out.display()))?;
    // The teacher's record beside the pairs: a model trained on them is measured
    // against the teacher's data (through any chain of reflows), not its samples.
    let sidecar = PairsSidecar { teacher: a.checkpoint.display().to_string(), record: m.record().clone() };
    let sidecar_path = PairsSidecar::path_for(&a.out);
    atomic_write(&sidecar_path, serde_json::to_string_pretty(&sidecar)?.as_bytes())
        .with_context(|| format!("cannot write {}", sidecar_path.display()))?;
    let seconds = start.elapsed().as_secs_f64();
    let straightness = m.straightness(STRAIGHTNESS_POINTS, a.seed.wrapping_add(1), 100)?;
    log(format!(
        "{} pairs of {} ({}) with {} (NFE {nfe} per solve) in {seconds:.1} s: {}",
        a.pairs,
        a.checkpoint.display(),
        m.describe(),
        choice.label,
        a.out.display()
    ));
    log(format!(
        "teacher straightness S = {straightness:.5} ({STRAIGHTNESS_POINTS} draws, euler-100; 0 for straight paths)"
    ));
    log(format!("train the next rectified flow with: fm train --data pairs:{}", a.out.display()));
    if a.json {
        print_json(&json!({
            "pairs": a.pairs,
            "dim": d,
            "out": a.out,
            "solver": choice.label,
            "nfe": nfe,
            "seconds": seconds,
            "teacher_straightness": straightness,
        }))?;
    }
    Ok(())
}

//! `fm reflow` and `fm train --data pairs:FILE`: the rectified-flow loop from the command line.

mod common;
use common::{fails, last_json, ok, s, temp_in};

#[test]
fn reflow_writes_pairs_and_a_sidecar_and_the_student_trains_on_them() {
    let dir = temp_in("reflow", "moons");
    let teacher = dir.join("teacher");
    ok(&["train", "--steps", "500", "--out", s(&teacher), "--quiet", "--sample-n", "200"]);
    let pairs = dir.join("pairs.npy");
    let j = last_json(&ok(&[
        "reflow",
        "--checkpoint",
        s(&teacher),
        "--pairs",
        "3000",
        "--batch-size",
        "1000",
        "--solver",
        "euler",
        "--steps",
        "10",
        "--out",
        s(&pairs),
        "--json",
        "--quiet",
    ]));
    assert_eq!(
        (j["pairs"].as_u64(), j["dim"].as_u64(), j["nfe"].as_u64()),
        (Some(3000), Some(2), Some(10)),
        "{j}"
    );
    assert!(j["teacher_straightness"].as_f64().unwrap() > 0.0);
    let array = fm_data::npy::read(&pairs).unwrap();
    assert_eq!(array.shape, vec![3000, 4]);
    assert!(pairs.with_extension("json").is_file() && !pairs.with_extension("npy.partial").exists());
    let student = dir.join("student");
    let out = ok(&[
        "train",
        "--data",
        &format!("pairs:{}", s(&pairs)),
        "--steps",
        "200",
        "--out",
        s(&student),
        "--quiet",
        "--sample-n",
        "200",
    ]);
    assert!(out.contains("3000 coupled pairs"), "{out}");
    // One-step distillation of the same pairs; refused on data without pairs.
    #[rustfmt::skip]
    let out = ok(&[
        "train", "--data", &format!("pairs:{}", s(&pairs)), "--objective", "distill", "--steps", "50",
        "--out", s(&dir.join("distilled")), "--quiet", "--sample-n", "100",
    ]);
    assert!(out.contains("one-step distillation"), "{out}");
    let e = fails(&["train", "--objective", "distill", "--steps", "5", "--out", s(&dir.join("bad"))]);
    assert!(e.contains("pairs:FILE"), "{e}");
    let e = fails(&[
        "train",
        "--data",
        &format!("pairs:{}", s(&pairs)),
        "--matcher",
        "otcfm",
        "--steps",
        "5",
        "--out",
        s(&dir.join("bad")),
    ]);
    assert!(e.contains("--matcher"), "{e}");
    // A flow has no ODE map; nothing is left behind.
    let flow = dir.join("flow");
    ok(&["train", "--model", "realnvp", "--steps", "10", "--out", s(&flow), "--quiet", "--sample-n", "50"]);
    let flow_pairs = dir.join("flow-pairs.npy");
    let e = fails(&["reflow", "--checkpoint", s(&flow), "--pairs", "10", "--out", s(&flow_pairs)]);
    assert!(e.contains("velocity model"), "{e}");
    assert!(!flow_pairs.exists() && !flow_pairs.with_extension("npy.partial").exists());
    let e = fails(&["reflow", "--checkpoint", s(&teacher), "--pairs", "10", "--out", s(&dir.join("p.csv"))]);
    assert!(e.contains("--out") && e.contains(".npy"), "{e}");
    let e = fails(&["reflow", "--checkpoint", s(&teacher), "--pairs", "0", "--out", s(&pairs)]);
    assert!(e.contains("--pairs"), "{e}");
}

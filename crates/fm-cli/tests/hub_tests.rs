//! Checkpoints from the Hugging Face Hub (a loopback server the test starts,
//! reached through `HF_ENDPOINT`/`HF_HUB_CACHE` on the spawned `fm`),
//! `fm train --init … --allow-partial`, `fm export --format hub`, and
//! `fm convert` to and from torchcfm's state dicts.

mod common;

#[path = "../../fm-data/tests/support/hub_server.rs"]
mod hub_server;
#[path = "../../fm-data/tests/support/parquet_images.rs"]
mod parquet_images;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};

use candle::{Device, Tensor};
use common::{failed, fails, last_json, ok, s, succeeded, temp_in};
use hub_server::HubServer;

fn temp(name: &str) -> std::path::PathBuf {
    temp_in("hub", name)
}

/// `fm` with the Hub's environment: endpoint, cache, and no token from the user's home.
fn fm_hub(args: &[&str], endpoint: &str, cache: &Path, extra: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fm"))
        .args(args)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HUB_CACHE", cache)
        .env("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .envs(extra.iter().copied())
        .output()
        .expect("the fm binary runs")
}

fn hub_ok(args: &[&str], endpoint: &str, cache: &Path, extra: &[(&str, &str)]) -> String {
    succeeded(args, fm_hub(args, endpoint, cache, extra))
}

fn hub_fails(args: &[&str], endpoint: &str, cache: &Path) -> String {
    failed(args, fm_hub(args, endpoint, cache, &[]))
}

/// A 3-step tiny U-Net run on the digits; `class_cond` adds the label embedding.
fn train_unet(data: &str, out: &Path, class_cond: bool) {
    let mut args = vec![
        "train",
        "--data",
        data,
        "--model",
        "unet",
        "--preset",
        "tiny",
        "--batch-size",
        "8",
        "--steps",
        "3",
        "--sample-n",
        "4",
        "--sample-steps",
        "2",
        "--sample-solver",
        "euler",
        "--out",
        s(out),
        "--quiet",
    ];
    if class_cond {
        args.push("--class-cond");
    }
    ok(&args);
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle::safetensors::load(path, &Device::Cpu).expect("a safetensors file")
}

/// Same names, shapes and bit-identical values.
fn assert_same_tensors(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) {
    let mut ka: Vec<&String> = a.keys().collect();
    let mut kb: Vec<&String> = b.keys().collect();
    ka.sort();
    kb.sort();
    assert_eq!(ka, kb);
    for k in ka {
        assert_eq!(a[k].dims(), b[k].dims(), "{k}");
        let (x, y) = (
            a[k].flatten_all().and_then(|t| t.to_vec1::<f32>()),
            b[k].flatten_all().and_then(|t| t.to_vec1::<f32>()),
        );
        let (x, y) = (x.expect("f32"), y.expect("f32"));
        assert!(x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()), "{k} differs");
    }
}

#[test]
fn hub_checkpoints_sample_and_initialise_training_online_then_offline() {
    let dir = temp("sample-init");
    let data = common::digits_csv(&dir, 40, 5);
    let run = dir.join("run");
    train_unet(&data, &run, false);

    // The Hub folder: weights, config, model card with the command and metrics.
    let export = dir.join("export");
    let stdout = ok(&[
        "export",
        "--format",
        "hub",
        s(&run),
        "--out",
        s(&export),
        "--repo-id",
        "me/tiny-unet",
        "--json",
    ]);
    let j = last_json(&stdout);
    assert_eq!(j["files"].as_array().map(Vec::len), Some(4), "{j}");
    let card = std::fs::read_to_string(export.join("README.md")).unwrap_or_default();
    assert!(card.starts_with("---\nlibrary_name: fm\n"), "{card}");
    assert!(card.contains("fm train --data digits:") && card.contains("--preset tiny"), "{card}");
    assert!(card.contains("## Metrics") && card.contains("| loss |"), "{card}");
    assert!(card.contains("fm sample --checkpoint hf://me/tiny-unet"), "{card}");
    assert_eq!(
        std::fs::read(export.join("model.safetensors")).ok(),
        std::fs::read(run.join("model.safetensors")).ok()
    );

    let mut server = HubServer::start().expect("a loopback port");
    for f in ["model.safetensors", "config.json", "README.md"] {
        server.put("me/tiny-unet", "main", f, std::fs::read(export.join(f)).unwrap_or_default(), None);
    }
    let endpoint = server.endpoint.clone();
    let cache = dir.join("hub-cache");

    // fm sample from the Hub gives the same samples as from the local checkpoint.
    let local = dir.join("local.npy");
    ok(&[
        "sample",
        "--checkpoint",
        s(&run),
        "--n",
        "4",
        "--steps",
        "2",
        "--solver",
        "euler",
        "--out",
        s(&local),
    ]);
    let remote = dir.join("remote.npy");
    let args = [
        "sample",
        "--checkpoint",
        "hf://me/tiny-unet",
        "--n",
        "4",
        "--steps",
        "2",
        "--solver",
        "euler",
        "--out",
        s(&remote),
    ];
    hub_ok(&args, &endpoint, &cache, &[]);
    assert_eq!(std::fs::read(&local).ok(), std::fs::read(&remote).ok());
    assert!(cache
        .join("models--me--tiny-unet/snapshots")
        .join(hub_server::COMMIT)
        .join("model.safetensors")
        .exists());
    let requests = server.requests();
    assert!(
        requests.contains(&"GET /me/tiny-unet/resolve/main/model.safetensors".to_string()),
        "{requests:?}"
    );

    // --offline makes no request at all, and works with the server gone.
    let seen = server.requests().len();
    let offline = dir.join("offline.npy");
    let args = [
        "sample",
        "--checkpoint",
        "hf://me/tiny-unet",
        "--offline",
        "--n",
        "4",
        "--steps",
        "2",
        "--solver",
        "euler",
        "--out",
        s(&offline),
    ];
    hub_ok(&args, &endpoint, &cache, &[]);
    assert_eq!(server.requests().len(), seen);
    server.stop();
    let args = [
        "sample",
        "--checkpoint",
        "hf://me/tiny-unet",
        "--n",
        "4",
        "--steps",
        "2",
        "--solver",
        "euler",
        "--out",
        s(&offline),
    ];
    hub_ok(&args, &endpoint, &cache, &[("HF_HUB_OFFLINE", "1")]);
    assert_eq!(std::fs::read(&local).ok(), std::fs::read(&offline).ok());
    let err = hub_fails(&["sample", "--checkpoint", "hf://me/other", "--offline"], &endpoint, &cache);
    assert!(
        err.contains("hf://me/other@main/model.safetensors") && err.contains("not in the Hub cache"),
        "{err}"
    );
    let err = hub_fails(&["sample", "--checkpoint", "hf://me"], &endpoint, &cache);
    assert!(err.contains("hf://OWNER/REPO"), "{err}");

    // --init from the Hub into a class-conditional model: the new label embedding
    // does not fit, which is refused unless --allow-partial, then reported.
    let init_args = |out: &str, partial: bool| -> Vec<String> {
        let mut a: Vec<String> = [
            "train",
            "--data",
            data.as_str(),
            "--model",
            "unet",
            "--preset",
            "tiny",
            "--class-cond",
            "--batch-size",
            "8",
            "--steps",
            "1",
            "--sample-n",
            "2",
            "--sample-steps",
            "1",
            "--sample-solver",
            "euler",
            "--out",
            out,
            "--quiet",
            "--json",
            "--init",
            "hf://me/tiny-unet",
            "--offline",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        if partial {
            a.push("--allow-partial".into());
        }
        a
    };
    let strict = dir.join("strict");
    let a = init_args(s(&strict), false);
    let err = hub_fails(&a.iter().map(String::as_str).collect::<Vec<_>>(), &endpoint, &cache);
    assert!(err.contains("missing `label_emb.weight`") && err.contains("--allow-partial"), "{err}");
    let partial = dir.join("partial");
    let a = init_args(s(&partial), true);
    let stdout = hub_ok(&a.iter().map(String::as_str).collect::<Vec<_>>(), &endpoint, &cache, &[]);
    let j = last_json(&stdout);
    assert_eq!(j["init"]["left_initialised"], serde_json::json!(["label_emb.weight"]), "{j}");
    assert_eq!(j["init"]["missing"], serde_json::json!(["label_emb.weight"]), "{j}");
    let total = j["init"]["total"].as_u64().unwrap_or(0);
    assert_eq!(j["init"]["loaded"].as_u64(), Some(total - 1), "{j}");
    let config = std::fs::read_to_string(partial.join("config.json")).unwrap_or_default();
    assert!(config.contains("\"init\": \"hf://me/tiny-unet\""), "{config}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_local_init_must_fit_exactly_unless_partial() {
    let dir = temp("init-local");
    let data = common::digits_csv(&dir, 40, 5);
    let run = dir.join("cond");
    train_unet(&data, &run, true);
    // Into an unconditional model: `label_emb.weight` is unexpected.
    let out = dir.join("uncond");
    let args = [
        "train",
        "--data",
        data.as_str(),
        "--model",
        "unet",
        "--preset",
        "tiny",
        "--batch-size",
        "8",
        "--steps",
        "1",
        "--sample-n",
        "2",
        "--sample-steps",
        "1",
        "--out",
        s(&out),
        "--quiet",
        "--init",
        s(&run),
    ];
    let err = fails(&args);
    assert!(err.contains("unexpected `label_emb.weight`"), "{err}");
    let mut partial = args.to_vec();
    partial.extend(["--allow-partial", "--json"]);
    let j = last_json(&ok(&partial));
    assert_eq!(j["init"]["unexpected"], serde_json::json!(["label_emb.weight"]), "{j}");
    assert_eq!(j["init"]["left_initialised"], serde_json::json!([]), "{j}");
    let err = fails(&["train", "--allow-partial"]);
    assert!(err.contains("--init"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn convert_to_torchcfm_and_back_is_bit_identical() {
    let dir = temp("convert");
    let data = common::digits_csv(&dir, 40, 5);
    let run = dir.join("cond");
    train_unet(&data, &run, true);
    let torch = dir.join("torch.safetensors");
    let stdout = ok(&["convert", "--to", "torchcfm-unet", s(&run), "--out", s(&torch), "--json"]);
    assert_eq!(last_json(&stdout)["to"], "torchcfm-unet");
    let t = load(&torch);
    // fm keeps its null-class row: 10 classes + ∅.
    assert_eq!(t["label_emb.weight"].dims()[0], 11);
    let back = dir.join("back");
    ok(&["convert", "--from", "torchcfm-unet", s(&torch), "--out", s(&back)]);
    assert_same_tensors(&load(&run.join("model.safetensors")), &load(&back.join("model.safetensors")));
    // With an explicit configuration instead of the file's metadata: the same.
    let back2 = dir.join("back2");
    ok(&[
        "convert",
        "--from",
        "torchcfm-unet",
        s(&torch),
        "--preset",
        "tiny",
        "--shape",
        "1x8x8",
        "--num-classes",
        "10",
        "--out",
        s(&back2),
    ]);
    assert_same_tensors(&load(&run.join("model.safetensors")), &load(&back2.join("model.safetensors")));
    // The converted checkpoint computes the same velocities.
    let inputs = dir.join("inputs.safetensors");
    let x = Tensor::from_vec(
        (0..128).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>(),
        (2, 1, 8, 8),
        &Device::Cpu,
    );
    let tt = Tensor::new(&[0.25f32, 0.75], &Device::Cpu);
    let y = Tensor::new(&[3u32, 10], &Device::Cpu);
    let map: HashMap<String, Tensor> = [
        ("x".to_string(), x.expect("x")),
        ("t".to_string(), tt.expect("t")),
        ("y".to_string(), y.expect("y")),
    ]
    .into();
    candle::safetensors::save(&map, &inputs).expect("inputs written");
    let (va, vb) = (dir.join("va.safetensors"), dir.join("vb.safetensors"));
    ok(&["velocity", "--checkpoint", s(&run), "--inputs", s(&inputs), "--out", s(&va)]);
    ok(&["velocity", "--checkpoint", s(&back), "--inputs", s(&inputs), "--out", s(&vb)]);
    assert_same_tensors(&load(&va), &load(&vb));
    assert_eq!(load(&va)["v"].dims(), &[2, 1, 8, 8]);

    // Wrong sizes are listed by name; unknown formats list the valid ones.
    let err = fails(&[
        "convert",
        "--from",
        "torchcfm-unet",
        s(&torch),
        "--preset",
        "mnist",
        "--shape",
        "1x8x8",
        "--out",
        s(&dir.join("x")),
    ]);
    assert!(err.contains("missing `") || err.contains("has shape"), "{err}");
    let err = fails(&["convert", "--from", "flow-matching-unet", s(&torch), "--out", s(&dir.join("x"))]);
    assert!(err.contains("torchcfm-unet, torchcfm-mlp"), "{err}");
    let err = fails(&["convert", "--to", "torchcfm-mlp", s(&run), "--out", s(&dir.join("x.safetensors"))]);
    assert!(err.contains("U-Net"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mlp_converts_to_torchcfm_and_back() {
    let dir = temp("convert-mlp");
    let run = dir.join("mlp");
    let common =
        ["train", "--data", "moons", "--steps", "5", "--batch-size", "16", "--sample-n", "10", "--quiet"];
    let mut args = common.to_vec();
    args.extend(["--hidden", "16,16,16", "--activation", "selu", "--out", s(&run)]);
    ok(&args);
    let torch = dir.join("mlp.safetensors");
    ok(&["convert", "--to", "torchcfm-mlp", s(&run), "--out", s(&torch)]);
    let t = load(&torch);
    assert_eq!(t["net.0.weight"].dims(), &[16, 3]);
    assert_eq!(t["net.6.weight"].dims(), &[2, 16]);
    let back = dir.join("back");
    let j = last_json(&ok(&["convert", "--from", "torchcfm-mlp", s(&torch), "--out", s(&back), "--json"]));
    assert_eq!(j["model"]["activation"], "selu", "{j}");
    assert_same_tensors(&load(&run.join("model.safetensors")), &load(&back.join("model.safetensors")));
    // An ELU model has no torchcfm counterpart.
    let elu = dir.join("elu");
    let mut args = common.to_vec();
    args.extend(["--hidden", "16,16,16", "--out", s(&elu)]);
    ok(&args);
    let err = fails(&["convert", "--to", "torchcfm-mlp", s(&elu), "--out", s(&dir.join("e.safetensors"))]);
    assert!(err.contains("SELU"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `fm data fetch mnist` from a loopback Hub holding MNIST-sized parquet files
/// (60,000 + 10,000 PNG images with MNIST's class counts): the folder it writes
/// trains a U-Net through the spec it prints; a second fetch works offline from
/// the cache; the digits need no Hub at all.
#[test]
fn data_fetch_writes_what_train_reads_online_then_offline() {
    let dir = temp("fetch");
    let counts = [
        ([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949], "train"),
        ([980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009], "test"),
    ];
    let class_png: Vec<Vec<u8>> = (0..10)
        .map(|k| {
            let px: Vec<u8> =
                (0..784).map(|p| if (p / 28 + p % 28 + 3 * k) % 10 < 3 { 250 } else { 5 }).collect();
            parquet_images::png(&px, 1, 28)
        })
        .collect();
    let mut server = HubServer::start().expect("a loopback port");
    for (per_class, split) in counts {
        let labels: Vec<i64> = (0..10).flat_map(|k| std::iter::repeat_n(k as i64, per_class[k])).collect();
        let pngs: Vec<Vec<u8>> = labels.iter().map(|&k| class_png[k as usize].clone()).collect();
        let file = format!("mnist/{split}-00000-of-00001.parquet");
        server.put(
            "datasets/ylecun/mnist",
            "main",
            &file,
            parquet_images::parquet_file(&pngs, &labels),
            None,
        );
    }
    let cache = dir.join("hub-cache");
    let out = dir.join("mnist");
    let j = last_json(&hub_ok(
        &["data", "fetch", "mnist", "--dir", s(&out), "--json", "--quiet"],
        &server.endpoint,
        &cache,
        &[],
    ));
    assert_eq!((j["train"].as_u64(), j["test"].as_u64()), (Some(60_000), Some(10_000)), "{j}");
    assert_eq!(j["matches_original"], false, "fixture images are not MNIST's: {j}");
    let spec = j["spec"].as_str().unwrap_or_default().to_string();
    assert_eq!(spec, format!("mnist:{}", s(&out)));
    ok(&[
        "train",
        "--data",
        &spec,
        "--model",
        "unet",
        "--preset",
        "tiny",
        "--channels",
        "8",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--sample-n",
        "2",
        "--sample-steps",
        "1",
        "--out",
        s(&dir.join("run")),
        "--quiet",
    ]);
    // Offline from the cache: no request.
    let before = server.requests().len();
    let again = dir.join("again");
    hub_ok(&["data", "fetch", "mnist", "--dir", s(&again), "--offline"], &server.endpoint, &cache, &[]);
    assert_eq!(server.requests().len(), before);
    server.stop();
    // A dataset the Hub does not have under that name, and an unknown name.
    let e = hub_fails(&["data", "fetch", "imagenet", "--dir", s(&again)], &server.endpoint, &cache);
    assert!(e.contains("imagenet") && e.contains("mnist, fashion-mnist, cifar10, digits"), "{e}");
    // The digits ship with fm.
    let out = ok(&["data", "fetch", "digits", "--dir", s(&dir.join("digits")), "--quiet"]);
    assert!(out.contains("1797 images") && out.contains("identical to the original"), "{out}");
    let spec = out.lines().find_map(|l| l.strip_prefix("use it with: --data ")).unwrap_or_default();
    ok(&[
        "train",
        "--data",
        spec,
        "--hidden",
        "32",
        "--steps",
        "2",
        "--sample-n",
        "4",
        "--out",
        s(&dir.join("d")),
        "--quiet",
    ]);
    let _ = std::fs::remove_dir_all(&dir);
}

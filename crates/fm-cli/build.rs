//! Tells the integration tests where the real datasets are: `FM_DATA_DIR`,
//! else the development layout (`shared/data` beside the workspace). When that
//! folder exists, `cfg(fm_data)` is set; the tests that need the datasets are
//! ignored otherwise, so the test runner counts and names them instead of
//! letting them pass without testing anything. `FM_TEST_DATA_DIR` carries the
//! folder to the tests. The answer is looked at again when `FM_DATA_DIR`
//! changes or a file in the folder does (a folder created later, under the same
//! setting, is seen after `cargo clean -p fm-cli`).

use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(fm_data)");
    println!("cargo::rerun-if-env-changed=FM_DATA_DIR");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let dir = match std::env::var_os("FM_DATA_DIR") {
        Some(d) => PathBuf::from(d),
        None => manifest.join("../../../shared/data"),
    };
    if dir.is_dir() {
        println!("cargo::rerun-if-changed={}", dir.display());
        println!("cargo::rustc-cfg=fm_data");
    }
    println!("cargo::rustc-env=FM_TEST_DATA_DIR={}", dir.display());
}

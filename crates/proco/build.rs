//! Embeds the LibTorch library directory as an rpath, so the binaries and tests of this
//! crate run without `LD_LIBRARY_PATH` (torch-sys, whose `links` key is "tch", only adds it
//! to its own C++ shim), and compiles `csrc/host_gradient.cpp` (a custom autograd node; tch
//! has none) against the same LibTorch, with the C++ ABI torch-sys chose.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=csrc/host_gradient.cpp");
    for var in ["LIBTORCH_USE_PYTORCH", "LIBTORCH_CXX11_ABI", "LIBTORCH_INCLUDE", "VIRTUAL_ENV"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("torch-sys did not report the LibTorch library directory (DEP_TCH_LIBTORCH_LIB); see the README's setup");
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    let root = match std::env::var("LIBTORCH_INCLUDE") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => PathBuf::from(&lib_dir).join(".."),
    };
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(root.join("include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={}", cxx11_abi()))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("csrc/host_gradient.cpp")
        .compile("proco_host_gradient");
}

/// The C++ ABI LibTorch was built with, found the way torch-sys finds it: from the Python
/// torch package with `LIBTORCH_USE_PYTORCH`, else `LIBTORCH_CXX11_ABI` (default 1).
fn cxx11_abi() -> String {
    if std::env::var_os("LIBTORCH_USE_PYTORCH").is_none() {
        return std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    }
    let python = if std::env::var_os("VIRTUAL_ENV").is_some() { "python" } else { "python3" };
    let output = Command::new(python)
        .args(["-c", "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))"])
        .output()
        .unwrap_or_else(|e| panic!("running {python} to ask torch for its C++ ABI: {e}"));
    let abi = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if abi != "0" && abi != "1" {
        panic!("{python} printed {abi:?} for torch's C++ ABI (stderr: {})", String::from_utf8_lossy(&output.stderr));
    }
    abi
}

//! Embeds the LibTorch library directory as an rpath, so the binaries and tests of this
//! crate run without `LD_LIBRARY_PATH` (torch-sys, whose `links` key is "tch", only adds it
//! to its own C++ shim), and compiles `csrc/host_gradient.cpp` (a custom autograd node; tch
//! has none) against the same LibTorch headers and C++ ABI that torch-sys uses.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=csrc/host_gradient.cpp");
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
    println!("cargo:rerun-if-changed=csrc/c_error.h");
    println!("cargo:rerun-if-changed=csrc/distributed.cpp");
    println!("cargo:rerun-if-changed=csrc/distributed.h");
    println!("cargo:rerun-if-changed=csrc/nccl.cpp");
    for var in ["LIBTORCH_USE_PYTORCH", "LIBTORCH", "LIBTORCH_INCLUDE", "LIBTORCH_CXX11_ABI", "VIRTUAL_ENV"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("torch-sys did not report the LibTorch library directory (DEP_TCH_LIBTORCH_LIB); proco needs a LibTorch build on Linux or macOS (see the README's setup)");
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    // Keep LibTorch's CUDA library linked (the linker's --as-needed would drop it and CUDA would
    // never register); see crates/proco-cli/build.rs.
    let cuda = PathBuf::from(&lib_dir).join("libtorch_cuda.so");
    if cuda.exists() {
        println!("cargo:rustc-link-arg=-Wl,--push-state,--no-as-needed,{},--pop-state", cuda.display());
        println!("cargo:rustc-env=PROCO_LIBTORCH_CUDA={}", cuda.display());
    }
    let (include, abi) = libtorch_headers(&lib_dir);
    let base = |build: &mut cc::Build| {
        build.cpp(true).pic(true).warnings(false).include(&include).flag("-std=c++17").flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}")).flag("-DGLOG_USE_GLOG_EXPORT");
    };
    let mut autograd = cc::Build::new();
    base(&mut autograd);
    autograd.file("csrc/host_gradient.cpp").file("csrc/autocast.cpp").compile("proco_host_gradient");

    // The c10d shim, with the macros that enable its backends' declarations (kept away from the
    // autograd files: USE_CUDA changes what LibTorch's headers declare).
    let mut dist = cc::Build::new();
    base(&mut dist);
    dist.include(include.join("torch/csrc/api/include")).include("csrc/third_party/gloo").flag("-DUSE_C10D_GLOO").file("csrc/distributed.cpp");
    match cuda_headers(&include) {
        Some(dirs) if cuda.exists() => {
            dist.flag("-DPROCO_WITH_NCCL").flag("-DUSE_C10D_NCCL").flag("-DUSE_CUDA").file("csrc/nccl.cpp");
            for d in dirs {
                dist.include(d);
            }
        }
        None if cuda.exists() => println!(
            "cargo:warning=LibTorch has CUDA but the CUDA / NCCL headers were not found beside it (pip packages nvidia-cuda-crt, nvidia-cuda-cccl, nvidia-nccl; scripts/setup.sh installs them): this build has no NCCL backend"
        ),
        _ => {}
    }
    dist.compile("proco_distributed");
}

/// The include directories that ProcessGroupNCCL.hpp needs beyond LibTorch's own (the CUDA
/// runtime, its crt and CCCL headers, NCCL), from the pip `nvidia` packages beside the torch
/// package (`<site-packages>/torch/include` -> `<site-packages>/nvidia`), or `$CUDA_HOME/include`
/// plus `$NCCL_INCLUDE_DIR`; `None` where any is missing.
fn cuda_headers(torch_include: &std::path::Path) -> Option<Vec<PathBuf>> {
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-env-changed=NCCL_INCLUDE_DIR");
    let nvidia = torch_include.join("../../nvidia");
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(home) = std::env::var("CUDA_HOME") {
        candidates.push(PathBuf::from(home).join("include"));
    }
    if let Ok(nccl) = std::env::var("NCCL_INCLUDE_DIR") {
        candidates.push(PathBuf::from(nccl));
    }
    if let Ok(entries) = std::fs::read_dir(&nvidia) {
        for e in entries.flatten() {
            candidates.push(e.path().join("include"));
            candidates.push(e.path().join("include/cccl"));
        }
    }
    let has = |file: &str| candidates.iter().any(|d| d.join(file).exists());
    let needed = ["cuda_runtime_api.h", "crt/host_config.h", "nv/target", "nccl.h"];
    needed.iter().all(|f| has(f)).then(|| candidates.into_iter().filter(|d| d.is_dir()).collect())
}

/// LibTorch's include directory and C++ ABI (0 or 1), found as torch-sys finds them: from the
/// Python torch package with `LIBTORCH_USE_PYTORCH`; otherwise `LIBTORCH_INCLUDE` or
/// `LIBTORCH` (its `include` folder; else the one beside the library directory) and
/// `LIBTORCH_CXX11_ABI` (default 1).
fn libtorch_headers(lib_dir: &str) -> (PathBuf, String) {
    if std::env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        let python = if std::env::var_os("VIRTUAL_ENV").is_some() { "python" } else { "python3" };
        let script = "import os, torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI)); print(os.path.join(os.path.dirname(torch.__file__), 'include'))";
        let output = Command::new(python).args(["-c", script]).output().unwrap_or_else(|e| panic!("running {python} to ask torch for its headers and C++ ABI: {e}"));
        let text = String::from_utf8_lossy(&output.stdout);
        let mut lines = text.lines();
        match (lines.next().map(str::trim), lines.next().map(str::trim)) {
            (Some(abi @ ("0" | "1")), Some(include)) if !include.is_empty() => return (PathBuf::from(include), abi.to_owned()),
            _ => panic!("{python} did not report torch's C++ ABI and include directory (stdout: {text:?}, stderr: {})", String::from_utf8_lossy(&output.stderr)),
        }
    }
    let root = std::env::var("LIBTORCH_INCLUDE").or_else(|_| std::env::var("LIBTORCH")).map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(lib_dir).join(".."));
    (root.join("include"), std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned()))
}

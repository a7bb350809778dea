//! Embeds the LibTorch library directory as an rpath, so the binaries and tests of this
//! crate run without `LD_LIBRARY_PATH` (torch-sys, whose `links` key is "tch", only adds it to
//! its own C++ shim), and keeps LibTorch's CUDA library linked where the LibTorch has one.
//!
//! Why the CUDA part: torch-sys asks for `-ltorch_cuda`, but the linker's default
//! `--as-needed` drops it again, since no symbol of it is called directly; CUDA then never
//! registers with LibTorch and `--device cuda` finds no device on a GPU machine. Linking it
//! with `--no-as-needed` keeps it a dependency of the binary (tch's README gives the same
//! flags). proco's own build script does the same for its tests and examples.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        let cuda = std::path::Path::new(&dir).join("libtorch_cuda.so");
        if cuda.exists() {
            println!("cargo:rustc-link-arg=-Wl,--push-state,--no-as-needed,{},--pop-state", cuda.display());
            println!("cargo:rustc-env=PROCO_LIBTORCH_CUDA={}", cuda.display());
        }
    }
}

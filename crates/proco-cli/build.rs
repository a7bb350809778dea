//! Embeds the LibTorch library directory as an rpath, so the binaries and tests of this
//! crate run without `LD_LIBRARY_PATH` (torch-sys, whose `links` key is "tch", only adds it to its own C++ shim).
fn main() {
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}

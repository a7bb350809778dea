//! `proco bench --only train` through the real binary: every training figure is printed as a
//! `name: value` line (bench/compare.sh pairs them with bench/pytorch_reference.py's), and the
//! full-epoch flag is refused outside the training suite.


mod support;
use support::proco;

/// The number after `name: ` on its own line, if printed.
fn figure(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")?.parse().ok())
}

#[test]
fn train_suite_prints_every_figure() {
    let out = proco(&["bench", "--only", "train", "--steps", "1", "--seconds", "0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for batch in [128, 256] {
        for name in ["train step images/s", "inference images/s", "ProCo loss + estimator ms/step"] {
            let v = figure(&text, &format!("{name}, batch {batch}")).unwrap_or_else(|| panic!("no `{name}, batch {batch}` in\n{text}"));
            assert!(v > 0.0 && v.is_finite(), "{name}, batch {batch}: {v}");
        }
    }
    // Peak RSS: at least the LibTorch library and a ResNet-32 step, far below a terabyte.
    let rss = figure(&text, "peak RSS MiB").unwrap_or_else(|| panic!("no peak RSS in\n{text}"));
    assert!(rss > 50.0 && rss < 1e6, "peak RSS {rss} MiB");
    assert!(figure(&text, "full epoch seconds").is_none(), "the full epoch ran without --full-epoch:\n{text}");
}

#[test]
fn full_epoch_needs_the_training_suite() {
    let out = proco(&["bench", "--only", "math", "--full-epoch"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--full-epoch") && err.contains("--only train"), "{err}");
}

/// Where this LibTorch has a CUDA library, the binary depends on it (so CUDA registers on a
/// GPU machine): the dynamic loader's list of the binary's libraries names it.
#[test]
fn the_binary_links_libtorch_cuda_where_libtorch_has_it() {
    let Some(cuda) = option_env!("PROCO_LIBTORCH_CUDA") else {
        eprintln!("this LibTorch has no libtorch_cuda.so: nothing to link");
        return;
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_proco")).env("LD_TRACE_LOADED_OBJECTS", "1").output().expect("the loader lists the binary's libraries");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("libtorch_cuda.so"), "{cuda} is not among the binary's libraries:\n{listed}");
}

//! CIFAR-10-LT selection against `cifar10_lt_indices.json`: the kept indices of every class, for
//! imbalance 100, 50 and 10, must equal the LDAM-DRW reference exactly. Needs the real CIFAR-10
//! training labels (installed by `scripts/fetch-cifar10.sh`, which the test command runs).

#[path = "../../proco-vmf/tests/support/mod.rs"]
mod support;

use std::path::PathBuf;

use proco::data::cifar::{load_cifar, Checksum, CifarVariant, Split};
use proco::data::long_tail::{class_counts, ldam_selection, LongTailProfile};
use support::load;

fn data_dir() -> PathBuf {
    std::env::var_os("PROCO_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data"))
}

#[test]
fn kept_indices_match_the_reference_exactly() {
    let dir = data_dir();
    let train = load_cifar(&dir, CifarVariant::Cifar10, Split::Train, Checksum::Official).unwrap_or_else(|e| {
        panic!("CIFAR-10 is needed under {} ({e}); run scripts/fetch-cifar10.sh or set PROCO_DATA_DIR", dir.display())
    });
    let labels = train.labels();
    let golden = load("cifar10_lt_indices.json");
    let cases = golden["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 3);
    for case in cases {
        let ratio = case["imbalance_ratio"].as_f64().expect("imbalance_ratio");
        let want_counts: Vec<usize> = serde_json::from_value(case["class_counts"].clone()).expect("class_counts");
        let counts = class_counts(LongTailProfile::Exponential, labels.len() as f64 / 10.0, 10, ratio).unwrap();
        assert_eq!(counts, want_counts, "IF {ratio}: class counts");
        let kept = ldam_selection(labels, &counts, 0).unwrap();
        let want: Vec<Vec<usize>> = serde_json::from_value(case["kept_indices_per_class"].clone()).expect("kept_indices_per_class");
        assert_eq!(kept, want, "IF {ratio}: kept indices");
        let total: usize = kept.iter().map(Vec::len).sum();
        assert_eq!(total as u64, case["total"].as_u64().expect("total"));
        if ratio == 100.0 {
            assert_eq!(total, 12_406);
        }
        eprintln!("IF {ratio}: {total} images kept, identical to the reference");
    }
}

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
    let dataset = golden.at().get("dataset").str();
    assert_eq!(dataset, "cifar10", "this test checks CIFAR-10-LT selections");
    let num_classes = 10;
    for case in golden.at().get("cases").items() {
        let ratio = case.get("imbalance_ratio").f64();
        let want_counts: Vec<usize> = case.get("class_counts").ints(num_classes).into_iter().map(|n| n as usize).collect();
        let counts = class_counts(LongTailProfile::Exponential, labels.len() as f64 / num_classes as f64, num_classes, ratio).unwrap();
        assert_eq!(counts, want_counts, "IF {ratio}: class counts");
        let kept = ldam_selection(labels, &counts, 0).unwrap();
        let per_class = case.get("kept_indices_per_class").items();
        assert_eq!(per_class.len(), num_classes, "{}: one index list per class", case.here());
        for (j, want) in per_class.iter().enumerate() {
            let want: Vec<usize> = want.ints(counts[j]).into_iter().map(|i| i as usize).collect();
            assert_eq!(kept[j], want, "IF {ratio}: kept indices of class {j}");
        }
        let total: usize = kept.iter().map(Vec::len).sum();
        assert_eq!(total, case.get("total").usize(), "IF {ratio}: total");
        eprintln!("IF {ratio}: {total} images kept, identical to the reference");
    }
}

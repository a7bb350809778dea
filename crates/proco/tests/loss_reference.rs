//! The classifier and contrastive losses against `tests/data/losses/losses.json`: fixed
//! inputs, values and gradients from independent anchor-by-anchor PyTorch implementations in
//! `bench/gen_loss_refs.py` (float64; no Python needed here).

use std::path::PathBuf;

use proco::loss::{BclLoss, ContrastSet, LogPrior, LogitAdjustedCe, Positives, SupConLoss};
use proco::tch::{Kind, Tensor};
use serde_json::Value;

fn cases() -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/losses/losses.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).unwrap();
    doc["cases"].as_array().unwrap().clone()
}

fn tensor(v: &Value) -> Tensor {
    let shape: Vec<i64> = v["shape"].as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect();
    let values: Vec<f64> = v["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    Tensor::from_slice(&values).view(shape.as_slice())
}

fn labels(v: &Value) -> Tensor {
    Tensor::from_slice(&v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect::<Vec<_>>())
}

fn leaf(v: &Value) -> Tensor {
    tensor(v).set_requires_grad(true)
}

/// Largest |a - b| over the elements.
fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

fn check(case: &Value, got: &Tensor, grads: &[(&Tensor, &str)]) {
    let (name, want) = (case["loss"].as_str().unwrap(), case["value"].as_f64().unwrap());
    let value = got.double_value(&[]);
    assert!((value - want).abs() <= 1e-12 * want.abs().max(1.0), "{name}: loss {value} vs {want}");
    got.backward();
    for (x, key) in grads {
        let d = max_diff(&x.grad(), &tensor(&case[*key]));
        assert!(d <= 1e-12, "{name}: {key} differs by {d}");
    }
}

#[test]
fn classifier_losses_match_the_reference() {
    let mut seen = 0;
    for case in cases().iter().filter(|c| ["ce", "logit-adjusted", "balanced-softmax"].contains(&c["loss"].as_str().unwrap())) {
        let counts: Vec<f64> = case["class_counts"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let ce = match case["loss"].as_str().unwrap() {
            "ce" => LogitAdjustedCe::plain(counts.len()).unwrap(),
            "logit-adjusted" => LogitAdjustedCe::new(LogPrior::from_counts(&counts).unwrap()),
            _ => LogitAdjustedCe::balanced_softmax(&counts).unwrap(),
        };
        let logits = leaf(&case["logits"]);
        let loss = ce.loss(&logits, &labels(&case["labels"])).unwrap();
        check(case, &loss, &[(&logits, "grad_logits")]);
        seen += 1;
    }
    assert_eq!(seen, 3);
}

#[test]
fn supcon_matches_the_reference() {
    let mut seen = 0;
    for case in cases().iter().filter(|c| c["loss"] == "supcon") {
        let positives = match case["positives"].as_str().unwrap() {
            "mean-of-logs" => Positives::MeanOfLogs,
            _ => Positives::LogOfMean,
        };
        let loss = SupConLoss::new(case["tau"].as_f64().unwrap()).unwrap().with_positives(positives);
        let features = leaf(&case["features"]);
        let (extra, extra_labels) = (tensor(&case["extra_features"]), labels(&case["extra_labels"]));
        let set = (extra.size()[0] > 0).then_some(ContrastSet { features: &extra, labels: &extra_labels });
        let value = loss.loss(&features, &labels(&case["labels"]), case["num_classes"].as_u64().unwrap() as usize, set).unwrap();
        check(case, &value, &[(&features, "grad_features")]);
        seen += 1;
    }
    assert_eq!(seen, 4);
}

#[test]
fn bcl_matches_the_reference() {
    let mut seen = 0;
    for case in cases().iter().filter(|c| c["loss"] == "bcl") {
        let (views, protos) = (leaf(&case["views"]), leaf(&case["prototypes"]));
        let value = BclLoss::new(case["tau"].as_f64().unwrap()).unwrap().loss(&views, &labels(&case["labels"]), &protos).unwrap();
        check(case, &value, &[(&views, "grad_views"), (&protos, "grad_prototypes")]);
        seen += 1;
    }
    assert_eq!(seen, 2);
}

#[test]
fn float32_features_give_the_float64_loss_to_f32_precision() {
    let case = cases().into_iter().find(|c| c["loss"] == "bcl").unwrap();
    let v = tensor(&case["views"]).to_kind(Kind::Float);
    let p = tensor(&case["prototypes"]).to_kind(Kind::Float);
    let got = BclLoss::new(case["tau"].as_f64().unwrap()).unwrap().loss(&v, &labels(&case["labels"]), &p).unwrap().double_value(&[]);
    let want = case["value"].as_f64().unwrap();
    assert!((got - want).abs() < 1e-4 * want.abs(), "{got} vs {want}");
}

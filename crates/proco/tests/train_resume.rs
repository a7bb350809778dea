//! The trainer end to end on a tiny synthetic set: a killed-and-resumed run ends with exactly
//! the weights, estimator and metrics of an uninterrupted one; bad input fails clearly.

use std::path::PathBuf;
use std::sync::Arc;

use image::RgbImage;
use proco::data::InMemoryDataset;
use proco::loader::SampleTransform;
use proco::tch::{Device, Tensor};
use proco::train::checkpoint;
use proco::loss::{ClassifierLoss, ContrastiveLoss};
use proco::train::recipe::{Stage, Stages};
use proco::train::{train, EvalSplit, Recipe, RunData, RunOptions};
use proco::BesselRoute;
use rand::rngs::StdRng;
use rand::Rng;

/// Scales pixels to [-1, 1] with a random horizontal flip per view.
struct FlipViews(usize);

impl SampleTransform for FlipViews {
    fn views(&self) -> usize {
        self.0
    }
    fn height(&self) -> usize {
        32
    }
    fn width(&self) -> usize {
        32
    }
    fn apply(&self, img: &RgbImage, rng: &mut StdRng, out: &mut [&mut [f32]]) -> proco::Result<()> {
        for o in out.iter_mut() {
            let flip = rng.random_bool(0.5);
            for (x, y, p) in img.enumerate_pixels() {
                let xx = if flip { 31 - x } else { x } as usize;
                for c in 0..3 {
                    o[c * 1024 + y as usize * 32 + xx] = p[c] as f32 / 127.5 - 1.0;
                }
            }
        }
        Ok(())
    }
}

fn dataset(n: usize, seed: u64) -> Arc<InMemoryDataset> {
    use rand::SeedableRng;
    let mut rng = StdRng::seed_from_u64(seed);
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
    // Class c is brighter in channel c, plus noise: learnable, not trivial.
    let mut pixels = Vec::with_capacity(n * 3072);
    for &l in &labels {
        for _ in 0..1024 {
            for c in 0..3u32 {
                let base = if c == l { 170.0 } else { 80.0 };
                pixels.push((base + rng.random_range(-60.0..60.0f32)) as u8);
            }
        }
    }
    Arc::new(InMemoryDataset::new(32, 32, pixels, labels, 3).unwrap())
}

fn recipe() -> Recipe {
    let mut r = Recipe::cifar(proco::train::recipe::DatasetKind::Cifar10, 1.0, 3);
    r.batch_size = 16;
    r.lr = 0.05;
    r.feature_dim = 16;
    r.hidden_dim = 32;
    r
}

fn data() -> RunData {
    RunData {
        train: dataset(48, 1),
        eval: vec![EvalSplit { name: "test", dataset: dataset(30, 2) }],
        train_transform: Arc::new(FlipViews(3)),
        test_transform: Arc::new(FlipViews(1)),
        class_counts: vec![16, 16, 16],
        class_names: None,
    }
}

fn run_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("proco-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn options(dir: &PathBuf, stop_after: Option<usize>, resume: bool) -> RunOptions {
    RunOptions { stop_after, resume, eval_batch_size: 64, ..RunOptions::new(dir, Device::Cpu) }
}

fn weights(dir: &PathBuf) -> Vec<(String, Tensor)> {
    let ckpt = checkpoint::latest(dir).unwrap().unwrap();
    let mut w = Tensor::read_safetensors(ckpt.join("model.safetensors")).unwrap();
    w.extend(Tensor::read_safetensors(ckpt.join("estimator.safetensors")).unwrap());
    if ckpt.join("queue.safetensors").exists() {
        w.extend(Tensor::read_safetensors(ckpt.join("queue.safetensors")).unwrap().into_iter().map(|(n, t)| (format!("queue.{n}"), t)));
    }
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    proco::tch::set_num_threads(1);
    let (r, d) = (recipe(), data());
    let whole = run_dir("whole");
    let full = train(&r, &d, &options(&whole, None, false), &mut |_| {}).unwrap();
    assert_eq!(full.epochs.len(), 3);

    let split = run_dir("split");
    let first = train(&r, &d, &options(&split, Some(1), false), &mut |_| {}).unwrap();
    assert_eq!(first.epochs.len(), 1);
    // Starting again without --resume must refuse to overwrite the run.
    assert!(train(&r, &d, &options(&split, None, false), &mut |_| {}).unwrap_err().to_string().contains("already holds a run; resume it"));
    let rest = train(&r, &d, &options(&split, None, true), &mut |_| {}).unwrap();
    assert_eq!(rest.epochs.iter().map(|e| e.epoch).collect::<Vec<_>>(), [1, 2]);

    let (w_whole, w_split) = (weights(&whole), weights(&split));
    assert!(!w_whole.is_empty());
    assert_eq!(w_whole.iter().map(|(n, _)| n).collect::<Vec<_>>(), w_split.iter().map(|(n, _)| n).collect::<Vec<_>>(), "the same tensors are saved");
    for ((na, a), (_, b)) in w_whole.iter().zip(&w_split) {
        assert!(a.equal(b), "{na} differs after resume");
    }
    assert_eq!(full.epochs.len() - 1, rest.epochs.len());
    for (a, b) in full.epochs[1..].iter().zip(&rest.epochs) {
        assert_eq!(a.val, b.val);
        assert_eq!(a.ce_loss_train, b.ce_loss_train);
    }
    let lines = std::fs::read_to_string(split.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 3);
    for f in ["recipe.toml", "best/model.safetensors", "plots/accuracy.png", "plots/loss.png", "plots/per_class_accuracy.png"] {
        assert!(split.join(f).exists(), "{f} missing");
    }
    assert!(std::fs::read_dir(&split).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with("events.out.tfevents")));
    let _ = std::fs::remove_dir_all(&whole);
    let _ = std::fs::remove_dir_all(&split);
}

/// Two epochs in one go, and one then a resume: the same weights (BCL's prototype head
/// included) and metrics. Returns the uninterrupted run's records.
fn trains_and_resumes_exactly(r: &Recipe, name: &str) -> Vec<proco::train::EpochRecord> {
    let d = data();
    let (whole, split) = (run_dir(&format!("{name}-whole")), run_dir(&format!("{name}-split")));
    let full = train(r, &d, &options(&whole, None, false), &mut |_| {}).unwrap();
    train(r, &d, &options(&split, Some(1), false), &mut |_| {}).unwrap();
    let rest = train(r, &d, &options(&split, None, true), &mut |_| {}).unwrap();
    let (w_whole, w_split) = (weights(&whole), weights(&split));
    assert_eq!(w_whole.len(), w_split.len(), "{name}");
    for ((na, a), (_, b)) in w_whole.iter().zip(&w_split) {
        assert!(a.equal(b), "{name}: {na} differs after resume");
    }
    assert_eq!(full.epochs[1].proco_loss_train, rest.epochs[0].proco_loss_train, "{name}");
    assert_eq!(full.epochs[1].val, rest.epochs[0].val, "{name}");
    let has_prototypes = w_whole.iter().any(|(n, _)| n.starts_with("prototype_head."));
    assert_eq!(has_prototypes, r.contrastive_loss == ContrastiveLoss::Bcl, "{name}: a prototype head only for BCL");
    let _ = std::fs::remove_dir_all(&whole);
    let _ = std::fs::remove_dir_all(&split);
    full.epochs
}

#[test]
fn every_loss_choice_trains_and_resumes() {
    proco::tch::set_num_threads(1);
    // A queue of 80 rows: the 96 view rows of a step (batch 16, two views, 3 steps an epoch)
    // overflow it, so the FIFO drops rows within the run and across the resume.
    let choices = [
        ("ce-supcon", ClassifierLoss::Ce, ContrastiveLoss::Supcon, BesselRoute::Exact, 0),
        ("ce-supcon-queue", ClassifierLoss::Ce, ContrastiveLoss::Supcon, BesselRoute::Exact, 80),
        ("bsm-bcl", ClassifierLoss::BalancedSoftmax, ContrastiveLoss::Bcl, BesselRoute::Exact, 0),
        ("la-none", ClassifierLoss::LogitAdjusted, ContrastiveLoss::None, BesselRoute::Exact, 0),
        ("la-proco-authors", ClassifierLoss::LogitAdjusted, ContrastiveLoss::Proco, BesselRoute::AuthorsCompat, 0),
    ];
    let mut supcon_losses = Vec::new();
    for (name, classifier, contrastive, bessel, queue) in choices {
        let mut r = recipe();
        (r.epochs, r.milestones) = (2, vec![1]);
        (r.classifier_loss, r.contrastive_loss, r.bessel, r.supcon_queue) = (classifier, contrastive, bessel, queue);
        let epochs = trains_and_resumes_exactly(&r, name);
        if contrastive == ContrastiveLoss::Supcon {
            supcon_losses.push(epochs[0].proco_loss_train);
        }
        for e in &epochs {
            assert!(e.ce_loss_train.is_finite() && e.ce_loss_train > 0.0, "{name}: {e:?}");
            match contrastive {
                ContrastiveLoss::None => assert_eq!(e.proco_loss_train, 0.0, "{name}"),
                _ => assert!(e.proco_loss_train.is_finite() && e.proco_loss_train > 0.0, "{name}: {e:?}"),
            }
            // kappa is recorded where there are estimators, and only there.
            assert_eq!(e.kappa.is_some(), contrastive == ContrastiveLoss::Proco, "{name}");
            if let Some(k) = &e.kappa {
                assert!(k.min > 0.0 && k.min <= k.median && k.median <= k.max && k.classes_past_drift <= 3, "{name}: {k:?}");
            }
        }
    }
    // The queue's rows join every later step's contrast set: more negatives, a larger loss.
    assert!(supcon_losses[1] > supcon_losses[0] + 1e-3, "SupCon without and with its queue: {supcon_losses:?}");
}

#[test]
fn two_stage_freezes_the_backbone_in_the_linear_stage_and_resumes_in_both() {
    proco::tch::set_num_threads(1);
    for contrastive in [ContrastiveLoss::Supcon, ContrastiveLoss::Proco] {
        let mut r = recipe();
        (r.epochs, r.milestones, r.stages, r.linear_epochs, r.linear_batch_size, r.contrastive_loss) = (2, vec![1], Stages::Two, 2, 8, contrastive);
        let d = data();
        let name = contrastive.as_str();
        let whole = run_dir(&format!("two-{name}-whole"));
        let full = train(&r, &d, &options(&whole, None, false), &mut |_| {}).unwrap();
        let stages: Vec<Stage> = full.epochs.iter().map(|e| e.stage).collect();
        assert_eq!(stages, [Stage::Representation, Stage::Representation, Stage::Linear, Stage::Linear], "{name}");
        for e in &full.epochs {
            let linear = e.stage == Stage::Linear;
            assert_eq!(e.val.is_some(), linear, "{name}: only the linear stage is evaluated");
            assert_eq!(e.ce_loss_train > 0.0, linear, "{name}: no classifier loss in stage 1");
            assert_eq!(e.proco_loss_train > 0.0, !linear, "{name}: no contrastive loss in stage 2");
            // ProCo predicts from its contrast logits in stage 1; SupCon cannot.
            assert_eq!(e.train_top1.is_some(), linear || contrastive == ContrastiveLoss::Proco, "{name}");
        }
        assert!(full.best.as_ref().is_some_and(|b| b.epoch >= 2), "{name}: the best epoch is a linear-stage one");

        // Stopped inside stage 1, at the boundary, and inside stage 2, then resumed.
        let split = run_dir(&format!("two-{name}-split"));
        let mut after_stage_one = Vec::new();
        for stop in [1, 2, 3, 4] {
            train(&r, &d, &options(&split, Some(stop), stop > 1), &mut |_| {}).unwrap();
            if stop == 2 {
                after_stage_one = weights(&split);
            }
        }
        let (w_whole, w_split) = (weights(&whole), weights(&split));
        for ((na, a), (_, b)) in w_whole.iter().zip(&w_split) {
            assert!(a.equal(b), "{name}: {na} differs after resume");
        }
        // The linear stage changed the classifier only: every backbone and head variable,
        // BatchNorm running statistics included, is as stage 1 left it.
        let mut classifier_changed = false;
        for ((na, a), (_, b)) in after_stage_one.iter().zip(&w_whole) {
            if na.starts_with("classifier.") {
                classifier_changed |= !a.equal(b);
            } else if !(na.starts_with("previous.") || na.starts_with("current.")) {
                assert!(a.equal(b), "{name}: {na} changed in the linear stage");
            }
        }
        assert!(classifier_changed, "{name}: the linear stage trained the classifier");
        let _ = std::fs::remove_dir_all(&whole);
        let _ = std::fs::remove_dir_all(&split);
    }
    // Two stages without a contrastive loss to learn the representation with are refused.
    let mut r = recipe();
    (r.stages, r.contrastive_loss) = (Stages::Two, ContrastiveLoss::None);
    assert!(r.validate().unwrap_err().to_string().contains("two-stage"));
}

#[test]
fn corrupt_checkpoint_and_class_mismatch_are_clear_errors() {
    let (r, d) = (recipe(), data());
    let dir = run_dir("corrupt");
    train(&r, &d, &options(&dir, Some(1), false), &mut |_| {}).unwrap();
    let ckpt = checkpoint::latest(&dir).unwrap().unwrap();
    // Evaluating against a dataset with another number of classes is refused.
    let other = Arc::new(InMemoryDataset::new(32, 32, vec![0; 3072 * 4], vec![0, 1, 2, 3], 4).unwrap());
    let err = proco::train::evaluate_run(&dir, true, other, Arc::new(FlipViews(1)), &[1, 1, 1, 1], Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("classes"), "{err}");
    // A truncated weights file is reported by name, and the file beside it is untouched.
    let model = ckpt.join("model.safetensors");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    let err = train(&r, &d, &options(&dir, None, true), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    assert!(ckpt.join("estimator.safetensors").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn diverging_training_stops_with_a_clear_error() {
    let mut r = recipe();
    r.lr = 1e30;
    r.warmup_epochs = 0;
    let dir = run_dir("nan");
    let err = train(&r, &data(), &options(&dir, None, false), &mut |_| {}).unwrap_err();
    assert!(matches!(err, proco::ProcoError::Diverged { .. }) && err.to_string().contains("learning rate"), "{err}");
    assert!(checkpoint::latest(&dir).unwrap().is_none(), "no checkpoint is written for a diverged epoch");
    let _ = std::fs::remove_dir_all(&dir);
}

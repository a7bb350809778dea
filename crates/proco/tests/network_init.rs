//! A network's initial weights are a function of its seed alone, also when several networks
//! are built at once on several threads (two trainings in one process, or tests running side by
//! side): tch's initialisers draw from LibTorch's one global generator, and without the lock in
//! `TwoBranchNet::new` their draws would interleave. Its own test binary, so that no other test
//! of the process draws from that generator meanwhile.

use proco::model::{Arch, ClassifierKind, ModelConfig, Precision, TwoBranchNet};
use proco::tch::{Device, Tensor};

fn config(seed: u64) -> ModelConfig {
    ModelConfig { arch: Arch::Resnet32, classifier: ClassifierKind::Linear, hidden_dim: 32, feature_dim: 16, seed, precision: Precision::Fp32, prototype_head: false }
}

fn weights(seed: u64) -> Vec<(String, Tensor)> {
    let net = TwoBranchNet::new(&config(seed), 3, Device::Cpu).unwrap();
    let mut w: Vec<_> = net.vs.variables().into_iter().collect();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

#[test]
fn networks_built_side_by_side_get_their_seeds_weights() {
    let alone: Vec<_> = (0..4).map(weights).collect();
    for _ in 0..3 {
        let side_by_side: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|seed| s.spawn(move || weights(seed))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (seed, (a, b)) in alone.iter().zip(&side_by_side).enumerate() {
            assert_eq!(a.len(), b.len());
            for ((name, x), (_, y)) in a.iter().zip(b) {
                assert!(x.equal(y), "seed {seed}: {name} differs when built beside other networks");
            }
        }
    }
    // Different seeds do give different weights (the comparison above can fail): every
    // convolution and linear weight differs between seeds 0 and 1.
    for ((name, x), (_, y)) in alone[0].iter().zip(&alone[1]).filter(|((_, x), _)| x.dim() > 1) {
        assert!(!x.equal(y), "{name} is the same for seeds 0 and 1");
    }
}

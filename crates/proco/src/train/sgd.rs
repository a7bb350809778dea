//! SGD with momentum and weight decay, PyTorch's update rule (dampening 0, no Nesterov):
//! d = g + wd p; b = m b + d (b = d on the first step); p -= lr b.
//!
//! Written here rather than taken from `tch::nn::Optimizer` because the momentum buffers must
//! be saved and restored for a resumed run to continue exactly where it stopped.

use std::collections::BTreeMap;

use tch::nn::VarStore;
use tch::Tensor;

use crate::error::Result;

/// Optimiser state: one momentum buffer per trainable variable, keyed by its name.
#[derive(Debug)]
pub struct Sgd {
    momentum: f64,
    weight_decay: f64,
    buffers: BTreeMap<String, Tensor>,
}

impl Sgd {
    /// A fresh optimiser (no buffers yet).
    pub fn new(momentum: f64, weight_decay: f64) -> Self {
        Self { momentum, weight_decay, buffers: BTreeMap::new() }
    }

    /// Sets every trainable variable's gradient to zero.
    pub fn zero_grad(&self, vs: &VarStore) {
        for mut p in vs.trainable_variables() {
            p.zero_grad();
        }
    }

    /// One update of every trainable variable of `vs` that has a gradient, at learning rate `lr`.
    pub fn step(&mut self, vs: &VarStore, lr: f64) -> Result<()> {
        self.step_where(vs, lr, |_| true)
    }

    /// [`Self::step`] of the trainable variables whose name `train` accepts only (a linear
    /// stage trains the classifier alone); the others keep their values and buffers.
    pub fn step_where(&mut self, vs: &VarStore, lr: f64, train: impl Fn(&str) -> bool) -> Result<()> {
        let vars = vs.variables();
        tch::no_grad(|| -> Result<()> {
            for (name, p) in vars.iter().filter(|(n, p)| p.requires_grad() && train(n)) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let d = g.f_add(&p.f_mul_scalar(self.weight_decay)?)?;
                let buf = match self.buffers.remove(name) {
                    Some(mut b) => {
                        let _ = b.f_mul_scalar_(self.momentum)?.f_add_(&d)?;
                        b
                    }
                    None => d,
                };
                let mut p = p.shallow_clone();
                let _ = p.f_sub_(&buf.f_mul_scalar(lr)?)?;
                self.buffers.insert(name.clone(), buf);
            }
            Ok(())
        })
    }

    /// The momentum buffers (for checkpoints).
    pub fn buffers(&self) -> &BTreeMap<String, Tensor> {
        &self.buffers
    }

    /// Starts a new phase of training: weight decay `weight_decay`, no momentum yet.
    pub fn restart(&mut self, weight_decay: f64) {
        self.weight_decay = weight_decay;
        self.buffers.clear();
    }

    /// Sets the weight decay, keeping the momentum buffers (a run resumed inside a phase).
    pub fn set_weight_decay(&mut self, weight_decay: f64) {
        self.weight_decay = weight_decay;
    }

    /// Restores momentum buffers saved by a checkpoint.
    pub fn set_buffers(&mut self, buffers: BTreeMap<String, Tensor>) {
        self.buffers = buffers;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind};

    #[test]
    fn matches_pytorch_update_rule() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[2], nn::Init::Const(1.0));
        let mut opt = Sgd::new(0.9, 0.1);
        // Loss = sum(3 w) -> grad 3. Step 1: d = 3 + 0.1 = 3.1, b = 3.1, w = 1 - 0.5 * 3.1 = -0.55.
        for expected in [-0.55, -0.55 - 0.5 * (0.9 * 3.1 + 3.0 + 0.1 * -0.55)] {
            opt.zero_grad(&vs);
            (&w * 3.0).sum(Kind::Float).backward();
            opt.step(&vs, 0.5).unwrap();
            let got = Vec::<f32>::try_from(&w.detach()).unwrap();
            assert!((got[0] as f64 - expected).abs() < 1e-6, "{got:?} vs {expected}");
        }
    }
}

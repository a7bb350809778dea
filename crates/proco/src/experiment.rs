//! The paper's batch-size comparison (ProCo, TPAMI 2024): supervised contrastive learning
//! loses accuracy as the batch shrinks, since its pairs come from the batch, while ProCo's
//! closed form over the estimated distributions does not depend on it. Every method is
//! trained under SupCon's two-stage protocol (the contrastive loss alone, then a linear
//! classifier on the frozen backbone) at every batch size; each cell is an ordinary,
//! resumable run directory, and the grid is summarised as a table and a chart.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tch::Device;

use crate::error::{ProcoError, Result};
use crate::figures::{category_line_chart, Series};
use crate::loss::ContrastiveLoss;
use crate::train::checkpoint;
use crate::train::events::JsonlLog;
use crate::train::recipe::{Recipe, Stages};
use crate::train::{train, Progress, RunData, RunOptions, ShotAccuracy};

/// A grid of methods x batch sizes over one base recipe.
#[derive(Debug, Clone)]
pub struct BatchSizeGrid {
    base: Recipe,
    batch_sizes: Vec<usize>,
    methods: Vec<ContrastiveLoss>,
    /// SupCon cells' memory queue (rows; 0 for none).
    supcon_queue: usize,
}

/// What the grid reports as it goes.
#[derive(Debug, Clone)]
pub enum GridProgress {
    /// A cell starts (or resumes, or is found finished).
    CellStart {
        /// 0-based index of the cell.
        index: usize,
        /// Number of cells.
        cells: usize,
        /// The cell's method.
        method: ContrastiveLoss,
        /// The cell's stage-1 batch size.
        batch_size: usize,
        /// Its run directory.
        run_dir: PathBuf,
        /// Epochs already done there (a resumed or finished cell).
        done_epochs: usize,
    },
    /// The cell's training reports.
    Train(Progress),
}

/// The outcome of one cell, as the table lists it.
#[derive(Debug, Clone, Serialize)]
pub struct CellResult {
    /// Contrastive loss of stage 1.
    pub method: ContrastiveLoss,
    /// Stage-1 batch size.
    pub batch_size: usize,
    /// Stage-1 peak learning rate (scaled linearly with the batch size).
    pub lr: f64,
    /// Test accuracies after the last linear-stage epoch.
    pub last: ShotAccuracy,
    /// Best top-1 over the linear-stage epochs (selected on the test split for CIFAR, as the
    /// authors' code does) and its epoch.
    pub best_top1: f64,
    /// 0-based epoch of the best top-1.
    pub best_epoch: usize,
    /// Wall time of all its epochs, seconds.
    pub seconds: f64,
    /// Its run directory.
    pub run_dir: PathBuf,
}

impl BatchSizeGrid {
    /// The grid of `methods` (ProCo, SupCon, BCL) x `batch_sizes` over `base` (its
    /// `epochs`, `linear_epochs`, data and network are every cell's).
    ///
    /// # Errors
    /// [`ProcoError::InvalidConfig`] for an empty or repeated list, a batch size below 2, or
    /// the method `none` (there is no representation to learn without a contrastive loss).
    pub fn new(base: Recipe, batch_sizes: Vec<usize>, methods: Vec<ContrastiveLoss>) -> Result<Self> {
        let bad = |reason: String| Err(ProcoError::InvalidConfig { reason });
        if batch_sizes.is_empty() || methods.is_empty() {
            return bad("the grid needs at least one batch size and one method".into());
        }
        if let Some(b) = batch_sizes.iter().find(|&&b| b < 2) {
            return bad(format!("batch size {b}: contrastive pairs need at least 2 samples per batch"));
        }
        if methods.contains(&ContrastiveLoss::None) {
            return bad("method none has no contrastive loss to learn the representation with; choose among proco, supcon and bcl".into());
        }
        let mut sorted = batch_sizes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        let mut m: Vec<&str> = methods.iter().map(|m| m.as_str()).collect();
        m.sort_unstable();
        m.dedup();
        if sorted.len() != batch_sizes.len() || m.len() != methods.len() {
            return bad("a batch size or a method is listed twice".into());
        }
        let grid = Self { base, batch_sizes: sorted, methods, supcon_queue: 0 };
        for &method in &grid.methods {
            for &b in &grid.batch_sizes {
                grid.cell_recipe(method, b).validate()?;
            }
        }
        Ok(grid)
    }

    /// The grid with SupCon's cells contrasting against a memory queue of `rows` earlier
    /// feature rows (recipe `supcon_queue`; the other methods have none). 0 turns it off.
    pub fn with_supcon_queue(mut self, rows: usize) -> Self {
        self.supcon_queue = rows;
        self
    }

    /// The batch sizes, ascending.
    pub fn batch_sizes(&self) -> &[usize] {
        &self.batch_sizes
    }

    /// The methods, in the order given.
    pub fn methods(&self) -> &[ContrastiveLoss] {
        &self.methods
    }

    /// The recipe of one cell: the base, two-stage, with `method` in stage 1 at batch size
    /// `batch_size` and the learning rate scaled linearly from the base's batch size (the
    /// usual rule for SGD); the linear stage is the same in every cell.
    pub fn cell_recipe(&self, method: ContrastiveLoss, batch_size: usize) -> Recipe {
        let lr = self.base.lr * batch_size as f64 / self.base.batch_size as f64;
        let supcon_queue = if method == ContrastiveLoss::Supcon { self.supcon_queue } else { 0 };
        Recipe { stages: Stages::Two, contrastive_loss: method, supcon_queue, batch_size, lr, ..self.base.clone() }
    }

    /// The run directory of a cell under `out`: `<method>-b<batch size>`.
    pub fn cell_dir(out: &Path, method: ContrastiveLoss, batch_size: usize) -> PathBuf {
        out.join(format!("{}-b{batch_size}", method.as_str()))
    }

    /// Runs every cell not finished yet under `out` (a finished one is read back, a partial
    /// one resumed from its last checkpoint), then writes `results.csv`, `results.md` and
    /// `accuracy_vs_batch_size.svg` there. Interrupting and calling again continues where
    /// it stopped.
    ///
    /// # Errors
    /// As [`train`] (a cell directory holding a run of another recipe is
    /// [`ProcoError::RecipeMismatch`]: the grid's settings changed; use another `out`).
    pub fn run(&self, data: &RunData, out: &Path, device: Device, progress: &mut dyn FnMut(GridProgress)) -> Result<Vec<CellResult>> {
        std::fs::create_dir_all(out).map_err(ProcoError::io_at(out))?;
        let cells = self.methods.len() * self.batch_sizes.len();
        let mut results = Vec::with_capacity(cells);
        for (index, (method, batch_size)) in self.methods.iter().flat_map(|&m| self.batch_sizes.iter().map(move |&b| (m, b))).enumerate() {
            let recipe = self.cell_recipe(method, batch_size);
            let run_dir = Self::cell_dir(out, method, batch_size);
            let done_epochs = match checkpoint::latest(&run_dir)? {
                Some(ckpt) => {
                    // A cell of other settings (another --epochs or --set) is not this grid's.
                    if crate::train::trainer::load_recipe(&run_dir)? != recipe {
                        return Err(ProcoError::RecipeMismatch { saved: run_dir.join("recipe.toml") });
                    }
                    checkpoint::load_state(&ckpt)?.next_epoch
                }
                None => 0,
            };
            progress(GridProgress::CellStart { index, cells, method, batch_size, run_dir: run_dir.clone(), done_epochs });
            if done_epochs < recipe.total_epochs() {
                let options = RunOptions { resume: done_epochs > 0, ..RunOptions::new(&run_dir, device) };
                // A directory with a recipe but no checkpoint yet (a crash in the first epoch) starts afresh.
                train(&recipe, data, &options, &mut |p| progress(GridProgress::Train(p)))?;
            }
            results.push(read_cell(&run_dir, method, batch_size, recipe.lr)?);
        }
        write_results(out, &results, &self.batch_sizes, &self.methods)?;
        Ok(results)
    }
}

/// A finished cell's figures, from its metrics log.
fn read_cell(run_dir: &Path, method: ContrastiveLoss, batch_size: usize, lr: f64) -> Result<CellResult> {
    let log = run_dir.join("metrics.jsonl");
    let records = JsonlLog::new(log.clone()).read()?;
    let evaluated: Vec<(usize, ShotAccuracy)> = records
        .iter()
        .filter_map(|r| Some((r.get("epoch")?.as_u64()? as usize, serde_json::from_value::<ShotAccuracy>(r.get("val")?.clone()).ok()?)))
        .collect();
    let (_, last) = evaluated.last().cloned().ok_or_else(|| ProcoError::Data { path: log.clone(), reason: "no evaluated epoch: the linear stage has not run".into() })?;
    let (best_epoch, best) = evaluated.iter().fold((0, f64::NEG_INFINITY), |b, (e, a)| if a.top1 > b.1 { (*e, a.top1) } else { b });
    let seconds = records.iter().filter_map(|r| r.get("seconds")?.as_f64()).sum();
    Ok(CellResult { method, batch_size, lr, last, best_top1: best, best_epoch, seconds, run_dir: run_dir.to_path_buf() })
}

fn opt(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v:.2}"))
}

/// `results.csv` (one row per cell), `results.md` (last-epoch top-1, methods x batch sizes,
/// and the shot groups) and the chart.
fn write_results(out: &Path, results: &[CellResult], batch_sizes: &[usize], methods: &[ContrastiveLoss]) -> Result<()> {
    let mut csv = String::from("method,batch_size,lr,top1,many,medium,few,best_top1,best_epoch,seconds\n");
    for r in results {
        csv.push_str(&format!(
            "{},{},{},{:.2},{},{},{},{:.2},{},{:.1}\n",
            r.method.as_str(),
            r.batch_size,
            r.lr,
            r.last.top1,
            opt(r.last.many),
            opt(r.last.medium),
            opt(r.last.few),
            r.best_top1,
            r.best_epoch,
            r.seconds
        ));
    }
    let path = out.join("results.csv");
    std::fs::write(&path, csv).map_err(ProcoError::io_at(&path))?;

    let cell = |m: ContrastiveLoss, b: usize| results.iter().find(|r| r.method == m && r.batch_size == b);
    let mut md = String::from("Top-1 (%) after the linear stage, by stage-1 batch size:\n\n| method |");
    for b in batch_sizes {
        md.push_str(&format!(" {b} |"));
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(batch_sizes.len()));
    md.push('\n');
    for &m in methods {
        md.push_str(&format!("| {} |", m.as_str()));
        for &b in batch_sizes {
            md.push_str(&cell(m, b).map_or(" |".into(), |r| format!(" {:.2} |", r.last.top1)));
        }
        md.push('\n');
    }
    md.push_str("\nMany / medium / few-shot accuracy (%), best top-1 over the linear stage, wall time:\n\n| method | batch | lr | many | medium | few | best top-1 (epoch) | seconds |\n|---|---|---|---|---|---|---|---|\n");
    for r in results {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.2} ({}) | {:.0} |\n",
            r.method.as_str(),
            r.batch_size,
            r.lr,
            opt(r.last.many),
            opt(r.last.medium),
            opt(r.last.few),
            r.best_top1,
            r.best_epoch,
            r.seconds
        ));
    }
    let path = out.join("results.md");
    std::fs::write(&path, md).map_err(ProcoError::io_at(&path))?;

    let categories: Vec<String> = batch_sizes.iter().map(|b| b.to_string()).collect();
    let series: Vec<Series> = methods.iter().map(|&m| Series { name: m.as_str().into(), values: batch_sizes.iter().map(|&b| cell(m, b).map(|r| r.last.top1)).collect() }).collect();
    category_line_chart(&out.join("accuracy_vs_batch_size.svg"), "Top-1 after the linear stage against stage-1 batch size", "stage-1 batch size", "test top-1 (%)", &categories, &series)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::recipe::DatasetKind;

    #[test]
    fn cells_scale_the_lr_and_give_the_queue_to_supcon_alone() {
        let base = Recipe::cifar(DatasetKind::Cifar10, 100.0, 4);
        let methods = vec![ContrastiveLoss::Proco, ContrastiveLoss::Supcon, ContrastiveLoss::Bcl];
        let grid = BatchSizeGrid::new(base.clone(), vec![64, 32], methods.clone()).unwrap().with_supcon_queue(4096);
        assert_eq!(grid.batch_sizes(), [32, 64]);
        for &m in &methods {
            let r = grid.cell_recipe(m, 32);
            r.validate().unwrap();
            assert_eq!((r.stages, r.contrastive_loss, r.batch_size), (Stages::Two, m, 32));
            assert!((r.lr - base.lr * 32.0 / 256.0).abs() < 1e-15);
            assert_eq!(r.supcon_queue, if m == ContrastiveLoss::Supcon { 4096 } else { 0 }, "{m:?}");
        }
        assert_eq!(BatchSizeGrid::new(base, vec![32], methods).unwrap().cell_recipe(ContrastiveLoss::Supcon, 32).supcon_queue, 0);
    }
}

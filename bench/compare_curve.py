"""Sets a proco run's per-epoch test accuracy beside the authors' published curve.

Usage: python bench/compare_curve.py RUN_DIR REFERENCE_CSV
(REFERENCE_CSV: one of ../shared/reference/proco_<dataset>_imb<1/IF>_epochs<E>.csv)
Prints a Markdown table over the epochs both have, and the mean over that window.
"""
import csv
import json
import sys


def main():
    run_dir, ref_csv = sys.argv[1], sys.argv[2]
    ours = {}
    with open(f"{run_dir}/metrics.jsonl") as f:
        for line in f:
            r = json.loads(line)
            ours[r["epoch"]] = r
    ref = {}
    with open(ref_csv) as f:
        for row in csv.DictReader(f):
            ref[int(row["epoch"])] = row
    epochs = sorted(set(ours) & set(ref))
    fmt = lambda v: "-" if v is None else f"{v:.2f}"
    print("| epoch | ours top-1 | many | medium | few | ours train CE | ours ProCo | epoch s | authors top-1 | authors train CE | authors ProCo |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for e in epochs:
        o, r = ours[e], ref[e]
        v = o["val"]
        print(f"| {e} | {v['top1']:.2f} | {fmt(v['many'])} | {fmt(v['medium'])} | {fmt(v['few'])} | "
              f"{o['ce_loss_train']:.3f} | {o['proco_loss_train']:.3f} | {o['seconds']:.0f} | "
              f"{float(r['val_top1']):.2f} | {float(r['ce_loss_train']):.3f} | {float(r['proco_loss_train']):.3f} |")
    if epochs:
        mo = sum(ours[e]["val"]["top1"] for e in epochs) / len(epochs)
        mr = sum(float(ref[e]["val_top1"]) for e in epochs) / len(epochs)
        print(f"\nmean test top-1 over epochs {epochs[0]}-{epochs[-1]}: ours {mo:.2f}, authors {mr:.2f}")


if __name__ == "__main__":
    main()

"""LoRA against full fine-tuning of the real MiniLM on CPU, side by side in one process.

``python benchmarks/lora_memory.py [--steps 8] [--batch 32] [--length 32] [--r 8] [--threads 1]``

Per mode: trainable parameters, bytes of weights + gradients + AdamW state (exact, from
the tensors), and the median time of a training step (LM forward over ``batch`` texts of
``length`` tokens, mean pooling, backward, AdamW step) — the LM part of a stage-1/3 step.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from lmgnn_fast.lm import LMEncoder


def _bytes(ts) -> int:
    return sum(t.numel() * t.element_size() for t in ts)


def measure(lora_r: int, texts: list[str], args) -> dict:
    torch.manual_seed(0)
    lm = LMEncoder.from_pretrained(None)
    if lora_r:
        from lmgnn_fast.lm.lora import add_lora

        params = add_lora(lm.model, lora_r, 2.0 * lora_r, 0.05, ["query", "value"])
    else:
        params = list(lm.model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-5, foreach=True)
    tok = lm.tokenize(texts, args.length)
    lm.train()
    times, cpu = [], []
    for s in range(args.steps + 1):
        ids = torch.arange(s * args.batch, (s + 1) * args.batch) % len(texts)
        t0, c0 = time.perf_counter(), time.process_time()
        loss = lm.encode(tok, ids).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if s:  # the first step allocates the optimizer state
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    weights = _bytes(lm.model.parameters())
    grads = _bytes(p.grad for p in params if p.grad is not None)
    state = _bytes(v for st in opt.state.values() for v in st.values() if torch.is_tensor(v))
    return {"mode": f"LoRA r={lora_r} (query, value)" if lora_r else "full fine-tuning",
            "trainable": sum(p.numel() for p in params), "total": sum(p.numel() for p in lm.model.parameters()),
            "weights": weights, "grads": grads, "state": state, "step_ms": 1e3 * statistics.median(times),
            "step_cpu_ms": 1e3 * statistics.median(cpu)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=32)
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from lmgnn_fast.datasets import load_dataset

    g = load_dataset("attack")
    texts = [x for x in g.text["technique"]][:args.batch * (args.steps + 1)]
    rows = [measure(0, texts, args), measure(args.r, texts, args)]
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    mib = 1 / 2**20
    print(f"all-MiniLM-L6-v2 on CPU, {torch.get_num_threads()} threads, batch {args.batch} x {args.length} tokens, "
          f"{args.steps} timed steps per mode, load average {load}")
    print("| mode | trainable params | weights MiB | grads MiB | AdamW state MiB | weights+grads+state MiB "
          "| step CPU ms (median) | step wall ms (median) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        tot = r["weights"] + r["grads"] + r["state"]
        print(f"| {r['mode']} | {r['trainable']:,} of {r['total']:,} | {r['weights'] * mib:.1f} | "
              f"{r['grads'] * mib:.2f} | {r['state'] * mib:.2f} | {tot * mib:.1f} | {r['step_cpu_ms']:.0f} "
              f"| {r['step_ms']:.0f} |")


if __name__ == "__main__":
    main()

"""Adapters benchmark (issue 19, Performance): weightlab's LoRA against PEFT 0.21 and the
floor, on all-MiniLM-L6-v2 loaded with ``transformers`` (offline, ``HF_HUB_OFFLINE=1``),
all in the same run, medians of ``ROUNDS`` interleaved rounds (order alternating).

(a) **LoRA r = 8 training step**: batch 32 x 64 tokens, all 36 attention and FFN linears
    (``encoder_linears``), α = 8, AdamW (lr 1e-4), a ``Linear(384, 1)`` head on the
    mean-pooled output, MSE to fixed targets. Sides: the floor (frozen base, no adapter,
    the embedding output made to require grad so gradients run through every layer; only
    the head trains), PEFT (``get_peft_model``) and weightlab (``add_adapters``), with the
    same A (copied), B = 0 and the same head. Musts: weightlab <= PEFT, same loss to 1e-5
    (every step compared). Goal: weightlab's overhead above the floor <= 50% of PEFT's.
(b) **PiSSA and OLoRA init** on the 36 linears: ``add_adapters(init=...)`` vs
    ``get_peft_model(init_lora_weights=...)`` for ``pissa`` (full SVD), ``pissa_niter_4``
    and ``olora``, each on a fresh copy of the base (the copy is not timed).
(d) **EVA init** (H3) on the 36 linears, r = 8, ρ = 2: ``EVA(batches, 16)`` (svd
    ``lowrank``, padding left out with the attention mask) vs PEFT's
    ``initialize_lora_eva_weights`` (τ = 0.99, its default; it cycles the same batches until
    converged), the same 16 batches of 32 x ``tokens`` token ids for both (512 sequences),
    each on a fresh copy of the base, one round. Must: <= 0.5x PEFT; goal <= 0.3x. Run
    alone with ``--eva-only`` (results to ``bench/results/adapters_eva.json``).
(c) **Peak memory of a LoRA step**: one subprocess per side (floor, PEFT, weightlab)
    loads the model (and builds and frees one weightlab copy, as PEFT's side needs it for
    its A matrices), takes two warm steps, resets ``VmHWM`` (``/proc/self/clear_refs``) and
    reports the peak resident memory during one more step, whole and above the step's
    start. Must: weightlab's whole peak <= PEFT's.

Run: ``.venv/bin/python bench/adapters.py`` (``--quick``: batch 8 x 16, 2 rounds).
Results go to ``bench/results/adapters.json``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "adapters.json"
ROUNDS = 5
RANK, ALPHA, LR = 8, 8.0, 1e-4
TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
THREADS = 1  # --threads; on a shared, loaded CPU 2 OpenMP threads oversubscribe (10x+ slower)


def _load():
    import transformers

    from weightlab.models.minilm import minilm_path

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = transformers.BertModel.from_pretrained(str(minilm_path()), add_pooling_layer=False)
    return m.eval()


def _batch(batch: int, tokens: int):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (batch, tokens), generator=g)
    mask = torch.ones_like(ids)
    mask[: batch // 4, tokens // 2 :] = 0  # a quarter of the rows padded to half length
    y = torch.randn(batch, 1, generator=g)
    return ids, mask, y


def _head() -> nn.Linear:
    g = torch.Generator().manual_seed(1)
    head = nn.Linear(384, 1)
    with torch.no_grad():
        head.weight.copy_(torch.randn(1, 384, generator=g) * 0.05)
        head.bias.zero_()
    return head


class Side:
    """One model + head + AdamW; ``step()`` returns ``(seconds, loss)``."""

    def __init__(self, kind: str, base: nn.Module, batch) -> None:
        from weightlab.adapters import add_adapters
        from weightlab.models.minilm import encoder_linears

        self.kind, self.batch, self.head = kind, batch, _head()
        for p in base.parameters():
            p.requires_grad_(False)
        if kind == "floor":
            base.embeddings.register_forward_hook(lambda m, i, out: out.requires_grad_(True))
            self.model, params = base, []
        elif kind == "weightlab":
            self.adapters = add_adapters(base, encoder_linears(), rank=RANK, alpha=ALPHA, seed=0)
            self.model, params = base, list(self.adapters.parameters())
        else:
            import peft

            cfg = peft.LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.model = peft.get_peft_model(base, cfg)
            params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW([*params, *self.head.parameters()], lr=LR)

    def copy_A_from(self, other: Side) -> None:
        """Give PEFT's adapters weightlab's A (B is 0 on both)."""
        with torch.no_grad():
            for name, mod in self.model.base_model.model.named_modules():
                if hasattr(mod, "lora_A") and "default" in mod.lora_A:
                    mod.lora_A["default"].weight.copy_(other.adapters.adapters[name].lora_A)

    def step(self) -> tuple[float, float]:
        ids, mask, y = self.batch
        t0 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        h = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask[..., None].to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1)
        loss = nn.functional.mse_loss(self.head(pooled), y)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - t0, loss.item()


def bench_step(base: nn.Module, batch, rounds: int) -> dict:
    sides = {k: Side(k, copy.deepcopy(base), batch) for k in ("floor", "peft", "weightlab")}
    sides["peft"].copy_A_from(sides["weightlab"])
    times: dict[str, list[float]] = {k: [] for k in sides}
    losses: dict[str, list[float]] = {k: [] for k in sides}
    names = list(sides)
    for r in range(rounds + 1):  # round 0 warms up (its times are dropped)
        for k in names if r % 2 == 0 else names[::-1]:
            t, loss = sides[k].step()
            losses[k].append(loss)
            if r > 0:
                times[k].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    loss_diff = max(
        abs(a - b) / max(abs(b), 1e-12)
        for a, b in zip(losses["weightlab"], losses["peft"], strict=True)
    )
    over_wl, over_peft = med["weightlab"] - med["floor"], med["peft"] - med["floor"]
    return {
        "median_s": med,
        "times_s": times,
        "losses": losses,
        "max_rel_loss_diff": loss_diff,
        "overhead_ratio": over_wl / over_peft if over_peft > 0 else float("nan"),
        "must_no_slower": med["weightlab"] <= med["peft"],
        "must_same_loss": loss_diff <= 1e-5,
        "goal_overhead": over_wl <= 0.5 * over_peft,
    }


def bench_inits(base: nn.Module, rounds: int) -> dict:
    import peft

    from weightlab.adapters import add_adapters
    from weightlab.models.minilm import encoder_linears

    out = {}
    for init in ("pissa", "pissa_niter_4", "olora"):
        times = {"weightlab": [], "peft": []}
        for r in range(rounds):
            for side in ("weightlab", "peft") if r % 2 == 0 else ("peft", "weightlab"):
                m = copy.deepcopy(base)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t0 = time.perf_counter()
                    if side == "weightlab":
                        add_adapters(m, encoder_linears(), rank=RANK, alpha=ALPHA, init=init)
                    else:
                        cfg = peft.LoraConfig(
                            r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, init_lora_weights=init
                        )
                        peft.get_peft_model(m, cfg)
                    times[side].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        out[init] = {"median_s": med, "ratio": med["weightlab"] / med["peft"]}
    return out


def bench_eva(base: nn.Module, tokens: int, rounds: int, n_batches: int = 16) -> dict:
    import peft
    from peft.tuners.lora.eva import initialize_lora_eva_weights

    from weightlab.adapters import add_adapters
    from weightlab.adapters.eva import EVA
    from weightlab.models.minilm import encoder_linears

    g = torch.Generator().manual_seed(2)
    batches = []
    for _ in range(n_batches):
        ids = torch.randint(1000, 30000, (32, tokens), generator=g)
        lengths = torch.randint(tokens // 4, tokens + 1, (32,), generator=g)
        mask = (torch.arange(tokens)[None] < lengths[:, None]).long()
        batches.append({"input_ids": ids * mask, "attention_mask": mask})
    times: dict[str, list[float]] = {"weightlab": [], "peft": []}
    ranks: dict[str, dict] = {}
    for r in range(rounds):
        for side in ("weightlab", "peft") if r % 2 == 0 else ("peft", "weightlab"):
            m = copy.deepcopy(base)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t0 = time.perf_counter()
                if side == "weightlab":
                    eva = EVA(batches, n_batches, rho=2.0, token_mask=lambda b: b["attention_mask"])
                    add_adapters(m, encoder_linears(), rank=RANK, alpha=ALPHA, init=eva)
                    ranks["weightlab"] = eva.ranks
                else:
                    cfg = peft.LoraConfig(
                        r=RANK,
                        lora_alpha=ALPHA,
                        target_modules=TARGETS,
                        init_lora_weights="eva",
                        eva_config=peft.EvaConfig(rho=2.0),
                    )
                    pm = peft.get_peft_model(m, cfg)
                    initialize_lora_eva_weights(pm, dataloader=batches, show_progress_bar=False)
                    ranks["peft"] = {
                        n.removeprefix("base_model.model."): int(mod.r["default"])
                        for n, mod in pm.named_modules()
                        if hasattr(mod, "r") and "default" in getattr(mod, "r", {})
                    }
                times[side].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["weightlab"] / med["peft"]
    return {
        "median_s": med,
        "times_s": times,
        "ratio": ratio,
        "must_half_of_peft": ratio <= 0.5,
        "goal_0.3": ratio <= 0.3,
        "sum_ranks": {k: sum(v.values()) for k, v in ranks.items()},
        "ranks": ranks,
        "n_batches": n_batches,
        "sequences": 32 * n_batches,
        "tokens": tokens,
    }


def _kb(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    raise OSError(field)


def memory_worker(kind: str, batch: int, tokens: int) -> dict:
    base = _load()
    side = Side(kind, base, _batch(batch, tokens))
    # Every side builds (and frees) the weightlab side's copy, so all three heaps hold the
    # same freed pages when the measured step starts (PEFT alone doing it made its step
    # reuse those pages and read lower).
    side_wl = Side("weightlab", copy.deepcopy(_load()), side.batch)
    if kind == "peft":
        side.copy_A_from(side_wl)
    del side_wl
    gc.collect()
    side.step()
    side.step()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    start = _kb("VmRSS")
    side.step()
    peak = _kb("VmHWM")
    return {"peak_above_start_MiB": (peak - start) / 1024, "peak_MiB": peak / 1024}


def bench_memory(batch: int, tokens: int) -> dict:
    out = {}
    for kind in ("floor", "peft", "weightlab"):
        cmd = [sys.executable, __file__, "--memory-worker", kind, "--batch", str(batch)]
        cmd += ["--threads", str(torch.get_num_threads())]
        res = subprocess.run(
            [*cmd, "--tokens", str(tokens)], capture_output=True, text=True, check=True
        )
        got = json.loads(res.stdout.strip().splitlines()[-1])
        out[kind] = got["peak_above_start_MiB"]
        out[f"{kind}_peak_MiB"] = got["peak_MiB"]
    # the must compares the whole footprint at the step's peak (model, adapter, optimizer
    # state and activations); the growth above the step's start is reported beside it
    out["must_no_more_than_peft"] = out["weightlab_peak_MiB"] <= out["peft_peak_MiB"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--memory-worker", default=None)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--threads", type=int, default=THREADS)
    ap.add_argument("--eva-only", action="store_true", help="run only (d), the EVA init")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.eva_only:
        rounds = 1  # PEFT's convergence loop alone takes ~1 min here
        eva = bench_eva(_load(), 16 if a.quick else a.tokens, rounds)
        m = eva["median_s"]
        print(
            f"EVA init, 36 linears, r={RANK}, rho=2, {eva['sequences']} sequences x "
            f"{eva['tokens']} tokens, {torch.get_num_threads()} thread(s): weightlab "
            f"{m['weightlab']:.2f} s, PEFT {m['peft']:.2f} s, ratio {eva['ratio']:.2f}x (must "
            f"<= 0.5: {'met' if eva['must_half_of_peft'] else 'NOT met'}; goal <= 0.3: "
            f"{'met' if eva['goal_0.3'] else 'not met'}); rank sums {eva['sum_ranks']}"
        )
        out = RESULTS.with_name("adapters_eva.json") if a.out == str(RESULTS) else Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        eva["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        eva["rounds"] = rounds
        out.write_text(json.dumps(eva, indent=2) + "\n")
        return
    if a.memory_worker:
        print(json.dumps(memory_worker(a.memory_worker, a.batch, a.tokens)))
        return
    batch, tokens, rounds = (8, 16, 2) if a.quick else (a.batch, a.tokens, ROUNDS)
    base = _load()
    step = bench_step(base, _batch(batch, tokens), rounds)
    inits = bench_inits(base, 3 if not a.quick else 1)
    mem = bench_memory(batch, tokens)
    med = step["median_s"]
    print(
        f"LoRA r={RANK} step, MiniLM, batch {batch} x {tokens}, 36 linears, AdamW, {torch.get_num_threads()} thread(s)"
    )
    print(
        f"  floor {med['floor']:.3f} s   PEFT {med['peft']:.3f} s   weightlab {med['weightlab']:.3f} s"
    )
    print(
        f"  weightlab/PEFT {med['weightlab'] / med['peft']:.3f}x (must <= 1: "
        f"{'met' if step['must_no_slower'] else 'NOT met'}); overhead above floor "
        f"{step['overhead_ratio']:.2f} of PEFT's (goal <= 0.5: "
        f"{'met' if step['goal_overhead'] else 'not met'}); max rel loss diff "
        f"{step['max_rel_loss_diff']:.1e} (must <= 1e-5: "
        f"{'met' if step['must_same_loss'] else 'NOT met'})"
    )
    print("init on 36 linears (median s)   weightlab   PEFT   ratio")
    for k, v in inits.items():
        m = v["median_s"]
        print(f"  {k:<28} {m['weightlab']:.3f}    {m['peft']:.3f}  {v['ratio']:.2f}x")
    print(
        f"peak memory of a step (MiB), whole / above the step's start: floor "
        f"{mem['floor_peak_MiB']:.0f} / {mem['floor']:.0f}, PEFT {mem['peft_peak_MiB']:.0f} / "
        f"{mem['peft']:.0f}, weightlab {mem['weightlab_peak_MiB']:.0f} / {mem['weightlab']:.0f} "
        f"(must, whole peak <= PEFT's: {'met' if mem['must_no_more_than_peft'] else 'NOT met'})"
    )
    result = {
        "config": {
            "batch": batch,
            "tokens": tokens,
            "rounds": rounds,
            "threads": torch.get_num_threads(),
        },
        "step": step,
        "inits": inits,
        "memory": mem,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""One Mamba block: ours (``ssm.layers.Mamba``), mamba_ssm's ``Mamba`` module, and attention.

    source benchmarks/setup_device.sh
    SSM_COMMIT=<commit> python3 benchmarks/bench_mamba_block.py --out "$OUT"
    python3 benchmarks/bench_mamba_block.py --smoke --out "$(mktemp -d)"   # CPU check, tiny sizes

Three layers of the same width run in one process on the same inputs:

- ours: ``MambaConfig(d_state=16, d_conv=4, expand=2).build(1024)``, its scan through
  ``ssm.selective_scan`` and its decoding step through ``ssm.selective_state_update`` (Triton on
  CUDA);
- theirs: ``mamba_ssm.modules.mamba_simple.Mamba(1024, d_state=16, d_conv=4, expand=2)`` of
  mamba_ssm 2.3.2.post1, imported from its sdist without the package ``__init__``
  (``benchmarks/anchors.py``), with its ``selective_scan_cuda`` extension built here for the local
  GPU. Without ``causal_conv1d`` its fused fast path (``mamba_inner_fn``) is not taken: it runs
  ``nn.Conv1d`` and ``selective_scan_fn`` (the CUDA scan), and decodes with the PyTorch
  convolution step and the Triton ``selective_state_update``. Which functions it called is
  recorded per case;
- attention: ``AttentionConfig(head_dim=64, positions="rope").build(1024)``, SDPA, with a KV cache
  for decoding; the SDPA operator that ran (flash, memory-efficient, cuDNN or math) is recorded.

Training: the median time of the forward pass (autograd recording) and of forward plus backward
(a fixed random output gradient) at batch 8 and L in 512, 2048, 8192 and 16384, float32
parameters under bfloat16 autocast, then in float32 (no TF32). Their parameters are copied into
ours, so both compute the same function on the same input: the relative difference of the
outputs is recorded per case.

Decoding: after a prefill of 1024 tokens (ours: ``prefill``; theirs: their forward writing into
the states of ``allocate_inference_cache``; attention: the keys and values of the 1024 or 8192
past tokens), ``step`` is called 200 times at batch 1 and 64 and each step is timed (CUDA
events; no CUDA graphs). Tokens per second are ``batch`` over the median time of a step.

A case that fails (out of memory, an anchor missing) is recorded with its error; the rest still
runs. Cases after ``--budget-s`` seconds are recorded as skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import importlib.util
import json
import statistics
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ssm.layers import AttentionConfig, MambaConfig
from ssm.layers.attention import KVCache

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # anchors.py, provenance.py and timing.py, beside this file

from anchors import PathCounter  # noqa: E402
from provenance import git_commit, versions  # noqa: E402 (found through the path just set)
from timing import (  # noqa: E402
    Timer,
    autocast,
    describe_error,
    failure,
    free,
    param_counts,
    time_training,
)

OURS, THEIRS, ATTN = "ssm Mamba", "mamba_ssm Mamba", "ssm Attention"
MAMBA_SSM = "mamba_ssm 2.3.2.post1"
START = time.perf_counter()

#: mamba_simple.Mamba's parameters → ours (same shapes and layouts: in_proj rows are x then z,
#: conv1d is an nn.Conv1d with the oldest tap first in both, x_proj rows are dt, B, C).
PARAMETER_MAP = {
    "in_proj.weight": "in_proj.weight",
    "conv1d.weight": "conv.conv.weight",
    "conv1d.bias": "conv.conv.bias",
    "x_proj.weight": "x_proj.weight",
    "dt_proj.weight": "dt_proj.weight",
    "dt_proj.bias": "dt_bias",
    "A_log": "A_log",
    "D": "D",
    "out_proj.weight": "out_proj.weight",
}

#: The functions of mamba_simple that tell which path its forward and step took.
PATH_FUNCTIONS = (
    "mamba_inner_fn",
    "causal_conv1d_fn",
    "selective_scan_fn",
    "causal_conv1d_update",
    "selective_state_update",
)


# --------------------------------------------------------------------------- mamba_ssm's Mamba


def _einops(wheels: Path, meta: dict) -> None:
    """einops (which mamba_ssm imports) from the wheel folder if it is not installed."""
    if importlib.util.find_spec("einops") is None:
        found = sorted(wheels.glob("einops-*.whl"))
        if found:
            sys.path.insert(0, str(found[-1]))  # a pure-Python wheel imports from the zip
            meta["import_notes"].append(f"einops: from {found[-1].name} on sys.path")
        else:
            meta["import_notes"].append(f"einops: not installed and no einops wheel in {wheels}")
    try:
        import einops

        meta["einops"] = einops.__version__
    except Exception as err:  # their module will then fail to import, and say so
        meta["einops"] = repr(err)[:200]


def import_their_mamba(wheels: Path, device: str, meta: dict):
    """``mamba_ssm.modules.mamba_simple`` and a counter of the paths it takes, or ``None`` with
    the reason in ``meta["mamba_ssm"]``."""
    info = meta.setdefault("mamba_ssm", {"version": MAMBA_SSM})
    if device != "cuda":
        info["status"] = "not run: no CUDA device (its selective_scan_fn is a CUDA extension)"
        return None, None
    try:
        from anchors import (
            build_selective_scan_cuda,
            extract_mamba_sdist,
            import_mamba_submodules,
        )

        _einops(wheels, meta)
        anchors_dir = Path(tempfile.gettempdir()) / "anchors"  # as bench.py
        root = extract_mamba_sdist(wheels, anchors_dir)
        try:
            _, seconds = build_selective_scan_cuda(root, anchors_dir / "build")
            info["selective_scan_cuda"] = "built"
            info["selective_scan_cuda_build_s"] = round(seconds, 1)
        except Exception as err:  # their module imports it at the top: it cannot run without
            info["selective_scan_cuda"] = f"build failed: {describe_error(err)}"
            info["status"] = "not run: selective_scan_cuda did not build"
            return None, None
        found = import_mamba_submodules(root)
        info["submodules"] = {k: "ok" if callable(v) else repr(v)[:300] for k, v in found.items()}
        module = importlib.import_module("mamba_ssm.modules.mamba_simple")
    except Exception as err:  # only ours and attention are then timed
        info["status"] = f"not run: import failed: {describe_error(err)}"
        info["import_traceback"] = traceback.format_exc(limit=4)[-1500:]
        return None, None
    counter = PathCounter(module, PATH_FUNCTIONS)
    info["status"] = "imported"
    info["source"] = "mamba_ssm/modules/mamba_simple.py of the sdist"
    info["available"] = counter.available
    info["causal_conv1d"] = "available" if counter.available["causal_conv1d_fn"] else "missing"
    info["expected_path"] = (
        "fast path: mamba_inner_fn (fused conv, scan and projections)"
        if counter.available["causal_conv1d_fn"]
        else "slow path: use_fast_path needs causal_conv1d, missing; forward runs nn.Conv1d + "
        "selective_scan_fn (selective_scan_cuda); step runs the PyTorch convolution step + "
        "the Triton selective_state_update"
    )
    return module, counter


def their_kwargs(d_model: int, d_state: int, d_conv: int, expand: int) -> dict:
    """Their ``Mamba`` as in the paper's benchmark; every other argument at its default."""
    return dict(d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand)


@torch.no_grad()
def copy_theirs_into_ours(theirs: nn.Module, ours: nn.Module) -> dict:
    """Our parameters set to theirs through :data:`PARAMETER_MAP`; raises ``ValueError`` where
    the names or shapes do not match one to one (nothing is copied then)."""
    tp, op = dict(theirs.named_parameters()), dict(ours.named_parameters())
    if set(tp) != set(PARAMETER_MAP) or set(op) != set(PARAMETER_MAP.values()):
        raise ValueError(
            f"parameter names do not match one to one: theirs {sorted(tp)}, ours {sorted(op)}"
        )
    bad = [f"{t} {tuple(tp[t].shape)} -> {o} {tuple(op[o].shape)}"
           for t, o in PARAMETER_MAP.items() if tp[t].shape != op[o].shape]  # fmt: skip
    if bad:
        raise ValueError(f"parameter shapes differ: {'; '.join(bad)}")
    for t, o in PARAMETER_MAP.items():
        op[o].copy_(tp[t])
    return dict(PARAMETER_MAP)


# --------------------------------------------------------------------------- training


def _rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def sdpa_backend(fn: Callable[[], object]) -> dict:
    """The aten operators of SDPA that one call of ``fn`` ran (from the profiler's op names),
    and the backend they name."""
    try:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        ops = sorted(
            {e.key for e in prof.key_averages()
             if e.key.startswith("aten::") and ("scaled_dot_product" in e.key
                                                or e.key.endswith("_attention"))}
        )  # fmt: skip
    except Exception as err:  # recorded, not fatal
        return {"error": describe_error(err)}
    names = " ".join(ops)
    backend = next((b for b in ("cudnn", "flash", "efficient", "math") if b in names), "unknown")
    return {"ops": ops, "backend": backend}


def _ratio(a: dict, b: dict, key: str) -> float | None:
    if key in a and key in b and b[key] > 0:
        return round(a[key] / b[key], 3)
    return None


def _over_budget(budget: float) -> dict | None:
    spent = time.perf_counter() - START
    return {"error": f"skipped: time budget of {budget:.0f} s spent"} if spent > budget else None


def training_case(
    L: int, bf16: bool, layers: dict, counter, B: int, D: int, timer: Timer, device: str
) -> dict:
    case: dict = {
        "L": L,
        "batch": B,
        "precision": "bf16" if bf16 else "fp32",
        "autocast": "bfloat16" if bf16 else None,
        "layer": {},
    }
    try:
        torch.manual_seed(1)
        x = torch.randn(B, L, D, device=device)
    except Exception as err:  # out of memory for the input itself
        case["error"] = describe_error(err)
        return case
    outputs = {}
    for name, layer in layers.items():
        if isinstance(layer, str):  # the reason it is not there
            case["layer"][name] = {"error": layer}
            continue
        if name == THEIRS:
            counter.reset()
        case["layer"][name], outputs[name] = time_training(layer, x, bf16, timer, device)
        if name == THEIRS:
            case["mamba_ssm_calls"] = counter.used()
        if name == ATTN and "error" not in case["layer"][name]:

            def attn_fwd(layer=layer, x=x):
                with torch.no_grad(), autocast(device, bf16):
                    layer(x)

            case["sdpa"] = sdpa_backend(attn_fwd)
    if outputs.get(OURS) is not None and outputs.get(THEIRS) is not None:
        case["rel_error_ours_vs_theirs"] = _rel_error(outputs[OURS], outputs[THEIRS])
    del outputs, x
    free(device)
    o, t, a = (case["layer"].get(k, {}) for k in (OURS, THEIRS, ATTN))
    case["time_ratio_ours_over_theirs"] = {k: _ratio(o, t, f"ms_{k}") for k in ("fwd", "fwd_bwd")}
    case["time_ratio_ours_over_attention"] = {
        k: _ratio(o, a, f"ms_{k}") for k in ("fwd", "fwd_bwd")
    }
    return case


# --------------------------------------------------------------------------- decoding


def _mib(*tensors: torch.Tensor) -> float:
    return round(sum(t.numel() * t.element_size() for t in tensors) / 2**20, 3)


def time_steps(step: Callable[[], object], warmup: int, steps: int, device: str) -> dict:
    """Per-step times (ms) of ``steps`` calls after ``warmup`` calls: CUDA events around each
    call on a GPU, the wall clock on the CPU; the loop's wall time over ``steps`` as the mean."""
    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in range(steps)
        ]
        start = time.perf_counter()
        for a, b in events:
            a.record()
            step()
            b.record()
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
        times = [a.elapsed_time(b) for a, b in events]
    else:
        times = []
        start = time.perf_counter()
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
        wall = time.perf_counter() - start
    return {
        "ms_per_step_median": round(statistics.median(times), 5),
        "ms_per_step_mean": round(wall * 1e3 / steps, 5),
        "ms_per_step_min": round(min(times), 5),
    }


def decode_ours(ours, prefix, x_t, bf16, warmup, steps, device) -> tuple[dict, torch.Tensor]:
    with torch.no_grad(), autocast(device, bf16):
        _, state = ours.prefill(prefix)
        first, _ = ours.step(x_t, state)
    box = [state]

    def step():
        with autocast(device, bf16):
            _, box[0] = ours.step(x_t, box[0])

    rec = time_steps(step, warmup, steps, device)
    rec["state_MiB"] = _mib(state.conv, state.ssm)
    rec["prefill"] = "ours.prefill(prefix), then ours.step(x_t, state)"
    return rec, first


def decode_theirs(theirs, prefix, x_t, bf16, warmup, steps, device) -> tuple[dict, torch.Tensor]:
    batch, length, _ = prefix.shape
    conv_state, ssm_state = theirs.allocate_inference_cache(batch, length + warmup + steps + 1)
    # their forward fills the cache of inference_params.key_value_memory_dict[layer_idx] when
    # seqlen_offset is 0: a stand-in for mamba_ssm.utils.generation.InferenceParams
    theirs.layer_idx = 0
    params = types.SimpleNamespace(key_value_memory_dict={0: (conv_state, ssm_state)},
                                   seqlen_offset=0)  # fmt: skip
    with torch.no_grad(), autocast(device, bf16):
        theirs(prefix, inference_params=params)
        conv0, ssm0 = conv_state.clone(), ssm_state.clone()
        first = theirs.step(x_t[:, None], conv0, ssm0)[0][:, 0]
    x_in = x_t[:, None]

    def step():
        with torch.no_grad(), autocast(device, bf16):
            theirs.step(x_in, conv_state, ssm_state)  # updates the states in place

    rec = time_steps(step, warmup, steps, device)
    rec["state_MiB"] = _mib(conv_state, ssm_state)
    rec["prefill"] = (
        "their forward with a stand-in for InferenceParams (key_value_memory_dict holding "
        "allocate_inference_cache's states, seqlen_offset 0), then step(x, conv_state, ssm_state)"
    )
    return rec, first


def decode_attention(attn, prefix, x_t, bf16, warmup, steps, device) -> dict:
    batch, context, _ = prefix.shape
    dtype = attn.init_state(batch).keys.dtype  # the cache's dtype as the layer's own steps keep
    with torch.no_grad(), autocast(device, bf16):
        _, k, v = attn._heads(prefix, torch.arange(context, device=prefix.device))
        cache = KVCache(k.to(dtype), v.to(dtype), context)
    del k, v
    box = [cache]

    def step():
        with autocast(device, bf16):
            _, box[0] = attn.step(x_t, box[0])

    rec = {"context": context, "cache_dtype": str(dtype).removeprefix("torch.")}

    def one():
        with torch.no_grad(), autocast(device, bf16):
            attn.step(x_t, cache)

    rec["sdpa"] = sdpa_backend(one)
    rec |= time_steps(step, warmup, steps, device)
    rec["context_at_end"] = box[0].t
    rec["state_MiB"] = _mib(cache.keys, cache.values)
    rec["prefill"] = "keys and values of the context from the layer's projections and RoPE"
    return rec


def decoding_case(batch: int, bf16: bool, layers: dict, counter, args, D: int, device: str) -> dict:
    case: dict = {
        "batch": batch,
        "precision": "bf16" if bf16 else "fp32",
        "autocast": "bfloat16" if bf16 else None,
        "prefill": args.prefill,
        "warmup_steps": args.warmup_steps,
        "steps": args.steps,
        "cuda_graphs": False,
        "layer": {},
    }
    torch.manual_seed(2)
    firsts = {}
    try:
        x_t = torch.randn(batch, D, device=device)
        prefix = torch.randn(batch, args.prefill, D, device=device)
    except Exception as err:  # out of memory for the input itself
        case["error"] = describe_error(err)
        return case
    for name, fn in ((OURS, decode_ours), (THEIRS, decode_theirs)):
        layer = layers[name]
        if isinstance(layer, str):
            case["layer"][name] = {"error": layer}
            continue
        try:
            if name == THEIRS:
                counter.reset()
            rec, firsts[name] = fn(layer, prefix, x_t, bf16, args.warmup_steps, args.steps,
                                   device)  # fmt: skip
            rec["tokens_per_s"] = round(batch / (rec["ms_per_step_median"] * 1e-3))
            if name == THEIRS:
                case["mamba_ssm_calls"] = counter.used()
        except Exception as err:  # recorded, not fatal
            rec = failure(err)
        finally:
            free(device)
        case["layer"][name] = rec
    del prefix
    free(device)
    if OURS in firsts and THEIRS in firsts:
        case["rel_error_first_step_ours_vs_theirs"] = _rel_error(firsts[OURS], firsts[THEIRS])
    attn = layers[ATTN]
    for context in args.contexts:
        key = f"{ATTN} (context {context})"
        if isinstance(attn, str):
            case["layer"][key] = {"error": attn}
            continue
        try:
            torch.manual_seed(3)
            prefix = torch.randn(batch, context, D, device=device)
            rec = decode_attention(attn, prefix, x_t, bf16, args.warmup_steps, args.steps,
                                   device)  # fmt: skip
            rec["tokens_per_s"] = round(batch / (rec["ms_per_step_median"] * 1e-3))
        except Exception as err:  # out of memory at long contexts: recorded, not fatal
            rec = failure(err)
        finally:
            prefix = None
            free(device)
        case["layer"][key] = rec
    o = case["layer"][OURS]
    key = "ms_per_step_median"
    case["time_ratio_ours_over_theirs"] = _ratio(o, case["layer"][THEIRS], key)
    case["time_ratio_ours_over_attention"] = {
        str(c): _ratio(o, case["layer"][f"{ATTN} (context {c})"], key) for c in args.contexts
    }
    return case


# --------------------------------------------------------------------------- main


def _out_file(out: str) -> Path:
    path = Path(out)
    return path if path.suffix == ".json" else path / "mamba_block.json"


def _num(rec: dict, key: str) -> float:
    v = rec.get(key)
    return float("nan") if v is None else v


def _table(training: list[dict], decoding: list[dict]) -> str:
    lines = [
        "training, one block (ms)",
        f"{'L':>6} {'prec':<5} {'impl':<16} {'fwd':>9} {'fwd+bwd':>9} {'tok/s':>10} "
        f"{'peak MiB':>9}",
    ]
    for c in training:
        for impl in (OURS, THEIRS, ATTN):
            r = c["layer"].get(impl, {})
            row = f"{c['L']:>6} {c['precision']:<5} {impl:<16} "
            if "error" in r:
                lines.append(row + r["error"][:70])
                continue
            lines.append(
                row + f"{_num(r, 'ms_fwd'):>9.3f} {_num(r, 'ms_fwd_bwd'):>9.3f} "
                f"{r.get('tokens_per_s', 0):>10.3g} {_num(r, 'peak_MiB'):>9.1f}"
            )
        for label, key in (("ours/theirs", "theirs"), ("ours/attention", "attention")):
            ratio = c.get(f"time_ratio_ours_over_{key}", {})
            lines.append(
                f"{'':>6} {'':<5} {label:<16} {_num(ratio, 'fwd'):>9.3f} "
                f"{_num(ratio, 'fwd_bwd'):>9.3f}"
            )
        if "rel_error_ours_vs_theirs" in c:
            lines.append(f"{'':>6} {'':<5} {'rel. difference':<16} "
                         f"{c['rel_error_ours_vs_theirs']:>9.1e}")  # fmt: skip
    lines += [
        "",
        "decoding, one block, after the prefill",
        f"{'batch':>6} {'prec':<5} {'impl':<32} {'ms/step':>9} {'tok/s':>10} {'state MiB':>10}",
    ]
    for c in decoding:
        for impl, r in c["layer"].items():
            row = f"{c['batch']:>6} {c['precision']:<5} {impl:<32} "
            if "error" in r:
                lines.append(row + r["error"][:60])
                continue
            lines.append(
                row + f"{_num(r, 'ms_per_step_median'):>9.4f} {r.get('tokens_per_s', 0):>10.3g} "
                f"{_num(r, 'state_MiB'):>10.3f}"
            )
        if "error" in c:
            lines.append(f"{c['batch']:>6} {c['precision']:<5} {c['error'][:70]}")
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default="data/bench/mamba_block.json",
        help="a .json file, or a folder for mamba_block.json",
    )  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--commit", default=None, help="default: $SSM_COMMIT, else git HEAD")
    parser.add_argument("--wheels", default=".whl", help="folder with mamba_ssm's sdist, einops")
    parser.add_argument("--lengths", default=None, help="training L; default 512,2048,8192,16384")
    parser.add_argument("--batch", type=int, default=None, help="training batch; default 8")
    parser.add_argument("--d-model", type=int, default=None, help="default 1024")
    parser.add_argument("--d-state", type=int, default=16)
    parser.add_argument("--d-conv", type=int, default=4)
    parser.add_argument("--expand", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=None, help="attention; default 64")
    parser.add_argument("--precisions", default="bf16,fp32", help="bf16 (autocast) and/or fp32")
    parser.add_argument("--decode-batches", default=None, help="default 1,64")
    parser.add_argument("--prefill", type=int, default=None, help="default 1024")
    parser.add_argument("--contexts", default=None, help="attention's; default 1024,8192")
    parser.add_argument("--steps", type=int, default=None, help="timed steps; default 200")
    parser.add_argument("--warmup-steps", type=int, default=None, help="default 20")
    parser.add_argument(
        "--budget-s", type=float, default=480.0,
        help="cases that start later than this many seconds after launch are skipped",
    )  # fmt: skip
    args = parser.parse_args()

    smoke = args.smoke
    device = "cpu" if smoke or not torch.cuda.is_available() else "cuda"
    B = args.batch or (2 if smoke else 8)
    D = args.d_model or (32 if smoke else 1024)
    head_dim = args.head_dim or (16 if smoke else 64)
    lengths = _ints(args.lengths or ("32,64" if smoke else "512,2048,8192,16384"))
    args.decode_batches = _ints(args.decode_batches or ("1,2" if smoke else "1,64"))
    args.prefill = args.prefill or (16 if smoke else 1024)
    args.contexts = _ints(args.contexts or ("16,64" if smoke else "1024,8192"))
    args.steps = args.steps or (5 if smoke else 200)
    args.warmup_steps = args.warmup_steps or (2 if smoke else 20)
    precisions = [p for p in args.precisions.split(",") if p]
    if not set(precisions) <= {"bf16", "fp32"}:
        parser.error(f"--precisions takes bf16 and fp32, got {args.precisions}")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    timer = Timer(device, smoke)

    ours_cfg = MambaConfig(d_state=args.d_state, d_conv=args.d_conv, expand=args.expand)
    attn_cfg = AttentionConfig(head_dim=head_dim, positions="rope")
    kwargs = their_kwargs(D, args.d_state, args.d_conv, args.expand)
    meta = versions(device) | {
        "benchmark": "Mamba block: training and decoding, ours, mamba_ssm's and attention",
        "commit": args.commit or git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "smoke": smoke,
        "timer": timer.how,
        "decode_timer": "CUDA events around each step, median of the steps"
        if device == "cuda"
        else "CPU wall clock of each step, median of the steps",
        "tf32": False,
        "sizes": {
            "batch": B,
            "d_model": D,
            "d_state": args.d_state,
            "d_conv": args.d_conv,
            "expand": args.expand,
            "dt_rank": ours_cfg.rank(D),
            "head_dim": head_dim,
            "L": lengths,
            "precisions": precisions,
            "decode_batches": args.decode_batches,
            "prefill": args.prefill,
            "attention_contexts": args.contexts,
            "steps": args.steps,
            "warmup_steps": args.warmup_steps,
        },
        "fwd": "forward with autograd recording, as in training; fwd_bwd adds backward of a "
        "fixed random output gradient, parameter and input gradients",
        "tokens_per_s": "training: batch * L / fwd_bwd time; decoding: batch / median step time",
        "precision": "float32 parameters; bf16: under torch.autocast(bfloat16); fp32: no "
        "autocast, TF32 off",
        "ours_config": {"MambaConfig": dataclasses.asdict(ours_cfg)},
        "theirs_config": {
            "Mamba": kwargs,
            "source": f"{MAMBA_SSM} mamba_ssm/modules/mamba_simple.py",
            "defaults": "dt_rank auto, dt in [1e-3, 1e-1], conv_bias, no bias, use_fast_path=True",
        },
        "attention_config": {"AttentionConfig": dataclasses.asdict(attn_cfg)},
        "import_notes": [],
    }
    mamba_simple, counter = import_their_mamba(Path(args.wheels), device, meta)

    torch.manual_seed(0)
    theirs: nn.Module | str = meta["mamba_ssm"]["status"]
    if mamba_simple is not None:
        try:
            theirs = mamba_simple.Mamba(**kwargs).to(device)
            meta["mamba_ssm"]["use_fast_path"] = theirs.use_fast_path
        except Exception as err:  # recorded, not fatal
            theirs = f"not built: {describe_error(err)}"
    layers = {
        OURS: ours_cfg.build(D).to(device),
        THEIRS: theirs,
        ATTN: attn_cfg.build(D).to(device),
    }
    if isinstance(theirs, nn.Module):
        try:  # the same function on both sides: their initial parameters in ours
            meta["parameter_map_theirs_to_ours"] = copy_theirs_into_ours(theirs, layers[OURS])
        except Exception as err:  # the outputs are then not compared
            meta["parameter_map_theirs_to_ours"] = f"not copied: {describe_error(err)}"
    meta["params"] = {k: param_counts(v) for k, v in layers.items() if isinstance(v, nn.Module)}
    print(json.dumps({k: v for k, v in meta.items() if not k.endswith("_config")}))

    training, decoding = [], []
    for prec in precisions:
        bf16 = prec == "bf16"
        for L in lengths:
            skipped = _over_budget(args.budget_s)
            if skipped:
                training.append({"L": L, "precision": prec, "layer": {}} | skipped)
                continue
            case = training_case(L, bf16, layers, counter, B, D, timer, device)
            training.append(case)
            print(json.dumps({
                "L": L, "precision": prec,
                "ms_fwd_bwd": {k: v.get("ms_fwd_bwd", v.get("error")) for k, v in
                               case["layer"].items()},
                "ratio_fwd_bwd": {k: case.get(f"time_ratio_ours_over_{k}", {}).get("fwd_bwd")
                                  for k in ("theirs", "attention")},
                "rel_error": case.get("rel_error_ours_vs_theirs"),
            }))  # fmt: skip
        for batch in args.decode_batches:
            skipped = _over_budget(args.budget_s)
            if skipped:
                decoding.append({"batch": batch, "precision": prec, "layer": {}} | skipped)
                continue
            case = decoding_case(batch, bf16, layers, counter, args, D, device)
            decoding.append(case)
            print(json.dumps({
                "batch": batch, "precision": prec,
                "tokens_per_s": {k: v.get("tokens_per_s", v.get("error")) for k, v in
                                 case["layer"].items()},
            }))  # fmt: skip

    probes = getattr(importlib.import_module("ssm.ops.dispatch"), "_probe_results", {})
    meta["ours_backend"] = {
        op: "reference (CPU)" if device != "cuda" else
        ("triton" if probes.get((op, "cuda:0"), "not probed") is None
         else f"reference: {probes.get((op, 'cuda:0'), 'not probed')}")
        for op in ("selective_scan", "selective_state_update")
    }  # fmt: skip
    meta["wall_s"] = round(time.perf_counter() - START, 1)
    out = _out_file(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(meta | {"training": training, "decoding": decoding}, indent=1))
    print(_table(training, decoding))
    print(f"wrote {out} after {meta['wall_s']} s")


if __name__ == "__main__":
    main()

"""Training throughput of one S4 layer: ours (``ssm.layers.S4``) and the S4 authors' ``S4Block``.

    source benchmarks/setup_device.sh
    python3 benchmarks/bench_s4_layer.py --out "$OUT"
    python3 benchmarks/bench_s4_layer.py --smoke --out "$(mktemp -d)"    # CPU check, tiny sizes

Both layers run in one process on the same inputs: batch 16, H 256, N 64, L in 1024, 4096 and
16384, float32 parameters, with and without bfloat16 autocast (ours turns autocast off for its
kernel and FFT convolution; theirs runs them on complex and float32 tensors, which autocast leaves
as they are). For each case: the median time of the forward pass (autograd
recording, as in training) and of forward plus backward (``triton.testing.do_bench`` on a GPU),
tokens per second (``batch * L`` over the forward-plus-backward time), the peak memory of one
forward plus backward, and our time over theirs. A small model step (the ``ssm`` backbone of 4
residual blocks around either layer, cross-entropy, AdamW) is timed the same way. The authors'
layer is checked to compute the same function as ours by copying its parameters into ours.

The authors' code (``models/s4/s4.py`` and ``extensions/kernels`` of state-spaces/s4) is read
from a git-ignored folder (``--s4-ref``, see ``benchmarks/README.md``); their Cauchy CUDA
extension is compiled for the local GPU by ``anchors.build_s4_structured_kernels``. Which Cauchy
path their layer took (CUDA extension, pykeops, or their naive PyTorch fallback) is recorded.
A layer, size or anchor that fails is recorded with its error; the rest still runs.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import sys
import tempfile
import traceback
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ssm.layers import Backbone, BackboneConfig, S4Config

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # anchors.py and provenance.py, beside this file

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

OURS, THEIRS = "ssm S4", "S4 authors' S4Block"
#: The authors' Cauchy implementations, whose calls are counted.
CAUCHY_PATHS = ("cauchy_cuda", "cauchy_keops", "cauchy_naive")


# --------------------------------------------------------------------------- the authors' layer


def _stub_module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def _prepare_imports(wheels: Path, meta: dict) -> None:
    """Make the authors' ``s4.py`` importable without pytorch_lightning (a stub of the one
    decorator it uses), with einops from the wheel folder if it is not installed, and with a
    stub ``scipy.special`` if scipy is missing (used only by inits other than LegS)."""
    notes = meta.setdefault("import_notes", [])
    lightning = _stub_module("pytorch_lightning")
    lightning.utilities = _stub_module("pytorch_lightning.utilities", rank_zero_only=lambda f: f)
    notes.append("pytorch_lightning: stub module (rank_zero_only = identity)")
    if importlib.util.find_spec("einops") is None:
        found = sorted(wheels.glob("einops-*.whl"))
        if found:
            sys.path.insert(0, str(found[-1]))  # a pure-Python wheel imports from the zip
            notes.append(f"einops: from {found[-1].name} on sys.path")
        else:
            notes.append(f"einops: not installed and no einops wheel in {wheels}")
    if importlib.util.find_spec("scipy") is None:
        scipy = _stub_module("scipy")
        scipy.special = _stub_module("scipy.special")
        notes.append("scipy: missing, stub scipy.special (LegS init does not use it)")
    try:
        import einops

        meta["einops"] = einops.__version__
    except Exception as err:  # the authors' layer will then fail to import, and say so
        meta["einops"] = repr(err)[:200]


def _build_cuda_extension(src: Path, build_dir: Path, meta: dict, device: str) -> None:
    """Compile their ``structured_kernels`` and expose it under the name their code imports."""
    if device != "cuda":
        meta["s4_cuda_extension"] = "not built: no CUDA device"
        return
    try:
        from anchors import build_s4_structured_kernels

        module, seconds = build_s4_structured_kernels(src, build_dir)
        sys.modules["structured_kernels"] = module
        meta["s4_cuda_extension"] = "built"
        meta["s4_cuda_extension_build_s"] = round(seconds, 1)
    except Exception as err:  # their layer then falls back to pykeops or naive, recorded
        meta["s4_cuda_extension"] = f"build failed: {type(err).__name__}: {str(err)[:800]}"


def import_authors_s4(ref: Path, wheels: Path, s4_src: Path, meta: dict, device: str):
    """The authors' ``s4.py`` as a module, after their CUDA extension was built (or not)."""
    _prepare_imports(wheels, meta)
    commit_file = ref / "COMMIT"
    meta["s4_authors_commit"] = (
        commit_file.read_text().strip() if commit_file.exists() else "unknown"
    )
    build_dir = Path(tempfile.gettempdir()) / "anchors" / "s4build"  # as bench.py
    _build_cuda_extension(s4_src, build_dir, meta, device)
    sys.path.insert(0, str(ref))  # extensions.kernels.cauchy, as their s4.py imports it
    spec = importlib.util.spec_from_file_location("s4_authors_s4", ref / "models/s4/s4.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["s4_authors_s4"] = module
    spec.loader.exec_module(module)
    meta["s4_authors_flags"] = {
        "has_cuda_extension": bool(getattr(module, "has_cuda_extension", False)),
        "has_pykeops": bool(getattr(module, "has_pykeops", False)),
    }
    return module, PathCounter(module, CAUCHY_PATHS)


def their_kwargs(H: int, N: int, L: int) -> dict:
    """Their S4Block set up as our layer: NPLR (their "nplr" = DPLR kernel) with LegS init,
    ``N`` states, one channel, causal, GELU after the convolution, Linear + GLU output, no
    dropout, inputs ``(B, L, H)``."""
    return dict(
        d_model=H,
        final_act="glu",
        dropout=0.0,
        transposed=False,
        mode="nplr",
        d_state=N,
        l_max=L,
        bidirectional=False,
        activation="gelu",
        init="legs",
        dt_min=1e-3,
        dt_max=1e-1,
        channels=1,
        verbose=False,
    )


class TheirLayer(nn.Module):
    """Their ``S4Block`` with our layer protocol: ``(B, L, H) -> (B, L, H)``."""

    def __init__(self, s4mod: types.ModuleType, H: int, N: int, L: int) -> None:
        super().__init__()
        self.block = s4mod.S4Block(**their_kwargs(H, N, L))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)[0]


class TheirConfig:
    """A layer config for :class:`ssm.layers.Backbone` that builds their layer."""

    def __init__(self, s4mod: types.ModuleType, N: int, L: int) -> None:
        self.s4mod, self.N, self.L = s4mod, N, L

    def build(self, d_model: int) -> TheirLayer:
        return TheirLayer(self.s4mod, d_model, self.N, self.L)


@torch.no_grad()
def copy_theirs_into_ours(theirs: TheirLayer, ours: nn.Module) -> None:
    """Our parameters set to theirs (after their first forward, which turns their C into C̃).
    Theirs: ``A = -exp(A_real) - i A_imag``, ``Δ = exp(inv_dt)``, ``P`` ``(1, H, N2)``,
    ``B`` ``(1, H, N2)``, ``C`` ``(1, H, N2)``, ``D`` ``(1, H)``; all complex as real views."""
    k, fft = theirs.block.layer.kernel, theirs.block.layer
    ok = ours.kernel
    ok.log_w_real.copy_(k.A_real)
    ok.w_imag.copy_(-k.A_imag)
    ok.P.copy_(k.P[0][:, None])
    ok.B.copy_(k.B[0])
    ok.C.copy_(k.C)
    ok.log_dt.copy_(k.inv_dt.reshape(-1))
    ours.D.copy_(fft.D[0])
    lin = theirs.block.output_linear[0]
    ours.output[0].weight.copy_(lin.weight)
    ours.output[0].bias.copy_(lin.bias)


# --------------------------------------------------------------------------- timing


def time_layer(
    make: Callable[[], nn.Module], x: torch.Tensor, bf16: bool, timer: Timer, device: str
) -> tuple[dict, nn.Module | None]:
    """Forward and forward-plus-backward times, throughput and peak memory of one layer
    (:func:`timing.time_training`), and the layer."""
    try:
        torch.manual_seed(0)
        layer = make().to(device)
    except Exception as err:  # an anchor failing to build: recorded, not fatal
        return failure(err), None
    rec, _ = time_training(layer, x, bf16, timer, device)
    return {"params": param_counts(layer), **rec}, layer


def time_model(
    layer_cfg, H: int, B: int, L: int, n_layers: int, bf16: bool, timer: Timer, device: str
) -> dict:
    """One training step of a small model: the ssm backbone (LayerNorm, pre-norm, no
    feed-forward, as S4's) of ``n_layers`` blocks around the layer, 3 input features, mean
    pooling, 10 classes, cross-entropy, AdamW."""
    rec: dict = {}
    try:
        torch.manual_seed(0)
        cfg = BackboneConfig(d_model=H, n_layers=n_layers)
        model = Backbone(cfg, layer_cfg, n_classes=10, d_input=3).to(device)
        rec["params"] = param_counts(model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.randn(B, L, 3, device=device)
        target = torch.randint(0, 10, (B,), device=device)

        def step():
            opt.zero_grad(set_to_none=True)
            with autocast(device, bf16):
                loss = nn.functional.cross_entropy(model(x).float(), target)
            loss.backward()
            opt.step()

        step()
        rec["ms_step"] = round(timer.ms(step), 4)
        rec["tokens_per_s"] = round(B * L / (rec["ms_step"] * 1e-3))
        free(device)
        mem = timer.peak_mib(step)
        if mem:
            rec.update(mem)
    except Exception as err:  # recorded, not fatal
        rec.update(failure(err))
    finally:
        free(device)
    return rec


def _ratio(ours: dict, theirs: dict, key: str) -> float | None:
    if key in ours and key in theirs and theirs[key] > 0:
        return round(ours[key] / theirs[key], 3)
    return None


def equivalence(theirs: nn.Module, H: int, N: int, L: int, x: torch.Tensor, device: str) -> dict:
    """Our layer with their parameters on the same input, float32: relative error of the
    output (theirs as the reference)."""
    try:
        ours = S4Config(d_state=N, l_max=L, bidirectional=False).build(H).to(device)
        copy_theirs_into_ours(theirs, ours)
        with torch.no_grad():
            a, b = ours(x).double(), theirs(x).double()
        return {"rel_error_ours_vs_theirs_same_params": float((a - b).norm() / b.norm())}
    except Exception as err:  # recorded, not fatal
        return {"equivalence_error": describe_error(err)}
    finally:
        free(device)


# --------------------------------------------------------------------------- main


def _out_file(out: str) -> Path:
    path = Path(out)
    return path if path.suffix == ".json" else path / "s4_layer.json"


def _table(cases: list[dict]) -> str:
    head = f"{'L':>6} {'prec':<5} {'impl':<20} {'fwd ms':>9} {'fwd+bwd':>9} {'tok/s':>11} "
    head += f"{'peak MiB':>9} {'model ms':>9}"
    lines = [head]
    for c in cases:
        for impl in (OURS, THEIRS):
            r, m = c["layer"].get(impl, {}), c.get("model_step", {}).get(impl, {})
            row = f"{c['L']:>6} {c['precision']:<5} {impl[:20]:<20} "
            if "error" in r:
                lines.append(row + r["error"][:60])
                continue
            row += (
                f"{r.get('ms_fwd', float('nan')):>9.3f} {r.get('ms_fwd_bwd', float('nan')):>9.3f} "
            )
            row += f"{r.get('tokens_per_s', 0):>11.3g} {r.get('peak_MiB', float('nan')):>9.1f} "
            row += f"{m.get('ms_step', float('nan')):>9.3f}"
            lines.append(row)
        ratio = c.get("time_ratio_ours_over_theirs", {})
        lines.append(
            f"{'':>6} {'':<5} {'ours/theirs':<20} {ratio.get('fwd') or float('nan'):>9.3f} "
            f"{ratio.get('fwd_bwd') or float('nan'):>9.3f} {'':>11} {'':>9} "
            f"{ratio.get('model_step') or float('nan'):>9.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        default="data/bench/s4_layer.json",
        help="a .json file, or a folder for s4_layer.json",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--commit", default=None, help="default: $SSM_COMMIT, else git HEAD")
    parser.add_argument(
        "--s4-ref",
        default="third_party_ref/s4",
        help="copy of state-spaces/s4 (models/s4/s4.py, extensions/kernels)",
    )
    parser.add_argument(
        "--s4-src",
        default=None,
        help="sources of their CUDA extension; default <s4-ref>/extensions/kernels",
    )
    parser.add_argument("--wheels", default=".whl")
    parser.add_argument(
        "--lengths", default=None, help="comma-separated L; default 1024,4096,16384"
    )
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--H", type=int, default=None)
    parser.add_argument("--N", type=int, default=64)
    parser.add_argument(
        "--model-layers", type=int, default=None, help="default 4 (2 with --smoke); 0 skips"
    )
    args = parser.parse_args()

    device = "cpu" if args.smoke or not torch.cuda.is_available() else "cuda"
    B = args.batch or (2 if args.smoke else 16)
    H = args.H or (16 if args.smoke else 256)
    N = args.N
    lengths = [
        int(s) for s in (args.lengths or ("64,256" if args.smoke else "1024,4096,16384")).split(",")
    ]
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    timer = Timer(device, args.smoke)
    if args.model_layers is None:
        args.model_layers = 2 if args.smoke else 4
    ref = Path(args.s4_ref)
    if not ref.is_absolute() and not ref.exists():
        ref = HERE.parent / ref  # relative to the repository root
    meta = versions(device) | {
        "benchmark": "S4 layer training throughput",
        "commit": args.commit or git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "smoke": args.smoke,
        "timer": timer.how,
        "tf32": False,
        "sizes": {"batch": B, "H": H, "N": N, "L": lengths},
        "fwd": "forward with autograd recording, as in training; fwd_bwd adds backward of a "
        "fixed random output gradient, parameter and input gradients",
        "tokens_per_s": "batch * L / fwd_bwd time",
        "ours_config": {
            "S4Config": {"d_state": N, "l_max": "L", "bidirectional": False},
            "defaults": "nplr, LegS init, dt in [1e-3, 1e-1], dropout 0, GELU, "
            "Linear(H, 2H) + GLU; kernel and FFT convolution in float32 under "
            "autocast",
        },
        "theirs_config": {
            "S4Block": their_kwargs(H, N, 0) | {"l_max": "L"},
            "source": "state-spaces/s4 models/s4/s4.py",
        },
    }
    s4mod = counter = None
    try:
        s4_src = Path(args.s4_src) if args.s4_src else ref / "extensions" / "kernels"
        s4mod, counter = import_authors_s4(ref, Path(args.wheels), s4_src, meta, device)
    except Exception as err:  # only our layer is then timed
        meta["s4_authors_import_error"] = describe_error(err)
        meta["s4_authors_import_traceback"] = traceback.format_exc(limit=4)[-1500:]
    print(json.dumps({k: v for k, v in meta.items() if k not in ("ours_config", "theirs_config")}))

    cases = []
    for L in lengths:
        for bf16 in (False, True):
            prec = "bf16" if bf16 else "fp32"
            case: dict = {
                "L": L,
                "precision": prec,
                "autocast": "bfloat16" if bf16 else None,
                "layer": {},
            }
            try:
                torch.manual_seed(1)
                x = torch.randn(B, L, H, device=device)
            except Exception as err:  # out of memory for the input itself
                case["error"] = describe_error(err)
                cases.append(case)
                continue
            case["layer"][OURS], _ = time_layer(
                lambda: S4Config(d_state=N, l_max=L, bidirectional=False).build(H),
                x,
                bf16,
                timer,
                device,
            )
            theirs = None
            if s4mod is not None:
                counter.reset()
                case["layer"][THEIRS], theirs = time_layer(
                    lambda: TheirLayer(s4mod, H, N, L), x, bf16, timer, device
                )
                case["s4_authors_cauchy_path"] = counter.used()
            else:
                case["layer"][THEIRS] = {
                    "error": "not imported: " + meta["s4_authors_import_error"]
                }
            if theirs is not None and not bf16 and "error" not in case["layer"][THEIRS]:
                case.update(equivalence(theirs, H, N, L, x, device))
            del theirs
            if args.model_layers > 0:
                case["model_step"] = {"n_layers": args.model_layers}
                case["model_step"][OURS] = time_model(
                    S4Config(d_state=N, l_max=L, bidirectional=False),
                    H,
                    B,
                    L,
                    args.model_layers,
                    bf16,
                    timer,
                    device,
                )
                if s4mod is not None:
                    case["model_step"][THEIRS] = time_model(
                        TheirConfig(s4mod, N, L), H, B, L, args.model_layers, bf16, timer, device
                    )
            o, t = case["layer"][OURS], case["layer"].get(THEIRS, {})
            mo, mt = (case.get("model_step", {}).get(k, {}) for k in (OURS, THEIRS))
            case["time_ratio_ours_over_theirs"] = {
                "fwd": _ratio(o, t, "ms_fwd"),
                "fwd_bwd": _ratio(o, t, "ms_fwd_bwd"),
                "model_step": _ratio(mo, mt, "ms_step"),
            }
            del x
            free(device)
            cases.append(case)
            print(
                json.dumps(
                    {
                        "L": L,
                        "precision": prec,
                        "ms_fwd_bwd": {
                            k: v.get("ms_fwd_bwd", v.get("error")) for k, v in case["layer"].items()
                        },
                        "ratio": case["time_ratio_ours_over_theirs"],
                    }
                )
            )

    out = _out_file(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(meta | {"cases": cases}, indent=1))
    print(_table(cases))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

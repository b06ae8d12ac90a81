"""Chapter 1's experiments return what the chapter says they show, and their plots are complete.

Each experiment runs once per module with its ``ci`` config (the config the committed notebook
uses), so these tests check the very numbers the chapter prints and explains.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from scipy.integrate import solve_ivp

import ssm
from ssm import plotting
from ssm.experiments import __main__ as cli
from ssm.experiments import (
    available,
    discretization,
    get,
    hippo_memory,
    kernel_explorer,
    s4_kernel,
    views,
)
from ssm.experiments._results import (
    PROVENANCE_KEYS,
    REPO_ROOT,
    config_hash,
    describe,
    load,
    to_jsonable,
)
from ssm.show import show_source

CH1 = ["discretization", "views", "hippo_memory", "s4_kernel", "kernel_explorer"]


def lines_with_data(ax) -> list:
    return [line for line in ax.get_lines() if len(line.get_xdata()) > 0]


def check_figure(fig, n_axes: int, min_lines: int = 1) -> None:
    assert isinstance(fig, Figure)
    assert len(fig.axes) == n_axes
    for ax in fig.axes:
        assert len(lines_with_data(ax)) >= min_lines, f"empty panel {ax.get_title()!r}"
        assert ax.get_xlabel(), f"panel {ax.get_title()!r} has no x label"


# --- the registry and the command line -------------------------------------------------------


def test_chapter_1_experiments_are_registered():
    assert set(CH1) <= set(available())


@pytest.mark.parametrize("name", available())
def test_every_experiment_has_two_profiles_and_refuses_others(name):
    """Every experiment of every chapter: ``config``, ``run`` and ``plot``, ``ci`` and ``full``
    profiles that differ, and an error naming the profile for any other."""
    module = get(name)
    assert callable(module.config) and callable(module.run) and callable(module.plot)
    assert module.config("ci") != module.config("full"), f"{name}: profiles do not differ"
    with pytest.raises(ValueError, match="profile"):
        module.config("huge")


def test_unknown_experiment_is_refused():
    with pytest.raises(ValueError, match="unknown experiment"):
        get("no_such_experiment")


def test_config_hash_is_stable_and_sensitive():
    cfg = kernel_explorer.config("full")
    assert config_hash(cfg) == config_hash(dict(reversed(list(cfg.items()))))
    assert config_hash(cfg) != config_hash(cfg | {"L": cfg["L"] + 1})
    assert re.fullmatch(r"[0-9a-f]{16}", config_hash(cfg))


def test_to_jsonable_handles_arrays_tensors_and_complex():
    out = to_jsonable(
        {1: np.arange(2), "t": torch.ones(2), "z": np.array([1j]), "f": np.float32(2)}
    )
    assert out == {"1": [0, 1], "t": [1.0, 1.0], "z": {"real": [0.0], "imag": [1.0]}, "f": 2.0}
    json.dumps(out)


def test_cli_writes_results_with_provenance(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ssm.experiments",
            "kernel_explorer",
            "--profile",
            "ci",
            "--out-dir",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "kernel_explorer.json").read_text())
    assert record["experiment"] == "kernel_explorer" and record["profile"] == "ci"
    assert set(PROVENANCE_KEYS) <= set(record["provenance"])
    prov = record["provenance"]
    assert prov["config_hash"] == config_hash(kernel_explorer.config("ci"))
    assert prov["torch"] == torch.__version__
    assert prov["wall_time_s"] >= 0
    assert re.match(r"\d{4}-\d\d-\d\dT", prov["date"])
    assert len(record["results"]["by_dt"]) == len(kernel_explorer.config("ci")["dts"])


def test_cli_in_process_can_also_save_the_figure(tmp_path):
    png = tmp_path / "fig.png"
    assert (
        cli.main(
            ["kernel_explorer", "--profile", "ci", "--out-dir", str(tmp_path), "--plot", str(png)]
        )
        == 0
    )
    assert png.read_bytes()[:4] == b"\x89PNG"


# --- discretization ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def disc():
    return discretization.run(discretization.config("ci"))


def test_exact_references_match_an_ode_solver():
    cfg = discretization.config("ci")
    A, B, C = discretization.system(cfg)
    t = np.linspace(0.05, 6.0, 60)

    def solve(u):
        sol = solve_ivp(
            lambda s, x: A @ x + B * u(s),
            (0, 6),
            [0.0, 0.0],
            t_eval=t,
            rtol=1e-11,
            atol=1e-12,
            method="DOP853",
            max_step=0.01,
        )
        return C @ sol.y

    smooth = solve(lambda s: discretization.smooth_input(cfg, np.array([s]))[0])
    assert np.abs(smooth - discretization.exact_smooth(cfg, t)).max() < 1e-8
    levels = discretization.held_levels(cfg, 6.5)
    held = solve(lambda s: levels[int(s // cfg["hold"])])
    assert np.abs(held - discretization.exact_held(cfg, t)).max() < 1e-8


def test_orders_of_the_discretizations(disc):
    s = disc["slopes"]
    for kind in ("midpoint", "endpoint", "held"):
        for method in ("euler", "backward_euler"):
            assert 0.8 < s[kind][method] < 1.3, (kind, method, s[kind][method])
    assert 1.9 < s["midpoint"]["bilinear"] < 2.1
    assert 1.9 < s["midpoint"]["zoh"] < 2.1
    assert 0.9 < s["endpoint"]["bilinear"] < 1.1
    assert 0.9 < s["endpoint"]["zoh"] < 1.1
    assert 1.9 < s["held"]["bilinear"] < 2.1
    # ZOH is exact for a held input: round-off only, so no order is fitted
    assert s["held"]["zoh"] is None
    assert max(disc["errors"]["held"]["zoh"]) < discretization.ROUNDOFF
    assert "exact" in discretization.summary(disc)


def test_forward_euler_blows_up_and_zoh_is_closest_at_the_shown_step(disc):
    tr = disc["trajectory"]
    err = {m: np.abs(np.asarray(tr["y"][m]) - tr["y_exact"]).max() for m in tr["y"]}
    assert err["euler"] > 1.0 > err["backward_euler"] > err["bilinear"] > err["zoh"]


def test_discretization_plots(disc):
    check_figure(discretization.plot_trajectory(disc), 2, min_lines=4)
    check_figure(discretization.plot_convergence(disc), 3, min_lines=4)
    check_figure(discretization.plot(disc), 3, min_lines=4)


def test_guide_lines_are_told_apart(disc):
    """Two slope guides on one panel differ in line style (not only in a shade of grey), and
    the legend names each."""
    fig = discretization.plot_convergence(disc)
    for ax in fig.axes:
        guides = [line for line in ax.get_lines() if line.get_label().startswith("$\\propto")]
        assert len(guides) == 2
        assert guides[0].get_linestyle() != guides[1].get_linestyle()
    names = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {g.get_label() for g in guides} <= set(names)


# --- views ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vw():
    """The ci run, timings included, as the chapter makes it."""
    return views.run(views.config("ci"))


def test_recurrent_and_convolutional_views_agree(vw):
    assert vw["max_abs_diff"] < 1e-10
    assert vw["output_scale"] > 0.1  # not trivially zero outputs
    np.testing.assert_allclose(vw["y_recurrent"], vw["y_convolutional"], atol=1e-10)


def test_views_timings_are_recorded(vw):
    n = len(views.config("ci")["lengths"])
    assert set(vw["timings"]) == {"recurrence", "fft_conv", "ssm_kernel"}
    assert all(len(t) == n and all(x > 0 for x in t) for t in vw["timings"].values())
    assert vw["device"] == "CPU (1 thread)"


def slope(x, y) -> float:
    return plotting.fit_loglog_slope(x, y)


def increasing(t, margin: float = 1.0) -> bool:
    """Each time above ``margin`` times the one before (``margin < 1`` allows some noise)."""
    return all(b > margin * a for a, b in itertools.pairwise(t))


def test_live_views_timings_show_what_figure_4_says(vw):
    """Figure 4's caption, on the numbers it plots: the recurrence and the kernel by its
    definition grow in proportion to L; the FFT convolution is far faster at every length and
    grows more slowly than L (never faster at a longer length)."""
    Ls, t = vw["lengths"], vw["timings"]
    for key in ("recurrence", "ssm_kernel"):
        assert increasing(t[key]), (key, t[key])
        assert 0.7 < slope(Ls, t[key]) < 1.3, (key, t[key])
    assert all(f * 5 < r for f, r in zip(t["fft_conv"], t["recurrence"], strict=True))
    assert increasing(t["fft_conv"], margin=0.85) and t["fft_conv"][-1] > t["fft_conv"][0]
    assert slope(Ls, t["fft_conv"]) < 0.8


def test_stored_views_timings_show_what_figure_5_says():
    r = load("views")["results"]
    Ls, t = np.asarray(r["lengths"]), r["timings"]
    assert 0.9 < slope(Ls, t["recurrence"]) < 1.1 and t["recurrence"][-1] > 1.0
    assert max(t["fft_conv"]) < 1e-3
    ratio = np.asarray(t["ssm_kernel"]) / np.asarray(t["recurrence"])
    assert (ratio > 0.3).all() and (ratio < 1).all()  # "about half the recurrence's time"


def test_views_timing_guides_are_told_apart(vw):
    ax = views.plot_timings(vw).axes[0]
    guides = [line for line in ax.get_lines() if line.get_label().startswith("$\\propto")]
    assert len(guides) == 2 and guides[0].get_linestyle() != guides[1].get_linestyle()


def test_views_plots(vw):
    check_figure(views.plot_outputs(vw), 2)
    check_figure(views.plot_timings(vw), 1, min_lines=3)


# --- HiPPO memory -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mem():
    return hippo_memory.run(hippo_memory.config("ci"))


def test_legs_reconstruction_improves_with_the_state_size(mem):
    rmse = [mem["rmse"][N] for N in mem["sizes"]]
    assert all(a > b for a, b in itertools.pairwise(rmse)), rmse
    assert rmse[0] > 0.2 and rmse[-1] < 0.05


def test_a_larger_legs_memory_extends_a_smaller_one():
    u = torch.from_numpy(hippo_memory.signal(hippo_memory.config("ci"), np.linspace(0, 1, 50)))
    big, small = ssm.hippo.legs_memory(u, 16), ssm.hippo.legs_memory(u, 6)
    torch.testing.assert_close(big[:, :6], small, rtol=1e-12, atol=1e-12)


def test_hippo_memory_plot(mem):
    check_figure(hippo_memory.plot(mem), len(mem["sizes"]), min_lines=2)


def test_animation_is_offline_and_has_no_random_ids(mem):
    frames = 3
    small = dict(mem, frames=mem["frames"][:frames])
    html = hippo_memory.animation(small)
    assert "http://" not in html and "https://" not in html
    assert "font-awesome" not in html and 'class="fa' not in html
    assert not re.search(r"[0-9a-f]{32}", html), "a uuid-like id is left in the HTML"
    assert html.count("data:image/png;base64,") == frames
    assert html == hippo_memory.animation(small)
    check_figure(hippo_memory.animation(mem, frame=1), 1, min_lines=2)


def test_animation_buttons_need_no_font(mem):
    """Each control button holds an inline SVG icon and no character that a font must supply,
    and carries the class the site's screenshot test looks for."""
    html = hippo_memory.animation(dict(mem, frames=mem["frames"][:2]))
    cls = plotting.ANIMATION_BUTTON_CLASS
    buttons = re.findall(rf'<button class="{cls}"[^>]*>(.*?)</button>', html, re.S)
    assert len(buttons) == 9 == html.count("<button")
    for inner in buttons:
        assert re.fullmatch(r"\s*<svg [^>]*><path [^>]*/></svg>\s*", inner), inner
        assert inner.isascii() and "&#" not in inner


def test_figures_are_rendered_for_2x_screens(mem):
    """Notebook images have twice the pixels of the figure's nominal size and say so: they are
    displayed at the nominal width, sharp on high-density screens."""
    from PIL import Image

    fig, ax = plotting.subplots(width=4.0, height=2.0)
    ax.plot([0, 1], [0, 1])
    png, meta = plotting.png_display(fig)
    width, height = Image.open(io.BytesIO(base64.b64decode(png))).size
    assert abs(meta["width"] - 400) < 40  # nominal: 4 in at 100 dpi (tight bounding box)
    assert width == 2 * meta["width"] or width == 2 * meta["width"] - 1
    assert 180 < height / 2 < 220
    frame = hippo_memory.animation(dict(mem, frames=mem["frames"][:1]))
    (shown,) = re.findall(r'<img id="[^"]+" width="(\d+)">', frame)
    data = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", frame).group(1)
    assert Image.open(io.BytesIO(base64.b64decode(data))).size[0] == 2 * int(shown)


# --- S4 kernel --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s4():
    """The ci run, timings included, as the chapter makes it."""
    return s4_kernel.run(s4_kernel.config("ci"))


def test_s4_kernel_matches_the_power_series(s4):
    assert s4["N"] == 64
    assert s4["max_abs_diff"] < 1e-8
    assert s4["max_imag"] < 1e-8
    assert s4["kernel_scale"] > 1e-2  # a kernel worth comparing


def test_c_tilde_discretizes_with_ssm_discretize(monkeypatch):
    """Bilinear discretization lives in ssm.discretize only: C̃ is built from its Ā."""
    calls = []
    real = ssm.discretize

    def spy(A, B, dt, method="zoh", **kw):
        calls.append(method)
        return real(A, B, dt, method, **kw)

    monkeypatch.setattr(ssm, "discretize", spy)
    p = s4_kernel.parameters(8, torch.Generator().manual_seed(0), torch.device("cpu"))
    ct = s4_kernel.c_tilde(p, 0.1, 16)
    assert calls == ["bilinear"]
    A = torch.diag_embed(p["w"]) - p["P"].T @ p["P"].conj()
    Ab, _ = real(A, p["Be"], 0.1, "bilinear")
    torch.testing.assert_close(ct, p["Ce"] - p["Ce"] @ torch.linalg.matrix_power(Ab, 16))


def test_live_s4_timings_show_what_figure_9_says(s4):
    """Figure 9's caption, on the numbers it plots: (a) as L grows the definition's time grows in
    proportion to L, the S4 algorithm's grows too, from a fixed overhead, and is lower at every
    L; (b) as N grows the S4 algorithm's time grows
    (O(NL) work), faster than the definition's, from below it at the smallest N."""
    tl, tn = s4["timings_L"], s4["timings_N"]
    assert all(a < b for a, b in zip(tl["s4"], tl["naive"], strict=True)), tl
    assert increasing(tl["naive"]) and 0.7 < slope(s4["lengths"], tl["naive"]) < 1.3, tl
    assert increasing(tl["s4"]) and slope(s4["lengths"], tl["s4"]) < 1.3, tl  # overhead + O(L)
    assert increasing(tn["s4"]), tn["s4"]
    assert slope(s4["sizes"], tn["s4"]) > slope(s4["sizes"], tn["naive"]) + 0.2, tn
    assert tn["s4"][0] < tn["naive"][0], tn


def test_stored_s4_timings_show_what_figure_10_says():
    r = load("s4_kernel")["results"]
    tl, tn = r["timings_L"], r["timings_N"]
    assert increasing(tl["naive"]) and tl["naive"][-1] > 1.0
    assert max(tl["s4"]) < 2.5e-3  # "within about 2 ms"
    for key in ("naive", "s4"):  # "growing N barely changes either"
        assert max(tn[key]) < 2 * min(tn[key]), (key, tn[key])


def test_s4_kernel_plots(s4):
    check_figure(s4_kernel.plot_kernels(s4), 2)
    check_figure(s4_kernel.plot_timings(s4), 2, min_lines=2)


# --- kernel explorer --------------------------------------------------------------------------


def test_kernel_explorer_static_twin():
    cfg = kernel_explorer.config("ci")
    res = kernel_explorer.run(cfg)
    fig = kernel_explorer.plot(res)
    check_figure(fig, 2, min_lines=3)
    # K/Δ read against lag ℓ is K(ℓΔ): dividing Δ by 4 moves features 4 times further out
    k_small = np.asarray(res["by_dt"][cfg["dts"][0]]) / cfg["dts"][0]
    k_large = np.asarray(res["by_dt"][cfg["dts"][1]]) / cfg["dts"][1]
    ratio = round(cfg["dts"][1] / cfg["dts"][0])
    lags = np.arange(2, len(k_large) // ratio)

    def mismatch(factor: int) -> float:
        a, b = k_small[lags * factor], k_large[lags]
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    assert mismatch(ratio) < 0.1  # same shape, up to the discretization error
    assert mismatch(ratio // 2) > 0.5  # and not any shift would do


def test_kernel_explorer_widget_holds_its_figure_and_updates():
    pytest.importorskip("ipywidgets")
    cfg = kernel_explorer.config("ci")
    w = kernel_explorer.widget(cfg)
    assert repr(w) == f"KernelExplorer(dt={cfg['dt']:.3g}, N={cfg['N']})"
    sliders, out = w.children
    _, n = sliders.children
    (first,) = out.outputs
    assert first["data"]["image/png"]
    n.value = 8
    (second,) = out.outputs
    assert second["data"]["image/png"] != first["data"]["image/png"]
    assert repr(w).endswith("N=8)")


# --- shared helpers ---------------------------------------------------------------------------


def test_show_source_renders_package_code_with_a_relative_path():
    src = show_source(ssm.fft_conv)
    md = src._repr_markdown_()
    assert "```python\ndef fft_conv(" in md
    assert "ssm/conv.py" in md and "/work/" not in md
    assert '"""' not in str(show_source("ssm.discretize._dense", docstring=False))
    assert "def _zoh_dense" in str(show_source("ssm.discretize._zoh_dense"))
    with pytest.raises(ValueError):
        show_source(42)
    with pytest.raises(ValueError):
        show_source("ssm.no_such_thing")


def test_png_output_is_compact_and_valid():
    fig, ax = plotting.subplots()
    ax.plot([0, 1], [0, 1])
    data = plotting.png_bytes(fig)
    assert data[:4] == b"\x89PNG"
    raw = io.BytesIO()
    fig.savefig(raw, format="png", bbox_inches="tight")
    assert len(data) < len(raw.getvalue())


@pytest.mark.parametrize("name", ["views", "s4_kernel"])
def test_stored_full_results_match_the_current_full_config(name):
    """The chapter plots these stored GPU runs: they must come from today's full config."""
    record = load(name)
    assert record["profile"] == "full"
    assert set(PROVENANCE_KEYS) <= set(record["provenance"])
    assert record["provenance"]["config_hash"] == config_hash(get(name).config("full")), (
        f"data/results/{name}.json is stale: rerun `python -m ssm.experiments {name} "
        "--profile full` on a GPU"
    )
    assert record["provenance"]["device"].startswith("cuda")
    assert describe(record).startswith(f"{name}, full profile")
    # the stored results plot like live ones
    plot = views.plot_timings if name == "views" else s4_kernel.plot_timings
    assert isinstance(plot(record["results"]), Figure)

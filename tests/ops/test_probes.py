"""The probe of every op (a tiny run of its kernel compared with its reference, which decides
the "auto" backend) in the modes a first call may be made in: inside the dispatcher's clean
context it passes whatever the caller's grad, inference or autocast mode."""

from __future__ import annotations

import pytest
from modes import caller_modes

from ssm.ops import cauchy, dispatch, fftconv, s4d_step, selective_scan, ssd, vandermonde

PROBES = {
    "selective_scan": selective_scan._probe_scan,
    "selective_state_update": selective_scan._probe_step,
    "ssd": ssd._probe_ssd,
    "ssd_state_update": ssd._probe_update,
    "cauchy": cauchy._probe,
    "vandermonde": vandermonde._probe,
    "vandermonde_transpose": vandermonde._probe_transpose,
    "fftconv": fftconv._probe,
    "s4d_step": s4d_step._probe,
}
WITH_BACKWARD = ["selective_scan", "ssd"]  # probes that also check the gradients


@pytest.mark.triton
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode", "autocast"])
@pytest.mark.parametrize("op", list(PROBES))
def test_probe_passes_in_its_clean_context_whatever_the_callers(device, op, mode):
    with caller_modes(device)[mode](), dispatch._clean_context(device):
        PROBES[op](device)


@pytest.mark.triton
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("op", WITH_BACKWARD)
def test_probe_fails_in_the_callers_context_without_grad(device, op, mode):
    """What the clean context protects from: the probe run directly under no_grad or
    inference_mode fails (its backward pass has no graph), which was once cached as a
    permanent fallback to the reference."""
    with caller_modes(device)[mode](), pytest.raises(RuntimeError):
        PROBES[op](device)

"""Accelerated ops: one folder per op with ``reference.py`` (the paper's equation in PyTorch),
``triton.py`` (the fast path, same signature) and a README with the derivation.

Every public function checks its arguments (:mod:`ssm._checks`: errors that name the argument),
then asks :func:`ssm.ops.dispatch.choose` for the path (the ``backend=`` argument or
``SSM_BACKEND``, one float64 policy, a probe of the kernel on each GPU); the Triton launchers
make their inputs contiguous with :func:`ssm.ops.common.contiguous`.

Why two spellings of the step size: the selective scan takes ``delta``, ``delta_bias`` and
``delta_softplus`` as ``mamba_ssm``'s ``selective_scan_fn`` does, while the decoding steps and SSD
take ``dt``, ``dt_bias`` and ``dt_softplus`` as its ``selective_state_update`` and
``mamba_chunk_scan_combined`` do; keeping both lets code written against ``mamba_ssm`` switch
without renaming. Both mean ``Δ = softplus(δ + bias)`` (:func:`ssm.ops.common.step_size`).
"""

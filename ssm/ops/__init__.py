"""Accelerated ops: one folder per op with ``reference.py`` (the paper's equation in PyTorch),
``triton.py`` (the fast path, same signature) and a README with the derivation. The public
function of each op picks the path through :func:`ssm.ops.dispatch.choose`."""

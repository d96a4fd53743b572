"""The deflation flow on PyTorch tensors: the optional GPU backend (``backend="cuda"``), and
``backend="torch"`` (the same code on torch's default device, the CPU unless changed).

Why PyTorch (rather than CUDA kernels in the extension, or CuPy):

* the work is fp64 GEMMs on Gram blocks plus elementwise powers, which cuBLAS (through
  ``torch.mm``/``addmm``) runs at the device's fp64 peak; a hand-written CUDA kernel would gain
  little and need a CUDA toolchain at build time, which the wheel must not require;
* it installs as an optional extra (``pip install 'tdflow[gpu]'``) that the core never imports;
* the same code runs on the CPU (``backend="torch"``), so it is tested on machines without a GPU
  against the C++ core, to rounding (tests/test_gpu.py, run in CI on the CPU).

The layers mirror the core's, one file each, all imported only once torch is:

* :mod:`tdflow.torch_kernels` -- the tensor kernels (flow.hpp): Gram-block contractions, the
  same exponent-bucket active set, the right-hand side in unit directions, the loss;
* :mod:`tdflow.torch_stepper` -- one explicit Runge-Kutta stepper and its fixed / adaptive
  drivers (runge_kutta.hpp, integrate.hpp) over the tableaux and the step-size controller's
  constants exported by the core (``_core.tableau``): no coefficient is written in Python, and
  every method of ``_core.methods()`` runs here;
* :mod:`tdflow.torch_events` -- Definition 1 and Proposition 1 of Algorithm 2 on every accepted
  step (events.hpp), so ``tdflow.deflate(..., backend="cuda")`` runs its phases there;
* this module -- the entry point: the backends, the device, and a run's records.

States stay on the device for the whole run; only recordings (and a few scalars per step) come
back to the host.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

torch = None  # imported on first use: ``import tdflow`` must stay fast and work without torch

BACKENDS = ("cpu", "cuda", "torch")


def require_torch():
    """The torch module, or an ImportError that says how to get it."""
    global torch
    if torch is None:
        try:
            import torch as module
        except ImportError as err:
            raise ImportError("backend 'cuda'/'torch' needs PyTorch: pip install 'tdflow[gpu]' "
                              "(or pip install torch)") from err
        torch = module
    return torch


def device_for(backend: str):
    """The torch device of ``backend`` ("cuda": the current CUDA device; "torch": torch's
    default device). Raises ImportError without torch, RuntimeError without CUDA."""
    require_torch()
    if backend == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("backend='cuda' needs a CUDA device, but torch.cuda.is_available() "
                               "is False (a CPU-only torch build, or no GPU visible); use "
                               "backend='cpu' (the C++ core) or backend='torch'")
        return torch.device("cuda", torch.cuda.current_device())
    if backend == "torch":
        get = getattr(torch, "get_default_device", None)
        return get() if get is not None else torch.empty(0).device
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def __getattr__(name: str):
    """``TorchFlow`` (:class:`tdflow.torch_kernels.TorchFlow`), imported with torch on first use."""
    if name == "TorchFlow":
        require_torch()
        from .torch_kernels import TorchFlow

        return TorchFlow
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Recorder:
    """What a run records at each requested time (on the host)."""

    def __init__(self, flow, save_norms: bool, save_states: bool):
        self.flow, self.save_norms, self.save_states = flow, save_norms, save_states
        self.ts, self.losses, self.rnorms, self.dirs, self.norms, self.states = [], [], [], [], [], []

    def __call__(self, t: float, W) -> None:
        f = self.flow
        self.ts.append(t)
        rn2 = f.residual_norm_squared(W)
        with np.errstate(invalid="ignore"):
            self.rnorms.append(float(np.sqrt(rn2)))
        self.losses.append(0.5 * rn2 + 0.5 * f.lam * float((W * W).sum()))
        self.dirs.append(f.directional_residual(W).cpu().numpy())
        if self.save_norms:
            self.norms.append(torch.sqrt((W * W).sum(0)).cpu().numpy())
        if self.save_states:
            self.states.append(W.cpu().numpy())

    def to_dict(self, W: np.ndarray, r: int, d: int) -> dict:
        n = len(self.ts)
        out = dict(t=np.array(self.ts, dtype=float), loss=np.array(self.losses, dtype=float),
                   residual_norm=np.array(self.rnorms, dtype=float),
                   directional_residual=np.array(self.dirs, dtype=float).reshape(n, r), W=W)
        if self.save_norms:
            out["norms"] = np.array(self.norms, dtype=float).reshape(n, W.shape[1])
        if self.save_states:
            out["states"] = np.array(self.states, dtype=float).reshape(n, d, W.shape[1])
        return out


def integrate(flow, W0: np.ndarray, t0: float, t_eval, method: str, h: float, rtol: float,
              atol: float, max_step: float, max_steps: int, save_norms: bool, save_states: bool,
              update: Optional[Callable[[float], None]] = None, interval: float = 0.1,
              hook=None) -> dict:
    """Run ``method`` on ``flow`` (a :class:`tdflow.torch_kernels.TorchFlow`); returns the same
    dict as the core's ``integrate`` (``error``: an exception raised by Ctrl-C or by ``update``
    during the run, else None). ``hook``: see :class:`tdflow.torch_stepper.Run`."""
    from .torch_stepper import Run, tableau

    rec = Recorder(flow, bool(save_norms), bool(save_states))
    run = Run(flow, flow.to_device(W0), float(t0), [float(t) for t in t_eval], rec, update,
              interval, hook)
    try:
        if hook is not None:
            hook.start(run.t, run.W)
        if tableau(method)["adaptive"]:
            run.adaptive(method, h, rtol, atol, max_step, max_steps)
        else:
            run.fixed(method, h, max_steps)
    except KeyboardInterrupt as err:
        run.status, run.error = "stopped", err
    if run.status == "finished" and update is not None:
        run.tick(run.t, force=True)
    out = rec.to_dict(flow.to_host(run.W), flow.U.shape[1], flow.U.shape[0])
    out.update(status=run.status, t_final=run.t, n_steps=run.n_steps, n_rhs=run.n_rhs,
               n_rejected=run.n_rejected, h_last=run.h_last, error=run.error)
    return out

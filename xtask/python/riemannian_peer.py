"""The PyTorch side of fm's Riemannian flow-matching comparison on the sphere S^2.

Trains a velocity field on S^2 (Chen & Lipman 2024) with Meta's `flow_matching`
library: its `Sphere` manifold, the `GeodesicProbPath` with a `CondOTScheduler`
(x_t = exp_{x0}(t log_{x0}(x1)), target dx_t from the library's jvp), and
samples with its `RiemannianODESolver` (midpoint, projx and proju at every
step). The test log-likelihood is fm's estimator, written here because the
library has none. Reports one JSON line on stdout:

    {"steps", "batch_size", "train_seconds", "steps_per_s", "loss_final",
     "nll_nats", "nll_se", "likelihood_seconds", "likelihood_nfe",
     "sample_seconds", "sample_nfe", "n_test", "torch", "flow_matching", "threads"}

Progress goes to stderr. Data files are CSVs with a header `x,y,z` and one unit
vector per row.

    python riemannian_peer.py --train train.csv --test test.csv --steps 2000 --samples-out s.csv

Model: an MLP on [t, x] (time first), hidden widths --hidden, SiLU, a Linear to
3; PyTorch's default init. The velocity is v = proju(x, f(t, x)). Loss: the mean
over the batch of |v - dx_t|^2. Adam at a constant --lr; x1 drawn with
replacement from the training set, x0 uniform on S^2, t ~ U(0, 1).

Likelihood: the augmented ODE (x, l) with dx/dt = v, dl/dt = div_M v, integrated
from t = 1 (the test point) back to t = 0 by --likelihood-steps classical RK4
steps; stage points are evaluated at projx(stage point) and x is projected back
onto the sphere after each step. div_M v = tr(P J_v), with P = I - x x^T and J_v
the exact ambient 3x3 Jacobian of v = P(x) f(t, x) (torch.func.jacfwd under
vmap). Then log p1(x1) = log(1/(4 pi)) + l(0), and nll_nats = -mean log p1.
"""

import argparse
import csv
import json
import math
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.func import jacfwd, vmap

import flow_matching
from flow_matching.path import GeodesicProbPath
from flow_matching.path.scheduler import CondOTScheduler
from flow_matching.solver import RiemannianODESolver
from flow_matching.utils import ModelWrapper
from flow_matching.utils.manifolds import Sphere

LOG_UNIFORM = -math.log(4 * math.pi)  # the uniform density on S^2 is 1 / (4 pi)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class MLP(nn.Module):
    """f(t, x): Linear(4, h1), SiLU, ..., Linear(h_last, 3), on [t, x]."""

    def __init__(self, hidden):
        super().__init__()
        layers, width = [], 4
        for h in hidden:
            layers += [nn.Linear(width, h), nn.SiLU()]
            width = h
        layers.append(nn.Linear(width, 3))
        self.net = nn.Sequential(*layers)

    def forward(self, x, t):
        """x: (..., 3); t: a scalar, one time per row (...), or (..., 1)."""
        t = torch.as_tensor(t, dtype=x.dtype)
        if t.dim() == x.dim() - 1:
            t = t.unsqueeze(-1)
        t = t.expand_as(x[..., :1])
        return self.net(torch.cat([t, x], dim=-1))


class Velocity(ModelWrapper):
    """v(x, t) = proju(x, f(t, x)), with a scalar or per-row t; counts calls."""

    calls = 0

    def __init__(self, model, manifold):
        super().__init__(model)
        self.manifold = manifold

    def forward(self, x, t, **extras):
        Velocity.calls += 1
        return self.manifold.proju(x, self.model(x, t))


def uniform_sphere(n):
    x = torch.randn(n, 3)
    return x / x.norm(dim=-1, keepdim=True)


def read_points(file):
    with open(file, newline="") as fh:
        rows = list(csv.reader(fh))
    if [c.strip() for c in rows[0]] != ["x", "y", "z"]:
        raise SystemExit(f"{file}: expected the header x,y,z, got {rows[0]}")
    x = torch.tensor([[float(v) for v in r] for r in rows[1:] if r], dtype=torch.float32)
    norms = x.norm(dim=-1)
    if (norms - 1).abs().max() > 1e-3:
        raise SystemExit(f"{file}: rows are not unit vectors (|x| in [{norms.min():.4f}, {norms.max():.4f}])")
    return x / norms.unsqueeze(-1)


def write_points(file, x):
    np.savetxt(file, x.numpy(), delimiter=",", header="x,y,z", comments="", fmt="%.7f")


def train(args, model, velocity, path, x_train):
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    losses = []
    every = max(args.steps // 10, 1)
    start = time.perf_counter()
    for i in range(args.steps):
        x1 = x_train[torch.randint(0, x_train.shape[0], (args.batch_size,))]
        x0 = uniform_sphere(args.batch_size)
        t = torch.rand(args.batch_size)
        sample = path.sample(x_0=x0, x_1=x1, t=t)
        v = velocity(sample.x_t, sample.t)
        loss = (v - sample.dx_t).pow(2).sum(dim=-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (i + 1) % every == 0:
            log(f"step {i + 1:6d}  loss {losses[-1]:8.4f}  (mean of last {every}: {np.mean(losses[-every:]):.4f})")
    return losses, time.perf_counter() - start


def velocity_and_divergence(model, x, t):
    """v = P(x) f(t, x) and div_M v = tr(P J_v) for a batch x: (n, 3) on S^2."""

    def v_single(xi):
        f = model(xi, t)
        v = f - (xi * f).sum() * xi
        return v, v

    jac, v = vmap(jacfwd(v_single, has_aux=True))(x)  # jac: (n, 3, 3), d v_i / d x_j
    trace = jac.diagonal(dim1=-2, dim2=-1).sum(-1)
    xjx = torch.einsum("ni,nij,nj->n", x, jac, x)
    return v, trace - xjx


@torch.no_grad()
def log_likelihood(model, x1_all, steps, chunk=1000):
    """log p1 for each row of x1_all, by the reverse-time augmented RK4 ODE."""
    out = torch.empty(x1_all.shape[0], dtype=torch.float64)
    h = -1.0 / steps
    proj = lambda y: y / y.norm(dim=-1, keepdim=True)
    for lo in range(0, x1_all.shape[0], chunk):
        x = x1_all[lo:lo + chunk]
        ell = torch.zeros(x.shape[0], dtype=torch.float64)
        for k in range(steps):
            t = 1.0 - k / steps
            k1, d1 = velocity_and_divergence(model, x, t)
            k2, d2 = velocity_and_divergence(model, proj(x + 0.5 * h * k1), t + 0.5 * h)
            k3, d3 = velocity_and_divergence(model, proj(x + 0.5 * h * k2), t + 0.5 * h)
            k4, d4 = velocity_and_divergence(model, proj(x + h * k3), t + h)
            x = proj(x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4))
            ell += (h / 6) * (d1 + 2 * d2 + 2 * d3 + d4).double()
        out[lo:lo + chunk] = LOG_UNIFORM + ell  # l(0) = -int_0^1 div dt
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", required=True, help="CSV x,y,z of unit vectors")
    ap.add_argument("--test", help="CSV x,y,z of held-out unit vectors (the NLL is reported on these)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--hidden", default="256,256,256", help="comma-separated hidden widths")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-samples", type=int, default=5000)
    ap.add_argument("--sample-steps", type=int, default=100, help="midpoint steps of the library's sampler")
    ap.add_argument("--samples-out", help="CSV x,y,z for the samples")
    ap.add_argument("--likelihood-steps", type=int, default=100, help="RK4 steps of the likelihood ODE")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    torch.manual_seed(args.seed)
    hidden = [int(h) for h in args.hidden.split(",") if h]

    x_train = read_points(args.train)
    manifold = Sphere()
    model = MLP(hidden)
    velocity = Velocity(model, manifold)
    path = GeodesicProbPath(scheduler=CondOTScheduler(), manifold=manifold)
    log(f"training {args.steps} steps on {x_train.shape[0]} points: batch {args.batch_size}, lr {args.lr}, "
        f"hidden {hidden}, threads {args.threads}")
    losses, train_seconds = train(args, model, velocity, path, x_train)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    result = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "train_seconds": train_seconds,
        "steps_per_s": args.steps / train_seconds if train_seconds > 0 else None,
        "loss_final": float(np.mean(losses[-100:])) if losses else None,
    }

    result.update({"nll_nats": None, "nll_se": None, "likelihood_seconds": None, "likelihood_nfe": None,
                   "n_test": None})
    if args.test:
        x_test = read_points(args.test)
        t0 = time.perf_counter()
        logp = log_likelihood(model, x_test, args.likelihood_steps)
        seconds = time.perf_counter() - t0
        n = logp.shape[0]
        result.update({
            "nll_nats": -logp.mean().item(),
            "nll_se": (logp.std() / math.sqrt(n)).item() if n > 1 else None,
            "likelihood_seconds": seconds,
            "likelihood_nfe": 4 * args.likelihood_steps,
            "n_test": n,
        })
        log(f"test NLL {result['nll_nats']:.4f} +- {result['nll_se']:.4f} nats on {n} points ({seconds:.1f} s)")

    result.update({"sample_seconds": None, "sample_nfe": None})
    if args.n_samples > 0:
        torch.manual_seed(args.seed + 1)
        solver = RiemannianODESolver(manifold=manifold, velocity_model=velocity)
        x_init = uniform_sphere(args.n_samples)
        Velocity.calls = 0
        t0 = time.perf_counter()
        samples = solver.sample(
            x_init=x_init,
            step_size=None,  # the grid below gives exactly --sample-steps steps
            time_grid=torch.linspace(0.0, 1.0, args.sample_steps + 1),
            method="midpoint",
            projx=True,
            proju=True,
        )
        result.update({"sample_seconds": time.perf_counter() - t0, "sample_nfe": Velocity.calls})
        if args.samples_out:
            write_points(args.samples_out, samples)

    result.update({"torch": torch.__version__, "flow_matching": getattr(flow_matching, "__version__", None),
                   "threads": args.threads})
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

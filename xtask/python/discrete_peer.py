"""The PyTorch side of fm's 2-D discrete flow-matching comparison.

Trains the 2-D discrete example of Meta's `flow_matching` library
(examples/2d_discrete_flow_matching.ipynb: discretized checkerboard, 128 values
per coordinate, two tokens per point, a small MLP posterior, a polynomial
mixture path, the generalized-KL loss) with that library's path, loss and
Euler sampler, then reports one JSON line on stdout:

    {"steps", "train_seconds", "steps_per_s", "elbo_nats", "elbo_bits_per_token",
     "sample_seconds", "nfe", "loss_final", "torch", "flow_matching", ...}

Every default is the notebook's setting (30001 steps of batch 4096, which is
long on a CPU: pass --steps). Progress goes to stderr.

    python discrete_peer.py --steps 2000 --test test.npy --samples-out s.npy

The ELBO is fm's estimator (crates/fm-core/src/discrete/elbo.rs): stratified
Monte Carlo in tau = -log(1 - kappa_t) over (0, tau_max] (one uniform tau per
point in each of the equal cells, and one draw of x_t there), and the
per-token generalized KL of `MixturePathGeneralizedKL` divided by its jump
coefficient (the weight kappa'/(1-kappa) dt is d tau).

The notebook's model has a logit for the mask token (its output vocabulary is
129 with a mask source), so its softmax may put mass on the mask. fm's posterior
lives on the 128 data tokens. `elbo_nats` uses the posterior renormalised over
the 128 data tokens (so p(mask) = 0, exactly fm's formula); `elbo_nats_library`
is the same integral with the library's own 129-way softmax, where a mask x_t
scores -(p(mask) + log p(x1)) as in MixturePathGeneralizedKL. They differ at
second order in p(mask) and coincide for a uniform source.
"""

import argparse
import json
import math
import sys
import time

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

import flow_matching
from flow_matching.loss import MixturePathGeneralizedKL
from flow_matching.path import MixtureDiscreteProbPath
from flow_matching.path.scheduler import PolynomialConvexScheduler
from flow_matching.solver import MixtureDiscreteEulerSolver
from flow_matching.utils import ModelWrapper

VOCAB = 128  # data values per coordinate
EPSILON = 1e-3  # the notebook trains on t in [0, 1 - eps) and samples up to 1 - eps


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def checkerboard(n, vocab=VOCAB):
    """The notebook's discrete checkerboard: a 4x4 board of cells `vocab/4` wide,
    x1 uniform, x2 uniform within the cells of the matching colour."""
    assert vocab % 4 == 0
    cell = vocab // 4
    x1 = torch.randint(0, vocab, (n,))
    within = torch.randint(0, cell, (n,))
    lower_half = torch.randint(0, 2, (n,))
    x2 = within + 2 * cell - lower_half * 2 * cell + torch.div(x1, cell, rounding_mode="floor") % 2 * cell
    return torch.stack([x1, x2], dim=1).long()


class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class Denoiser(nn.Module):
    """The notebook's posterior MLP: a token embedding per position (width
    `hidden`), the scalar time through a learned Linear(1, 1), concatenated,
    then Swish, three hidden Linear+Swish layers of width `hidden` and a Linear
    to `vocab` logits per position (the mask token's logit included)."""

    def __init__(self, vocab, hidden, length=2, time_dim=1):
        super().__init__()
        self.vocab, self.length = vocab, length
        self.time_embedding = nn.Linear(1, time_dim)
        self.token_embedding = nn.Embedding(vocab, hidden)
        layers = [Swish(), nn.Linear(hidden * length + time_dim, hidden), Swish()]
        layers += [nn.Linear(hidden, hidden), Swish(), nn.Linear(hidden, hidden), Swish()]
        layers += [nn.Linear(hidden, vocab * length)]
        self.main = nn.Sequential(*layers)

    def forward(self, x, t):
        e = self.token_embedding(x).flatten(1)
        h = torch.cat([e, self.time_embedding(t.unsqueeze(-1))], dim=1)
        return self.main(h).view(x.shape[0], self.length, self.vocab)


class Posterior(ModelWrapper):
    """softmax of the logits, as the notebook hands the solver; counts calls."""

    calls = 0

    def forward(self, x, t, **extras):
        Posterior.calls += 1
        return torch.softmax(self.model(x, t, **extras), dim=-1)


def source_like(x1, source, mask_id):
    if source == "mask":
        return torch.full_like(x1, mask_id)
    return torch.randint_like(x1, high=VOCAB)


def train(args, model, path, mask_id):
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gkl = MixturePathGeneralizedKL(path=path)
    warmup = min(args.warmup, max(args.steps - 1, 0))
    losses = []
    start = None
    for i in range(args.steps):
        if i == warmup:
            start = time.perf_counter()
        opt.zero_grad()
        x1 = checkerboard(args.batch_size)
        x0 = source_like(x1, args.source, mask_id)
        t = torch.rand(x1.shape[0]) * (1 - EPSILON)
        sample = path.sample(t=t, x_0=x0, x_1=x1)
        logits = model(sample.x_t, sample.t)
        if args.loss == "kl":
            loss = gkl(logits=logits, x_1=x1, x_t=sample.x_t, t=sample.t)
        else:
            loss = F.cross_entropy(logits.flatten(0, 1), x1.flatten())
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (i + 1) % max(args.steps // 10, 1) == 0:
            recent = losses[-max(args.steps // 10, 1):]
            log(f"step {i + 1:6d}  loss {losses[-1]:9.4f}  (mean of last {len(recent)}: {np.mean(recent):.4f})")
    seconds = time.perf_counter() - start if start is not None else 0.0
    return losses, seconds, args.steps - warmup


@torch.no_grad()
def elbo(model, x1_all, args, mask_id, chunk=65536):
    """Per point ELBO in nats, both variants (see the module docs)."""
    q, tau_max, p_exp = args.elbo_nodes, args.elbo_tau_max, args.scheduler_n
    dtau = tau_max / q
    out_fm = torch.zeros(x1_all.shape[0], dtype=torch.float64)
    out_lib = torch.zeros(x1_all.shape[0], dtype=torch.float64)
    for k in range(q):
        for lo in range(0, x1_all.shape[0], chunk):
            x1 = x1_all[lo:lo + chunk]
            tau = (k + torch.rand(x1.shape[0], dtype=torch.float64)) * dtau
            keep = torch.exp(-tau).unsqueeze(1)  # 1 - kappa: the chance of still being at the source
            t = (-torch.expm1(-tau)) ** (1.0 / p_exp)
            at_source = torch.rand(x1.shape, dtype=torch.float64) < keep
            xt = torch.where(at_source, source_like(x1, args.source, mask_id), x1)
            t = t.to(torch.float32)
            logits = model(xt, t).double()
            same = xt == x1
            for variant, lg, acc in (("fm", logits[..., :VOCAB], out_fm), ("lib", logits, out_lib)):
                logp = torch.log_softmax(lg, dim=-1)
                logp_x1 = logp.gather(-1, x1.unsqueeze(-1)).squeeze(-1)
                in_range = xt < lg.shape[-1]
                p_xt = logp.gather(-1, xt.clamp(max=lg.shape[-1] - 1).unsqueeze(-1)).squeeze(-1).exp()
                p_xt = torch.where(in_range, p_xt, torch.zeros_like(p_xt))
                ell = torch.where(same, 1.0 - p_xt, -(p_xt + logp_x1))
                acc[lo:lo + chunk] -= dtau * ell.sum(dim=1)
    return out_fm, out_lib


def load_test(file):
    a = np.load(file)
    if a.ndim != 2 or a.shape[1] != 2:
        raise SystemExit(f"--test: expected an (n, 2) array, got shape {a.shape}")
    x = torch.from_numpy(np.rint(a.astype(np.float64)).astype(np.int64))
    if x.min() < 0 or x.max() >= VOCAB:
        raise SystemExit(f"--test: tokens outside [0, {VOCAB})")
    return x


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30001, help="training iterations (the notebook: 30001)")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--source", choices=["mask", "uniform"], default="uniform")
    ap.add_argument("--scheduler-n", type=float, default=2.0, help="kappa_t = t^n")
    ap.add_argument("--loss", choices=["kl", "ce"], default="kl")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5, help="training steps before the clock starts")
    ap.add_argument("--test", help="(n, 2) .npy of held-out tokens in [0, 128)")
    ap.add_argument("--n-samples", type=int, default=0)
    ap.add_argument("--sample-steps", type=int, default=64, help="Euler step size 1/K (the notebook: 64)")
    ap.add_argument("--samples-out", help="where the (M, 2) float32 samples go")
    ap.add_argument("--elbo-nodes", type=int, default=64)
    ap.add_argument("--elbo-tau-max", type=float, default=16.0)
    ap.add_argument("--write-test-csv", help="write --n-test held-out points of the notebook's generator "
                    "(seed + 3) as cell centres in [-4, 4] (columns x,y), and use them as --test")
    ap.add_argument("--n-test", type=int, default=20000)
    args = ap.parse_args()

    if args.write_test_csv:
        torch.manual_seed(args.seed + 3)
        tokens = checkerboard(args.n_test)
        centres = -4.0 + (tokens.double() + 0.5) * (8.0 / VOCAB)
        np.savetxt(args.write_test_csv, centres.numpy(), delimiter=",", header="x,y", comments="", fmt="%.6f")
        test_npy = args.write_test_csv + ".tokens.npy"
        np.save(test_npy, tokens.numpy().astype(np.int64))
        args.test = test_npy

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    mask_id = VOCAB if args.source == "mask" else None
    vocab_in = VOCAB + (1 if args.source == "mask" else 0)

    model = Denoiser(vocab_in, args.hidden)
    path = MixtureDiscreteProbPath(scheduler=PolynomialConvexScheduler(n=args.scheduler_n))
    log(f"training {args.steps} steps: batch {args.batch_size}, lr {args.lr}, hidden {args.hidden}, "
        f"source {args.source}, kappa=t^{args.scheduler_n}, loss {args.loss}, threads {args.threads}")
    losses, train_seconds, timed = train(args, model, path, mask_id)
    model.eval()
    result = {
        "steps": args.steps,
        "warmup_steps": args.steps - timed,
        "train_seconds": train_seconds,
        "steps_per_s": timed / train_seconds if train_seconds > 0 else None,
        "loss_final": losses[-1] if losses else None,
        "loss_mean_last100": float(np.mean(losses[-100:])) if losses else None,
    }

    if args.test:
        x_test = load_test(args.test)
        torch.manual_seed(args.seed + 1)
        t0 = time.perf_counter()
        e_fm, e_lib = elbo(model, x_test, args, mask_id)
        log(f"elbo on {x_test.shape[0]} points: {time.perf_counter() - t0:.1f} s")
        nats = e_fm.mean().item()
        result.update({
            "elbo_nats": nats,
            "elbo_bits_per_token": nats / (2 * math.log(2)),
            "elbo_nats_library": e_lib.mean().item(),
            "elbo_stderr_nats": (e_fm.std() / math.sqrt(e_fm.shape[0])).item() if e_fm.shape[0] > 1 else None,
            "n_test": x_test.shape[0],
        })
    else:
        result.update({"elbo_nats": None, "elbo_bits_per_token": None})

    if args.n_samples > 0:
        torch.manual_seed(args.seed + 2)
        solver = MixtureDiscreteEulerSolver(model=Posterior(model), path=path, vocabulary_size=vocab_in)
        x_init = source_like(torch.zeros(args.n_samples, 2, dtype=torch.long), args.source, mask_id)
        Posterior.calls = 0
        t0 = time.perf_counter()
        samples = solver.sample(
            x_init=x_init,
            step_size=1.0 / args.sample_steps,
            time_grid=torch.tensor([0.0, 1.0 - EPSILON]),
        )
        sample_seconds = time.perf_counter() - t0
        masked = int((samples >= VOCAB).any(dim=1).sum())
        if masked:
            log(f"warning: {masked} samples still hold a mask token")
        if args.samples_out:
            np.save(args.samples_out, samples.numpy().astype(np.float32))
        result.update({"sample_seconds": sample_seconds, "nfe": Posterior.calls, "samples_with_mask": masked})
    else:
        result.update({"sample_seconds": None, "nfe": None})

    result.update({"torch": torch.__version__, "flow_matching": getattr(flow_matching, "__version__", None)})
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

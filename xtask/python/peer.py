"""The PyTorch side of `cargo xtask bench`: the same workloads as `fm-bench`
(crates/fm-bench), with the same sizes, dtype (f32), thread count and the same
deterministic weights and points (the formulas of crates/fm-bench/src/fixtures.rs).

    python peer.py serve [--quick] [--threads N]   # requests `NAME ITERS` on stdin, JSON lines out
    python peer.py mem NAME [--quick] [--threads N]

Uses torchcfm (the CFM matcher, the exact OT plan) and torchdiffeq (the ODE
solves), as a PyTorch user of flow matching would.
"""

import json
import math
import sys
import time

import torch
import torchdiffeq
from torchcfm.conditional_flow_matching import (
    ConditionalFlowMatcher,
    ExactOptimalTransportConditionalFlowMatcher,
)
from torchcfm.optimal_transport import OTPlanSampler


def weight_values(k, out, inp):
    bound = 1.0 / math.sqrt(inp)
    return torch.tensor(
        [bound * math.sin(0.7 * n + 1.3 * k + 0.1) for n in range(out * inp)], dtype=torch.float64
    ).to(torch.float32).reshape(out, inp)


def bias_values(k, out, inp):
    bound = 1.0 / math.sqrt(inp)
    return torch.tensor([bound * math.cos(0.3 * i + k) for i in range(out)], dtype=torch.float64).to(
        torch.float32
    )


def points(n, d):
    return torch.tensor(
        [1.5 * math.sin(1.7 * m + 0.5) for m in range(n * d)], dtype=torch.float64
    ).to(torch.float32).reshape(n, d)


def bench_mlp():
    widths = [3, 256, 256, 256, 2]
    layers = []
    for k in range(len(widths) - 1):
        lin = torch.nn.Linear(widths[k], widths[k + 1])
        with torch.no_grad():
            lin.weight.copy_(weight_values(k, widths[k + 1], widths[k]))
            lin.bias.copy_(bias_values(k, widths[k + 1], widths[k]))
        layers.append(lin)
        if k < len(widths) - 2:
            layers.append(torch.nn.SiLU())
    return torch.nn.Sequential(*layers)


class Field(torch.nn.Module):
    """u(t, x) = MLP(concat(t, x)), counting evaluations."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.nfe = 0

    def forward(self, t, x):
        self.nfe += 1
        tt = t.reshape(1, 1).expand(x.shape[0], 1).to(x.dtype)
        return self.net(torch.cat([tt, x], dim=1))


class Train:
    def __init__(self, batch, ot=False):
        self.net = bench_mlp()
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=1e-3, weight_decay=0.01)
        self.fm = ExactOptimalTransportConditionalFlowMatcher(sigma=0.0) if ot else ConditionalFlowMatcher(sigma=0.0)
        self.x1 = points(batch, 2)

    def run(self):
        x0 = torch.randn_like(self.x1)
        t, xt, ut = self.fm.sample_location_and_conditional_flow(x0, self.x1)
        v = self.net(torch.cat([t[:, None], xt], dim=1))
        loss = torch.mean((v - ut) ** 2)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        loss.item()
        return {}


class MeanFlowTrain:
    """MeanFlow (Geng et al. 2025) in fm's time convention (t = 0 noise): an MLP
    u(s, t, x) of the average velocity, 4-256-256-256-2 SiLU, AdamW; 25 % of the
    time pairs with s < t; the target u_c + (t - s)(d_x u . u_c + d_s u), its
    tangent by torch.func.jvp along (1, 0, u_c), detached."""

    def __init__(self, batch):
        widths = [4, 256, 256, 256, 2]
        layers = []
        for k in range(len(widths) - 1):
            layers.append(torch.nn.Linear(widths[k], widths[k + 1]))
            if k < len(widths) - 2:
                layers.append(torch.nn.SiLU())
        self.net = torch.nn.Sequential(*layers)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=1e-3, weight_decay=0.01)
        self.x1 = points(batch, 2)

    def avg(self, s, t, x):
        return self.net(torch.cat([s[:, None], t[:, None], x], dim=1))

    def run(self):
        b = self.x1.shape[0]
        x0 = torch.randn_like(self.x1)
        a, c = torch.rand(b), torch.rand(b)
        lo, hi = torch.minimum(a, c), torch.maximum(a, c)
        s = torch.where(torch.rand(b) < 0.75, hi, lo)
        t = hi
        xs = s[:, None] * self.x1 + (1 - s[:, None]) * x0
        uc = self.x1 - x0
        out, tangent = torch.func.jvp(self.avg, (s, t, xs), (torch.ones_like(s), torch.zeros_like(t), uc))
        target = (uc + (t - s)[:, None] * tangent).detach()
        loss = torch.mean((out - target) ** 2)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        loss.item()
        return {}


def mnist_unet():
    """torchcfm's MNIST U-Net (its examples' settings), seeded."""
    from torchcfm.models.unet.unet import UNetModelWrapper

    torch.manual_seed(0)
    return UNetModelWrapper(
        dim=(1, 28, 28),
        num_channels=32,
        num_res_blocks=1,
        channel_mult=(1, 2, 2),
        attention_resolutions="16",
        num_heads=1,
        num_head_channels=-1,
        dropout=0.0,
    )


class UNetTrain:
    """torchcfm's MNIST example: UNetModelWrapper(dim=(1, 28, 28), num_channels=32,
    num_res_blocks=1) (channel_mult (1, 2, 2), attention at 16 → 28×28), Adam 1e-3,
    the CFM loss on a fixed batch of deterministic images."""

    def __init__(self, batch):
        self.net = mnist_unet()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        self.fm = ConditionalFlowMatcher(sigma=0.0)
        self.x1 = points(batch, 28 * 28).reshape(batch, 1, 28, 28)

    def run(self):
        x0 = torch.randn_like(self.x1)
        t, xt, ut = self.fm.sample_location_and_conditional_flow(x0, self.x1)
        v = self.net(t, xt)
        loss = torch.mean((v - ut) ** 2)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        loss.item()
        return {}


class UNetSample:
    """`fm sample` on an MNIST U-Net checkpoint: torchcfm's MNIST
    UNetModelWrapper (as UNetTrain), `batch` images from deterministic
    starting points through `steps` Euler steps under no_grad."""

    def __init__(self, batch, steps):
        self.net = mnist_unet().eval()
        self.x0 = points(batch, 28 * 28).reshape(batch, 1, 28, 28)
        self.steps = steps

    def run(self):
        x = self.x0
        h = 1.0 / self.steps
        with torch.no_grad():
            for k in range(self.steps):
                t = torch.full((x.shape[0],), k * h)
                x = x + h * self.net(t, x)
        x.sum().item()
        return {"nfe": self.steps}


class RealNvpTrain:
    """fm flow train's image RealNVP: 8 affine couplings with checkerboard masks
    on 1×28×28 (flipped every layer), ELU conditioners 784 → 64 → 64 → 1568
    (log-scale 2·tanh(raw) and shift, zero on the kept pixels), RealNVP's
    logit pre-processing at the data end (γ = 0.05), maximum likelihood,
    Adam 1e-3, on a fixed batch of deterministic images in (−1, 1)."""

    def __init__(self, batch):
        torch.manual_seed(0)
        d = 28 * 28
        ij = torch.arange(28)[:, None] + torch.arange(28)[None, :]
        even = (ij % 2 == 0).to(torch.float32).reshape(d)
        self.masks = [even if k % 2 == 0 else 1.0 - even for k in range(8)]
        nn = torch.nn
        self.nets = nn.ModuleList(
            nn.Sequential(nn.Linear(d, 64), nn.ELU(), nn.Linear(64, 64), nn.ELU(), nn.Linear(64, 2 * d))
            for _ in range(8)
        )
        self.opt = torch.optim.Adam(self.nets.parameters(), lr=1e-3)
        self.x = points(batch, d) / 1.6
        self.d, self.gamma = d, 0.05

    def log_prob(self, x):
        d, g = self.d, self.gamma
        s = (x + 1.0) * 0.5 * (1.0 - 2.0 * g) + g
        log_s, log_1ms = torch.log(s), torch.log(1.0 - s)
        z = log_s - log_1ms
        ld = -(log_s + log_1ms).sum(1) - d * (math.log(2.0) - math.log(1.0 - 2.0 * g))
        for k in reversed(range(8)):
            keep = self.masks[k]
            free = 1.0 - keep
            h = self.nets[k](z * keep)
            scale = 2.0 * torch.tanh(h[:, :d]) * free
            shift = h[:, d:] * free
            z = (z - shift) * torch.exp(-scale)
            ld = ld - scale.sum(1)
        return -0.5 * (z * z).sum(1) - 0.5 * d * math.log(2.0 * math.pi) + ld

    def run(self):
        loss = -self.log_prob(self.x).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        loss.item()
        return {}


class Sample:
    def __init__(self, n, method):
        self.field = Field(bench_mlp())
        self.x0 = points(n, 2)
        self.method = method

    def run(self):
        self.field.nfe = 0
        t = torch.tensor([0.0, 1.0])
        with torch.no_grad():
            if self.method == "euler":
                out = torchdiffeq.odeint(self.field, self.x0, t, method="euler", options={"step_size": 0.01})
            else:
                out = torchdiffeq.odeint(self.field, self.x0, t, method="dopri5", rtol=1e-5, atol=1e-5)
        out[-1].sum().item()
        return {"nfe": self.field.nfe}


class Likelihood:
    """flow_matching's compute_likelihood recipe: (x, log-det) from t = 1 to 0."""

    def __init__(self, n, hutchinson):
        self.field = Field(bench_mlp())
        self.x1 = points(n, 2)
        self.hutchinson = hutchinson

    def run(self):
        self.field.nfe = 0
        eps = torch.randint(0, 2, self.x1.shape).to(self.x1.dtype) * 2 - 1 if self.hutchinson else None

        def dynamics(t, state):
            x = state[0]
            with torch.set_grad_enabled(True):
                x = x.detach().requires_grad_(True)
                v = self.field(t, x)
                if self.hutchinson:
                    (g,) = torch.autograd.grad(v, x, eps)
                    div = (g * eps).sum(1)
                else:
                    div = torch.zeros(x.shape[0])
                    for i in range(x.shape[1]):
                        (g,) = torch.autograd.grad(v[:, i].sum(), x, retain_graph=i + 1 < x.shape[1])
                        div = div + g[:, i]
            return v.detach(), div.detach()

        y0 = (self.x1, torch.zeros(self.x1.shape[0]))
        with torch.no_grad():
            xs, ls = torchdiffeq.odeint(
                dynamics, y0, torch.tensor([1.0, 0.0]), method="rk4", options={"step_size": 1.0 / 25}
            )
        z = xs[-1]
        log_p0 = -0.5 * (z**2).sum(1) - z.shape[1] * 0.5 * math.log(2 * math.pi)
        (log_p0 + ls[-1]).mean().item()
        return {"nfe": self.field.nfe}


class ClosedForm:
    """The empirical velocity at t = 0.5 (CondOT): softmax weights over the training set."""

    def __init__(self, n, d, b):
        self.data = points(n, d) / 3.0 + 0.5
        self.sq = (self.data**2).sum(1)
        self.x = points(b, d) * 0.7
        self.flops = 4.0 * b * n * d

    def run(self):
        with torch.no_grad():
            alpha, sigma, d_alpha, d_sigma = 0.5, 0.5, 1.0, -1.0
            a = alpha / sigma**2
            c = -0.5 * alpha**2 / sigma**2
            logits = torch.addmm(c * self.sq[None, :], self.x, self.data.T, alpha=a)
            w = torch.softmax(logits, dim=1)
            mean = w @ self.data
            delta = d_alpha * sigma - d_sigma * alpha
            u = (d_sigma / sigma) * self.x + (delta / sigma) * mean
            u.sum().item()
        return {"flops": self.flops}


class OtCoupling:
    def __init__(self, b, d):
        torch.manual_seed(1)
        self.x0 = torch.randn(b, d)
        self.x1 = points(b, d)
        self.ot = OTPlanSampler(method="exact")

    def run(self):
        self.ot.sample_plan(self.x0, self.x1)
        return {}


class Gemm:
    def __init__(self, n):
        self.a = torch.ones(n, n)
        self.b = torch.ones(n, n) * 0.5
        self.c = torch.empty(n, n)  # written in place, like fm's buffer
        self.flops = 2.0 * n**3

    def run(self):
        torch.mm(self.a, self.b, out=self.c)
        return {"flops": self.flops}


def build(name, quick):
    pick = lambda full, q: q if quick else full  # noqa: E731
    if name == "train_b256":
        return Train(256)
    if name == "train_b4096":
        return Train(pick(4096, 512))
    if name == "unet_train_mnist":
        return UNetTrain(pick(128, 8))
    if name == "realnvp_train_mnist":
        return RealNvpTrain(pick(256, 16))
    if name == "train_ot_b256":
        return Train(256, ot=True)
    if name == "train_meanflow_b256":
        return MeanFlowTrain(256)
    if name == "sample_euler100":
        return Sample(pick(10_000, 500), "euler")
    if name == "sample_dopri5":
        return Sample(pick(10_000, 500), "dopri5")
    if name == "unet_sample_mnist":
        return UNetSample(pick(64, 4), pick(20, 2))
    if name == "likelihood_exact":
        return Likelihood(pick(1000, 100), False)
    if name == "likelihood_hutchinson":
        return Likelihood(pick(1000, 100), True)
    if name == "closed_form":
        return ClosedForm(pick(10_000, 1000), 784, 256)
    if name == "ot_coupling":
        return OtCoupling(256, 2)
    if name == "gemm":
        return Gemm(pick(1024, 256))
    raise SystemExit(f"unknown workload {name}")


def rss_kib():
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def main():
    args = sys.argv[1:]
    quick = "--quick" in args
    threads = 1
    if "--threads" in args:
        threads = int(args[args.index("--threads") + 1])
        del args[args.index("--threads") : args.index("--threads") + 2]
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    pos = [a for a in args if not a.startswith("--")]
    if pos == ["serve"]:
        built = {}
        for line in sys.stdin:
            parts = line.split()
            if not parts:
                continue
            name, iters = parts[0], int(parts[1])
            if name not in built:
                built[name] = build(name, quick)
                built[name].run()  # warm-up
            w = built[name]
            secs, info = [], {}
            for _ in range(iters):
                start = time.perf_counter()
                info = w.run()
                secs.append(time.perf_counter() - start)
            print(json.dumps({"name": name, "secs": secs, "nfe": info.get("nfe"), "flops": info.get("flops")}), flush=True)
    elif len(pos) == 2 and pos[0] == "mem":
        w = build(pos[1], quick)
        before, _ = rss_kib()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            reset = True
        except OSError:
            reset = False
        info = w.run()
        _, peak = rss_kib()
        print(json.dumps({"name": pos[1], "rss_before_kib": before, "peak_kib": peak, "peak_reset": reset, "nfe": info.get("nfe")}))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()

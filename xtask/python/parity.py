"""The PyTorch side of `cargo xtask parity`: torchcfm's own models, built with
fixed seeds, their weights exported as safetensors, and their outputs on fixed
inputs, to compare with fm's U-Net and MLP after `fm convert`.

    python parity.py export DIR [--threads N]    # DIR/<case>/{torch,inputs,torch_out}.safetensors, config.json
    python parity.py compare DIR [--threads N]   # reads DIR/<case>/fm_out.safetensors and back.safetensors

Cases: torchcfm's MNIST U-Net (UNetModelWrapper(dim=(1, 28, 28), num_channels=32,
num_res_blocks=1), class-conditional with 10 classes as in the conditional MNIST
example), the CIFAR-10 recipe's U-Net (num_channels=128, num_res_blocks=2,
channel_mult=[1, 2, 2, 2], num_heads=4, num_head_channels=64,
attention_resolutions="16", dropout=0.1; evaluated in eval mode) and torchcfm's
MLP(dim=2, w=64, time_varying=True).

Every parameter torchcfm initialises to zero (guided diffusion's zero modules,
GroupNorm biases) is re-drawn uniformly in ±1/sqrt(fan_in) (±0.1 for vectors),
so that every layer matters.
"""

import json
import math
import sys
import time

import torch
from safetensors.torch import load_file, save_file
from torchcfm.models import MLP
from torchcfm.models.unet.unet import UNetModelWrapper

CASES = {
    "mnist-unet": dict(
        kind="unet",
        batch=8,
        dim=(1, 28, 28),
        kwargs=dict(dim=(1, 28, 28), num_channels=32, num_res_blocks=1, class_cond=True, num_classes=10),
        fm=dict(
            in_channels=1, height=28, width=28, model_channels=32, num_res_blocks=1, channel_mult=[1, 2, 2],
            attention_ds=[28 // 16], num_heads=1, num_head_channels=None, dropout=0.0, num_classes=10,
            norm_groups=32,
        ),
    ),
    "cifar10-unet": dict(
        kind="unet",
        batch=4,
        dim=(3, 32, 32),
        kwargs=dict(
            dim=(3, 32, 32), num_channels=128, num_res_blocks=2, channel_mult=[1, 2, 2, 2], num_heads=4,
            num_head_channels=64, attention_resolutions="16", dropout=0.1,
        ),
        fm=dict(
            in_channels=3, height=32, width=32, model_channels=128, num_res_blocks=2, channel_mult=[1, 2, 2, 2],
            attention_ds=[32 // 16], num_heads=4, num_head_channels=64, dropout=0.1, num_classes=None,
            norm_groups=32,
        ),
    ),
    "mlp": dict(kind="mlp", batch=256, dim=(2,), kwargs=dict(dim=2, w=64, time_varying=True)),
}


def build(case, seed):
    torch.manual_seed(seed)
    c = CASES[case]
    model = UNetModelWrapper(**c["kwargs"]) if c["kind"] == "unet" else MLP(**c["kwargs"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if torch.count_nonzero(p) == 0:
                bound = 1.0 / math.sqrt(p[0].numel()) if p.dim() > 1 else 0.1
                p.uniform_(-bound, bound)
    return model.eval()


def forward(model, case, inputs):
    c = CASES[case]
    with torch.no_grad():
        if c["kind"] == "mlp":
            return model(torch.cat([inputs["x"], inputs["t"][:, None]], dim=-1))
        return model(inputs["t"], inputs["x"], y=inputs.get("y"))


def timed(fn, repeat):
    times = []
    out = None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return out, times[len(times) // 2]


def export(root, repeat):
    import os

    for i, (case, c) in enumerate(CASES.items()):
        d = os.path.join(root, case)
        os.makedirs(d, exist_ok=True)
        model = build(case, seed=1234 + i)
        g = torch.Generator().manual_seed(99 + i)
        b = c["batch"]
        inputs = {"x": torch.randn((b,) + tuple(c["dim"]), generator=g), "t": torch.rand(b, generator=g)}
        if c["kind"] == "unet" and c["kwargs"].get("class_cond"):
            inputs["y"] = torch.randint(0, c["kwargs"]["num_classes"], (b,), generator=g)
        out, seconds = timed(lambda: forward(model, case, inputs), repeat)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(state, os.path.join(d, "torch.safetensors"))
        save_file(inputs, os.path.join(d, "inputs.safetensors"))
        save_file({"v": out.contiguous()}, os.path.join(d, "torch_out.safetensors"))
        with open(os.path.join(d, "torch.json"), "w") as f:
            json.dump({"seconds_median": seconds, "parameters": sum(p.numel() for p in model.parameters())}, f)
        if c["kind"] == "unet":
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(dict(kind="u-net", **c["fm"]), f)
        print(f"{case}: torchcfm model with {sum(p.numel() for p in model.parameters()):,} parameters exported",
              file=sys.stderr)


def compare(root, tol):
    import os

    failed = False
    rows = []
    for i, (case, c) in enumerate(CASES.items()):
        d = os.path.join(root, case)
        ref = load_file(os.path.join(d, "torch_out.safetensors"))["v"]
        ours = load_file(os.path.join(d, "fm_out.safetensors"))["v"]
        diff = (ref - ours.reshape(ref.shape)).abs().max().item()
        # The reverse direction: fm's exported weights loaded (strictly) into a fresh torchcfm model.
        kwargs = dict(c["kwargs"])
        if c["kind"] == "unet" and kwargs.get("class_cond"):
            kwargs["num_classes"] += 1  # fm keeps its null-class row: class K is ∅
        torch.manual_seed(0)
        fresh = (UNetModelWrapper(**kwargs) if c["kind"] == "unet" else MLP(**kwargs)).eval()
        fresh.load_state_dict(load_file(os.path.join(d, "back.safetensors")), strict=True)
        inputs = load_file(os.path.join(d, "inputs.safetensors"))
        back = (forward(fresh, case, inputs) - ref).abs().max().item()
        with open(os.path.join(d, "torch.json")) as f:
            torch_s = json.load(f)["seconds_median"]
        with open(os.path.join(d, "fm.json")) as f:
            fm_s = json.load(f)["seconds_median"]
        ok = diff <= tol and back == 0.0
        failed |= not ok
        rows.append((case, diff, back, torch_s, fm_s, ok))
    print(f"{'case':<14} {'max |fm − torch|':>17} {'torch(fm→pt) − torch':>21} {'torch s':>9} {'fm s':>9} {'fm/torch':>9}")
    for case, diff, back, ts, fs, ok in rows:
        print(f"{case:<14} {diff:>17.3e} {back:>21.3e} {ts:>9.4f} {fs:>9.4f} {fs / ts:>9.2f}  {'ok' if ok else 'FAIL'}")
    print(f"tolerance: max abs difference ≤ {tol:g} (f32); the reverse conversion must be exact")
    return 1 if failed else 0


def main():
    args = sys.argv[1:]
    threads = None
    if "--threads" in args:
        i = args.index("--threads")
        threads = int(args[i + 1])
        del args[i : i + 2]
    if threads:
        torch.set_num_threads(threads)
    if len(args) != 2 or args[0] not in ("export", "compare"):
        print(__doc__, file=sys.stderr)
        return 2
    if args[0] == "export":
        export(args[1], repeat=3)
        return 0
    return compare(args[1], tol=1e-4)


if __name__ == "__main__":
    sys.exit(main())

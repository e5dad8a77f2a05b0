"""How cuDNN's TF32 default shows in an image model's float32 round trip on a GPU.

PyTorch runs float32 convolutions through cuDNN in TF32 (10-bit mantissa inputs) unless
``torch.backends.cudnn.allow_tf32`` is False. The log-density still counts the map applied (each
coupling's scale is computed once and its log is what is summed), but a round trip recomputes the
conditioners from a kept half that differs from the original by float32 round-off, and TF32's
coarser rounding of that input amplifies it. This trains the small image model of
``tests/test_cuda.py`` (30 Adam steps, with and without bf16 autocast) with TF32 allowed or not,
then prints the largest |decode(encode(x)) - x| on the GPU in float32, and for the same weights
on the CPU in float32 and float64. Run on a GPU machine from the repository root
(``benchmarks/gpu_session.sh`` does):

    python benchmarks/gpu_tf32.py > benchmarks/results/gpu_tf32.txt
"""

from __future__ import annotations

import torch

from realnvp.models import MultiScaleRealNVP, dequantize


def trained(bf16: bool) -> tuple[MultiScaleRealNVP, torch.Tensor]:
    """The model after 30 steps on 64 random images, and the images dequantized once."""
    torch.manual_seed(0)
    flow = MultiScaleRealNVP((1, 8, 8), 17, hidden_channels=16, num_blocks=2).cuda()
    data = torch.randint(0, 17, (64, 1, 8, 8), device="cuda")
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-3)
    for _ in range(30):
        with torch.autocast("cuda", torch.bfloat16, enabled=bf16):
            loss = -flow.log_prob(dequantize(data)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return flow.eval(), dequantize(data)


@torch.no_grad()
def round_trip(flow: MultiScaleRealNVP, x: torch.Tensor) -> float:
    return (flow.decode(flow.encode(x)) - x).abs().max().item()


def main() -> None:
    for tf32 in (True, False):
        torch.backends.cudnn.allow_tf32 = tf32
        for bf16 in (True, False):
            flow, x = trained(bf16)
            on_cpu = MultiScaleRealNVP((1, 8, 8), 17, hidden_channels=16, num_blocks=2)
            on_cpu.load_state_dict(flow.state_dict())
            on_cpu.eval()
            cpu32 = round_trip(on_cpu, x.cpu())
            cpu64 = round_trip(on_cpu.double(), x.cpu().double())
            print(
                f"cudnn.allow_tf32={tf32} bf16_trained={bf16}: cuda fp32 round trip "
                f"{round_trip(flow, x):.2e}, cpu fp32 {cpu32:.2e}, cpu fp64 {cpu64:.2e}",
                flush=True,
            )


if __name__ == "__main__":
    main()

"""Architectures that are not among the test fixtures, exported by torch.onnx at opsets 11, 13
and 17, for `npm run bench -- exporters`: how much of each the engine can prune, and whether
the pruned and quantized models load and keep their output shapes. Untrained (seeded).

    /usr/bin/python3 tools/bench/export_sweep.py --out bench/sweep
"""
import argparse
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

class InvRes(nn.Module):
    """MobileNetV2's inverted residual: expand 1x1, depthwise 3x3, project 1x1, residual add."""

    def __init__(s, c, e):
        super().__init__()
        h = c * e
        s.a = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
                            nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6(),
                            nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))
    def forward(s, x): return x + s.a(x)

class MobileNetish(nn.Module):
    def __init__(s):
        super().__init__()
        s.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU6())
        s.b1 = InvRes(16, 4); s.b2 = InvRes(16, 6)
        s.head = nn.Sequential(nn.Conv2d(16, 64, 1), nn.Hardswish(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, 10))
    def forward(s, x): return s.head(s.b2(s.b1(s.stem(x))))

class UNetish(nn.Module):
    def __init__(s):
        super().__init__()
        s.d1 = nn.Conv2d(3, 16, 3, padding=1); s.d2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        s.up = nn.ConvTranspose2d(32, 16, 2, stride=2); s.o = nn.Conv2d(32, 2, 1)
    def forward(s, x):
        a = F.relu(s.d1(x)); b = F.relu(s.d2(a)); u = F.relu(s.up(b))
        return s.o(torch.cat([a, u], 1))

class TorchEncoder(nn.Module):
    def __init__(s):
        super().__init__()
        s.emb = nn.Embedding(100, 32)
        s.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, dropout=0.0), 2)
        s.cls = nn.Linear(32, 3)
    def forward(s, ids): return s.cls(s.enc(s.emb(ids)).mean(1))

class ViTish(nn.Module):
    def __init__(s):
        super().__init__()
        s.patch = nn.Conv2d(3, 32, 4, 4); s.cls_tok = nn.Parameter(torch.randn(1, 1, 32)); s.pos = nn.Parameter(torch.randn(1, 17, 32))
        s.ln1 = nn.LayerNorm(32); s.qkv = nn.Linear(32, 96); s.proj = nn.Linear(32, 32)
        s.ln2 = nn.LayerNorm(32); s.fc1 = nn.Linear(32, 128); s.fc2 = nn.Linear(128, 32); s.head = nn.Linear(32, 5)
    def forward(s, x):
        x = s.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([s.cls_tok.expand(x.shape[0], -1, -1), x], 1) + s.pos
        B, N, C = x.shape
        qkv = s.qkv(s.ln1(x)).reshape(B, N, 3, 4, C // 4).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = (q @ k.transpose(-2, -1)) * (C // 4) ** -0.5
        x = x + s.proj((a.softmax(-1) @ v).transpose(1, 2).reshape(B, N, C))
        x = x + s.fc2(F.gelu(s.fc1(s.ln2(x))))
        return s.head(x[:, 0])

class GRUClf(nn.Module):
    def __init__(s):
        super().__init__(); s.gru = nn.GRU(8, 16, batch_first=True); s.fc = nn.Linear(16, 32); s.o = nn.Linear(32, 4)
    def forward(s, x): y, _ = s.gru(x); return s.o(F.relu(s.fc(y[:, -1])))

MODELS = {
    "mobilenet": (MobileNetish, lambda: (torch.randn(2, 3, 32, 32),), ["x"], {"x": {0: "b"}}),
    "unet": (UNetish, lambda: (torch.randn(2, 3, 16, 16),), ["x"], {"x": {0: "b"}}),
    "torch-encoder": (TorchEncoder, lambda: (torch.randint(0, 100, (2, 7)),), ["ids"], {"ids": {0: "b", 1: "s"}}),
    "vit": (ViTish, lambda: (torch.randn(2, 3, 16, 16),), ["x"], {"x": {0: "b"}}),
    "gru": (GRUClf, lambda: (torch.randn(2, 5, 8),), ["x"], {"x": {0: "b", 1: "s"}}),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, (build, example, inputs, dynamic) in MODELS.items():
        for opset in (11, 13, 17):
            torch.manual_seed(0)
            model = build().eval()
            path = os.path.join(args.out, f"{name}-opset{opset}.onnx")
            torch.onnx.export(model, example(), path, input_names=inputs, output_names=["y"],
                              dynamic_axes={**dynamic, "y": {0: "b"}}, opset_version=opset)
            print(path)


if __name__ == "__main__":
    main()

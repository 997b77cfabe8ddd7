"""The vision-only temporal classifier (the MAE-DFER / HiCMAE role in the book) and its backend.

Model: a compact (2+1)D CNN (R(2+1)D-style factorised convolutions, Tran et al. 2018) on a fixed clip of
``n_frames`` (16) RGB frames resized to ``size`` (48) pixels. Every block is a spatial 3x3 convolution
followed by a temporal 3-tap convolution, so the network sees motion; the head pools over space, then
concatenates the temporal mean and max of the last feature map and applies one linear classifier (the part
re-trained by the decoupled balanced fine-tuning, cRT). Each frame is centre-cropped to the face region by a
fixed crop (``config["crop"]``, fractions of the frame, the same for every clip) and resized to ``size`` px.

Input convention (documented for the frame-shuffle and FPS chapters): the backend accepts any number of
frames ``T >= 1`` and resamples them to ``n_frames`` by *uniform index selection*
``idx_i = floor((i + 0.5) * T / n_frames)``, i = 0..n_frames-1 (frames repeat when ``T < n_frames``). The
selection keeps the order in which frames were given, so shuffled frames stay shuffled.

Checkpoint layout (a folder): ``model.safetensors`` (weights), ``config.json`` (architecture, labels,
normalisation), ``README.md`` (model card), ``train_log.csv``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .models import Answer, Backend, ClassifyRequest, DescribeRequest, ModelError

DEFAULT_CONFIG = dict(
    arch="r2plus1d-tiny",
    n_frames=16,
    size=48,
    # fixed centre crop (fractions x0, y0, x1, y1 of the frame) applied before resizing: the face region of
    # face-centred clips (SynthFER's face boxes span about x 0.19-0.73, y 0.07-0.83 of the frame)
    crop=[0.1, 0.06, 0.9, 0.86],
    channels=[16, 32, 64, 128],
    # input streams: "rgb" or "rgb+residual" (RGB and its deviation from the clip's temporal mean, a
    # two-stream-style appearance + motion input: the residual removes what is static in the clip)
    input="rgb+residual",
    dropout=0.2,
    mean=[0.5, 0.5, 0.5],
    std=[0.25, 0.25, 0.25],
)


class Block2p1D(nn.Module):
    """Spatial conv (1x3x3, optional stride 2) -> BN -> ReLU -> temporal conv (3x1x1) -> BN -> ReLU, residual."""

    def __init__(self, cin: int, cout: int, stride: int = 2):
        super().__init__()
        self.spatial = nn.Conv3d(cin, cout, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False)
        self.bn1 = nn.BatchNorm3d(cout)
        self.temporal = nn.Conv3d(cout, cout, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.bn2 = nn.BatchNorm3d(cout)
        self.skip = (
            nn.Sequential(nn.Conv3d(cin, cout, 1, stride=(1, stride, stride), bias=False), nn.BatchNorm3d(cout))
            if (cin != cout or stride != 1) else nn.Identity()
        )

    def forward(self, x):
        y = F.relu(self.bn1(self.spatial(x)))
        y = self.bn2(self.temporal(y))
        return F.relu(y + self.skip(x))


class Tiny2p1D(nn.Module):
    """(2+1)D CNN. Input (B, T, H, W, 3) float in [0,1] or already normalised (B, 3, T, H, W)."""

    def __init__(self, n_classes: int, channels=(24, 48, 96, 160), dropout: float = 0.2, input: str = "rgb"):
        super().__init__()
        if input not in ("rgb", "rgb+residual"):
            raise ModelError(f"vision classifier: unknown input {input!r}")
        self.input = input
        chans = list(channels)
        blocks = [Block2p1D(6 if input == "rgb+residual" else 3, chans[0], stride=2)]
        for a, b in zip(chans[:-1], chans[1:]):
            blocks.append(Block2p1D(a, b, stride=2))
        self.features = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * chans[-1], n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) normalised -> (B, 2*C) clip feature (temporal mean ++ temporal max)."""
        if self.input == "rgb+residual":
            x = torch.cat([x, x - x.mean(dim=2, keepdim=True)], dim=1)
        f = self.features(x)              # (B, C, T, h, w)
        f = f.mean(dim=(3, 4))            # (B, C, T)
        return torch.cat([f.mean(dim=2), f.amax(dim=2)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.embed(x)))


def uniform_indices(n_in: int, n_out: int) -> np.ndarray:
    """Uniform index selection ``floor((i + 0.5) * n_in / n_out)``; repeats frames when n_in < n_out."""
    if n_in < 1:
        raise ModelError("vision classifier: got 0 frames")
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


def crop_resize(frames: np.ndarray, size: int, crop=None) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, size, size) float in [0, 1]: fixed fractional crop, antialiased bilinear."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ModelError(f"vision classifier: frames must be (T, H, W, 3) uint8, got shape {frames.shape}")
    H, W = frames.shape[1:3]
    if crop is not None:
        x0, y0, x1, y1 = crop
        xa, xb = int(round(x0 * W)), max(int(round(x0 * W)) + 1, int(round(x1 * W)))
        ya, yb = int(round(y0 * H)), max(int(round(y0 * H)) + 1, int(round(y1 * H)))
        frames = frames[:, ya:yb, xa:xb]
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0  # (T,3,H,W)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


def preprocess(frames: np.ndarray, size: int, mean, std, crop=None) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, T, size, size) float normalised (crop, resize, normalise)."""
    x = crop_resize(frames, size, crop)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    x = (x - m) / s
    return x.permute(1, 0, 2, 3).contiguous()  # (3, T, H, W)


def build(config: dict, n_classes: int) -> Tiny2p1D:
    return Tiny2p1D(n_classes, channels=config["channels"], dropout=config.get("dropout", 0.0),
                    input=config.get("input", "rgb"))


def save(model: Tiny2p1D, config: dict, out_dir: str | Path) -> Path:
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out


def load_model(path: str | Path) -> tuple[Tiny2p1D, dict]:
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_absolute() and not p.exists():
        from . import paths

        p = paths.root() / p
    cfg_file, w_file = p / "config.json", p / "model.safetensors"
    if not cfg_file.exists() or not w_file.exists():
        raise ModelError(f"vision classifier {path}: expected {cfg_file.name} and {w_file.name} in {p}")
    config = json.loads(cfg_file.read_text())
    if "labels" not in config:
        raise ModelError(f"vision classifier {path}: config.json has no 'labels'")
    model = build(config, len(config["labels"]))
    try:
        model.load_state_dict(load_file(str(w_file)))
    except RuntimeError as e:
        raise ModelError(f"vision classifier {path}: weights do not match config.json: {e}") from None
    model.eval()
    return model, config


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class VisionBackend(Backend):
    """``models.load({"backend": "vision", "model": "data/models/vision3d"})``.

    ``classify`` returns the argmax over the requested labels (the text is the label) and the softmax over
    them as ``scores``. Requested labels must be a subset of the checkpoint's labels (the softmax is taken over
    the requested subset). The prompt and the MSCE context are ignored: this is not a language model.
    """

    def __init__(self, spec: dict):
        self.spec = dict(spec)
        if "model" not in spec:
            raise ModelError(f"vision backend spec needs a 'model' path: {spec!r}")
        from .threads import configure

        configure()  # one torch thread per process (emoprobe.threads)
        self.model, self.config = load_model(spec["model"])
        self.labels = list(self.config["labels"])
        self.n_frames = int(self.config["n_frames"])
        self.size = int(self.config["size"])
        p = Path(spec["model"])
        if not p.is_absolute() and not p.exists():
            from . import paths

            p = paths.root() / p
        self._sha = sha256_file(p / "model.safetensors")
        self.batch_size = int(spec.get("batch_size", 16))

    def fingerprint(self) -> dict:
        return {
            "backend": "vision",
            "arch": self.config.get("arch"),
            "weights_sha256": self._sha,
            "n_frames": self.n_frames,
            "size": self.size,
            "crop": self.config.get("crop"),
            "input": self.config.get("input", "rgb"),
            "frame_selection": "uniform floor((i+0.5)*T/n)",
            "labels": self.labels,
        }

    def _tensor(self, frames: np.ndarray) -> torch.Tensor:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[0] == 0:
            raise ModelError(f"vision classifier: frames must be (T>=1, H, W, 3), got shape {frames.shape}")
        idx = uniform_indices(frames.shape[0], self.n_frames)
        return preprocess(frames[idx], self.size, self.config["mean"], self.config["std"], self.config.get("crop"))

    def logits(self, frames_list: list[np.ndarray]) -> torch.Tensor:
        """Raw logits over the checkpoint's labels for a list of (T,H,W,3) uint8 arrays."""
        out = []
        with torch.no_grad():
            for i in range(0, len(frames_list), self.batch_size):
                x = torch.stack([self._tensor(f) for f in frames_list[i:i + self.batch_size]])
                out.append(self.model(x))
        return torch.cat(out) if out else torch.zeros(0, len(self.labels))

    def classify(self, requests: list[ClassifyRequest], score: bool = False) -> list[Answer]:
        answers: list[Answer | None] = [None] * len(requests)
        ok_idx, ok_frames, ok_cols = [], [], []
        for i, r in enumerate(requests):
            unknown = [l for l in r.labels if l not in self.labels]
            if unknown:
                answers[i] = Answer.failed(
                    f"vision classifier {self.spec['model']} knows {self.labels}; cannot score {unknown}")
                continue
            fr = np.asarray(r.frames)
            if fr.ndim != 4 or fr.shape[0] == 0 or fr.shape[-1] != 3:
                answers[i] = Answer.failed(f"bad frames: expected (T>=1,H,W,3) uint8, got shape {fr.shape}")
                continue
            ok_idx.append(i)
            ok_frames.append(fr)
            ok_cols.append([self.labels.index(l) for l in r.labels])
        if ok_idx:
            logits = self.logits(ok_frames)
            for j, i in enumerate(ok_idx):
                lab = requests[i].labels
                p = torch.softmax(logits[j, ok_cols[j]], dim=0).numpy()
                k = int(np.argmax(p))
                answers[i] = Answer(
                    text=lab[k], label=lab[k], status="ok", parse_method="exact",
                    scores={l: float(v) for l, v in zip(lab, p)},
                    n_visual_tokens=0, n_text_tokens=0,
                    extra={"n_frames_in": int(ok_frames[j].shape[0]), "n_frames_model": self.n_frames},
                )
        return answers  # type: ignore[return-value]

    def describe(self, requests: list[DescribeRequest]) -> list[Answer]:
        raise ModelError(
            f"vision classifier {self.spec.get('model')} is not a language model: it cannot describe motion")

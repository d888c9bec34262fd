"""ProGrad (Zhu et al. 2023, Sec. 3.2): CoOp's prompt, updated only along directions that do
not contradict the zero-shot CLIP's knowledge.

The reference's ``prograd_backward_and_update`` is :func:`prograd_projection` applied to
the gradients of the cross-entropy (g_d) and of the "KL" loss to the frozen zero-shot
logits (g_g, :func:`soft_cross_entropy`); ProGrad's frozen zero-shot classifier is
:meth:`ProGrad.teacher`, whose logits of every cached training view are computed once
(README "Downstream training").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Batch, StepOutput, _correct, _grads, hand_written_classifier
from .coop import CoOp
from .text import word_embeddings

#: how words initialise ProGrad's context: by their BPE tokens (ours) or word count (reference)
INIT_COUNTS = ("tokens", "words")


def soft_cross_entropy(logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """ProGrad's "KL" loss: -sum_c softmax(z_zs/T) log_softmax(z/T) * T^2, batch mean.

    Equal to KL(p_zs || p) * T^2 plus the teacher's entropy, a constant: same gradient.
    """
    t = temperature
    target = F.softmax(teacher_logits / t, dim=-1)
    return -(target * F.log_softmax(logits / t, dim=-1)).sum(dim=-1).mean() * t * t


def prograd_projection(
    g_d: dict[str, Tensor], g_g: dict[str, Tensor], lam: float = 1.0
) -> dict[str, Tensor]:
    """ProGrad's rule (Eq. 6), per parameter tensor: where g_d . g_g < 0, remove ``lam``
    times the component of the domain gradient g_d along the general direction g_g; else
    keep g_d. (A zero g_g has no direction and leaves g_d.)
    """
    out = {}
    for name, d in g_d.items():
        g = g_g[name]
        dot = torch.sum(d * g)
        if dot < 0:
            g_hat = g / g.norm()
            out[name] = d - lam * torch.sum(d * g_hat) * g_hat
        else:
            out[name] = d
    return out


class ProGrad(CoOp):
    """CoOp's parameters; the update is the CE gradient projected away from the KL gradient.

    ``lam`` is ProGrad's lambda (params.yaml ``lambda``: 1 = full projection, 0 = plain
    CoOp); ``temperature`` is T. The batch must carry ``teacher_logits``.

    Context initialisation from words (``pad_init``, ProGrad's way): ``n_ctx`` slots, zeros
    then the words. ``init_count="tokens"`` (our default) puts all the words' BPE tokens in
    the last slots; ``"words"`` is the reference's reading: it counts k words split at
    spaces, puts the first k tokens in the last k slots, and any further tokens of the words
    (a comma is one) stay frozen between the context and the class name.
    """

    def __init__(
        self,
        *args,
        lam: float = 1.0,
        temperature: float = 1.0,
        init_count: str = "tokens",
        **kwargs,
    ):
        if init_count not in INIT_COUNTS:
            raise ValueError(f"init_count {init_count!r} must be one of {list(INIT_COUNTS)}")
        self.init_count = init_count
        kwargs.setdefault("pad_init", True)
        super().__init__(*args, **kwargs)
        self.lam = float(lam)
        self.temperature = float(temperature)

    def _initial_context(self, backbone, n_ctx, init_words, pad_init, generator) -> Tensor:
        if self.init_count == "tokens" or not init_words or not pad_init:
            return super()._initial_context(backbone, n_ctx, init_words, pad_init, generator)
        words = len(init_words.split(" "))
        if n_ctx is None or n_ctx < words:
            raise ValueError(
                f"init words {init_words!r} are {words} words, more than n_ctx={n_ctx}"
            )
        ctx = torch.zeros(n_ctx, backbone.text_width)
        ctx[n_ctx - words :] = word_embeddings(backbone, init_words).cpu()[:words]
        # the prompt text is "X .. X <words> <class>.": its first n_ctx token rows are learned
        self.frozen_words = " ".join(["X"] * (n_ctx - words) + [init_words])
        return ctx

    def teacher(self, template: str, classnames: list[str]) -> Tensor:
        """[C, D] ProGrad's frozen zero-shot classifier: ``template`` (the dataset's ProGrad
        template) filled with each class name."""
        return hand_written_classifier(self.backbone, template, classnames)

    def training_gradients(self, batch: Batch) -> StepOutput:
        if batch.teacher_logits is None:
            raise ValueError("ProGrad needs the zero-shot teacher logits of the batch")
        params = self.prompt_parameters()
        logits = self.logits(batch)
        labels = batch.labels.to(logits.device)
        ce = F.cross_entropy(logits, labels)
        teacher = batch.teacher_logits.to(logits.device)
        kl = soft_cross_entropy(logits, teacher, self.temperature)
        g_g = _grads(kl, params, retain_graph=True)
        g_d = _grads(ce, params)
        grads = prograd_projection(g_d, g_g, self.lam)
        return StepOutput(float(ce.detach()), _correct(logits, labels), len(batch), grads)

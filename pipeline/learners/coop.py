"""CoOp (Zhou et al. 2022) and ProGrad (Zhu et al. 2023): one learnable textual context.

CoOp: prompt of class i = [v_1..v_M, <class-name tokens>, "."], one shared context or one
per class (``class_specific``). ProGrad has CoOp's parameterisation and changes only how the
update direction is formed (``prograd_projection``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones import Backbone
from .base import DEFAULT_TEMPLATE, Batch, PromptLearner, StepOutput, _correct, _grads
from .text import ClassPrompts, class_prompts, initial_context


class CoOp(PromptLearner):
    """``text_ctx``: [n_ctx, W] shared, or [C, n_ctx, W] with ``class_specific``.

    ``init_words``: initialise from these words (n_ctx becomes their token count, as in
    CoOp) or, with ``pad_init`` (ProGrad), put them in the last of ``n_ctx`` zero slots.
    Without words the context is N(0, 0.02^2) from ``seed``.
    """

    def __init__(
        self,
        backbone: Backbone,
        classnames: list[str],
        n_ctx: int | None = 4,
        init_words: str | None = "a photo of a",
        class_specific: bool = False,
        pad_init: bool = False,
        seed: int = 0,
        truncate: bool = True,
    ):
        super().__init__(backbone)
        generator = torch.Generator().manual_seed(seed)
        ctx = initial_context(backbone, n_ctx, init_words, pad=pad_init, generator=generator)
        if class_specific:
            if init_words:
                ctx = ctx.unsqueeze(0).repeat(len(classnames), 1, 1)
            else:
                ctx = torch.randn(len(classnames), *ctx.shape, generator=generator) * 0.02
        self.class_specific = class_specific
        self.n_ctx = int(ctx.shape[-2])
        self.truncate = truncate
        self.text_ctx = nn.Parameter(ctx.to(backbone.device))
        self.set_classes(classnames)

    def set_classes(self, classnames: list[str], template: str = DEFAULT_TEMPLATE) -> None:
        if self.class_specific and self.classnames and list(classnames) != self.classnames:
            raise ValueError(
                "a class-specific context cannot be moved to other classes "
                f"({len(self.classnames)} trained, {len(classnames)} asked)"
            )
        self.classnames = list(classnames)
        self.prompts: ClassPrompts = class_prompts(
            self.backbone, self.classnames, self.n_ctx, truncate=self.truncate
        )

    def class_features(self) -> Tensor:
        embeddings = self.prompts.assemble(self.text_ctx)
        return self.backbone.encode_text_embeddings(
            embeddings, self.prompts.tokens, truncate=self.truncate
        )


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
    """ProGrad's rule, per parameter tensor: where g_d . g_g < 0, remove ``lam`` times the
    component of the domain gradient g_d along the general direction g_g; else keep g_d.

    (Reference: ``prograd_backward_and_update``; a zero g_g has no direction and leaves g_d.)
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

    ``lam`` is ProGrad's lambda (1 = full projection, 0 = plain CoOp); ``temperature`` is T.
    The batch must carry ``teacher_logits``: the frozen zero-shot logits of its samples with
    ProGrad's own templates (computed once from cached features, see ``training.py``).
    """

    def __init__(self, *args, lam: float = 1.0, temperature: float = 1.0, **kwargs):
        kwargs.setdefault("pad_init", True)
        super().__init__(*args, **kwargs)
        self.lam = float(lam)
        self.temperature = float(temperature)

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

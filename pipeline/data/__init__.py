"""Downstream datasets in CoOp's layout: readers, few-shot sampling, base/new split."""

from pipeline.data.coop import (
    DATASETS,
    DatasetSpec,
    get_spec,
    load_dataset,
    resolve_spec,
    spec_from_config,
)
from pipeline.data.fewshot import (
    few_shot_splits,
    harmonic_mean,
    sample_few_shot,
    split_base_new,
    subsample_classes,
    subsample_classnames,
)
from pipeline.data.templates import COOP_TEMPLATES, DEFAULT_TEMPLATE, PROGRAD_TEMPLATES
from pipeline.data.types import SPLITS, DatasetError, DatasetSplits, Datum

__all__ = [
    "COOP_TEMPLATES",
    "DATASETS",
    "DEFAULT_TEMPLATE",
    "PROGRAD_TEMPLATES",
    "SPLITS",
    "DatasetError",
    "DatasetSpec",
    "DatasetSplits",
    "Datum",
    "few_shot_splits",
    "get_spec",
    "harmonic_mean",
    "load_dataset",
    "resolve_spec",
    "sample_few_shot",
    "spec_from_config",
    "split_base_new",
    "subsample_classes",
    "subsample_classnames",
]

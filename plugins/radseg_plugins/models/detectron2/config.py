"""detectron2 configs: from a template shipped in ``configs/``, the options and the classes.

The order in which a training cfg is made is the order of authority: the template
(``configs/<architecture>.yaml``), then the :class:`~.options.TrainOptions`, then the user's
``overrides``, and last what comes from the dataset version and the request — the number of
classes of every head, the datasets, the device and the output directory — so that no override
can contradict them. Call :func:`radseg_plugins.models.detectron2.compat.apply` first.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radseg.errors import InputError

from .options import TrainOptions

if TYPE_CHECKING:
    from detectron2.config import CfgNode

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def template_path(architecture: str) -> Path:
    return CONFIG_DIR / f"{architecture}.yaml"


def new_cfg(architecture: str) -> CfgNode:
    """detectron2's defaults plus the keys ``architecture`` needs (DeepLab adds its own)."""
    from detectron2.config import get_cfg

    cfg = get_cfg()
    if architecture == "deeplabv3plus":
        from detectron2.projects.deeplab import add_deeplab_config

        add_deeplab_config(cfg)
    return cfg


def build_train_cfg(
    options: TrainOptions,
    *,
    num_classes: int,
    train_dataset: str,
    output_dir: Path,
    device: str,
    pixel_stats: tuple[Sequence[float], Sequence[float]] | None = None,
) -> CfgNode:
    """The full training cfg for ``options``; ``num_classes`` excludes the background.

    ``pixel_stats`` (mean, std per channel, measured on the training split) replace the
    template's; an override of ``MODEL.PIXEL_MEAN``/``PIXEL_STD`` still wins.
    """
    cfg = new_cfg(options.architecture)
    cfg.merge_from_file(str(template_path(options.architecture)))

    solver = cfg.SOLVER
    solver.MAX_ITER = options.iterations
    solver.IMS_PER_BATCH = options.batch_size
    solver.BASE_LR = options.base_lr
    solver.STEPS = tuple(
        sorted(
            {s for s in (int(0.75 * options.iterations), int(0.9 * options.iterations)) if s > 0}
        )
    )
    solver.WARMUP_ITERS = min(solver.WARMUP_ITERS, options.iterations // 10)
    if options.checkpoint_period is not None:
        solver.CHECKPOINT_PERIOD = options.checkpoint_period
    solver.AMP.ENABLED = options.amp
    if options.resnet_depth is not None:
        cfg.MODEL.RESNETS.DEPTH = options.resnet_depth
    if cfg.MODEL.RESNETS.DEPTH in (18, 34):
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64  # basic blocks; detectron2 asserts it
    else:
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 256
    if options.image_size is not None:
        cfg.INPUT.MIN_SIZE_TRAIN = (options.image_size,)
        cfg.INPUT.MIN_SIZE_TEST = options.image_size
        cfg.INPUT.MAX_SIZE_TRAIN = cfg.INPUT.MAX_SIZE_TEST = max(4096, 4 * options.image_size)
    if options.num_workers is not None:
        cfg.DATALOADER.NUM_WORKERS = options.num_workers
    elif _in_daemon_process():
        cfg.DATALOADER.NUM_WORKERS = 0  # a daemon process may not start children
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = options.score_threshold
    cfg.MODEL.WEIGHTS = options.weights
    cfg.SEED = options.seed
    if pixel_stats is not None:
        mean, std = pixel_stats
        cfg.MODEL.PIXEL_MEAN = [float(v) for v in mean]
        cfg.MODEL.PIXEL_STD = [float(v) for v in std]

    apply_overrides(cfg, options.overrides)

    set_num_classes(cfg, num_classes)
    cfg.DATASETS.TRAIN = (train_dataset,)
    cfg.DATASETS.TEST = ()  # the backend evaluates after training, not detectron2's EvalHook
    cfg.MODEL.DEVICE = device
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.freeze()
    return cfg


def apply_overrides(cfg: CfgNode, overrides: Mapping[str, Any]) -> None:
    """Set each ``"A.B.C": value`` of ``overrides`` on ``cfg``; unknown keys are refused."""
    for key, value in overrides.items():
        current = _lookup(cfg, key)
        if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # yacs refuses 1 for a float key; JSON and YAML users write it
        try:
            cfg.merge_from_list([key, value])
        except (KeyError, AssertionError, ValueError) as exc:
            raise InputError(f"override {key!r}={value!r} does not fit the cfg: {exc}") from exc


def _lookup(cfg: CfgNode, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not hasattr(node, "get") or part not in node:
            return None
        node = node[part]
    return node


def num_classes_keys(cfg: CfgNode) -> Iterator[tuple[str, int]]:
    """Yield ``(dotted key, value)`` for every ``NUM_CLASSES`` under ``cfg.MODEL``."""
    from detectron2.config import CfgNode

    def walk(node: CfgNode, prefix: str) -> Iterator[tuple[str, int]]:
        for key, value in node.items():
            if isinstance(value, CfgNode):
                yield from walk(value, f"{prefix}{key}.")
            elif key == "NUM_CLASSES":
                yield f"{prefix}{key}", value

    yield from walk(cfg.MODEL, "MODEL.")


def head_num_classes(key: str, num_classes: int) -> int:
    """What the head at ``key`` predicts: a semantic head also predicts the background."""
    return num_classes + 1 if key.split(".")[-2] == "SEM_SEG_HEAD" else num_classes


def set_num_classes(cfg: CfgNode, num_classes: int) -> list[str]:
    """Write the class count to every head that has one; return the keys written.

    ``num_classes`` counts the dataset version's classes without the background. Semantic heads
    (``SEM_SEG_HEAD``) get one more, for background; instance heads (``ROI_HEADS``,
    ``RETINANET``, ...) get ``num_classes``.
    """
    written = []
    for key, _ in list(num_classes_keys(cfg)):
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = head_num_classes(key, num_classes)
        written.append(key)
    return written


def cfg_from_saved(saved: Mapping[str, Any], model_dir: Path) -> CfgNode:
    """Rebuild the cfg a model was trained with from what :meth:`train` returned."""
    from detectron2.config import CfgNode

    architecture = saved.get("architecture")
    if not architecture:
        raise InputError("the model's config has no 'architecture'; was it trained by detectron2?")
    text = saved.get("cfg_yaml")
    if not text:
        cfg_file = Path(model_dir) / str(saved.get("cfg_file", "config.yaml"))
        if not cfg_file.is_file():
            raise InputError(f"the model's detectron2 cfg is missing: no {cfg_file}")
        text = cfg_file.read_text(encoding="utf-8")
    cfg = new_cfg(str(architecture))
    cfg.merge_from_other_cfg(CfgNode.load_cfg(text))
    return cfg


def _in_daemon_process() -> bool:
    import multiprocessing

    return bool(multiprocessing.current_process().daemon)

"""The whole packaged schedule in one run, as `faceid train all` does it: the stages the schedule
lists (stage 1, and stage 2 only where configured to keep it), then the export of the last
stage's best checkpoint with the threshold chosen on the validation people.

    faceid train all --data DIR [--out models/facecom-ft] [--runs runs] [--set key=value ...] [--resume]

Every step is resumable: a stage whose best checkpoint is on disk is not trained again unless
asked (`--resume` continues a stage that stopped part way).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from training.config import CONFIGS_DIR, load_config

log = logging.getLogger(__name__)
SCHEDULE = CONFIGS_DIR / "schedule.yaml"
STAGES = ("stage1", "stage2")
COMMAND = "faceid train all"  # what the model card records as the way to make the model again


@dataclass(frozen=True)
class Schedule:
    stages: tuple[str, ...]

    @classmethod
    def read(cls, path: Path = SCHEDULE) -> Schedule:
        try:
            stages = tuple((yaml.safe_load(Path(path).read_text()) or {}).get("stages") or ())
        except (OSError, yaml.YAMLError, AttributeError) as exc:
            raise ValueError(f"{path}: cannot read the schedule ({exc})") from exc
        if not stages or stages[0] != "stage1" or any(s not in STAGES for s in stages) or len(set(stages)) < len(stages):
            raise ValueError(f"{path}: stages must start with stage1 and name each of {', '.join(STAGES)} at most once, got {list(stages)}")
        return cls(stages)


def run(data: Path, out: Path, runs: Path = Path("runs"), overrides: list[str] | None = None, resume: bool = False,
        schedule: Schedule | None = None) -> Path:
    """Train every stage of the schedule on `data`, then export the last one's best checkpoint to
    `out` with the validation people's open-set threshold. Returns `out`."""
    from core.data.dataset import scan
    from evaluation.evaluate import EvaluationRun, evaluate
    from training.export import export
    from training.loop import fit
    from training.stages import BUILDERS

    scan(data)  # a folder that holds no data set fails here, naming it, before anything trains
    schedule = schedule or Schedule.read()
    best: Path | None = None
    config = None
    for stage in schedule.stages:
        settings = [f"stage={stage}", f"data={data}", f"out_dir={runs / stage}", *(overrides or [])]
        if best is not None:
            settings.append(f"init={best}")
        config = load_config(CONFIGS_DIR / f"{stage}.yaml", settings)
        done = Path(config.out_dir) / "best.pt"
        if done.is_file() and not resume:
            log.info("%s: %s is there already; not trained again", stage, done)
            best = done
            continue
        best = fit(BUILDERS[stage](config), resume=resume and (Path(config.out_dir) / "last.pt").is_file())
    assert best is not None and config is not None  # Schedule.read asks for at least one stage
    candidate = export(best, runs / "candidate")
    report = evaluate(EvaluationRun(data=data, split=config.val_split, weights=str(candidate), cache_dir=config.cache_dir,
                                    device=config.device))
    report_path = runs / "val_candidate.json"
    report_path.write_text(json.dumps(report, indent=2))
    command = " ".join([COMMAND, "--data", str(data), *(f"--set {o}" for o in overrides or [])])
    return export(best, out, threshold_report=report_path, command=command)

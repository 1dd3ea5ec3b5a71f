"""The ``revsnn`` command: ``revsnn train | eval | convert | export | bench | plan | models``."""

from __future__ import annotations

import sys
from typing import List, Optional

USAGE = """usage: revsnn <command> [options]

commands:
  train    train a model ('revsnn train' alone: the main job, T-RevSNN on the embedded
           8x8 digits, CPU, about 2 minutes)
  eval     evaluate a saved checkpoint: revsnn eval --checkpoint PATH
  convert  published code's checkpoint -> revsnn checkpoint:
           revsnn convert --published CKPT --model NAME OUT.pt
           shards of a --parallel fsdp run -> one file: revsnn convert --consolidate RUN
  export   a model's inference network as a NIR file (neuromorphic hardware, other SNN
           libraries): revsnn export --checkpoint RUN --format nir OUT.nir
  bench    memory / speed / energy benchmarks: revsnn bench memory|speed|energy ...
  plan     per-part memory modes that fit a memory budget at the least step time:
           revsnn plan --model NAME --batch B --budget 8GiB [--json]
  models   list registered models as a table: revsnn models ['trevsnn*'] [--family F] [--json]

'revsnn <command> --help' describes each command."""


COMMANDS = ("train", "eval", "convert", "export", "bench", "plan", "models")


def main(argv: Optional[List[str]] = None) -> int:
    """``revsnn <command>``; an expected failure of any command (bad file or value, out of
    memory, full disk) is one line on stderr and exit code 2 (:mod:`revsnn.errors`)."""
    from .errors import expected_error

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(argv)
    except Exception as err:  # noqa: BLE001 - expected failures become one line, bugs re-raise
        line = expected_error(err)
        if line is None:
            raise
        cmd = argv[0] if argv else ""
        print(line if line.startswith("revsnn ") else f"revsnn {cmd}: {line}", file=sys.stderr)
        return 2


def _dispatch(argv: List[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)  # bare `revsnn` explains itself; the main job is `revsnn train`
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "train":
        from .train.cli import main as train_main

        return int(train_main(rest) or 0)
    if cmd == "eval":
        from .train.cli import eval_main

        return int(eval_main(rest) or 0)
    if cmd == "convert":
        from .train.convert import main as convert_main

        return int(convert_main(rest) or 0)
    if cmd == "export":
        from .train.export_cli import main as export_main

        return int(export_main(rest) or 0)
    if cmd == "bench":
        from .bench.cli import main as bench_main

        return int(bench_main(rest) or 0)
    if cmd == "plan":
        from .train.plan_cli import main as plan_main

        return int(plan_main(rest) or 0)
    if cmd == "models":
        from .models.listing import main as models_main

        try:
            return int(models_main(rest) or 0)
        except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
            return int(exc.code or 0)
    print(f"revsnn: unknown command {cmd!r}; expected one of {', '.join(COMMANDS)} "
          "(revsnn --help)", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

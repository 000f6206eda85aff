"""``python -m bench NAME [ARGS]``: run one benchmark (its ``--help`` says what it measures)."""

from __future__ import annotations

import importlib
import sys

from training.errors import USER_ERRORS, one_line

#: command name -> (module under ``bench``, what it measures)
COMMANDS = {
    "loader": ("loader", "clips/s of the loader backends against per-clip peers and the decode limit"),
    "remote": ("remote", "loader clips/s from a URL (HTTP ranged reads) vs local disk, bytes per clip"),
    "preprocess": ("preprocess", "shard builder rate next to bare ffmpeg transcodes"),
    "model": ("model", "forward+backward throughput of each backbone, BatchNorm vs temporal group norm"),
    "model-layout": ("model_layout", "TGN/BN step time in the default layout vs channels_last_3d"),
    "profile-loader": ("profile_loader", "where the reference loader's time goes per sample"),
    "loader-thread": ("loader_thread", "what the DALI loader costs the training thread: streams cut on its thread vs in a process"),
    "scale-on-paper": ("scale_on_paper", "GPUs and nodes for a Kinetics-400-sized pretraining, on paper"),
}


def usage() -> str:
    rows = "\n".join(f"  {name:16s} {what}" for name, (_, what) in COMMANDS.items())
    return f"usage: python -m bench NAME [ARGS]  (python -m bench NAME --help for its options)\n\n{rows}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"python -m bench: unknown benchmark {argv[0]!r}; one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{COMMANDS[argv[0]][0]}")
    try:
        result = module.main(argv[1:])
    except (*USER_ERRORS, FileNotFoundError) as err:  # a path or sample the user named: one line, not a traceback
        print(f"python -m bench {argv[0]}: error: {one_line(err)}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())

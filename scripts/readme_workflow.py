"""Run the README's long workflow (data -> train -> optimize -> export -> bench -> run) with small sizes.

    python scripts/readme_workflow.py WORKDIR [--strict]

Reads the ```bash block of the README's "Workflow" section, rewrites only the sizes (the table
SMALL below: fewer patients, 32 px, 4 filters, fewer epochs, the quick benchmark profile) and
the placeholder study path, and runs each command in WORKDIR, in order, stopping at the first
one that fails. Everything else (commands, options, file names) is exactly as written, so the
README cannot drift from the tool. Takes a few minutes on two cores.

Exit status 0 when every command exited 0, or when `bench` exited 1 (its documented "a gate
failed": on a 32 px toy model trained for seconds, QAT or pruning can honestly miss the
tolerance, and the failed checks are printed); 1 otherwise. --strict requires 0 from `bench` too.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# (pattern, replacement): sizes only. A README line that none of them matches runs unchanged.
SMALL: list[tuple[str, str]] = [
    (r"--patients \d+", "--patients 8 --dicom"),  # --dicom: a DICOM study for the edge-box `run` step
    (r"--image-size \d+", "--image-size 32 --epochs 12 --batch-size 4"),
    (r"--base-filters \d+", "--base-filters 4"),
    (r"--encoder resnet18 --time-budget \d+", "--encoder resnet18 --image-size 32 --base-filters 4 --time-budget 0.3"),
    (r"(edge-seg bench all .*)$", r"\1 --quick"),
    (r"/path/to/study", "STUDY"),
]


def workflow_commands(readme: Path = README) -> list[str]:
    """The command lines of the first ```bash block after the '## Workflow' heading."""
    text = readme.read_text(encoding="utf-8")
    section = text.split("\n## Workflow", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    if block is None:
        raise SystemExit(f"{readme}: no bash block in the Workflow section")
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def small(line: str) -> str:
    """`line` with the sizes of SMALL applied."""
    for pattern, replacement in SMALL:
        line = re.sub(pattern, replacement, line)
    return line


GATE_VERDICT = ("edge-seg bench ",)
"""Commands whose exit status 1 is a verdict (a gate failed) rather than a failure to run."""


def main(argv: list[str]) -> int:
    strict = "--strict" in argv
    argv = [a for a in argv if a != "--strict"]
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    work = Path(argv[0])
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    commands = [small(line) for line in workflow_commands()]
    data = next(shlex.split(c)[2] for c in commands if c.startswith("edge-seg synth"))
    for command in commands:
        command = command.replace("STUDY", f"{data}/01_MRI_Data")
        start = time.perf_counter()
        done = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        print(f"{done.returncode:>3}  {seconds:6.1f} s  {command}", flush=True)
        if done.returncode == 1 and command.startswith(GATE_VERDICT) and not strict:
            failed = [line for line in done.stderr.splitlines() if line.startswith("gate failed")]
            print("     a gate failed (the verdict, not a crash):", *failed, sep="\n       ", flush=True)
            continue
        if done.returncode != 0:
            print(done.stdout[-4000:], done.stderr[-4000:], sep="\n", file=sys.stderr)
            return 1
    print(f"all {len(commands)} README workflow commands ran in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

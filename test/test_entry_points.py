"""The console scripts that `ros2 run` and `ros2 launch` execute end cleanly on a signal that
arrives while they import.

Issue 27: Ctrl-C about a second after `ros2 launch` printed a KeyboardInterrupt traceback from
inside `import torch` and launch reported exit code -2, because the stop guard sat in the node
module's `__main__` block, which `python -m` runs and a console script does not. colcon is not
installable here, so the test writes the script the way pip generates it, from setup.py's own
entry point, and runs it in a child process.
"""

from __future__ import annotations

import ast
import re
import signal
import sys
import time

import pytest

from dehaze_ros.tools import processes
from ros_helpers import REPO_ROOT, child_env

# pip's console-script template: import the entry function, then call it.
CONSOLE_SCRIPT = """\
import re
import sys
from {module} import {function}
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit({function}())
"""


def console_scripts() -> dict[str, tuple[str, str]]:
    """setup.py's console_scripts: name -> (module, function)."""
    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    setup_call = next(
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup"
    )
    entry_points = next(kw.value for kw in setup_call.keywords if kw.arg == "entry_points")
    scripts = {}
    for entry in ast.literal_eval(entry_points)["console_scripts"]:
        name, target = (part.strip() for part in entry.split("="))
        module, function = target.split(":")
        scripts[name] = (module, function)
    return scripts


def wait_for_line(log_path, pattern: str, process, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if re.search(pattern, log_path.read_text(errors="replace"), re.MULTILINE):
            return True
        time.sleep(0.005)
    return False


# script -> a module the script's start-up loads for a long while (seconds for torch).
HEAVY_IMPORT = {"dehaze_node": "torch", "sample_camera": "numpy"}


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("script", sorted(HEAVY_IMPORT))
def test_a_signal_while_the_console_script_imports_ends_it_with_status_0(tmp_path, script, signum):
    module, function = console_scripts()[script]
    script_path = tmp_path / script
    script_path.write_text(CONSOLE_SCRIPT.format(module=module, function=function))
    log_path = tmp_path / f"{script}.log"
    # -X importtime logs each module as its import ends: a submodule of the heavy one logged
    # means the script is inside that import, the moment the Ctrl-C landed in.
    process = processes.start(
        [sys.executable, "-X", "importtime", str(script_path)], log_path, child_env(), cwd=tmp_path
    )
    try:
        inside = wait_for_line(log_path, rf"\|\s+{HEAVY_IMPORT[script]}\.\S+\s*$", process, 60)
        assert inside, f"{script} never imported {HEAVY_IMPORT[script]}:\n{log_path.read_text()}"
        process.send_signal(signum)
        returncode = process.wait(timeout=60)
    finally:
        processes.stop([process], 10)
    # Only the program's own output: the import-time lines are the test's instrument.
    output = "\n".join(
        line
        for line in log_path.read_text(errors="replace").splitlines()
        if not line.startswith("import time:")
    )
    assert returncode == 0, f"{script} ended with {returncode}:\n{output}"
    for problem in ("Traceback", "KeyboardInterrupt", "Exception ignored"):
        assert problem not in output, output

"""Imports go down only: the import-linter layers contract in pyproject.toml, and light low layers."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_layers_contract_is_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Contracts: 1 kept, 0 broken." in proc.stdout


def test_a_broken_layer_order_is_caught(tmp_path):
    """The same check on a contract that puts config above the plug-ins must fail (the linter really runs)."""
    text = (ROOT / "pyproject.toml").read_text()
    bad = text.replace('"config : runs : runlock : records : spec",\n', "").replace('    "cli : api",\n',
                                                                         '    "config",\n    "cli : api",\n')
    assert bad != text
    cfg = tmp_path / "pyproject.toml"
    cfg.write_text(bad)
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--config", str(cfg), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1 and "BROKEN" in proc.stdout


def test_config_loads_no_plugin_experiment_or_analysis_module():
    code = ("import sys, guidetune.config, guidetune.registry, guidetune.runs; "
            "print(sorted(m for m in sys.modules if m.startswith(('guidetune.regularizers', 'guidetune.tasks', "
            "'guidetune.experiment', 'guidetune.analysis', 'guidetune.cli'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"

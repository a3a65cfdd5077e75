"""``build_components``: the colocated hf engine runs on the policy's own parameters."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers import REPO

SCRIPT = r"""
import json, sys, tempfile
from pathlib import Path
from nemo_rence.build import build_components
from nemo_rence.config import compose
from nemo_rence.policy.megatron.parallel import teardown

def main():
    cfg = compose(["model=tiny", "rollout.engine=hf", "data.max_prompt_tokens=512"])
    parts = build_components(cfg, Path(tempfile.mkdtemp()))
    policy, engine = parts.policy, parts.engine
    storages = {p.untyped_storage().data_ptr() for p in policy.model.parameters()}
    rows = {
        name: p.untyped_storage().data_ptr() in storages
        for name, p in engine.model.named_parameters()
    }
    parts.close()
    teardown()
    print("RESULT " + json.dumps(rows))

if __name__ == "__main__":
    main()
"""


def test_the_hf_engine_shares_every_policy_tensor_but_the_fused_qkv(tmp_path):
    script = tmp_path / "build_probe.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    shared = json.loads(line[len("RESULT ") :])
    not_shared = sorted(n for n, s in shared.items() if not s)
    assert not_shared and all(
        n.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight")) for n in not_shared
    ), not_shared
    assert len(shared) - len(not_shared) > 2 * len(not_shared)  # norms, o, gate/up, down, embedding

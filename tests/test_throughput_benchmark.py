"""benchmarks/throughput.py --smoke, run as a user runs it, on the smoke config and a mined corpus."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_smoke_run_compares_every_arm(mined_corpus, tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--smoke",
         "--config", str(REPO / "configs" / "smoke.yaml"), "--set", f"data.path={mined_corpus}"],
        cwd=tmp_path, capture_output=True, text=True,
    )
    print(done.stdout)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for arm in ("codecl full-ft", "codecl LoRA", "HF Trainer full-ft (random)", "HF Trainer full-ft (group_by_length)",
                "HF Trainer+PEFT LoRA (random)", "HF Trainer+PEFT LoRA (group_by_length)",
                "codecl generate", "HF model.generate (unsorted batches of 64)", "HF model.generate (codecl's sorted batches)"):
        assert f"round 1 {arm} " in out, arm
    assert re.search(r"^training ratio: .* = [\d.]+x \(target ≥ 2\.0x\)", out, re.M)
    assert re.search(r"^decoding ratio: .* = [\d.]+x \(target ≥ 3\.0x\)", out, re.M)
    assert "decoded outputs: 0 differing of 8 (all identical)" in out
    # Both sides count non-pad inputs and non-ignored labels of the same examples: the counts must agree.
    checks = re.findall(r"^useful tokens check: (.+?) (\d+) / (.+?) (\d+): ", out, re.M)
    assert {(ours, theirs) for ours, _, theirs, _ in checks} == {
        ("codecl full-ft", "HF Trainer full-ft (random)"), ("codecl LoRA", "HF Trainer+PEFT LoRA (random)")}
    for ours, our_tokens, theirs, their_tokens in checks:
        assert int(our_tokens) == int(their_tokens) > 0, (ours, theirs)
    assert "| shape | arm | codecl | reference | ratio | target | met? |" in out


def test_an_unknown_shape_is_one_line_and_fails(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--shapes", "tiny,codet5-large"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode != 0
    assert "unknown shape 'codet5-large'" in done.stderr.strip().splitlines()[-1]

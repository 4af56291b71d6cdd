import json
from pathlib import Path
def test_peek(tiny_strong, tiny_weak):
    for run in (tiny_strong, tiny_weak):
        m = json.loads(Path(run[1].metrics_path).read_text())
        print(run[1].accuracy, [round(r["accuracy"], 3) for r in m["per_class"]])

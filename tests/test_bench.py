"""`python scripts/bench.py --quick` end to end, as the README shows it, into a temp folder."""
import json
import subprocess
import sys

from conftest import ROOT


def test_bench_quick(data_dir, tmp_path):
    r = subprocess.run([sys.executable, "scripts/bench.py", "--quick", "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT, timeout=600,
                       env={**__import__("os").environ, "CIFAR10_DIR": data_dir})
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((tmp_path / "bench.json").read_text())
    rows = {row["name"]: row for row in rep["rows"]}
    fast = rep["fast_kernel"]
    assert {"torch.ao int8", "FP32 torch", f"intengine W8A8 {fast}", "intengine W8A8 portable"} <= set(rows)
    assert ("onnxruntime int8" in rows) != any("onnxruntime" in n for n in rep["notes"])   # run, or said why not
    if "onnxruntime int8" in rows:                      # OpenVINO reads onnxruntime's QDQ file
        assert ("OpenVINO int8" in rows) != any("OpenVINO" in n for n in rep["notes"])
    from intengine import cpu
    assert fast == cpu.fast_kernels()[0] and all(f"intengine W8A8 {k}" in rows for k in cpu.fast_kernels())
    for name, row in rows.items():
        assert row["images_per_s"] > 0 and row["p50_ms"] > 0 and row["p99_ms"] >= row["p50_ms"]
        if name.startswith("intengine"):
            assert row["bit_identical_to_scalar"] is True
            assert row["start_to_first_logits_s"] > 0 and row["peak_rss_bytes"] > 0
        assert row["top1_timed_images"] > 0.5               # every contender: top-1 on the images it is timed on
    assert rows["torch.ao int8"]["x_torchao"] == 1.0
    assert rep["machine"]["threads"] == 2 and "avx512vnni" in rep["machine"]["flags"]
    prof = rep["profile_us_per_image"]
    assert prof["name"] == f"intengine W8A8 {fast}" and prof["ops"][0][0] == "input LUT"
    assert any("conv2 + " in o[0] for o in prof["ops"]) and all(o[1] >= 0 for o in prof["ops"])
    ir = {o[0]: o for o in rep["profile_inverted_residual"]["ops"]}     # the new ops' fast rows, measured
    assert {"expand 1x1", "depthwise 3x3"} <= set(ir) and all(ir[k][1] > 0 for k in ("expand 1x1", "depthwise 3x3"))
    if rep["roofline"]["peak_macs_per_s_1_thread"]:        # measured where the processor has VNNI
        assert all(ir[k][2] > 0 for k in ("expand 1x1", "depthwise 3x3"))
    # the fair protocol: each contender in its own process, interleaved rounds, ratios per round
    assert rep["fair_rounds"] == 3
    for name in ("torch.ao int8", f"intengine W8A8 {fast}", "intengine W8A8 portable", "FP32 torch"):
        row = rows[name]
        assert len(row["fair_rounds"]) == 3 and row["fair_spread"][0] <= row["fair_images_per_s"] <= row["fair_spread"][1]
    assert rows["torch.ao int8"]["fair_x_torchao"] == 1.0
    roof = rep["roofline"]
    assert roof["macs_per_image"] == 40_551_040                  # ResNet20: 41.0 M multiply-accumulates
    if roof["peak_macs_per_s_1_thread"]:                         # the fastest path's own instruction
        assert roof["instruction"] == {"amx": "tdpbusd", "vnni": "vpdpbusd", "avxvnni": "vpdpbusd-ymm", "avx2": "vpmaddubsw"}[fast]
        assert roof["peak_macs_per_s_all_threads"] >= roof["peak_macs_per_s_1_thread"] > 1e10
        assert 0 < rows[f"intengine W8A8 {fast}"]["fraction_of_peak"] < 1
        assert rows[f"intengine W8A8 {fast}"]["peak_instruction"] in roof["peaks"]     # the one it runs most
        assert any(len(o) == 3 and o[2] and 0 < o[2] < 1 for o in prof["ops"])
    if "onnxruntime int8" in rows:                            # batch-1 latency by the fair rule too
        for name in ("onnxruntime int8", f"intengine W8A8 {fast}"):
            lo, hi = rows[name]["fair_p50_spread_ms"]
            assert len(rows[name]["fair_p50_rounds_ms"]) == 3 and 0 < lo <= rows[name]["fair_p50_ms"] <= hi
        assert rows["onnxruntime int8"]["fair_p50_x_onnxruntime"] == 1.0
        assert any(t[0].startswith("W8A8 batch-1 p50") for t in rep["targets"])
    sc = rep["thread_scaling"][f"intengine W8A8 {fast}"]       # the same contender on one thread, in its rounds
    assert sc["threads"] == 2 and sc["one_thread"] > 0 and sc["speedup"] == sc["images_per_s"] / sc["one_thread"]
    assert sc["images_per_s"] == rows[f"intengine W8A8 {fast}"]["fair_images_per_s"]
    md = (tmp_path / "bench.md").read_text()
    assert "| intengine W8A8 portable |" in md and "× torch.ao int8" in md and "**The fair protocol**" in md
    assert "Threads, in the same fair rounds" in md and "| top-1 |" in md and rep["machine"]["cpu"] in md
    assert all(f"The roofline of {ins}" in md for ins in roof["peaks"])
    assert "torch.ao int8" in r.stdout


def test_asm_counts_reads_the_micro_kernels():
    """scripts/asm_counts.py finds the vpdpbusd loops of both micro-kernels (where the processor
    has AVX512-VNNI), or says in one line why not."""
    from intengine import cpu
    r = subprocess.run([sys.executable, "scripts/asm_counts.py"], capture_output=True, text=True, cwd=ROOT,
                       timeout=600)
    if not cpu.HAS_VNNI:
        assert r.returncode != 0 and "AVX512-VNNI" in r.stderr and "Traceback" not in r.stderr
        return
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in r.stdout.splitlines()[2:]]
    kernels = {row[1].strip().split(" ")[0]: [c.strip() for c in row] for row in rows}
    assert set(kernels) == {"micro", "micro2"}
    for name, tiles in (("micro", 1), ("micro2", 2)):
        row = kernels[name]
        groups, vpdpbusd, accs = int(row[2]), int(row[3]), int(row[4])
        assert accs == 8 * tiles and vpdpbusd == 8 * tiles * groups       # 8 pixels x 16 channels per tile
    if cpu.HAS_AVXVNNI:             # the ymm body: 4 pixels x 16 channels a pass, 8 accumulators
        r = subprocess.run([sys.executable, "scripts/asm_counts.py", "--kernel", "avxvnni"], capture_output=True,
                           text=True, cwd=ROOT, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        rows = [[c.strip() for c in line.split("|")[1:-1]] for line in r.stdout.splitlines()[2:]]
        assert rows and all(int(row[4]) == 8 and int(row[3]) == 8 * int(row[2]) > 0 for row in rows), rows


def test_engine_ab_compares_two_checkouts(data_dir):
    """scripts/engine_ab.py against this same checkout: one row per file with both speeds and
    their ratio (the two runs are the same code, so the ratio is near 1)."""
    r = subprocess.run([sys.executable, "scripts/engine_ab.py", "--old", str(ROOT), "--rounds", "1", "--images",
                        "256", "--calls", "20", "models/resnet20_w2a8_brecq_lsq_s0.npz"], capture_output=True,
                       text=True, cwd=ROOT, timeout=600, env={**__import__("os").environ, "CIFAR10_DIR": data_dir})
    assert r.returncode == 0, r.stderr[-2000:]
    row = [c.strip() for c in r.stdout.strip().splitlines()[-1].strip("|").split("|")]
    assert row[0] == "resnet20_w2a8_brecq_lsq_s0.npz" and 0.2 < float(row[4]) < 5 and 0.2 < float(row[7]) < 5, row


def test_bench_emulated_avx2(data_dir, tmp_path):
    """`bench.py --isa avx2` (the README's emulated race): the script runs again with every
    library limited to AVX2, the engine takes its avx2 path, and the report says it is emulated."""
    r = subprocess.run([sys.executable, "scripts/bench.py", "--isa", "avx2", "--quick", "--images", "64", "--rounds",
                        "1", "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=600,
                       env={**__import__("os").environ, "CIFAR10_DIR": data_dir})
    from intengine import cpu
    if not cpu.host_features().get("avx2"):
        assert r.returncode != 0 and "AVX2" in r.stderr
        return
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((tmp_path / "bench.json").read_text())
    assert rep["fast_kernel"] == "avx2" and rep["machine"]["isa_limit"]["env"]["NUMBA_CPU_NAME"] == "haswell"
    assert rep["command"].endswith("--isa avx2")
    rows = {row["name"]: row for row in rep["rows"]}
    assert rows["intengine W8A8 avx2"]["bit_identical_to_scalar"] is True and "intengine W8A8 vnni" not in rows
    assert (tmp_path / "bench.md").read_text().startswith("**AVX2, emulated on ")


def test_the_per_processor_table_keeps_one_race_per_kind(tmp_path):
    """bench.publish_kind: each published race replaces its processor kind's older one (the
    real and the emulated AVX2 are two kinds), and the README's table shows one row per kind
    with its processor and date.  --add-run refuses a smoke run and a file that is no report,
    in one line, and writes nothing."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import bench
    rep = json.loads((ROOT / "results" / "bench.json").read_text())
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- bench-kinds:start -->\nold\n<!-- bench-kinds:end -->\nb\n")
    kinds = tmp_path / "kinds.json"
    emulated = json.loads(json.dumps(rep))
    emulated["machine"]["isa_limit"] = {"isa": "avx2", "env": {}}
    emulated["fast_kernel"] = "avx2"
    for r in emulated["rows"]:
        r["name"] = r["name"].replace(f" {rep['fast_kernel']}", " avx2")
    for race in (rep, emulated, rep):
        bench.publish_kind(race, path=kinds, readme=readme)
    table = json.loads(kinds.read_text())
    assert sorted(table) == sorted([rep["fast_kernel"], "avx2 (emulated)"])
    row = table[rep["fast_kernel"]]
    w8 = next(r for r in rep["rows"] if r["name"] == f"intengine W8A8 {rep['fast_kernel']}")
    assert row["x_torchao"]["8"] == w8["fair_x_torchao"] and row["processor"] == rep["machine"]["cpu"]
    text = readme.read_text()
    assert "old" not in text and text.count(f"| {rep['machine']['cpu']} (") == 2 and "| avx2 (emulated) |" in text
    for bad in ("not json", json.dumps({**rep, "command": "python scripts/bench.py --quick"})):
        f = tmp_path / "bad.json"
        f.write_text(bad)
        r = subprocess.run([sys.executable, "scripts/bench.py", "--add-run", str(f)], capture_output=True, text=True,
                           cwd=ROOT, timeout=120)
        assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr

"""``mart-bench run``: references, the table, and one whole run (build, pretrain, heareval, covers, export)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mart_upstream.benchmarks.run import report
from hear_api import chroma as hear_chroma, mfcc as hear_mfcc
from mart_upstream.adapters.hear.references import ReferenceModel
from mart_upstream.benchmarks.run.evaluation import key_invariant_similarity
from kit import ROOT, tone_tensor
from mart_upstream.benchmarks.subprocesses import child_env

pytestmark = pytest.mark.slow  # the module runs mart-bench end to end

BIN = os.path.dirname(sys.executable)
SR = 16000


def _tone(freq, seconds=3.0):
    n = int(SR * seconds)
    return tone_tensor(n, freq, SR, amplitude=0.3) + tone_tensor(n, 2 * freq, SR, amplitude=0.15)


def _env():
    return child_env(CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")


def _run(cmd, cwd, timeout=900, check=True):
    r = subprocess.run([str(c) for c in cmd], cwd=str(cwd), env=_env(), capture_output=True, text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


# -- references ------------------------------------------------------------------------------------
def test_chroma_follows_pitch_class_and_key_invariance_undoes_transposition():
    load, ts, scene = hear_chroma.load_model, hear_chroma.get_timestamp_embeddings, hear_chroma.get_scene_embeddings
    m = load()
    a, c = 440.0, 440.0 * 2 ** (3 / 12)  # A4 and C5: three semitones apart
    emb = scene(torch.stack([_tone(a), _tone(c), _tone(a * 2 ** (5 / 12))]), m).numpy()
    assert emb.shape == (3, 24)
    assert int(np.argmax(emb[0, :12])) == 9 and int(np.argmax(emb[1, :12])) == 0  # librosa chroma: C=0 ... A=9
    plain = emb[:, :12] / np.linalg.norm(emb[:, :12], axis=1, keepdims=True)
    sim = key_invariant_similarity(emb)
    assert plain[0] @ plain[1] < 0.5 < sim[0, 1]  # different keys, the same line after a rotation
    assert sim[0, 1] > 0.99 and np.allclose(sim, sim.T) and np.allclose(np.diag(sim), 1.0)


def test_mfcc_statistics_separate_timbres_and_keep_the_frame_grid():
    load, ts, scene = hear_mfcc.load_model, hear_mfcc.get_timestamp_embeddings, hear_mfcc.get_scene_embeddings
    m = load()
    noise = 0.1 * torch.randn(SR * 2, generator=torch.Generator().manual_seed(0))
    x = torch.stack([_tone(220, 2.0), _tone(230, 2.0), noise])
    e = scene(x, m)
    assert e.shape == (3, m.scene_embedding_size) == (3, 80)
    d = torch.cdist(e, e)
    assert d[0, 1] < d[0, 2] and d[0, 1] < d[1, 2]
    emb, centres = ts(x, m)
    assert emb.shape[:2] == centres.shape and emb.shape[2] == 40
    assert torch.allclose(centres[0, 1:] - centres[0, :-1], torch.tensor(20.0))
    with pytest.raises(TypeError, match="load_model"):
        scene(x, torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="mono"):
        scene(x[None], m)


@pytest.mark.parametrize("kind", ["mfcc", "chroma"])
def test_references_pass_the_hear_validator(kind, tmp_path):
    r = _run([os.path.join(BIN, "hear-validator"), f"hear_api.{kind}", "-d", "cpu"], tmp_path, 300)
    assert "Looks good!" in r.stdout + r.stderr
    assert ReferenceModel(kind).timestamp_hop_ms <= 50
    # what the validator checked, stated: the sizes the model declares, timestamps on its hop, any sample rate
    module = {"mfcc": hear_mfcc, "chroma": hear_chroma}[kind]
    m = module.load_model()
    audio = torch.stack([_tone(440.0, 1.0), _tone(220.0, 1.0)])
    emb, ts = module.get_timestamp_embeddings(audio, m)
    assert emb.shape[0] == 2 and emb.shape[2] == m.timestamp_embedding_size and ts.shape == emb.shape[:2]
    assert torch.allclose(ts[:, 1:] - ts[:, :-1], torch.tensor(m.timestamp_hop_ms))
    scene = module.get_scene_embeddings(audio, m)
    assert scene.shape == (2, m.scene_embedding_size) and torch.isfinite(scene).all()
    assert not torch.allclose(scene[0], scene[1])  # an octave apart: different summaries


# -- the table ---------------------------------------------------------------------------------------
def _entry(row, key, seed, top1, cmap, mr1):
    return {"row": row, "key": key, "seed": seed, "style": {"top1_acc": top1, "mAP": top1 + 0.1},
            "covers": {"map": cmap, "p_at_10": cmap / 2, "mr1": mr1}}


def test_rows_summarise_seeds_and_comparisons_name_what_is_not_better(tmp_path):
    entries = [_entry("mart", "mart-seed0", 0, 0.5, 0.4, 3.0), _entry("mart", "mart-seed1", 1, 0.7, 0.2, 5.0),
               _entry("mart (random init)", "mart-random", None, 0.55, 0.35, 4.5),
               _entry(report.MFCC_ROW, "mfcc", None, 0.3, 0.1, 9.0)]
    rows = report.table_rows(entries)
    assert [r["row"] for r in rows] == ["mart", "mart (random init)", report.MFCC_ROW]
    t = rows[0]["style_top1_acc"]
    assert t["n"] == 2 and t["mean"] == pytest.approx(0.6) and t["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    comps = {(c["reference"], c["metric"]): c["better"] for c in report.comparisons(rows)}
    assert comps[("mart (random init)", "style top1_acc")] is True
    assert comps[("mart (random init)", "cover MAP")] is False  # 0.30 vs 0.35
    assert comps[("mart (random init)", "cover MR1 (lower better)")] is True  # 4.0 vs 4.5: lower is better
    result = {"table": rows, "comparisons": report.comparisons(rows), "runs": [],
              "meta": {"data": "d", "budget": "b", "seeds": [0, 1], "grid": "faster", "grid_points": 1,
                       "cover_tracks": 8, "cover_works": 2, "total_minutes": 1.0}}
    text = report.markdown(result)
    assert "| mart | 2 | 0.600 ± 0.141 |" in text and "**not better** (-0.050)" in text
    report.plot(result, str(tmp_path / "r.png"))
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_kept_results_are_evaluated_again_when_the_checkpoint_or_the_task_changes(tmp_path, caplog):
    from benchmarks.run.evaluation import INPUTS_FILE, Entry, bind, task_digest

    ckpt, folder = tmp_path / "m.ckpt", tmp_path / "eval" / "m-seed0"
    ckpt.write_bytes(b"weights 1")
    task = tmp_path / "task"
    task.mkdir()
    (task / "test.json").write_text("{}")
    entry = Entry("m", "m-seed0", "hear_api.mart", str(ckpt), 0)

    def kept_after(**inputs):
        (folder / "style.json").write_text("{}") if folder.is_dir() else None
        bind(entry, str(folder), inputs)
        return (folder / "style.json").is_file()

    folder.mkdir(parents=True)
    (folder / "style.json").write_text("{}")
    assert kept_after(task=task_digest(str(task)))  # kept from before the record: taken, then recorded
    assert json.loads((folder / INPUTS_FILE).read_text())["checkpoint_sha256"]
    assert kept_after(task=task_digest(str(task)))  # nothing changed
    assert kept_after(task=task_digest(str(task)), grid="faster/1")  # a newly recorded input: not stale
    ckpt.write_bytes(b"weights 2")
    assert not kept_after(task=task_digest(str(task)), grid="faster/1")  # other weights, same path
    assert "checkpoint_sha256 changed" in caplog.text
    (task / "test.json").write_text('{"a": 1}')
    assert not kept_after(task=task_digest(str(task)), grid="faster/1")  # other splits
    assert not kept_after(task=task_digest(str(task)), grid="fast/8")
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["m-seed0"]  # no staging folder left


# -- one whole run ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A small rendered set, then ``mart-bench run`` on it with a 2-step budget, 2 seeds, heareval's
    smallest grid and the export of the best seeds (about 4 minutes on 2 cores)."""
    base = tmp_path_factory.mktemp("bench")
    data, out = base / "data", base / "out"
    _run([os.path.join(BIN, "mart-bench"), "data", "--out", data, "--profile", "small", "--clips-per-class", "3",
          "--cover-works", "4", "--pretrain-clips", "6", "--clip-seconds", "6"], base)
    # recorded music: the soundtrack packages' layout, small (tests/test_recordings.py), built into the same folder
    from benchmarks.data import recordings
    from test_recordings import make_debroot

    os.environ.setdefault("MART_CACHE", str(base / "cache"))
    debroot = make_debroot(base / "debroot")
    recordings.build(str(data), recordings.RecordingsConfig(prefix=str(debroot), clips_per_track=2, pretrain=False), 0)
    cmd = [os.path.join(BIN, "mart-bench"), "run", "--data", data, "--out", out, "--minutes", "0", "--steps", "2", "--batch-size", "4",
           "--seeds", "0,1", "--grid", "faster", "--grid-points", "1", "--export", out / "ckpts", "--num-workers", "0"]
    r = _run(cmd, base, 1500)
    return {"base": base, "data": data, "out": out, "cmd": cmd, "stdout": r.stdout}


def test_run_writes_every_row_on_both_tasks(bench):
    res = json.loads((bench["out"] / "results.json").read_text())
    rows = {r["row"]: r for r in res["table"]}
    assert list(rows) == ["mart", "pemr", "simclr", "mart (random init)", report.random_row("pemr"),
                          report.MFCC_ROW, report.CHROMA_ROW, report.MUSICNN_ROW]
    for name, r in rows.items():
        assert len(r["seeds"]) == (2 if name in ("mart", "pemr", "simclr") else 0)
        for task, metric in report.COLUMNS:
            s = r[f"{task}_{metric}"]
            assert s["n"] == max(1, len(r["seeds"]))
            assert (1.0 <= s["mean"] <= 15) if metric == "mr1" else (0.0 <= s["mean"] <= 1.0), (name, metric)
    assert all(run["steps"] == 2 for run in res["runs"]) and len(res["runs"]) == 6
    # the recordings: soundtrack identification and same-track retrieval for every row, paired by track
    for name, r in rows.items():
        assert 0.0 <= r["soundtrack_top1_acc"]["mean"] <= 1.0 and 0.0 < r["tracks_map"]["mean"] <= 1.0, name
    metrics = {(c["model"], c["reference"], c["metric"]) for c in res["paired"]}
    assert ("mart", "mart (random init)", "soundtrack top1_acc (grouped CV)") in metrics
    assert ("pemr", report.MUSICNN_ROW, "same-track MAP") in metrics
    assert "recorded tracks from 3 games" in res["meta"]["recordings"]
    text = (bench["out"] / "results.md").read_text()
    assert text.index("soundtrack top1_acc (CV)") < text.index("Verdict") < text.index("heareval probe (test split)")
    assert res["meta"]["cover_works"] == 4 and res["meta"]["cover_tracks"] == 16
    chroma = next(e for e in res["entries"] if e["key"] == "chroma")
    assert "key-invariant" in chroma["covers"]["search"]
    # heareval's own score files are where the style numbers come from
    mart0 = next(e for e in res["entries"] if e["key"] == "mart-seed0")
    scores_file = next((bench["out"] / "eval" / "mart-seed0" / "embeddings").glob("*/*/test.predicted-scores.json"))
    assert json.loads(scores_file.read_text())["test"]["test_top1_acc"] == pytest.approx(mart0["style"]["top1_acc"])
    # every entry is also scored by grouped cross-validation over all clips, and covers per query
    for e in res["entries"]:
        assert len(e["style"]["cv"]["correct"]) == len(e["style"]["cv"]["names"]) == 24
        assert len(e["covers"]["query_ap"]) == 16
    pairs = {(c["model"], c["reference"], c["metric"]) for c in res["paired"]}
    assert ("mart", "mart (random init)", "style top1_acc (grouped CV)") in pairs
    assert ("pemr", report.MFCC_ROW, "cover MAP") in pairs
    assert ("mart", report.MUSICNN_ROW, "style top1_acc (grouped CV)") in pairs
    md = (bench["out"] / "results.md").read_text()
    assert all(f"| {name} |" in md for name in rows) and "against" in md
    assert (bench["out"] / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_exported_checkpoints_load_through_the_adapters(bench):
    from hear_api import mart as hear_mart

    ckpts = bench["out"] / "ckpts"
    assert sorted(p.name for p in ckpts.iterdir()) == ["mart.ckpt", "mart.md", "pemr.ckpt", "pemr.md",
                                                       "simclr.ckpt", "simclr.md"]
    state = torch.load(ckpts / "mart.ckpt", weights_only=True)
    assert state["optimizer"] is None and all(v.dtype == torch.float16 for v in state["model"].values()
                                              if v.is_floating_point())
    card = state["pretrain"]["model_card"]
    assert card["steps"] == 2 and card["seed"] in (0, 1) and card["commit"]
    text = (ckpts / "mart.md").read_text()
    assert f"seed {card['seed']}, 2 steps" in text
    # the card gives the recordings' scores, and paired differences beside random init, MFCC and MusiCNN
    assert "Recorded soundtracks: soundtrack identification (grouped CV by track) top1_acc" in text
    for against in ("the random init", report.MFCC_ROW, report.MUSICNN_ROW):
        assert f"Paired difference with {against}, soundtrack top1_acc (grouped CV)" in text, against
    model = hear_mart.load_model(str(ckpts / "mart.ckpt"))
    assert next(model.parameters()).dtype == torch.float32
    assert hear_mart.get_scene_embeddings(torch.zeros(1, SR), model).shape == (1, model.scene_embedding_size)


def test_a_second_run_reuses_everything_finished(bench):
    logs = sorted(bench["out"].glob("pretrain/*/*/pretrain.log"))
    before = [p.stat().st_size for p in logs]
    r = _run(bench["cmd"], bench["base"], 600)
    assert [p.stat().st_size for p in logs] == before  # no pretraining run started again
    assert "evaluating it again" not in r.stderr  # every kept result still matches its checkpoint and task
    assert all((d / "inputs.json").is_file() for d in (bench["out"] / "eval").iterdir())
    assert "| mart | 2 |" in r.stdout


def test_missing_inputs_are_one_clear_error(bench, tmp_path):
    r = _run([os.path.join(BIN, "mart-bench"), "run", "--data", tmp_path, "--out", tmp_path / "o"], tmp_path,
             check=False)
    assert r.returncode == 2 and "mart-bench run: error:" in r.stderr and "does not exist" in r.stderr
    (tmp_path / "tasks").symlink_to(bench["data"] / "tasks")
    r = _run([os.path.join(BIN, "mart-bench"), "run", "--data", tmp_path, "--out", tmp_path / "o"], tmp_path,
             check=False)
    assert r.returncode == 2 and "cover manifest" in r.stderr and "manifest.csv" in r.stderr
    r = _run([os.path.join(BIN, "mart-bench"), "run", "--data", bench["data"], "--out", tmp_path / "o",
              "--models", "mart,nosuchmodel"], tmp_path, check=False)
    assert r.returncode == 2 and "nosuchmodel" in r.stderr
    if not torch.cuda.is_available():  # the one CUDA check of every tool (distributed.require_cuda)
        r = _run([os.path.join(BIN, "mart-bench"), "run", "--data", bench["data"], "--out", tmp_path / "c",
                  "--device", "cuda"], tmp_path, check=False)
        assert r.returncode == 2 and "CUDA was requested (--device cuda)" in r.stderr and "--device cpu" in r.stderr
        assert not (tmp_path / "c").exists()


def test_compact_checkpoints_halve_float32_weights_and_keep_the_standardiser_statistics(tmp_path):
    """The exported (float16) checkpoint of a model with input standardisation keeps the running count,
    mean and variance in float64: a count of billions of log-mel values overflows float16."""
    from mart_upstream.checkpoint import compact
    from mart_upstream.checkpoint import load_pretrained, read_checkpoint, save_checkpoint, write_state
    from mart_upstream.models import build_model, tiny_config

    model = build_model("cnn5_infonce", tiny_config("cnn5_infonce"))
    std = model.frontend.standardiser
    std.count.fill_(3.0e9), std.mean.fill_(-4.123456789), std.var.fill_(2.5)
    save_checkpoint(str(tmp_path / "full.ckpt"), model, "cnn5_infonce", step=1)
    state = compact(read_checkpoint(str(tmp_path / "full.ckpt")))
    weights = state["model"]
    assert weights["frontend.standardiser.count"].dtype == torch.float64
    assert float(weights["frontend.standardiser.count"]) == 3.0e9
    assert all(v.dtype in (torch.float16, torch.float64) for v in weights.values() if v.is_floating_point())
    assert any(v.dtype == torch.float16 for v in weights.values())
    write_state(str(tmp_path / "small.ckpt"), state)
    loaded, _ = load_pretrained(str(tmp_path / "small.ckpt"))
    assert float(loaded.frontend.standardiser.mean) == -4.123456789


def test_ablation_trains_each_variant_and_pairs_it_with_the_chain_random_init_and_mfcc(bench, tmp_path):
    out = tmp_path / "ablate"
    _run([os.path.join(BIN, "mart-bench"), "ablate", "--data", bench["data"], "--out", out, "--steps", "2",
          "--batch-size", "4", "--variants", "crop-only", "--variant", "no-gain=augment.p_gain=0", "--no-musicnn"],
         tmp_path, 900)
    res = json.loads((out / "ablate.json").read_text())
    assert [v["name"] for v in res["variants"]] == ["chain", "crop-only", "no-gain"]
    # each variant trained with its own augmentation settings, the rest of the chain as the model's
    settings = {n: json.loads((out / "pretrain" / n / "settings.json").read_text())["augment"]
                for n in ("chain", "crop-only", "no-gain")}
    assert settings["chain"]["p_pitch"] == 0.6 and settings["crop-only"]["p_pitch"] == 0.0
    assert all(settings["crop-only"][k] == 0.0 for k in ("p_polarity", "p_filter", "p_gain", "p_delay", "p_noise"))
    assert settings["no-gain"]["p_gain"] == 0.0 and settings["no-gain"]["p_filter"] == settings["chain"]["p_filter"]
    assert all(v["run"]["steps"] == 2 for v in res["variants"])
    for v in res["variants"]:
        refs = {"random init", "MFCC"} | ({"chain"} if v["name"] != "chain" else set())
        assert set(v["vs"]) == refs, v["name"]
        for d in v["vs"].values():
            for lab in ("soundtrack top1_acc (CV)", "same-track MAP"):
                assert d[lab]["ci_low"] <= d[lab]["diff"] <= d[lab]["ci_high"]
    rows = [r["row"] for r in res["summary"]]
    assert rows == ["mart [chain]", "mart [crop-only]", "mart [no-gain]", "mart (random init)", report.MFCC_ROW]
    md = (out / "ablate.md").read_text()
    assert "| mart [no-gain] | p_gain=0 |" in md and "minus random init" in md


def test_a_failed_child_step_shows_the_end_of_its_log(tmp_path):
    from mart_upstream.benchmarks.subprocesses import ROOT as CHECKOUT, run_logged

    log = tmp_path / "step.log"
    script = "import sys; print('\\n'.join(f'line {i}' for i in range(500))); sys.exit(3)"
    with pytest.raises(RuntimeError) as e:
        run_logged([sys.executable, "-c", script], str(log), "pretraining demo seed 0")
    msg = str(e.value)
    assert msg.startswith("pretraining demo seed 0 failed (exit 3); log " + str(log))
    assert msg.rstrip().endswith("line 499") and "line 0\n" not in msg  # the end of the log, not all of it
    assert log.read_text().startswith("$ " + sys.executable)  # the command heads its output
    assert child_env(X_EXTRA="1")["PYTHONPATH"].split(os.pathsep)[0] == CHECKOUT == ROOT


def test_comma_lists_are_parsed_once_for_every_tool():
    from mart_upstream.argtypes import comma_list

    assert comma_list("simclr, pemr,,") == ["simclr", "pemr"]
    assert comma_list("100,50", int) == [100, 50] and comma_list("", float) == []
    with pytest.raises(ValueError):
        comma_list("1,x", int)

"""Command-line errors: one line on stderr, exit status 2 (130 for an interrupt), a traceback
only with --debug or LMGNN_DEBUG=1; Config.validate reports every bad value at once."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lmgnn_fast.cli import EXIT_BUG, EXIT_INTERRUPTED, EXIT_USER_ERROR, run_cli
from lmgnn_fast.train import Config, ConfigError
from lmgnn_fast.train.config import load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_dir(root) -> str:
    """A valid two-type graph with a node classification task (CSV)."""
    root = str(root)
    os.makedirs(os.path.join(root, "nodes"), exist_ok=True)
    os.makedirs(os.path.join(root, "edges"), exist_ok=True)
    with open(os.path.join(root, "nodes", "paper.csv"), "w") as f:
        f.write("id,text,label\n" + "".join(f"p{i},paper {i},{i % 2}\n" for i in range(12)))
    with open(os.path.join(root, "nodes", "author.csv"), "w") as f:
        f.write("id,text\n" + "".join(f"a{i},author {i}\n" for i in range(4)))
    with open(os.path.join(root, "edges", "author__writes__paper.csv"), "w") as f:
        f.write("src,dst\n" + "".join(f"a{i % 4},p{i}\n" for i in range(12)))
    with open(os.path.join(root, "metadata.json"), "w") as f:
        json.dump({"node_types": ["paper", "author"], "edge_types": [["author", "writes", "paper"]],
                   "tasks": [{"name": "topic", "type": "node_classification", "node_type": "paper"}]}, f)
    return root


def run_train(argv, capsys) -> tuple[int, str]:
    from lmgnn_fast.train.__main__ import main

    rc = main(list(argv))
    return rc, capsys.readouterr().err


def assert_one_line(err: str, *parts: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for p in parts:
        assert p in lines[0], (p, lines[0])


# Bad command lines rejected before any work starts: (arguments, expected part of the message).
BAD_ARGS = [
    (["--stage2.batch_size", "-5"], "stage2.batch_size must be >= 1, got -5"),
    (["--stage2.epochs", "-1"], "stage2.epochs must be >= 0, got -1"),
    (["--stage1.batch_size", "0"], "stage1.batch_size must be >= 1, got 0"),
    (["--stage3.batch_size", "-1"], "stage3.batch_size must be >= 1, got -1"),
    (["--stage1.epochs", "-2"], "stage1.epochs must be >= 0, got -2"),
    (["--stage3.epochs", "-3"], "stage3.epochs must be >= 0, got -3"),
    (["--stage2.lr", "0"], "stage2.lr must be > 0, got 0.0"),
    (["--stage1.lr", "-1e-5"], "stage1.lr must be > 0, got -1e-05"),
    (["--stage3.lm_lr", "nan"], "stage3.lm_lr must be > 0, got nan"),
    (["--stage3.gnn_lr", "inf"], "stage3.gnn_lr must be > 0, got inf"),
    (["--gnn.dropout", "1"], "gnn.dropout must be in [0, 1), got 1.0"),
    (["--gnn.dropout", "-0.1"], "gnn.dropout must be in [0, 1), got -0.1"),
    (["--gnn.fanouts", "5,0"], "gnn.fanouts must be a list of integers, each -1 (all neighbours) or >= 1"),
    (["--gnn.fanouts", "5,-2"], "each -1 (all neighbours) or >= 1, got [5, -2]"),
    (["--gnn.fanouts", "5,x"], "gnn.fanouts must be a list of integers"),
    (["--gnn.fanouts", "10,10,10"], "gnn.fanouts has 3 entries but gnn.num_layers is 2"),
    (["--gnn.num_layers", "0"], "gnn.num_layers must be >= 1, got 0"),
    (["--gnn.hidden", "0"], "gnn.hidden must be >= 1, got 0"),
    (["--gnn.num_bases", "0"], "gnn.num_bases must be >= 1 or null, got 0"),
    (["--gnn.aggr", "max"], "gnn.aggr must be 'mean' or 'sum', got 'max'"),
    (["--gnn.feature_norm", "batch"], "gnn.feature_norm must be 'layer' or 'none', got 'batch'"),
    (["--task.decoder", "cosine"], "task.decoder must be 'distmult' or 'dot', got 'cosine'"),
    (["--task.loss", "hinge"], "task.loss must be 'contrastive' or 'bce', got 'hinge'"),
    (["--task.negatives", "hard"], "task.negatives must be one of 'uniform', 'joint', 'in_batch', got 'hard'"),
    (["--task.num_negatives", "0"], "task.num_negatives must be >= 1, got 0"),
    (["--task.threshold", "1.5"], "task.threshold must be in (0, 1), got 1.5"),
    (["--lm.pooling", "max"], "lm.pooling must be 'cls' or 'mean', got 'max'"),
    (["--lm.precision", "fp8"], "lm.precision must be one of 'auto', 'bf16', 'fp16', 'fp32', got 'fp8'"),
    (["--lm.max_length", "1"], "lm.max_length must be >= 2, got 1"),
    (["--stage3.cache_policy", "fifo"], "stage3.cache_policy must be one of 'clock', 'lru', 'lfu', 'static'"),
    (["--stage3.lm_train_nodes", "-2"], "stage3.lm_train_nodes must be >= -1, got -2"),
    (["--stage3.cache_capacity", "-1"], "stage3.cache_capacity must be >= 0, got -1.0"),
    (["--run.device", "gpu"], "run.device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    (["--run.device", "cuda:x"], "run.device must be auto, cpu, cuda or cuda:N, got 'cuda:x'"),
    (["--run.seed", "-1"], "run.seed must be in [0, 9223372036854775807], got -1"),
    (["--run.eval_batch_size", "0"], "run.eval_batch_size must be >= 1, got 0"),
    (["--run.dist_timeout", "0"], "run.dist_timeout must be > 0, got 0.0"),
    (["--run.stages", "4"], "run.stages must be a comma-separated list of 1, 2, 3, got '4'"),
    (["--run.stages", "a,b"], "run.stages must be a comma-separated list of 1, 2, 3, got 'a,b'"),
    (["--run.out_dir", ""], "run.out_dir must be a folder path, got ''"),
    (["--data.name", ""], "data.name must name a built-in dataset or a directory, got ''"),
    (["--stage2.epochs", "x"], "stage2.epochs must be an integer, got 'x'"),
    (["--seed", "1.5"], "run.seed must be an integer, got 1.5"),
    (["--epochs", "3"], "--epochs is ambiguous"),
    (["--bogus", "1"], "unknown config key --bogus"),
    (["--nosuch.key", "1"], "unknown config section 'nosuch'"),
    (["--stage2.nosuch", "1"], "unknown config key stage2.nosuch"),
    (["stray"], "unexpected argument 'stray'"),
    (["--data.options", "[1, 2]"], "data.options must be a mapping, got [1, 2]"),
    (["--run.progress", "maybe"], "run.progress must be true or false, got 'maybe'"),
    (["--config"], "--config needs a path"),
    (["--config", "no/such/run.yaml"], "config file 'no/such/run.yaml' not found"),
    (["--lm.lora_r", str(10**20)], "lm.lora_r must be in [0, 65536], got 100000000000000000000"),
]


@pytest.mark.parametrize("argv,message", BAD_ARGS, ids=[" ".join(a) for a, _ in BAD_ARGS])
def test_bad_command_line_is_one_line_exit_2(argv, message, capsys, tmp_path):
    rc, err = run_train([*argv, "--run.out_dir", str(tmp_path / "run")] if "--run.out_dir" not in argv
                        and argv != ["--config"] else argv, capsys)
    assert rc == EXIT_USER_ERROR
    assert_one_line(err, "error: ", message)
    assert not (tmp_path / "run").exists()  # rejected before any work


# Config files that are not a YAML mapping of sections: (content, expected part of the message).
BAD_YAML = [
    ("- data\n- lm\n", "must be a mapping of sections (data, lm, gnn, task, stage1, stage2, stage3, run), got a list"),
    ("42\n", "must be a mapping of sections (data, lm, gnn, task, stage1, stage2, stage3, run), got int 42"),
    ("just some words\n", "got str 'just some words'"),
    ("run: {seed: [1, 2\n", "is not valid YAML at line 2"),
    ("run:\n  seed: 1\n\tstages: 2\n", "is not valid YAML at line 3"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "is not UTF-8 text (byte 0): not a YAML file"),
    ("run: [1, 2]\n", "config section 'run' must be a mapping, got [1, 2]"),
]


@pytest.mark.parametrize("content,message", BAD_YAML, ids=[f"yaml{i}" for i in range(len(BAD_YAML))])
def test_config_file_that_is_not_a_yaml_mapping(content, message, tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    rc, err = run_train(["--config", str(path), "--run.out_dir", str(tmp_path / "run")], capsys)
    assert rc == EXIT_USER_ERROR
    assert_one_line(err, "error: ", message)
    assert not (tmp_path / "run").exists()


def test_config_file_that_is_a_folder_or_damaged_on_resume(tmp_path, capsys):
    rc, err = run_train(["--config", str(tmp_path), "--run.out_dir", str(tmp_path / "run")], capsys)
    assert rc == EXIT_USER_ERROR
    assert_one_line(err, f"config file '{tmp_path}' is a directory, not a YAML file")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("- not\n- a mapping\n")
    rc, err = run_train(["--run.out_dir", str(run), "--resume"], capsys)
    assert rc == EXIT_USER_ERROR
    assert_one_line(err, f"config file '{run / 'config.yaml'}' must be a mapping of sections")


def test_validate_reports_every_bad_value_at_once():
    cfg = load_config(None, ["--stage2.batch_size", "-5", "--stage2.epochs", "-1", "--gnn.aggr", "max",
                             "--run.device", "tpu"])
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    msg = str(info.value)
    assert msg.startswith("4 invalid config values: ")
    for part in ("stage2.batch_size must be >= 1, got -5", "stage2.epochs must be >= 0, got -1",
                 "gnn.aggr must be 'mean' or 'sum', got 'max'", "run.device must be auto, cpu, cuda or cuda:N"):
        assert part in msg
    assert "\n" not in msg
    assert Config().validate() is not None  # the defaults are valid


def test_out_dir_naming_a_file(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    rc, err = run_train(["--run.out_dir", str(f)], capsys)
    assert rc == 2
    assert_one_line(err, f"run.out_dir '{f}' exists and is not a directory")
    rc, err = run_train(["--run.out_dir", str(f / "sub")], capsys)
    assert rc == 2
    assert_one_line(err, "which is not a directory")


def test_trainer_constructor_validates(tmp_path):
    from lmgnn_fast.train import Trainer

    cfg = Config()
    cfg.stage2.batch_size = -5
    cfg.run.out_dir = str(tmp_path / "run")
    with pytest.raises(ConfigError, match="stage2.batch_size must be >= 1, got -5"):
        Trainer(cfg)
    assert not (tmp_path / "run").exists()


def test_unknown_data_option_names_the_accepted_ones(tmp_path, capsys):
    data = tiny_dir(tmp_path / "data")
    rc, err = run_train(["--data.name", data, "--data.options", "{bogus: 1}", "--run.out_dir",
                         str(tmp_path / "run")], capsys)
    assert rc == 2
    assert_one_line(err, "unknown option 'bogus'", "max_nodes", "dedup_edges", "seed")
    rc, err = run_train(["--data.options", "{bogus: 1}", "--run.out_dir", str(tmp_path / "run")], capsys)
    assert rc == 2
    assert_one_line(err, "dataset 'attack': unknown option 'bogus'", "include_revoked")
    rc, err = run_train(["--data.name", data, "--data.options", "{dedup_edges: drop}", "--run.out_dir",
                         str(tmp_path / "run")], capsys)
    assert rc == 2
    assert_one_line(err, "dedup_edges must be 'keep' or 'remove', got 'drop'")
    rc, err = run_train(["--data.name", data, "--data.options", "{max_nodes: 0}", "--run.out_dir",
                         str(tmp_path / "run")], capsys)
    assert rc == 2
    assert_one_line(err, "max_nodes must be an integer >= 1, got 0")
    rc, err = run_train(["--data.name", "synthetic", "--data.options", "{num_edges: -1}", "--run.out_dir",
                         str(tmp_path / "run")], capsys)
    assert rc == 2
    assert_one_line(err, "error: synthetic: num_edges must be >= 0, got -1")
    rc, err = run_train(["--data.name", "synthetic", "--data.options", "{num_edges: many}", "--run.out_dir",
                         str(tmp_path / "run")], capsys)
    assert rc == 2
    assert_one_line(err, "error: dataset 'synthetic': an option has the wrong type (",
                    "options given: {'num_edges': 'many'}")


def test_data_format_error_through_the_train_cli(tmp_path, capsys):
    data = tiny_dir(tmp_path / "data")
    with open(os.path.join(data, "nodes", "paper.csv"), "a") as f:
        f.write("p0,duplicate,1\n")
    rc, err = run_train(["--data.name", data, "--run.out_dir", str(tmp_path / "run")], capsys)
    assert rc == 2
    assert_one_line(err, "nodes/paper.csv, row 12 (line 14), column 'id': duplicate node id 'p0'")


def test_run_cli_exit_statuses_and_debug(monkeypatch):
    import io

    def boom(exc):
        def main(argv):
            raise exc
        return main

    err = io.StringIO()
    assert run_cli(boom(KeyboardInterrupt()), [], interrupt_hint="resume with --resume", stderr=err) == 130
    assert err.getvalue() == "interrupted; resume with --resume\n"
    err = io.StringIO()
    assert run_cli(boom(FileNotFoundError(2, "No such file or directory", "x.csv")), [], stderr=err) == 2
    assert err.getvalue().startswith("error: ") and "x.csv" in err.getvalue()
    err = io.StringIO()
    assert run_cli(boom(IndexError("a\nb")), [], stderr=err) == EXIT_BUG
    assert err.getvalue() == ("error: unexpected IndexError: a b (rerun with --debug or LMGNN_DEBUG=1 for "
                              "the traceback)\n")
    err = io.StringIO()
    assert run_cli(boom(BrokenPipeError(32, "Broken pipe")), [], stderr=err) == 141  # `... | head`
    assert err.getvalue() == ""
    seen = []
    assert run_cli(lambda argv: seen.append(argv) or 0, ["--x", "1", "--debug"]) == 0
    assert seen == [["--x", "1"]]  # --debug is not passed on
    with pytest.raises(IndexError):
        run_cli(boom(IndexError("x")), ["--debug"])
    with pytest.raises(KeyboardInterrupt):
        run_cli(boom(KeyboardInterrupt()), ["--debug"])
    monkeypatch.setenv("LMGNN_DEBUG", "1")
    with pytest.raises(ConfigError):
        run_cli(boom(ConfigError("bad")), [], user_errors=(ConfigError,))
    monkeypatch.setenv("LMGNN_DEBUG", "0")
    assert run_cli(boom(ConfigError("bad")), [], user_errors=(ConfigError,), stderr=io.StringIO()) == 2


def _subprocess(args, env_extra=None, code=None):
    env = dict(os.environ, **(env_extra or {}))
    env.pop("LMGNN_DEBUG", None) if not env_extra or "LMGNN_DEBUG" not in env_extra else None
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)


def test_cli_processes(tmp_path):
    """A handful through real processes: exit status, one line, traceback only with --debug."""
    f = tmp_path / "afile"
    f.write_text("x")
    p = _subprocess(["lmgnn_fast.train", "--stage2.batch_size", "-5", "--run.out_dir", str(f)])
    assert p.returncode == 2
    assert_one_line(p.stderr, "2 invalid config values", "stage2.batch_size must be >= 1, got -5",
                    "exists and is not a directory")
    p = _subprocess(["lmgnn_fast.train", "--stage2.epochs", "-1", "--debug"])
    assert p.returncode != 0 and "Traceback" in p.stderr and "ConfigError" in p.stderr
    p = _subprocess(["lmgnn_fast.evaluate", str(tmp_path)])
    assert p.returncode == 2
    assert_one_line(p.stderr, "is not a run directory (no config.yaml)")
    bad = tiny_dir(tmp_path / "bad")
    with open(os.path.join(bad, "metadata.json"), "w") as fh:
        json.dump({"node_types": ["../../outside"]}, fh)
    p = _subprocess(["lmgnn_fast.datasets", "info", bad, "--graph"])
    assert p.returncode == 2
    assert_one_line(p.stderr, "metadata.json: node_types: node type '../../outside' is not a valid name")


def test_evaluate_and_datasets_usage_errors(tmp_path, capsys):
    from lmgnn_fast.datasets.__main__ import main as datasets_main
    from lmgnn_fast.evaluate import main as evaluate_main

    assert evaluate_main([str(tmp_path), "--stage", "x"]) == 2
    assert_one_line(capsys.readouterr().err, "--stage must be a comma-separated list of 1, 2, 3, got 'x'")
    assert evaluate_main([str(tmp_path), "--stage", "4"]) == 2
    assert_one_line(capsys.readouterr().err, "--stage must be a comma-separated list of 1, 2, 3, got '4'")
    with pytest.raises(SystemExit) as info:
        datasets_main(["frobnicate"])
    assert info.value.code == 2
    assert_one_line(capsys.readouterr().err, "invalid choice: 'frobnicate'",
                    "(see python -m lmgnn_fast.datasets --help)")
    assert datasets_main(["info", "synthetic", "-o", "bogus=1"]) == 2
    assert_one_line(capsys.readouterr().err, "dataset 'synthetic': unknown option 'bogus'")
    (tmp_path / "afile").write_text("x")
    assert datasets_main(["export", "synthetic", str(tmp_path / "afile"), "-o", "num_nodes=60"]) == 2
    assert_one_line(capsys.readouterr().err, "exists and is not empty (pass overwrite=True, or --overwrite")


def test_ctrl_c_in_the_train_cli(tmp_path):
    """KeyboardInterrupt anywhere in a run: one line, exit 130 (the shell's 128 + SIGINT)."""
    code = ("import sys\n"
            "import lmgnn_fast.train.runner as t\n"
            "def stop(*a, **k):\n    raise KeyboardInterrupt\n"
            "t.Trainer.__init__ = stop\n"
            "from lmgnn_fast.train.__main__ import main\n"
            f"sys.exit(main(['--run.out_dir', {str(tmp_path / 'run')!r}]))\n")
    p = _subprocess(None, code=code)
    assert p.returncode == EXIT_INTERRUPTED
    assert p.stderr == "interrupted; resume with --resume\n"


def test_huge_text_cell_is_cut_with_one_log_line(tmp_path):
    """A multi-megabyte text cell (a 50 MiB one used to abort the tokenizer) is cut before
    tokenizing, with one warning line naming the node and its type."""
    from lmgnn_fast.lm import make_tiny_bert
    from lmgnn_fast.train import Trainer

    data = tiny_dir(tmp_path / "data")
    huge = "paper " * 500_000  # 3 MB
    with open(os.path.join(data, "nodes", "paper.csv"), "a") as f:
        f.write(f"p_huge,{huge},1\n")
    bert = make_tiny_bert(["paper author"], str(tmp_path / "bert"))
    cfg = load_config(None, ["--data.name", data, "--lm.name", bert, "--lm.max_length", "8",
                             "--run.out_dir", str(tmp_path / "run"), "--run.progress", "false"])
    lines = []
    Trainer(cfg, log=lambda *a: lines.append(" ".join(map(str, a)))).features.load_lm("pretrained")  # tokenizes
    warned = [x for x in lines if "cut to its first" in x]
    assert warned == [f"warning: tokenize: node 'p_huge' of node type 'paper': text of {len(huge):,} characters "
                      "cut to its first 800 before tokenizing (lm.max_length 8 tokens x 100 characters)"], lines

import doctest
import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


#: Batches per epoch of the README example's run here: every call of the example runs as
#: written (both epochs, validation, the test per availability case), on fewer batches.
QUICK = {"limit_train_batches": 3, "limit_val_batches": 1, "limit_test_batches": 4}


def test_readme_example_runs(capsys, monkeypatch):
    import lightning
    import lightning.pytorch

    block = re.search(
        r"<!-- example:start -->\n```python\n(.*?)```\n<!-- example:end -->", README, re.S
    )
    assert block, "the README lost its tested example"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 16
    given: dict = {}

    class QuickTrainer(lightning.pytorch.Trainer):
        def __init__(self, **kwargs) -> None:
            given.update(kwargs)
            super().__init__(**{**QUICK, **kwargs})

    for module in (lightning, lightning.pytorch):  # either spelling of the import
        monkeypatch.setattr(module, "Trainer", QuickTrainer)
    exec(compile(code, "README.md", "exec"), {})
    assert given, "the example's Trainer is not lightning's: QUICK did not apply"
    assert "accuracy with the text missing:" in capsys.readouterr().out


def test_readme_doctests():
    parser = doctest.DocTestParser()
    test = parser.get_doctest(README, {}, "README", "README.md", 0)
    assert test.examples
    runner = doctest.DocTestRunner()
    runner.run(test)
    assert runner.failures == 0


def test_readme_has_the_two_setup_commands_and_ci_runs_the_test_one():
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    install = 'pip install "torch==2.14.1" "torchvision==0.29.1" -e ".[dev]"'
    assert install in README and "HF_HUB_OFFLINE=1 python -m pytest" in README
    assert (
        install.replace("pip", "python -m pip install -q", 1).replace(
            "install -q install", "install -q"
        )
        in ci
    )
    assert "HF_HUB_OFFLINE=1 python -m pytest" in ci
    assert "cmpt fit --config configs/demo.yaml" in README


def test_readme_model_example_runs():
    """The plain-PyTorch `CMPTModel` example: built, tokenized, preprocessed and called as shown."""
    block = re.search(
        r"<!-- model-example:start -->\n```python\n(.*?)```\n<!-- model-example:end -->",
        README,
        re.S,
    )
    assert block, "the README lost its tested CMPTModel example"
    namespace: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    out, model = namespace["out"], namespace["model"]
    assert out.logits.shape == (2, 101)
    assert namespace["token_ids"].shape == (2, model.text_tower.context_length)
    assert out.features.image.shape == (2, model.embed_dim)
    assert not out.features.image[1].any()  # the absent image: zeros, as the comment says

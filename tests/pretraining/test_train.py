"""Lightning pretraining of csmoe_tiny on real sample patches: loss, resume, DDP, errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

import xcsmoe
from xcsmoe.errors import CheckpointError, ConfigError
from xcsmoe.pretraining.recipe import load_recipe
from xcsmoe.pretraining.train import latest_checkpoint, pretrain, read_losses

pytestmark = pytest.mark.usefixtures("train_one_thread")
REPO = Path(__file__).resolve().parents[2]


class StepRecorder(L.Callback):
    """Per global step: the training loss and the patches of the batch."""

    def __init__(self, crash_at: int | None = None) -> None:
        self.loss: dict[int, float] = {}
        self.patches: dict[int, list[int]] = {}
        self.crash_at = crash_at

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        self.loss[step] = float(outputs["loss"])
        self.patches[step] = batch["patch"].tolist()
        if step == self.crash_at:
            raise RuntimeError("simulated kill")


def test_loss_falls_and_the_encoder_embeds_the_sample_cubes(
    tmp_path: Path, train_recipe, sample_items
) -> None:
    recipe = train_recipe(tmp_path / "run", max_steps=36, warmup_steps=4, val_every=12)
    recorder = StepRecorder()
    result = pretrain(recipe, callbacks=[recorder], progress=False)
    losses = [recorder.loss[s] for s in sorted(recorder.loss)]
    assert len(losses) == 36 and np.isfinite(losses).all()
    assert np.mean(losses[-6:]) < 0.8 * np.mean(losses[:6])
    # every loss term, the expert-usage entropy per Soft MoE layer and validation are logged
    for column in ("train/uni_s1", "train/cross_s2", "train/mim", "moe/s1_specific0"):
        assert read_losses(result.metrics, column)[0], column
    val_steps, val = read_losses(result.metrics, "val/total")
    assert len(val_steps) == 3  # every 12 steps
    assert len(val) == 3 and np.isfinite(val).all()
    assert result.loss_curve.stat().st_size > 10_000
    # the encoder checkpoint works where xcsmoe already reads weights
    encoder = xcsmoe.create_model("csmoe_tiny", weights=result.encoder)
    trained = torch.load(result.checkpoint, weights_only=True)["state_dict"]
    torch.testing.assert_close(
        encoder.patch_embed_s2.proj.weight, trained["model.backbone.patch_embed_s2.proj.weight"]
    )
    cube = xcsmoe.load_cube([sample_items["s2"][0]], [sample_items["s1"][0]])
    out = xcsmoe.embed(cube, model="csmoe_tiny", weights=result.encoder, device="cpu", patch=16)
    values = out["cls"].values if "cls" in out else next(iter(out.data_vars.values())).values
    assert values.size and np.isfinite(values).all()


def test_resume_after_a_kill_repeats_the_uninterrupted_run(tmp_path: Path, train_recipe) -> None:
    """Steps 1-12 with 5 batches per epoch: a kill at step 6 (last checkpoint at 4) and a
    resume give the same patches and losses at every step as one uninterrupted run."""
    whole = StepRecorder()
    pretrain(train_recipe(tmp_path / "whole"), callbacks=[whole], progress=False)
    killed = StepRecorder(crash_at=6)
    with pytest.raises(RuntimeError, match="simulated kill"):
        pretrain(train_recipe(tmp_path / "killed"), callbacks=[killed], progress=False)
    assert latest_checkpoint(tmp_path / "killed").name == "step00000004.ckpt"
    resumed = StepRecorder()
    result = pretrain(
        train_recipe(tmp_path / "killed"), resume=True, callbacks=[resumed], progress=False
    )
    assert sorted(resumed.loss) == list(range(5, 13))
    assert result.steps == 12
    for step in range(1, 13):
        run = killed if step <= 4 else resumed
        assert run.patches[step] == whole.patches[step], step
        assert run.loss[step] == pytest.approx(whole.loss[step], rel=1e-6, abs=1e-6), step
    # keep-last-k: only the two newest checkpoints remain
    names = sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir())
    assert names == ["step00000008.ckpt", "step00000012.ckpt"]


def test_resume_refuses_a_changed_recipe_unless_forced(tmp_path: Path, train_recipe) -> None:
    pretrain(train_recipe(tmp_path / "run", max_steps=4), progress=False)
    before = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    changed = train_recipe(tmp_path / "run", max_steps=6, lr=5e-4)
    with pytest.raises(ConfigError, match=r"lr: 0.001 -> 0.0005.*max_steps: 4 -> 6.*--force"):
        pretrain(changed, resume=True, progress=False)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == before
    # harmless changes (workers, logging, checkpoint cadence) are accepted as they are
    result = pretrain(changed, resume=True, force=True, progress=False)
    assert result.steps == 6
    # a fresh start into a folder that holds a run is refused
    with pytest.raises(ConfigError, match="without a previous run"):
        pretrain(train_recipe(tmp_path / "run"), progress=False)


def test_checkpoint_of_another_variant_or_band_order_is_refused(
    tmp_path: Path, train_recipe
) -> None:
    pretrain(train_recipe(tmp_path / "run", max_steps=2), progress=False)
    other = train_recipe(tmp_path / "run", max_steps=2, variant="csmoe_p16")
    with pytest.raises(CheckpointError, match=r"trained as csmoe_tiny.*does not match csmoe_p16"):
        pretrain(other, resume=True, force=True, progress=False)
    # initial weights trained with S1 as VH, VV do not start a VV, VH model
    vh_vv = xcsmoe.create_model("csmoe_tiny", s1_bands=("vh", "vv"))
    weights = xcsmoe.save_checkpoint(vh_vv, tmp_path / "vh_vv.safetensors")
    with pytest.raises(CheckpointError, match=r"s1_bands: checkpoint \('vh', 'vv'\)"):
        pretrain(train_recipe(tmp_path / "init", init_weights=weights), progress=False)


def test_unwritable_output_is_refused_before_anything_is_written(
    tmp_path: Path, train_recipe
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="output: expected a writable folder"):
        pretrain(train_recipe(blocker / "run"), progress=False)
    if os.geteuid() != 0:  # root writes into read-only folders anyway
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        try:
            with pytest.raises(ConfigError, match="writable folder"):
                pretrain(train_recipe(folder), progress=False)
            assert not any(folder.iterdir())
        finally:
            folder.chmod(0o755)


class TroubleAt(L.Callback):
    """At the end of step ``step``, enter ``trouble()`` (a context) until ``stack`` closes."""

    def __init__(self, step: int, trouble, stack) -> None:
        self.step, self.trouble, self.stack = step, trouble, stack

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            self.stack.enter_context(self.trouble())


def test_full_disk_or_read_only_folder_mid_run_keeps_checkpoints_and_resumes(
    tmp_path: Path, train_recipe, read_only, file_size_limit
) -> None:
    """Real failures while the step-8 checkpoint is written (step 4 is on disk): a file
    size limit (EFBIG, as a full disk), then a read-only checkpoint folder. Each stops the
    run with a CheckpointError naming the cause; the step-4 checkpoint stays as it was,
    no temporary file is left, and a resume finishes the run."""
    from contextlib import ExitStack

    recipe = train_recipe(tmp_path / "run", max_steps=12, checkpoint_every=4)
    folder = tmp_path / "run" / "checkpoints"

    def disk_full():
        size = (folder / "step00000004.ckpt").stat().st_size
        assert size > 400_000  # the limit must stop a checkpoint, not the small logs
        return file_size_limit(size // 2)

    for trouble, cause in ((disk_full, "File too large"), (lambda: read_only(folder), "")):
        resume = (folder / "step00000004.ckpt").exists()
        with ExitStack() as stack, pytest.raises(CheckpointError) as caught:
            pretrain(
                recipe, resume=resume, callbacks=[TroubleAt(6, trouble, stack)], progress=False
            )
        message = str(caught.value)
        assert "step00000008.ckpt" in message and cause in message
        assert "resume" in message and "earlier checkpoints are intact" in message
        assert sorted(p.name for p in folder.iterdir()) == ["step00000004.ckpt"]
        assert torch.load(folder / "step00000004.ckpt", weights_only=True)["global_step"] == 4
    result = pretrain(recipe, resume=True, progress=False)
    assert result.steps == 12 and result.checkpoint.name == "step00000012.ckpt"


def test_single_sensor_patches_train_on_the_losses_they_feed(
    tmp_path: Path, train_recipe, train_write_store
) -> None:
    store = train_write_store(tmp_path / "single.zarr", single_sensor=8, val_fraction=0.0)
    recorder = StepRecorder()
    recipe = train_recipe(tmp_path / "run", store=store, max_steps=6, flips=False)
    pretrain(recipe, callbacks=[recorder], progress=False)
    assert np.isfinite(list(recorder.loss.values())).all()


def test_cli_runs_a_recipe_file_and_reports_bad_input_in_one_line(
    tmp_path: Path, train_store: Path, capsys
) -> None:
    from xcsmoe.cli import main

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"variant: csmoe_tiny\nstore: {train_store}\noutput: run\nmax_steps: 2\n"
        "batch_size: 8\nlr: 1e-3\nworkers: 0\nlog_every: 1\n"
    )
    assert load_recipe(recipe).output == tmp_path / "run"  # relative to the recipe file
    assert main(["pretrain", str(recipe), "--no-progress"]) == 0
    assert (tmp_path / "run" / "encoder.safetensors").is_file()
    capsys.readouterr()
    assert main(["pretrain", str(recipe), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("xcsmoe: error: output:") and "--resume" in err
    assert len(err.splitlines()) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("variant: csmoe_tiny\nstore: x\noutput: y\nbatch_size: 8\nlr: 1\nepochs: 3\n")
    assert main(["pretrain", str(bad)]) == 2
    assert "['epochs']" in capsys.readouterr().err


def test_sample_recipe_parses() -> None:
    recipe = load_recipe(REPO / "recipes" / "pretrain_sample.yaml")
    assert recipe.variant == "csmoe_tiny" and recipe.max_steps


def test_two_process_ddp_on_cpu_and_its_checkpoint_loads(tmp_path: Path, train_store) -> None:
    """torchrun starts two gloo ranks; each trains on its half of every epoch."""
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(
        f"variant: csmoe_tiny\nstore: {train_store}\noutput: run\nmax_steps: 3\n"
        "batch_size: 4\nlr: 1e-3\nworkers: 0\nlog_every: 1\naccelerator: cpu\n"
        "checkpoint_every: 3\n"
    )
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_port", str(29500 + os.getpid() % 1000),
        "-m", "xcsmoe.cli", "pretrain", str(recipe), "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "distributed_backend=gloo" in done.stderr + done.stdout
    checkpoint = tmp_path / "run" / "checkpoints" / "step00000003.ckpt"
    state = torch.load(checkpoint, weights_only=True)
    assert state["PatchDataModule"]["world_size"] == 2
    encoder = xcsmoe.create_model("csmoe_tiny", weights=tmp_path / "run" / "encoder.safetensors")
    full = xcsmoe.create_model("csmoe_tiny", pretraining=True)
    full.load_state_dict({k.removeprefix("model."): v for k, v in state["state_dict"].items()})
    torch.testing.assert_close(full.backbone.cls_token, encoder.cls_token)


@pytest.mark.parametrize("field", ["store", "output"])
def test_a_recipe_with_a_bucket_url_is_refused_before_any_work(tmp_path: Path, field) -> None:
    recipe = {"store": str(tmp_path / "patches.zarr"), "output": str(tmp_path / "run")}
    recipe[field] = "s3://bucket/prefix"
    path = tmp_path / "recipe.yaml"
    path.write_text(
        f"variant: csmoe_tiny\nstore: {recipe['store']}\noutput: {recipe['output']}\n"
        "max_steps: 2\nbatch_size: 2\nlr: 1e-3\n"
    )
    with pytest.raises(ConfigError, match=f"{field}: expected a local folder"):
        load_recipe(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml"]

"""Recipe checks that run before any work: the step schedule (exact step counts) and the preset."""

import pytest

from vlbeit_keras.config import Config
from vlbeit_keras.training.schedule import plan_epochs


def test_exact_multiple_runs_as_asked():
    assert plan_epochs(Config(total_steps=1200, checkpoint_every=100, log_every=10)) == (12, 100)


def test_short_run_checkpoints_once_at_its_end_and_says_so():
    schedule = Config(total_steps=10, checkpoint_every=100, log_every=10)
    said = []
    assert plan_epochs(schedule, report=said.append) == (1, 10)
    assert schedule.checkpoint_every == 10  # config.json records what ran
    assert "checkpoint_every=100" in said[0] and "step 10" in said[0]


@pytest.mark.parametrize(
    "schedule, match",
    [
        ({"total_steps": 250, "checkpoint_every": 100}, r"total_steps=200 or 300"),
        ({"total_steps": 0, "checkpoint_every": 100}, r"schedule.total_steps .* got 0"),
        ({"total_steps": -5, "checkpoint_every": 100}, r"schedule.total_steps .* got -5"),
        ({"total_steps": 10.5, "checkpoint_every": 5}, r"schedule.total_steps"),
        ({"total_steps": 100, "checkpoint_every": 0}, r"schedule.checkpoint_every .* got 0"),
        ({"total_steps": 100, "checkpoint_every": 10, "log_every": True}, r"schedule.log_every"),
    ],
)
def test_bad_schedules_name_the_field(schedule, match):
    with pytest.raises(ValueError, match=match):
        plan_epochs(Config(schedule))


def test_recipes_check_the_schedule_before_building_anything(tmp_path):
    from vlbeit_keras.training.finetuning import run_finetuning
    from vlbeit_keras.training.pretraining import run_pretraining

    # Only task / workdir / schedule are set: a check after any data, model or
    # file work would fail on a missing field instead.
    for run in (run_finetuning, run_pretraining):
        config = Config(task="vqa", workdir=str(tmp_path / "x"),
                        schedule=dict(total_steps=250, checkpoint_every=100, log_every=10))
        with pytest.raises(ValueError, match="not a multiple"):
            run(config)
    assert not (tmp_path / "x").exists()


def test_pretraining_names_a_misspelt_preset_before_any_work(tmp_path):
    from vlbeit_keras.training.pretraining import run_pretraining

    config = Config(workdir=str(tmp_path / "x"), model=dict(preset="vlbeit_smal"),
                    schedule=dict(total_steps=4, checkpoint_every=2, log_every=1))
    with pytest.raises(ValueError, match=r"model.preset='vlbeit_smal'.*vlbeit_small"):
        run_pretraining(config)
    assert not (tmp_path / "x").exists()
